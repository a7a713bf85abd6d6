"""
The runs of a study beyond one per line of `runs`: a learning-rate sweep per size (study.py's knobs lr_sweep and
lr_sweep_tokens), a data axis (token_budgets), repeats with other initialisation seeds (seeds, seed_sizes), and the
choice of each size's rate from its sweep: the learning-rate law of lr_law.py (lr_choice = 'law') or each size's
own argmin ('argmin').

The sweep runs family by family in order of N. The first MIN_CENTRE_SIZES sizes take the configured grid; every
later size's grid is the configured one shifted by whole grid steps so that its centre lies nearest the law's
prediction from the sizes swept before it (so rates stay on the configured lattice: 'x0.25,x0.5,x1,x2' may become
'x0.0625,x0.125,x0.25,x0.5' for a large model). When a size's best rate is the lowest or highest of its grid, the
grid grows by one step on that side (one more sweep run) and again, at most MAX_EXTEND times per size; only then
is the edge a warning. Every step reads the finished runs on disk, so a study killed mid-sweep and started again
plans the same runs and reuses the finished ones.

A run's folder name (out_dir/runs/NAME) says everything that sets it apart from the other runs of its size:
    SIZE[.dBUDGET][.lrRATE][.sweepFRACTION]
    gpt_64                      the config's own learning rate on the full budget (what a study without these knobs
                                trains, so such a run from an earlier study is reused as it is)
    gpt_64.lr0.5x, gpt_64.lr0.0003   another rate: a multiple of the config's, or an absolute rate
    gpt_64.lr2x.sweep0.25       a sweep run on a quarter of the budget, with its own (shorter) schedule
    gpt_64.d500k.lr2x           one of token_budgets, at the rate the sweep chose (its argmin)
    gpt_64.lr0.00213            the rate the learning-rate law gives this size, absolute, 3 significant digits
    gpt_64.lr0.00213.seed2      a repeat: the same run with train.py's seed + 1 (initialisation only; the data
                                order is data_seed's, unchanged); .seed3 is seed + 2, and so on
Each run also tells train.py its role (--run_role, written into results.json as "role"; run_files.run_role reads
it): 'sweep' for a sweep run on a share of the budget, 'seed_repeat' for a repeat, 'run' otherwise; train.py marks
a wsd trunk 'trunk' and a branch 'branch' itself. (Until train.py has the knob, study.resolve_run leaves it out.)
So a finished run is reused only where it is the same run, and a new choice of rate trains a new run instead of
overwriting one. A rate other than the config's scales the whole schedule: min_lr keeps its ratio to learning_rate.
A sweep run on a fraction of the budget is the full run's schedule compressed: its warm-up shrinks by the same
fraction. The runs of token_budgets keep the config's warm-up (in steps), as Chinchilla's runs did.
"""
import math

from music_scaling_laws.fits import lr_law
from music_scaling_laws.errors import UserError
from music_scaling_laws.data.dataset import write_json_atomic
from music_scaling_laws.run_files import is_diverged, is_finished, lr_sweep_path, read_results

PENDING = "-best"           # the rate part of a run whose rate the unfinished sweep has yet to choose (plans only)
MAX_EXTEND = 3              # sweep runs added beyond the grid's edge per size before the edge is only a warning


# -----------------------------------------------------------------------------
# the knobs

def parse_rates(text):
    """lr_sweep -> [{text, name, kind, value}], e.g. 'x0.5' -> kind 'x' (a multiple of the config's rate), name
    '0.5x'; '3e-4' -> kind 'abs', name '0.0003'. [] for ''. One-line errors for anything else."""
    rates = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        kind = "x" if word[:1] in "xX" else "abs"
        try:
            value = float(word[1:] if kind == "x" else word)
        except ValueError:
            raise UserError(f"lr_sweep entry {word!r} is neither a multiplier like x0.5 nor a learning rate like 3e-4")
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"lr_sweep entry {word!r}: a {'multiplier' if kind == 'x' else 'learning rate'} must be a positive "
                 f"number")
        rate = make_rate(kind, value)
        if any(r["text"] == rate["text"] for r in rates):
            raise UserError(f"lr_sweep lists {rate['text']} twice")
        rates.append(rate)
    if len({r["kind"] for r in rates}) > 1:
        raise UserError(f"lr_sweep mixes multipliers (x0.5) and learning rates (3e-4): {text!r}; use one kind")
    if len(rates) == 1:
        raise UserError(f"lr_sweep needs at least two rates to compare, got {text!r}")
    return rates


