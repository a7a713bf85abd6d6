"""
Scaling laws L(N) fitted to training runs: reading the runs (run folders or a CSV table), the fit policy (which runs
each fit sees), the fits with their intervals and plain-language warnings, and fit.json / fit.md. plots.py draws the
fits, scaling.py is the command line, study.py fits the runs of a study: both through fit_all and write_fit, so the
same runs give the same fit.json.

The fit policy (select_runs), per model family (gpt, lstm, ...):
  - L(N) is fitted on the family's largest token budget (fit.json: budget_tokens and runs), so that its exponent is
    not mixed with the data axis; where the runs span several budgets, every run enters the joint
    L(N, D) = E + A/N^alpha + B/D^beta of joint_fit.py, with its compute-optimal frontier.
  - Runs of one size and budget that differ only in seed are repeats: their spread is the run-to-run noise sigma
    (run_to_run_noise), and the intervals are scaled by it.
  - N is all parameters or the non-embedding ones (fit_params; fit.json: n_fitted).
On those runs fit_all fits
    L = a * N^(-alpha) + c      (saturating power law, c = irreducible loss)
    L = a * N^(-alpha)          (pure power law, the Kaplan et al. form)
and, where the largest model is not the best, alpha without it (alpha_without_largest).

Why not a plain scipy curve_fit: with 4-6 points the least-squares problem is ill-posed and its answer depends
on the starting point and on the unit of N (one seed's table gives alpha~0.87 with N in millions and alpha~3.8
with N in parameters). So, following the Chinchilla "approach 3" recipe (fitting.py: Huber loss on log-loss
residuals, a grid of starts), we work with log N centred on its mean, so multiplying N by any constant changes only
`a`, never alpha or c, and we add plain-language warnings whenever the data cannot pin the fit down. The intervals
are a parametric bootstrap around the fitted curve with the measured noise (fit_power_law says how; docs/fits.md
says what they mean and what coverage a simulation measured).

The settings a user chooses (n_bootstrap, ci_level, seed, fit_params) are arguments of fit_all; every fit records
its ci_level, so the markdown and the plots read it from the fits instead of from a setting that could disagree.
"""
import csv
import json
import math
import os
import re
import sys

import numpy as np

from music_scaling_laws.data.dataset import write_json_atomic
from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.fitting import (ALPHA_BOUNDS, CI_LEVEL, N_BOOTSTRAP, SEED, ci_text, fit_batch, fmt, human, interval, percent,
                     refit, simulated_noise)
from music_scaling_laws.fits.fitting import with_ci  # noqa: F401  (study.py reads it from here)
from music_scaling_laws.fits.joint_fit import fit_family_joint, joint_markdown
from music_scaling_laws.run_files import FIT_JSON, FIT_MD, PERPLEXITY_SUFFIX, RESULTS, is_finished, read_perplexity, read_results

SWEEP_RUN = re.compile(r"\.sweep[0-9.e+-]+$")  # the suffix study_plan.run_name gives a learning-rate sweep run
MIN_POINTS = 3         # fewer distinct model sizes than this cannot define a 3-parameter curve
MIN_SIZES_FOR_CI = 5   # without repeated runs, an exponent interval needs this many sizes: the residual scatter of a
                       # 3-parameter curve through 4 sizes has 1 degree of freedom and can say nothing about the noise
                       # (issue 24: on 4-size tables with 1% noise, 95% intervals held the truth 7 times in 10)
SAME_BUDGET = 1.1      # token counts within this factor of a budget's smallest are one budget: runs of one max_tokens
                       # differ by up to an optimizer step, and real token budgets of a study are 2x or more apart
FIT_PARAMS = ("all", "non_embedding")  # which parameter count N the fits use (the fit_params knob)
REFIT_MAX_ITER = 100   # solver steps per bootstrap refit: where sizes repeat, the Huber loss is nearly flat between a
                       # size's runs and the solver creeps on for hundreds of steps; intervals moved < 0.003 in alpha
                       # (< 3% of their width) from 400 steps to 100, at a quarter of the time

REQUIRED_COLUMNS = ("family", "n_params", "loss")
NUMBER_COLUMNS = ("n_params_non_embedding", "tokens", "wall_time_s", "peak_mem_bytes", "flops", "dataset_tokens")
OPTIONAL_COLUMNS = NUMBER_COLUMNS + ("seed", "run")


def check_settings(n_bootstrap, ci_level, fit_params="all"):
    """Raise UserError for settings no fit can use (study.py checks before hours of training, not after)."""
    if n_bootstrap < 1:
        raise UserError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0 < ci_level < 1:
        raise UserError(f"ci_level must be between 0 and 1, got {ci_level}")
    if fit_params not in FIT_PARAMS:
        raise UserError(f"fit_params must be {' or '.join(repr(x) for x in FIT_PARAMS)}, got {fit_params!r}")


