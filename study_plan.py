"""
The runs of a study beyond one per line of `runs`: a learning-rate sweep per size (study.py's knobs lr_sweep and
lr_sweep_tokens), a data axis (token_budgets), and the choice of each size's rate from its sweep.

A run's folder name (out_dir/runs/NAME) says everything that sets it apart from the other runs of its size:
    SIZE[.dBUDGET][.lrRATE][.sweepFRACTION]
    gpt_64                      the config's own learning rate on the full budget (what a study without these knobs
                                trains, so such a run from an earlier study is reused as it is)
    gpt_64.lr0.5x, gpt_64.lr0.0003   another rate: a multiple of the config's, or an absolute rate
    gpt_64.lr2x.sweep0.25       a sweep run on a quarter of the budget, with its own (shorter) schedule
    gpt_64.d500k.lr2x           one of token_budgets, at the rate the sweep chose
So a finished run is reused only where it is the same run, and a new choice of rate trains a new run instead of
overwriting one. A rate other than the config's scales the whole schedule: min_lr keeps its ratio to learning_rate.
A sweep run on a fraction of the budget is the full run's schedule compressed: its warm-up shrinks by the same
fraction. The runs of token_budgets keep the config's warm-up (in steps), as Chinchilla's runs did.
"""
import math
import os

from configurator import fail
from dataset import read_json, write_json_atomic

DIVERGED = "diverged.json"  # written into a sweep run whose loss became NaN/inf: a result of the sweep, not a failure
PENDING = "-best"           # the rate part of a run whose rate the unfinished sweep has yet to choose (plans only)


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
            fail(f"lr_sweep entry {word!r} is neither a multiplier like x0.5 nor a learning rate like 3e-4")
        if not (math.isfinite(value) and value > 0):
            fail(f"lr_sweep entry {word!r}: a {'multiplier' if kind == 'x' else 'learning rate'} must be a positive "
                 f"number")
        text_ = f"x{value:g}" if kind == "x" else f"{value:g}"
        if any(r["text"] == text_ for r in rates):
            fail(f"lr_sweep lists {text_} twice")
        rates.append({"text": text_, "name": f"{value:g}x" if kind == "x" else f"{value:g}", "kind": kind,
                      "value": value})
    if len({r["kind"] for r in rates}) > 1:
        fail(f"lr_sweep mixes multipliers (x0.5) and learning rates (3e-4): {text!r}; use one kind")
    if len(rates) == 1:
        fail(f"lr_sweep needs at least two rates to compare, got {text!r}")
    return rates


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
            fail(f"token_budgets entry {word!r} is not a number of tokens like 1e6")
        if not (math.isfinite(value) and value >= 1 and value.is_integer()):
            fail(f"token_budgets entry {word!r} must be a whole number of tokens, at least 1")
        if any(t == int(value) for _, t in budgets):
            fail(f"token_budgets lists {word} twice")
        budgets.append((tokens_label(int(value)), int(value)))
    return sorted(budgets, key=lambda b: b[1])