def make_rate(kind, value):
    """A grid rate: kind 'x' (a multiple of the config's rate) or 'abs'; text as lr_sweep writes it, name as a run
    folder does (value rounded to 6 digits, so the name says exactly the rate trained)."""
    value = float(f"{value:.6g}")
    return {"text": f"x{value:g}" if kind == "x" else f"{value:g}", "name": f"{value:g}x" if kind == "x" else
            f"{value:g}", "kind": kind, "value": value}


def parse_seeds(cfg, names=None):
    """{size: runs of it} from seeds (every size, 1 = no repeat) and seed_sizes ('gpt_64:3,lstm_96': only those
    sizes repeated, a size without a count `seeds` times); names: the sizes of `runs`, to check seed_sizes against."""
    if cfg["seeds"] < 1:
        raise UserError(f"seeds must be at least 1 (1 = every run trained once), got {cfg['seeds']}")
    counts = {}
    for word in (w.strip() for w in cfg["seed_sizes"].split(",")):
        if not word:
            continue
        name, _, count = word.partition(":")
        if not count:
            count = str(cfg["seeds"])
        if not count.isdigit() or int(count) < 1:
            raise UserError(f"seed_sizes entry {word!r}: write a size of runs, optionally with a count, like gpt_64:3")
        if names is not None and name not in names:
            raise UserError(f"seed_sizes names {name!r}, which is not a line of runs")
        if name in counts:  # the last count would silently win
            raise UserError(f"seed_sizes names {name} twice ({cfg['seed_sizes']!r}); give each size once, like {name}:3")
        counts[name] = int(count)
    if names is None:
        return counts
    return {n: counts.get(n, 1) for n in names} if counts else {n: cfg["seeds"] for n in names}


def tokens_label(n):
    """500000 -> '500k', 2000000 -> '2M', 16384 -> '16384': exact, short, safe in a folder name."""
    for unit, suffix in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_budgets(text):
    """token_budgets -> [(label, tokens)], smallest first; [] for ''. One-line errors for anything else."""
    budgets = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        try:
            value = float(word)
        except ValueError:
            raise UserError(f"token_budgets entry {word!r} is not a number of tokens like 1e6")
        if not (math.isfinite(value) and value >= 1 and value.is_integer()):
            raise UserError(f"token_budgets entry {word!r} must be a whole number of tokens, at least 1")
        if any(t == int(value) for _, t in budgets):
            raise UserError(f"token_budgets lists {word} twice")
        budgets.append((tokens_label(int(value)), int(value)))
    return sorted(budgets, key=lambda b: b[1])


def check_knobs(cfg):
    """The sweep's and the data axis's settings, checked before anything runs."""
    parse_rates(cfg["lr_sweep"])
    parse_budgets(cfg["token_budgets"])
    parse_seeds(cfg)
    if cfg["lr_choice"] not in ("law", "argmin"):
        raise UserError(f"lr_choice must be 'law' (every size at the learning-rate law's rate) or 'argmin' (each size at its "
             f"sweep's best), got {cfg['lr_choice']!r}")
    if not 0 < cfg["lr_sweep_tokens"] <= 1:
        raise UserError(f"lr_sweep_tokens is the share of the budget a sweep run trains on, in (0, 1]; got "
             f"{cfg['lr_sweep_tokens']}")


# -----------------------------------------------------------------------------
# the plan. resolve(spec) is study.py's resolve_run: the run as train.py will see it (config, size, tokens)

def run_name(size, budget=None, rate=None, sweep=None):
    return size + (f".d{budget}" if budget else "") + (f".lr{rate}" if rate else "") + \
        (f".sweep{sweep:g}" if sweep else "")


def _variant(spec, name, extra, **info):
    return {**spec, "name": name, "overrides": spec["overrides"] + extra, "size": spec["name"], **info}


def _budget(tokens):
    # max_iters=0 too: a step budget in train_args would otherwise silently win over the study's token budget
    return [f"--max_tokens={tokens}", "--max_iters=0"]


def _rate(base, lr):
    """Overrides that train base's run at learning rate lr (none at its own rate, so that run keeps its name)."""
    t = base["train_config"]
    if lr == t["learning_rate"]:
        return []
    # 12 digits: exact enough, and 0.0012 rather than 0.0012000000000000001 in the report's config column
    return [f"--learning_rate={lr:.12g}", f"--min_lr={t['min_lr'] * lr / t['learning_rate']:.12g}"]