# -----------------------------------------------------------------------------
# input: run folders or a table

def _number(value, what):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} is not a number: {value!r}")
    if not math.isfinite(x):
        raise UserError(f"{what} is not finite: {value!r}")
    return x


def load_table(path):
    """Rows of a CSV with columns family,n_params,loss (+ optional columns) -> list of run dicts. A file that is not
    text, and counts of parameters or tokens that are not positive, are UserErrors (a zero or negative token
    count used to be taken for a missing one, and the joint fit vanished without a word)."""
    if not os.path.isfile(path):
        raise UserError(f"table {path} " + ("is a folder, not a CSV file" if os.path.isdir(path) else "not found"))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _table_rows(path, csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a CSV text file ({e.__class__.__name__}: {str(e)[:80]})")


def _table_rows(path, reader):
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {','.join(missing)} (needs {','.join(REQUIRED_COLUMNS)}; "
                         f"has {','.join(columns) or 'nothing'})")
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        raw = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(raw.values()):
            continue
        where = f"{path} line {line_no}"
        row = {"family": raw["family"], "run": raw.get("run") or f"{raw['family']}-{raw['n_params']}",
               "n_params": _number(raw["n_params"], f"{where}: n_params"),
               "loss": _number(raw["loss"], f"{where}: loss")}
        for col in NUMBER_COLUMNS:
            row[col] = _number(raw[col], f"{where}: {col}") if raw.get(col) else None
        # a table without a seed column: rows of one size and budget are taken for repeats (what else would a
        # table repeat?); with one, rows that share a seed are the same run twice
        row["seed"] = raw.get("seed") or None if "seed" in columns else f"row {line_no}"
        row["lr"] = None
        for col in ("n_params", "n_params_non_embedding", "tokens", "flops", "dataset_tokens"):
            if row[col] is not None and row[col] <= 0:
                raise UserError(f"{where}: {col} must be positive, got {raw[col]}")
        for col in ("wall_time_s", "peak_mem_bytes"):  # 0 reads as not measured; below, the efficiency plots break
            if row[col] is not None and row[col] < 0:
                raise UserError(f"{where}: {col} must not be negative (0 or empty: not measured), got {raw[col]}")
        if not row["family"]:
            raise UserError(f"{where}: empty family")
        rows.append(row)
    if not rows:
        raise UserError(f"{path} has no data rows")
    return rows, "loss"


def find_run_dirs(paths):
    """Run folders given directly, or the run sub-folders of a folder that holds several runs."""
    run_dirs = []
    for p in paths:
        if not os.path.isdir(p):
            raise UserError(f"run folder {p} " + ("is a file, not a folder" if os.path.exists(p) else "not found"))
        if is_finished(p):
            run_dirs.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p)
                      if is_finished(os.path.join(p, d)))
        if not subs:
            raise UserError(f"{p} has no {RESULTS} (is training finished?) and no run folders inside")
        # a study's learning-rate sweep runs (study_plan.run_name: NAME.sweepFRACTION) trained on a share of the
        # budget with their own schedule: measurements of the rate, not points of a law (study.py leaves them out
        # of its fits, so scaling.py on the study's runs/ folder must too); named directly they are fitted
        sweeps = [d for d in subs if SWEEP_RUN.search(os.path.basename(d))]
        if sweeps:
            print(f"note: {len(sweeps)} learning-rate sweep run(s) in {p} left out of the fits "
                  f"({os.path.basename(sweeps[0])}, ...); name a run folder directly to fit it", file=sys.stderr)
        run_dirs.extend(d for d in subs if d not in sweeps)
    return run_dirs


def test_loss_of(run_dir, results=None):
    """Test-split loss written next to the run by calc_perplexity.py --out_file (run_files.perplexity_path), or None
    when there is none, or it is stale or damaged (then a one-line warning naming the file goes to stderr)."""
    ppl, why = read_perplexity(run_dir, "test", results)
    if why:
        print(f"warning: {why}", file=sys.stderr)
    return ppl.get("loss") if ppl else None