def check_knobs(cfg):
    """The sweep's and the data axis's settings, checked before anything runs."""
    parse_rates(cfg["lr_sweep"])
    parse_budgets(cfg["token_budgets"])
    if not 0 < cfg["lr_sweep_tokens"] <= 1:
        fail(f"lr_sweep_tokens is the share of the budget a sweep run trains on, in (0, 1]; got "
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
    """[{size, base, runs}] per line of `runs` (none without lr_sweep): base is the size at its config's rate on the
    full (largest) budget, runs its sweep runs, lowest rate first."""
    rates = parse_rates(cfg["lr_sweep"])
    if not rates:
        return []
    budgets = parse_budgets(cfg["token_budgets"])
    top = budgets[-1] if budgets else (None, None)
    fraction = cfg["lr_sweep_tokens"] if cfg["lr_sweep_tokens"] < 1 else None
    sizes = []
    for spec in specs:
        base = resolve(_variant(spec, run_name(spec["name"], top[0]), _budget(top[1]) if top[1] else []))
        extra = _budget(top[1]) if top[1] else []
        if fraction and base["tokens"]:  # (0 tokens: one epoch of a dataset not prepared yet, in a dry run)
            extra = _budget(max(1, int(fraction * base["tokens"])))
            # the warm-up shrinks with the budget, so a sweep run's schedule has the full run's shape: a fixed
            # 30-step warm-up would be half of a quarter-budget run of the quick study
            warmup = base["train_config"]["warmup_iters"]
            if round(warmup * fraction) != warmup:
                extra.append(f"--warmup_iters={round(warmup * fraction)}")
        lr0, runs = base["train_config"]["learning_rate"], []
        for rate in rates:
            lr = rate["value"] * lr0 if rate["kind"] == "x" else rate["value"]
            name = run_name(spec["name"], top[0], None if lr == lr0 else rate["name"], fraction)
            runs.append(resolve(_variant(spec, name, extra + _rate(base, lr), lr=lr, rate=rate["text"],
                                         rate_name=rate["name"])))
        sizes.append({"size": spec["name"], "base": base, "runs": sorted(runs, key=lambda r: r["lr"])})
    return sizes


def run_outcome(run_dir):
    """(final validation loss, diverged) of a finished run; None while it is not finished."""
    if os.path.isfile(os.path.join(run_dir, "results.json")):
        return float(read_json(os.path.join(run_dir, "results.json"))["val_loss"]), False
    if os.path.isfile(os.path.join(run_dir, DIVERGED)):
        return math.inf, True
    return None


def choose_rates(sizes, strict=True):
    """Per size: {size, family, n_params, tokens, points: [{run, rate, lr, val_loss, diverged}], best, warning}.
    best is the index of the point with the lowest final validation loss; while a sweep run is unfinished it is None,
    or with strict an error. A size whose every rate diverged is always an error. warning: the best rate is at an
    end of the grid, so the optimum may lie beyond it."""
    out = []
    for s in sizes:
        points = []
        for r in s["runs"]:
            outcome = run_outcome(r["run_dir"])
            points.append({"run": r["name"], "rate": r["rate"], "lr": r["lr"],
                           "val_loss": None if outcome is None or outcome[1] else outcome[0],
                           "diverged": bool(outcome and outcome[1]), "finished": outcome is not None})
        best, warning = None, None
        if all(p["finished"] for p in points):
            finite = [i for i, p in enumerate(points) if not p["diverged"]]
            if not finite:
                fail(f"every learning rate of the sweep of {s['size']} diverged; lower the rates of lr_sweep")
            best = min(finite, key=lambda i: points[i]["val_loss"])
            if best in (0, len(points) - 1):
                end, way = ("lowest", "lower") if best == 0 else ("highest", "higher")
                p = points[best]
                warning = (f"{s['size']}: the best learning rate, {p['lr']:.3g} ({p['rate']}), is the {end} of the "
                           f"sweep, so the optimum may lie beyond it; add a {way} rate to lr_sweep.")
        elif strict:
            fail(f"the sweep of {s['size']} is not finished")
        for p in points:
            del p["finished"]
        first = s["runs"][0]
        out.append({"size": s["size"], "family": first["model_type"], "n_params": first["n_params"],
                    "tokens": first["tokens"], "points": points, "best": best, "warning": warning})
    return out


def final_plan(specs, cfg, resolve, sizes, choice):
    """The runs the fits, the best model, the samples and the report use: every size at every budget (the largest
    marked top_budget), at the rate its sweep chose (a placeholder named PENDING while the sweep is unfinished)."""
    budgets = parse_budgets(cfg["token_budgets"]) or [(None, None)]
    sweep = {s["size"]: s for s in sizes}
    chosen = {c["size"]: c for c in choice}
    plan = []
    for spec in specs:
        for k, (label, tokens) in enumerate(budgets):
            extra = _budget(tokens) if tokens else []
            info = {"top_budget": k == len(budgets) - 1, "pending": False}
            rate = None
            if spec["name"] in sweep:
                base, c = sweep[spec["name"]]["base"], chosen[spec["name"]]
                if c["best"] is None:
                    rate, info["pending"] = PENDING, True
                else:
                    p = c["points"][c["best"]]
                    extra = extra + _rate(base, p["lr"])
                    rate = None if p["lr"] == base["train_config"]["learning_rate"] else \
                        next(r["rate_name"] for r in sweep[spec["name"]]["runs"] if r["name"] == p["run"])
                    info.update(lr=p["lr"], rate=p["rate"])
            plan.append(resolve(_variant(spec, run_name(spec["name"], label, rate), extra, **info)))
    check_names(sizes, plan)
    return plan


def check_names(sizes, plan):
    """Two sizes must never make the same run (a line of `runs` named like another's sweep run)."""
    owner = {}
    for r in [r for s in sizes for r in s["runs"]] + plan:
        if owner.setdefault(r["name"], r["size"]) != r["size"]:
            fail(f"run name {r['name']} is made by both {owner[r['name']]} and {r['size']}; rename one of them in runs")


def all_runs(sizes, plan):
    """Every run of the study once, size by size: the sweep runs, then the runs for the fits not among them."""
    swept = {r["name"] for s in sizes for r in s["runs"]}
    out = []
    for size in dict.fromkeys(r["size"] for r in plan):
        out += [r for s in sizes if s["size"] == size for r in s["runs"]]
        out += [r for r in plan if r["size"] == size and r["name"] not in swept]
    return out


# -----------------------------------------------------------------------------
# training and reporting the sweep

def train_sweep(sizes, cfg, timings, logs, train_all):
    """Train every sweep run (script_runs.train_all: finished ones skipped, interrupted ones resumed). A run whose
    loss becomes NaN or inf is a result of the sweep (its rate is too high), marked DIVERGED and not run again;
    any other failure stops the study as usual."""
    runs = [r for s in sizes for r in s["runs"]]
    while True:
        todo = [r for r in runs if not os.path.isfile(os.path.join(r["run_dir"], DIVERGED))]
        try:
            return train_all(todo, cfg, timings, logs)
        except SystemExit as e:
            message = str(e.code)
            hit = next((r for r in todo if f"training {r['name']} failed" in message), None)
            if hit is None or "loss became" not in message:
                raise
            os.makedirs(hit["run_dir"], exist_ok=True)
            write_json_atomic({"message": message}, os.path.join(hit["run_dir"], DIVERGED))
            print(f"[lr sweep] {hit['name']} diverged at learning rate {hit['lr']:.3g}: counted as a result of the "
                  f"sweep (loss = inf); the sweep goes on", flush=True)


def print_choice(choice):
    """One line per size: the chosen rate, or what is still to run; then the edge-of-grid warnings."""
    for c in choice:
        losses = ", ".join(f"{p['rate']}: " + ("diverged" if p["diverged"] else "–" if p["val_loss"] is None
                                               else f"{p['val_loss']:.4f}") for p in c["points"])
        if c["best"] is None:
            print(f"[lr sweep] {c['size']}: not finished ({losses}); its runs for the fits wait for the choice")
        else:
            p = c["points"][c["best"]]
            print(f"[lr sweep] {c['size']}: best {p['rate']} = learning rate {p['lr']:.3g} ({losses})")
    for c in choice:
        if c["warning"]:
            print(f"[lr sweep] WARNING: {c['warning']}")


def write_choice(choice, path):
    write_json_atomic({"sizes": choice}, path, indent=1)