def sweep_plan(specs, cfg, resolve):
    """[{size, family, n_params, base, runs, waiting, centred_on, extended}] per line of `runs` (none without
    lr_sweep): base is the size at its config's rate on the full (largest) budget, runs its sweep runs as the
    finished ones on disk make them (grid centred on the law of the smaller sizes, extended at an edge), lowest
    rate first. waiting: a smaller size of the family is still being swept, so this grid is the configured one
    for now (shown by a dry run, not trained)."""
    rates = parse_rates(cfg["lr_sweep"])
    if not rates:
        return []
    budgets = parse_budgets(cfg["token_budgets"])
    top = budgets[-1] if budgets else (None, None)
    fraction = cfg["lr_sweep_tokens"] if cfg["lr_sweep_tokens"] < 1 else None
    sizes = []
    for spec in specs:
        base = resolve(_variant(spec, run_name(spec["name"], top[0]), _budget(top[1]) if top[1] else []))
        sizes.append({"size": spec["name"], "family": base["model_type"], "n_params": base["n_params"],
                      "spec": spec, "base": base, "extra": _sweep_extra(base, top, fraction), "runs": [],
                      "waiting": False, "centred_on": None, "extended": 0})

    def sweep_run(s, rate):
        lr0 = s["base"]["train_config"]["learning_rate"]
        lr = _lr_of(rate, lr0)
        name = run_name(s["size"], top[0], None if lr == lr0 else rate["name"], fraction)
        # a sweep on a share of the budget is a run of its own (role 'sweep'); on the whole budget it is the size's
        # run for the fits at that rate
        role = ["--run_role=sweep"] if fraction else []
        return resolve(_variant(s["spec"], name, s["extra"] + _rate(s["base"], lr) + role, lr=lr,
                                rate=rate["text"], rate_name=rate["name"], grid_rate=rate, waiting=s["waiting"],
                                role="sweep" if fraction else "run"))

    for fam in dict.fromkeys(s["family"] for s in sizes):
        swept, blocked = [], False
        for j, s in enumerate(sorted((s for s in sizes if s["family"] == fam), key=lambda s: s["n_params"])):
            # the first sizes take the configured grid at once; a later one waits for every smaller size
            grid, s["waiting"] = rates, blocked and j >= lr_law.MIN_CENTRE_SIZES
            if not blocked and j >= lr_law.MIN_CENTRE_SIZES:
                law = lr_law.fit_law(swept, cfg["ci_level"])
                if "error" not in law:
                    s["centred_on"] = lr_law.rate(law["a"], law["b"], s["n_params"])
                    grid = centre_grid(rates, s["base"]["train_config"]["learning_rate"], s["centred_on"])
            s["runs"] = sorted((sweep_run(s, r) for r in grid), key=lambda r: r["lr"])
            while not s["waiting"]:
                points = sweep_points(s["runs"])
                if not all(p["finished"] for p in points):
                    blocked = True  # the larger sizes wait for this one
                    break
                side = edge(points, best_point(points, s["size"]))
                if not side or s["extended"] >= MAX_EXTEND:
                    swept.append({"size": s["size"], "n_params": s["n_params"], "points": points})
                    break
                s["runs"] = sorted(s["runs"] + [sweep_run(s, extend_grid([r["grid_rate"] for r in s["runs"]], side))],
                                   key=lambda r: r["lr"])
                s["extended"] += 1
    return sizes


def _sweep_extra(base, top, fraction):
    """The budget (and warm-up) overrides of a size's sweep runs."""
    extra = _budget(top[1]) if top[1] else []
    if fraction and base["tokens"]:  # (0 tokens: one epoch of a dataset not prepared yet, in a dry run)
        tokens = max(1, int(fraction * base["tokens"]))
        extra = _budget(tokens)
        # the full run's warm-up, not one shrunk with the budget: a warm-up of a few steps punishes the high rates
        # that the full run's warm-up makes safe, and the sweep chose rates ~4x too low for the quick study
        # (gpt_32 lost 0.134 nats, 2026-11-29). Only a sweep run too short for it gets half its steps of warm-up.
        tcfg = base["train_config"]
        steps = tokens // (tcfg["batch_size"] * tcfg["block_size"] * tcfg["gradient_accumulation_steps"])
        if tcfg["warmup_iters"] > steps // 2:
            extra.append(f"--warmup_iters={max(1, steps // 2)}")
    # a sweep run is judged by its final exact validation pass alone; estimates on the way would cost ~4% of its
    # steps (the first, at iteration 0, is the same for every rate of a size) and change none of its numbers
    return extra + ["--eval_interval=0"]