def load_runs(paths, loss="auto"):
    """results.json of each run -> list of run dicts. loss: 'test', 'val' or 'auto' (test when every run has it)."""
    run_dirs = find_run_dirs(paths)
    rows = []
    for d in run_dirs:
        try:
            res = read_results(d)
        except json.JSONDecodeError as e:
            raise UserError(f"{d}/{RESULTS} is not valid JSON ({e})")
        if res.get("branch_budgets"):  # a wsd trunk (train.py): stopped before any cooldown, its branches are the runs
            continue
        for key in ("model_type", "n_params", "val_loss"):
            if res.get(key) is None:
                raise UserError(f"{d}/{RESULTS} lacks {key}")
        config = res.get("config") or {}
        tokens, epochs = _float_or_none(res.get("tokens_trained")), _float_or_none(res.get("epochs"))
        rows.append({"family": res["model_type"], "run": os.path.basename(os.path.normpath(d)), "run_dir": d,
                     "n_params": float(res["n_params"]),
                     "n_params_non_embedding": _float_or_none(res.get("n_params_non_embedding")),
                     "tokens": tokens,
                     "wall_time_s": _float_or_none(res.get("wall_time_s")),
                     "peak_mem_bytes": _float_or_none(res.get("peak_mem_bytes")),
                     # the FLOPs the model computes (train.py: flops_per_token x tokens), not 6·N·D
                     "flops": _float_or_none(res.get("train_flops")),
                     # the training split's size: tokens_trained / epochs (one epoch = every train window once)
                     "dataset_tokens": tokens / epochs if tokens and epochs else None,
                     "seed": config.get("seed"), "lr": config.get("learning_rate"),
                     "val_loss": float(res["val_loss"]), "test_loss": _float_or_none(test_loss_of(d, res))})
    have_test = all(r["test_loss"] is not None for r in rows)
    if loss == "test" and not have_test:
        missing = [r["run"] for r in rows if r["test_loss"] is None]
        raise UserError(f"--loss=test but no test{PERPLEXITY_SUFFIX} of the finished model in {', '.join(missing)}")
    loss_name = "test_loss" if loss == "test" or (loss == "auto" and have_test) else "val_loss"
    for r in rows:
        r["loss"] = r[loss_name]
    return rows, loss_name


def _float_or_none(x):
    return None if x is None else float(x)


def group_by_family(rows):
    """{family: its runs sorted by size}, or UserError for a family no curve can be fitted to."""
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        sizes = {r["n_params"] for r in rs}
        if len(sizes) < MIN_POINTS:
            raise UserError(f"family '{fam}' has {len(sizes)} model size(s); a power-law fit needs at least "
                             f"{MIN_POINTS} different sizes")
        bad = [r["run"] for r in rs if r["n_params"] <= 0 or r["loss"] <= 0]
        if bad:
            raise UserError(f"family '{fam}': n_params and loss must be positive (runs {', '.join(bad)})")
        rs.sort(key=lambda r: r["n_params"])
    return families


# -----------------------------------------------------------------------------
# the fit policy: which runs each fit sees, and the run-to-run noise their repeats measure

def token_budgets(tokens):
    """The token budget of each token count (None stays None): counts within SAME_BUDGET of the smallest count of
    their group are one budget, named by the group's largest count."""
    groups = []
    for t in sorted({t for t in tokens if t}):
        if groups and t <= groups[-1][0] * SAME_BUDGET:
            groups[-1].append(t)
        else:
            groups.append([t])
    name = {t: g[-1] for g in groups for t in g}
    return [name.get(t) for t in tokens]


def select_runs(rows):
    """The fit policy for one family's runs, the same for scaling.py and study.py. Returns {"joint": the runs of the
    joint L(N, D) fit, "fitted": the runs of the L(N) fits, "budget": their token budget (None when unknown),
    "n_budgets", "notes": what was left out and why, "warnings"}.

    - Runs of one size and budget at different learning rates (a sweep's runs given to scaling.py) are not points of
      one law: the rate with the lowest mean loss stands for the size, as a sweep chooses; the others are left out.
    - Runs of one size, budget and rate that share a seed are the same run twice: the first is kept. Those with
      different seeds are repeats: they measure the run-to-run noise (run_to_run_noise) and all enter the fits.
    - L(N) is fitted on the largest token budget with MIN_POINTS model sizes, so that its exponent is not mixed with
      the data axis; every budget enters the joint fit.
    """
    budget = token_budgets([r.get("tokens") for r in rows])
    groups = {}
    for r, b in zip(rows, budget):
        groups.setdefault((r["n_params"], b), []).append((r, b))
    kept, other_rates, twins = [], [], []
    for runs in groups.values():
        by_rate = {}
        for r, b in runs:
            by_rate.setdefault(r.get("lr"), []).append((r, b))
        best = min(by_rate.values(), key=lambda g: np.mean([math.log(r["loss"]) for r, _ in g]))
        other_rates += [r["run"] for g in by_rate.values() if g is not best for r, _ in g]
        seeds = set()
        for r, b in best:
            if r.get("seed") is not None and r["seed"] in seeds:
                twins.append(r["run"])
                continue
            seeds.add(r.get("seed"))
            kept.append((r, b))
    notes, warns = [], []
    if other_rates:
        notes.append(f"{len(other_rates)} run(s) at another learning rate than the best of their size and budget are "
                     f"left out: {', '.join(sorted(other_rates))}.")
    if twins:
        notes.append(f"{len(twins)} run(s) repeat another run's size, budget, rate and seed, so they are the same "
                     f"run twice and left out: {', '.join(sorted(twins))}.")
    # one order whatever order the runs came in (folders sorted, a study's plan, a table): the bootstrap draws its
    # noise run by run, so scaling.py and study.py give the same intervals only for the same order
    kept.sort(key=lambda rb: (rb[0]["n_params"], rb[0].get("tokens") or 0, rb[0]["run"]))
    known = sorted({b for _, b in kept if b}, reverse=True)
    fitted, chosen = [r for r, _ in kept], (known[0] if len(known) == 1 else None)
    if len(known) > 1:
        for b in known:
            at_b = [r for r, rb in kept if rb == b]
            if len({r["n_params"] for r in at_b}) >= MIN_POINTS:
                fitted, chosen = at_b, b
                notes.append(f"L(N) is fitted on the {len(at_b)} runs of the "
                             + ("largest token budget only" if b == known[0] else
                                f"largest token budget with {MIN_POINTS} model sizes only")
                             + f" ({human(b)} tokens), so that its exponent is not mixed with the data axis; the "
                               f"{len(kept) - len(at_b)} runs at other budgets enter only the joint fit L(N, D).")
                break
        else:
            tokens = [r["tokens"] for r, _ in kept if r.get("tokens")]
            warns.append(f"no token budget has {MIN_POINTS} model sizes, so L(N) is fitted to every run although "
                         f"their token counts differ ({human(min(tokens))}–{human(max(tokens))}): its exponent mixes "
                         f"model size with data; read the joint fit L(N, D).")
    fitted = sorted(fitted, key=lambda r: r["n_params"])
    return {"joint": [r for r, _ in kept], "fitted": fitted, "budget": chosen, "n_budgets": len(known),
            "notes": notes, "warnings": warns}


def run_to_run_noise(rows):
    """What repeats (runs of one size that differ only in seed) measure: the pooled within-size standard deviation of
    ln loss, with its degrees of freedom (runs minus sizes, over the sizes trained more than once). None without
    repeats, or when the repeats agree exactly (copies of one run, not independent trainings)."""
    by_size = {}
    for r in rows:
        by_size.setdefault(r["n_params"], []).append(math.log(r["loss"]))
    repeated = [np.array(v) for v in by_size.values() if len(v) > 1]
    if not repeated:
        return None
    df = sum(len(v) - 1 for v in repeated)
    sigma = math.sqrt(sum(float(((v - v.mean()) ** 2).sum()) for v in repeated) / df)
    if sigma < 1e-9:
        return None
    return {"sigma": sigma, "df": df, "repeated_sizes": len(repeated), "runs": sum(len(v) for v in repeated)}


# -----------------------------------------------------------------------------
# fitting. Parameters theta = (A, alpha, C) in centred units u = ln N - mean(ln N):
#   saturating: ln L = logsumexp(A - alpha*u, C)   i.e. L = e^A * e^(-alpha*u) + e^C
#   pure:       ln L = A - alpha*u
# so a = e^(A + alpha*mean(ln N)) in the user's unit of N and c = e^C.

def _model(theta, u, pure):
    """Predicted ln L (M, n) and its Jacobian (M, n, k) for a batch of parameter vectors theta (M, k)."""
    z1 = theta[:, :1] - theta[:, 1:2] * u
    if pure:
        return z1, np.stack([np.ones_like(z1), -np.broadcast_to(u, z1.shape)], -1)
    C = theta[:, 2:3]
    m = np.maximum(z1, C)
    e1, e2 = np.exp(z1 - m), np.exp(C - m)
    w1 = e1 / (e1 + e2)  # share of the reducible term in the predicted loss
    return m + np.log(e1 + e2), np.stack([w1, -w1 * u, 1 - w1], -1)


def _bounds(logL, pure):
    """Box for (A, alpha[, C]): c from ~0 (1e-6 of the smallest loss) up to the largest loss."""
    lo, hi = [-np.inf, ALPHA_BOUNDS[0]], [np.inf, ALPHA_BOUNDS[1]]
    if not pure:
        lo.append(float(logL.min()) - math.log(1e6))
        hi.append(float(logL.max()))
    return np.array(lo), np.array(hi)