def _lr_of(rate, lr0):
    return rate["value"] * lr0 if rate["kind"] == "x" else rate["value"]


def centre_grid(rates, lr0, target):
    """The grid shifted by the whole number of its (mean) steps that puts its geometric centre nearest target."""
    lrs = sorted(_lr_of(r, lr0) for r in rates)
    step = (lrs[-1] / lrs[0]) ** (1 / (len(lrs) - 1))
    centre = math.exp(sum(math.log(x) for x in lrs) / len(lrs))
    shift = math.floor(math.log(target / centre) / math.log(step) + 0.5)
    return rates if shift == 0 else [make_rate(r["kind"], r["value"] * step ** shift) for r in rates]


def extend_grid(rates, side):
    """One more rate beyond the lowest (side -1) or highest (+1) of a grid, a step as wide as its outermost."""
    v = sorted(r["value"] for r in rates)
    return make_rate(rates[0]["kind"], v[0] ** 2 / v[1] if side < 0 else v[-1] ** 2 / v[-2])


def sweep_points(runs):
    """[{run, rate, lr, val_loss, diverged, finished}] of a size's sweep runs (lowest rate first)."""
    points = []
    for r in runs:
        outcome = run_outcome(r["run_dir"])
        points.append({"run": r["name"], "rate": r["rate"], "lr": r["lr"],
                       "val_loss": None if outcome is None or outcome[1] else outcome[0],
                       "diverged": bool(outcome and outcome[1]), "finished": outcome is not None})
    return points


def best_point(points, size):
    """The index of the finished point with the lowest loss; every rate diverged is an error."""
    finite = [i for i, p in enumerate(points) if not p["diverged"]]
    if not finite:
        raise UserError(f"every learning rate of the sweep of {size} diverged; lower the rates of lr_sweep")
    return min(finite, key=lambda i: points[i]["val_loss"])


def edge(points, best):
    """-1 / +1 when the best rate is the lowest / highest of the grid (the optimum may lie beyond), else 0."""
    return -1 if best == 0 else 1 if best == len(points) - 1 else 0


def run_outcome(run_dir):
    """(final validation loss, diverged) of a finished run; None while it is not finished."""
    if is_finished(run_dir):
        return float(read_results(run_dir)["val_loss"]), False
    if is_diverged(run_dir):
        return math.inf, True
    return None


def choose_rates(sizes, cfg, strict=True):
    """{lr_choice, sizes, laws, warnings}. sizes, per size: {size, family, n_params, tokens, points: [{run, rate,
    lr, val_loss, diverged}], best, warning, extended, centred_on, lr_argmin, lr_law, lr, by}: best is the index of
    the point with the lowest final validation loss (None while a sweep run is unfinished, or with strict an
    error); lr the rate the size is trained at, by 'law' or 'argmin'. laws: lr_law.fit_law per family, once every
    size of the family is swept. warning: the best rate is still at an end of the grid after MAX_EXTEND steps."""
    out = []
    for s in sizes:
        points = sweep_points(s["runs"])
        best, warning = None, None
        if all(p["finished"] for p in points) and not s["waiting"]:
            best = best_point(points, s["size"])
            side = edge(points, best)
            if side:
                end, way = ("lowest", "lower") if side < 0 else ("highest", "higher")
                p = points[best]
                warning = (f"{s['size']}: the best learning rate, {p['lr']:.3g} ({p['rate']}), is the {end} of the "
                           f"sweep even after {s['extended']} more step(s) {way}, so the optimum may lie beyond it; "
                           f"add a {way} rate to lr_sweep.")
        elif strict:
            raise UserError(f"the sweep of {s['size']} is not finished")
        for p in points:
            del p["finished"]
        first = s["runs"][0]
        out.append({"size": s["size"], "family": first["model_type"], "n_params": first["n_params"],
                    "tokens": first["tokens"], "points": points, "best": best, "warning": warning,
                    "extended": s["extended"], "centred_on": s["centred_on"],
                    "lr_argmin": None if best is None else points[best]["lr"], "lr_law": None,
                    "lr": None, "by": "argmin"})
    laws, warnings = {}, []
    for fam in dict.fromkeys(c["family"] for c in out):
        family = [c for c in out if c["family"] == fam]
        if any(c["best"] is None for c in family):
            continue  # (the law takes every size: no rate of the family is chosen before)
        for c in family:
            c["lr"] = c["lr_argmin"]
        law = laws[fam] = lr_law.fit_law(family, cfg["ci_level"])
        for c in family if "error" not in law else []:
            c["lr_law"] = float(f"{law['rates'][c['size']]:.3g}")  # the rate trained, as its run name says it
        if cfg["lr_choice"] != "law":
            continue
        if len(family) < lr_law.MIN_LAW_SIZES:
            warnings.append(f"{fam}: {len(family)} swept size(s), fewer than the {lr_law.MIN_LAW_SIZES} a "
                            f"learning-rate law needs; each size is trained at its sweep's best rate (argmin)")
        elif "error" in law:
            warnings.append(f"{fam}: no learning-rate law ({law['error']}); each size is trained at its sweep's "
                            f"best rate (argmin)")
        else:
            for c in family:
                c["lr"], c["by"] = c["lr_law"], "law"
    return {"lr_choice": cfg["lr_choice"], "sizes": out, "laws": laws, "warnings": warnings}