def _start_grid(u, L, pure=False):
    """Chinchilla-style grid of starting points; A is solved from each (alpha, c) guess by least squares."""
    starts = []
    for c_frac in ((0.0,) if pure else (1e-4, 0.3, 0.6, 0.8, 0.95)):
        c0 = c_frac * L.min()
        for alpha0 in (0.05, 0.2, 0.5, 1.0, 2.0):
            A0 = float(np.mean(np.log(L - c0) + alpha0 * u))
            starts.append([A0, alpha0] if pure else [A0, alpha0, math.log(c0)])
    return np.array(starts)


def fit_one(u, L, pure=False):
    """Best fit over the whole start grid: theta = (A, alpha[, C])."""
    starts = _start_grid(u, L, pure)
    theta, f = fit_batch(lambda th: _model(th, u, pure), np.log(L), np.ones((len(starts), len(u))), starts,
                         *_bounds(np.log(L), pure))
    return theta[np.argmin(f)]


def predict(theta, u):
    if len(theta) == 2:
        return np.exp(theta[0] - theta[1] * u)
    return np.exp(theta[0] - theta[1] * u) + np.exp(theta[2])


def _refit(u, L, sims, theta_hat, pure):
    """Fit every row of sims (simulated ln losses, one replicate per row), started from the full-data optimum and a
    few grid points (6x cheaper than the full grid), for at most REFIT_MAX_ITER steps."""
    if not len(sims):
        return np.empty((0, len(theta_hat)))
    starts = np.concatenate([theta_hat[None], _start_grid(u, L, pure)[[2, 12, 21] if not pure else [1, 3]]])
    return refit(lambda th: _model(th, u, pure), sims, np.ones(sims.shape, int), starts, *_bounds(np.log(L), pure),
                 max_iter=REFIT_MAX_ITER)


def fit_power_law(N, L, pure=False, grid=None, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED, noise=None):
    """Fit one power law with parametric-bootstrap intervals (n_bootstrap replicates drawn with seed, ci_level
    intervals). noise: run_to_run_noise's measure of the runs' scatter, or None.

    The interval: the fitted curve plus Gaussian ln-loss noise of scale sigma, refitted n_bootstrap times with the
    same robust fit; the percentiles of the refitted constants are the interval. sigma is the run-to-run noise that
    repeats measured, or else the residual scatter of this fit with its real degrees of freedom (runs - parameters),
    and each replicate draws its own sigma from what those degrees of freedom allow (fitting.simulated_noise). With
    fewer than MIN_SIZES_FOR_CI sizes and no repeats there is no interval (None): the residual of a 3-parameter curve
    through 4 sizes has one degree of freedom. docs/fits.md reports the coverage this was checked for.

    N, L: arrays of model sizes and losses (a size may repeat). Returns a dict with alpha, a, (c), their intervals,
    the noise used (sigma, sigma_df, sigma_source: 'repeats', 'residual' or None), the bootstrap band of the fitted
    curve on `grid` (sizes, default spanning the data) and the log-space residual.
    """
    N, L = np.asarray(N, float), np.asarray(L, float)
    n = len(N)
    mean_logN = float(np.mean(np.log(N)))
    u = np.log(N) - mean_logN  # centred: a change of unit of N shifts only A, so alpha and c are unit-invariant
    n_free = 2 if pure else 3
    theta = fit_one(u, L, pure)
    fitted = np.log(predict(theta, u))
    sizes = len(np.unique(N))
    if noise is not None and sizes > n_free:
        sigma, df, source = noise["sigma"], noise["df"], "repeats"
    elif sizes >= MIN_SIZES_FOR_CI and n > n_free:
        sigma, df, source = float(np.sqrt(np.sum((fitted - np.log(L)) ** 2) / (n - n_free))), n - n_free, "residual"
    else:  # as many sizes as parameters, or too few to tell noise from curve: an interval would be made up
        sigma = df = source = None
    sims = fitted + simulated_noise(n_bootstrap, n, sigma, df, seed) if source else np.zeros((0, n))
    boot = _refit(u, L, sims, theta, pure)

    def to_user(th):  # (A, alpha[, C]) -> (a, alpha[, c]) with a in the user's unit of N
        th = np.atleast_2d(th)
        out = [np.exp(th[:, 0] + th[:, 1] * mean_logN), th[:, 1]]
        if not pure:
            out.append(np.exp(th[:, 2]))
        return np.stack(out, axis=1)

    point = to_user(theta)[0]
    lo, hi = interval(to_user(boot), ci_level) if len(boot) else (None, None)
    grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 80) if grid is None else np.asarray(grid, float)
    u_grid = np.log(grid) - mean_logN
    band = interval(np.array([predict(th, u_grid) for th in boot]), ci_level) if len(boot) else (None, None)
    out = {"n_points": n, "n_bootstrap": len(boot), "sigma": sigma, "sigma_df": df, "sigma_source": source}
    for i, name in enumerate(["a", "alpha"] + ([] if pure else ["c"])):
        out[name] = float(point[i])
        out[name + "_ci"] = [float(lo[i]), float(hi[i])] if len(boot) else None
    out["curve"] = {"n": grid.tolist(), "loss": predict(theta, u_grid).tolist(),
                    "band_lo": None if band[0] is None else band[0].tolist(),
                    "band_hi": None if band[1] is None else band[1].tolist()}
    out["residual_rms"] = float(np.sqrt(np.mean((fitted - np.log(L)) ** 2)))
    return out