def final_plan(specs, cfg, resolve, sizes, choice):
    """The runs the fits, the best model, the samples and the report use: every size at every budget (the largest
    marked top_budget), at the rate the sweep chose (a placeholder named PENDING while the sweep is unfinished),
    and its repeats with other seeds (seeds, seed_sizes; marked repeat = 2, 3, ...)."""
    budgets = parse_budgets(cfg["token_budgets"]) or [(None, None)]
    repeats = parse_seeds(cfg, [spec["name"] for spec in specs])
    sweep = {s["size"]: s for s in sizes}
    chosen = {c["size"]: c for c in (choice or {"sizes": []})["sizes"]}
    plan = []
    for spec in specs:
        for k, (label, tokens) in enumerate(budgets):
            extra = _budget(tokens) if tokens else []
            info = {"top_budget": k == len(budgets) - 1, "pending": False}
            rate = None
            if spec["name"] in sweep:
                base, c = sweep[spec["name"]]["base"], chosen[spec["name"]]
                if c["lr"] is None:
                    rate, info["pending"] = PENDING, True
                else:
                    extra = extra + _rate(base, c["lr"])
                    # the config's own rate keeps the plain name, a swept one its sweep's (so a sweep on the full
                    # budget is its own final run), a law's rate between them its value
                    rate = None if c["lr"] == base["train_config"]["learning_rate"] else next(
                        (r["rate_name"] for r in sweep[spec["name"]]["runs"] if r["lr"] == c["lr"]), f"{c['lr']:g}")
                    info.update(lr=c["lr"], rate="law" if c["by"] == "law" else c["points"][c["best"]]["rate"])
            run = resolve(_variant(spec, run_name(spec["name"], label, rate), extra, **info))
            plan.append(run)
            for seed in range(2, repeats[spec["name"]] + 1):
                # only the initialisation seed differs: data_seed (the data order) is left as it is
                plan.append(resolve(_variant(spec, run["name"] + f".seed{seed}", extra + [
                    f"--seed={run['train_config']['seed'] + seed - 1}", "--run_role=seed_repeat"], **info,
                    repeat=seed, role="seed_repeat")))
    plan = wsd_branches(plan, cfg, resolve)
    check_names(sizes, plan)
    return plan


def wsd_branches(plan, cfg, resolve):
    """With a wsd schedule (train.py's lr_schedule='wsd') and several token_budgets, the runs of one size, rate and
    seed that differ only in their budget become branches of one trunk (study.py's knob wsd_branches): the trunk
    SIZE[.lrRATE][.seedK].trunk trains the constant rate up to the largest budget's cooldown, each budget's run
    trains its cooldown from the trunk's checkpoint (train.py --init_from=branch), and is still that budget's run,
    bit for bit. The trunk rides along in each branch as trunk_run; trunks(plan) lists them."""
    budgets = parse_budgets(cfg["token_budgets"])
    if not cfg["wsd_branches"] or len(budgets) < 2:
        return plan
    out, trunk_of = [], {}
    trunk_args = ["--max_tokens=0", "--max_iters=0", f"--branch_budgets={','.join(str(t) for _, t in budgets)}"]
    for r in plan:
        if r["train_config"]["lr_schedule"] != "wsd":
            out.append(r)
            continue
        budget = f".d{tokens_label(int(r['train_config']['max_tokens']))}"
        rest = r["name"][len(r["size"]):]
        key = r["size"] + rest.replace(budget, "", 1) + ".trunk"  # gpt_64.d500k.lr2x.seed2 -> gpt_64.lr2x.seed2.trunk
        if key not in trunk_of:
            trunk_of[key] = resolve({"name": key, "config": r["config"], "size": r["size"], "trunk": True,
                                     "role": "trunk", "overrides": r["overrides"] + trunk_args})
        trunk = trunk_of[key]
        out.append(resolve({**r, "trunk_run": trunk, "role": "branch",
                            "overrides": r["overrides"] + ["--init_from=branch", f"--branch_from={trunk['run_dir']}"]}))
    return out