def size_means(N, L):
    """{size: geometric mean loss of its runs}: the loss of a size trained more than once."""
    logs = {}
    for n, l in zip(N, L):
        logs.setdefault(n, []).append(math.log(l))
    return {n: math.exp(sum(v) / len(v)) for n, v in sorted(logs.items())}


def lack_of_fit(N, L, sat, noise):
    """p-value of the F test of the curve's misses at each size against the noise repeats measure (small: the law's
    form, not the seeds, sets the error), or None without repeats or a residual degree of freedom."""
    sizes = len(set(N))
    if noise is None or sizes <= 3:
        return None
    from scipy.stats import f as f_dist  # imported on first use, as in joint_fit
    u = np.log(np.asarray(N, float)) - float(np.mean(np.log(N)))
    theta = [math.log(sat["a"]) - sat["alpha"] * float(np.mean(np.log(N))), sat["alpha"], math.log(sat["c"])]
    ss = float(np.sum((np.log(predict(np.array(theta), u)) - np.log(L)) ** 2))
    ss_lof = max(ss - noise["sigma"] ** 2 * noise["df"], 0.0)
    return float(f_dist.sf(ss_lof / (sizes - 3) / noise["sigma"] ** 2, sizes - 3, noise["df"]))


def diagnose(N, L, sat, pure, ci_level=CI_LEVEL, noise=None):
    """Plain-language warnings for a fit the data cannot pin down."""
    warns = []
    sizes = len(set(N))
    pct = percent(ci_level)
    if sizes < 4:
        warns.append(f"only {sizes} model sizes for a 3-parameter curve: the curve passes through every point, so "
                     f"it has no interval and its numbers describe these runs, not a law; train at least 4-5 sizes.")
    elif sizes < MIN_SIZES_FOR_CI and noise is None:
        warns.append(f"only {sizes} model sizes and no repeated runs: a 3-parameter curve through 4 sizes has one "
                     f"degree of freedom, so nothing measures how far alpha would move if each run were trained again "
                     f"with another seed, and no interval is given (alpha_ci is null); train a fifth size, or "
                     f"repeat some sizes with other seeds (study.py's seeds knob).")
    span = max(N) / min(N)
    if span < 10:
        warns.append(f"model sizes span only {span:.1f}x; an exponent needs at least one, better two decades of N.")
    Lmin = min(L)
    if sat["c_ci"] is not None:
        c_lo, c_hi = sat["c_ci"]
        if c_lo < 0.01 * Lmin:
            warns.append(f"the irreducible loss c is not determined: its {pct} interval [{c_lo:.3g}, {c_hi:.3g}] "
                         f"reaches zero, so these points cannot tell a saturating curve from a pure power law "
                         f"(pure-power-law alpha = {pure['alpha']:.3g}).")
        if c_hi >= 0.99 * Lmin:
            warns.append(f"c's {pct} interval reaches the smallest observed loss ({Lmin:.3g}): the curve may be "
                         f"flattening at the largest models, so alpha rests on the smallest ones.")
        a_lo, a_hi = sat["alpha_ci"]
        if a_hi - a_lo > sat["alpha"]:
            warns.append(f"alpha is poorly determined: its {pct} interval [{a_lo:.3g}, {a_hi:.3g}] is wider than "
                         f"alpha ({sat['alpha']:.3g}) itself; read it as an order of magnitude.")
    if sat["alpha"] <= ALPHA_BOUNDS[0] + 1e-6 or sat["alpha"] >= ALPHA_BOUNDS[1] - 1e-6:
        warns.append(f"alpha sits at the search bound {sat['alpha']:.3g}: the losses do not follow a power law in N.")
    p = lack_of_fit(N, L, sat, noise)
    if p is not None and p < 0.05:
        warns.append(f"the curve misses the sizes by more than the run-to-run noise explains (lack-of-fit F test, "
                     f"p = {p:.2g}): the form of the law, not the seeds, dominates the error, and intervals scaled by "
                     f"the measured noise are too narrow.")
    means = size_means(N, L)
    by_size = list(means.values())
    if by_size[-1] > min(by_size) * 1.001:
        warns.append(f"the largest model is not the best (loss {by_size[-1]:.3g} vs best {min(by_size):.3g}): it is "
                     f"under-trained or over-fitting at this token budget, which bends the curve.")
    return warns


def fit_family(rows, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED, fit_params="all"):
    """All fits of one family under the fit policy (select_runs): saturating and pure L(N) on the parameter count
    fit_params chooses ('all' also fits non-embedding parameters, as a second opinion), alpha without the largest
    model where that is not the best, and the joint L(N, D) where the runs span several token budgets."""
    settings = {"n_bootstrap": n_bootstrap, "ci_level": ci_level, "seed": seed}
    policy = select_runs(rows)
    n_key = "n_params" if fit_params == "all" else "n_params_non_embedding"
    missing = [r["run"] for r in policy["joint"] if not (r.get(n_key) or 0) > 0]
    if missing:
        raise UserError(f"fit_params=non_embedding, but run(s) {', '.join(missing)} have no non-embedding parameter "
                         f"count (n_params_non_embedding)")
    fitted = sorted(policy["fitted"], key=lambda r: (r[n_key], r["run"]))
    L = np.array([r["loss"] for r in fitted])
    noise = run_to_run_noise(fitted)
    out = {"n_points": len(fitted), "runs": [r["run"] for r in fitted], "n_fitted": fit_params,
           "budget_tokens": policy["budget"], "noise": noise, "notes": policy["notes"]}
    variants = [("", [r[n_key] for r in fitted])]
    ne = [r.get("n_params_non_embedding") for r in fitted]
    if fit_params == "all" and all(x is not None and x > 0 for x in ne) and len(set(ne)) >= MIN_POINTS:
        variants.append(("_non_embedding", ne))
    for suffix, N in variants:
        N = np.array(N, float)
        sat = fit_power_law(N, L, noise=noise, **settings)
        pure = fit_power_law(N, L, pure=True, noise=noise, **settings)
        for name in ("alpha", "a", "c"):  # keys like alpha, alpha_ci, alpha_non_embedding, alpha_non_embedding_ci
            out[name + suffix], out[name + suffix + "_ci"] = sat[name], sat[name + "_ci"]
        for name in ("alpha", "a"):
            out[name + "_pure" + suffix], out[name + "_pure" + suffix + "_ci"] = pure[name], pure[name + "_ci"]
        warns = diagnose(list(N), list(L), sat, pure, ci_level, noise)
        out["warnings" + suffix] = warns
        out["n_params" + suffix] = N.tolist()
        if not suffix:
            warns[:0] = policy["warnings"]
            if noise is None and len(fitted) > len(set(N)):
                warns.append("the repeated runs of a size have identical losses: they are copies of one run, not "
                             "trainings with other seeds, so they measure no run-to-run noise.")
            out["loss"] = L.tolist()
            out["residual_rms_log"] = sat["residual_rms"]
            out["n_bootstrap"] = sat["n_bootstrap"]
            out["sigma"], out["sigma_df"], out["sigma_source"] = sat["sigma"], sat["sigma_df"], sat["sigma_source"]
            _without_largest(out, N, L, noise, settings)
        out["curve" + suffix] = sat["curve"]
        out["curve_pure" + suffix] = {k: pure["curve"][k] for k in ("n", "loss")}
    if policy["n_budgets"] > 1:  # L(N, D), where the runs were trained on several token budgets
        joint = fit_family_joint([dict(r, n_params=r[n_key]) for r in policy["joint"]], **settings)
        if joint is not None:
            out["joint"] = joint
    out["ci_level"] = ci_level  # the markdown and the plots label the intervals with it
    return out


def _without_largest(out, N, L, noise, settings):
    """alpha_without_largest (and its _ci) in out where the largest model is not the best: how much of alpha that one
    size sets. None where too few sizes remain; the key is absent where the largest model is the best."""
    means = size_means(N, L)
    if list(means.values())[-1] <= min(means.values()) * 1.001:
        return
    rest = N < N.max()
    if len(np.unique(N[rest])) < MIN_POINTS:
        out["alpha_without_largest"] = out["alpha_without_largest_ci"] = None
        return
    fit = fit_power_law(N[rest], L[rest], noise=noise, **settings)
    out["alpha_without_largest"], out["alpha_without_largest_ci"] = fit["alpha"], fit["alpha_ci"]
    for i, w in enumerate(out["warnings"]):
        if w.startswith("the largest model is not the best"):
            out["warnings"][i] = w + f" Fitted without it, alpha = {with_ci(fit, 'alpha')}."


def fit_all(rows, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED, fit_params="all"):
    """{family: fit_family(...)} for every family of rows (UserError for too few sizes or bad settings): the one
    fit policy scaling.py and study.py share, so the same runs give the same fit.json."""
    check_settings(n_bootstrap, ci_level, fit_params)
    return {fam: fit_family(rs, n_bootstrap, ci_level, seed, fit_params)
            for fam, rs in sorted(group_by_family(rows).items())}