def trunks(runs):
    """The wsd trunks the branches among runs start from, each once, in order (train them before the branches)."""
    return list({r["trunk_run"]["name"]: r["trunk_run"] for r in runs if r.get("trunk_run")}.values())


def check_names(sizes, plan):
    """Two sizes must never make the same run (a line of `runs` named like another's sweep run)."""
    owner = {}
    for r in [r for s in sizes for r in s["runs"]] + plan:
        if owner.setdefault(r["name"], r["size"]) != r["size"]:
            raise UserError(f"run name {r['name']} is made by both {owner[r['name']]} and {r['size']}; rename one of them in runs")


def all_runs(sizes, plan):
    """Every run of the study once, size by size: the sweep runs, then the runs for the fits not among them."""
    swept = {r["name"] for s in sizes for r in s["runs"]}
    out = []
    for size in dict.fromkeys(r["size"] for r in plan):
        out += [r for s in sizes if s["size"] == size for r in s["runs"]]
        out += trunks(r for r in plan if r["size"] == size)
        out += [r for r in plan if r["size"] == size and r["name"] not in swept]
    return out


# -----------------------------------------------------------------------------
# training and reporting the sweep

def train_sweep(replan, cfg, timings, logs, train_all):
    """Train the sweep round by round (train_runs.train_all: finished runs skipped, interrupted ones resumed):
    replan() is sweep_plan on the runs finished so far, so each round trains what the last one made known (a
    larger size's centred grid, a step beyond an edge) until nothing is left; returns the final sweep_plan. A run
    whose loss becomes NaN or inf is a result of the sweep (its rate is too high), marked diverged and not run
    again; any other failure stops the study as usual."""
    first = True
    while True:
        sizes = replan()
        todo = [r for s in sizes if not s["waiting"] for r in s["runs"]
                if not is_diverged(r["run_dir"])
                and (first or run_outcome(r["run_dir"]) is None)]  # the finished ones are said once, not each round
        if all(run_outcome(r["run_dir"]) is not None for r in todo):
            if first and todo:
                train_all(todo, cfg, timings, logs)  # nothing to train: says so for each finished run
            return sizes
        first = False
        try:
            train_all(todo, cfg, timings, logs)
        except UserError:
            # train.py leaves the diverged marker in a run whose loss became NaN/inf; any other failure stops the study
            hit = [r for r in todo if is_diverged(r["run_dir"])]
            if not hit:
                raise
            for r in hit:
                print(f"[lr sweep] {r['name']} diverged at learning rate {r['lr']:.3g}: counted as a result of the "
                      f"sweep (loss = inf); the sweep goes on", flush=True)


def print_choice(choice):
    """One line per size: the best rate of its sweep and the rate it is trained at, or what is still to run; the
    law per family; then the warnings."""
    for c in choice["sizes"]:
        losses = ", ".join(f"{p['rate']}: " + ("diverged" if p["diverged"] else "–" if p["val_loss"] is None
                                               else f"{p['val_loss']:.4f}") for p in c["points"])
        if c["best"] is None:
            print(f"[lr sweep] {c['size']}: not finished ({losses}); its runs for the fits wait for the choice")
        else:
            p = c["points"][c["best"]]
            print(f"[lr sweep] {c['size']}: best {p['rate']} = learning rate {p['lr']:.3g} ({losses})"
                  + (f"; trained at the law's {c['lr']:.3g}" if c["by"] == "law" else ""))
    for fam, law in choice["laws"].items():
        if "error" not in law:
            print(f"[lr law] {fam}: {lr_law.describe(law)}")
            for w in law["warnings"]:
                print(f"[lr law] WARNING: {fam}: {w}")
    for w in [c["warning"] for c in choice["sizes"] if c["warning"]] + choice["warnings"]:
        print(f"[lr sweep] WARNING: {w}")


def write_choice(choice, study_dir):
    """The sweep's choice (choose_rates) into the study folder, where report.md links it."""
    write_json_atomic(choice, lr_sweep_path(study_dir), indent=1)