# -----------------------------------------------------------------------------
# the fits as text

N_WORDS = {"all": "all parameters", "non_embedding": "non-embedding parameters"}


def noise_text(f):
    """What the family's intervals are scaled by, in words."""
    if f["sigma_source"] == "repeats":
        n = f["noise"]
        return (f"run-to-run noise σ = {f['sigma']:.2g} in ln loss ({100 * f['sigma']:.2g}% of the loss), measured "
                f"from {n['runs']} runs of {n['repeated_sizes']} size(s) trained more than once "
                f"({n['df']} degree(s) of freedom); the intervals are scaled by it")
    if f["sigma_source"] == "residual":
        return (f"no repeated runs, so σ = {f['sigma']:.2g} in ln loss comes from the fit's own residual scatter "
                f"({f['sigma_df']} degree(s) of freedom) and includes any misfit of the curve")
    return "no interval: too few model sizes and no repeated runs to measure the noise"


def family_lines(fam, f):
    """The plain-language lines under the fit table for one family: N, budget, noise, alpha without the largest."""
    budget = f" on the {human(f['budget_tokens'])}-token budget" if f.get("budget_tokens") else ""
    lines = [f"**{fam}:** L(N) fitted on N = {N_WORDS[f['n_fitted']]}, {f['n_points']} runs{budget}; "
             f"{noise_text(f)}."]
    if "alpha_without_largest" in f:
        lines.append("- α without the largest model (it is not the best): "
                     + ("too few sizes remain to fit." if f["alpha_without_largest"] is None
                        else with_ci(f, "alpha_without_largest") + "."))
    lines.extend(f"- {n}" for n in f.get("notes", []))
    return lines


def fit_markdown(fits, loss_name="loss"):
    """The fit table (and warnings) as markdown, for fit.md and the study report."""
    pct = percent(next(iter(fits.values()), {}).get("ci_level", CI_LEVEL))  # every family has the same level
    lines = [f"Fits of the {loss_name.replace('_', ' ')} (nats/token) vs parameters N; intervals are {pct} "
             f"parametric-bootstrap intervals: the fitted curve plus ln-loss noise of the runs' σ (measured from "
             f"repeated runs where there are any, else the residual scatter with its degrees of freedom), refitted "
             f"and read off at the percentiles (docs/fits.md: what they mean and how their coverage was checked). "
             f"`a` is for N in the unit of the input (parameters for run folders).", "",
             "| family | runs | N range | α | α CI | c | c CI | a | α pure (L = a·N^-α) | α pure CI "
             "| α non-emb. | α non-emb. CI | α pure non-emb. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, f in fits.items():
        lines.append(
            f"| {fam} | {f['n_points']} | {human(min(f['n_params']))}–{human(max(f['n_params']))} "
            f"| **{fmt(f['alpha'])}** | {ci_text(f['alpha_ci'])} | {fmt(f['c'])} | {ci_text(f['c_ci'])} "
            f"| {fmt(f['a'])} "
            f"| {fmt(f['alpha_pure'])} | {ci_text(f['alpha_pure_ci'])} "
            f"| {fmt(f.get('alpha_non_embedding'))} | {ci_text(f.get('alpha_non_embedding_ci'))} "
            f"| {fmt(f.get('alpha_pure_non_embedding'))} |")
    lines.append("")
    for fam, f in fits.items():
        lines.extend(family_lines(fam, f) + [""])
        warns = f["warnings"] + [f"(non-embedding fit) {w}" for w in f.get("warnings_non_embedding", [])]
        if warns:
            lines.append(f"**Warnings for {fam}:**")
            lines.extend(f"- {w}" for w in warns)
        else:
            lines.append(f"**{fam}:** no warnings — the fit is well conditioned.")
        lines.append("")
    return "\n".join(lines + joint_markdown(fits))


def fits_for_json(fits):
    """fit.json content: everything except the plotted curves."""
    return {fam: {k: v for k, v in f.items() if not k.startswith("curve")} for fam, f in fits.items()}


def write_fit(fits, out_dir, loss_name="loss"):
    """fit.json and fit.md into out_dir (scaling.py and study.py alike); returns {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    written = {FIT_JSON: os.path.join(out_dir, FIT_JSON), FIT_MD: os.path.join(out_dir, FIT_MD)}
    write_json_atomic(fits_for_json(fits), written[FIT_JSON])
    with open(written[FIT_MD], "w") as f:
        f.write(f"# Scaling-law fits\n\n{fit_markdown(fits, loss_name)}\n")
    return written
