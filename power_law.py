"""
Scaling laws L(N) fitted to training runs: reading the runs (run folders or a CSV table), the fits with bootstrap
intervals and plain-language warnings, and the fit table as markdown and JSON. plots.py draws the fits, scaling.py is
the command line, study.py fits the runs of a study.

For every model family (gpt, lstm, ...) fit_all fits
    L = a * N^(-alpha) + c      (saturating power law, c = irreducible loss)
    L = a * N^(-alpha)          (pure power law, the Kaplan et al. form)
on N = all parameters and on N = non-embedding parameters, and, where the runs were trained on two or more token
counts D, the joint L(N, D) = E + A/N^alpha + B/D^beta of joint_fit.py.

Why not a plain scipy curve_fit: with 4-6 points the least-squares problem is ill-posed and its answer depends
on the starting point and on the unit of N (one seed's table gives alpha~0.87 with N in millions and alpha~3.8
with N in parameters). So, following the Chinchilla "approach 3" recipe (fitting.py: Huber loss on log-loss
residuals, a grid of starts, bootstrap intervals over runs widened by leave-one-out), we work with log N centred on
its mean, so multiplying N by any constant changes only `a`, never alpha or c, and we add plain-language warnings
whenever the data cannot pin the fit down.

The settings a user chooses (n_bootstrap, ci_level, seed) are arguments of fit_all; every fit records its ci_level,
so the markdown and the plots read it from the fits instead of from a setting that could disagree.
"""
import csv
import json
import math
import os
import sys

import numpy as np

from dataset import read_json
from fitting import (ALPHA_BOUNDS, CI_LEVEL, LOO_MAX_POINTS, N_BOOTSTRAP, SEED, ci_text, fit_batch, fmt, human,
                     interval, intervals, percent, refit, resample_runs)
from fitting import with_ci  # noqa: F401  (study.py reads it from here)
from joint_fit import fit_family_joint, joint_markdown

MIN_POINTS = 3         # fewer distinct model sizes than this cannot define a 3-parameter curve

REQUIRED_COLUMNS = ("family", "n_params", "loss")
OPTIONAL_COLUMNS = ("n_params_non_embedding", "tokens", "wall_time_s", "peak_mem_bytes", "run")


class InputError(Exception):
    """A user mistake (bad file, bad column, too few runs, bad setting): the caller turns it into one line."""


def check_settings(n_bootstrap, ci_level):
    """Raise InputError for settings no fit can use (study.py checks before hours of training, not after)."""
    if n_bootstrap < 1:
        raise InputError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0 < ci_level < 1:
        raise InputError(f"ci_level must be between 0 and 1, got {ci_level}")


# -----------------------------------------------------------------------------
# input: run folders or a table

def _number(value, what):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not a number: {value!r}")
    if not math.isfinite(x):
        raise InputError(f"{what} is not finite: {value!r}")
    return x


def load_table(path):
    """Rows of a CSV with columns family,n_params,loss (+ optional columns) -> list of run dicts. A file that is not
    text, and counts of parameters or tokens that are not positive, are InputErrors (a zero or negative token
    count used to be taken for a missing one, and the joint fit vanished without a word)."""
    if not os.path.isfile(path):
        raise InputError(f"table {path} " + ("is a folder, not a CSV file" if os.path.isdir(path) else "not found"))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _table_rows(path, csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path} is not a CSV text file ({e.__class__.__name__}: {str(e)[:80]})")


def _table_rows(path, reader):
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {','.join(missing)} (needs {','.join(REQUIRED_COLUMNS)}; "
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
        for col in OPTIONAL_COLUMNS[:-1]:
            row[col] = _number(raw[col], f"{where}: {col}") if raw.get(col) else None
        for col in ("n_params", "n_params_non_embedding", "tokens"):
            if row[col] is not None and row[col] <= 0:
                raise InputError(f"{where}: {col} must be positive, got {raw[col]}")
        if not row["family"]:
            raise InputError(f"{where}: empty family")
        rows.append(row)
    if not rows:
        raise InputError(f"{path} has no data rows")
    return rows, "loss"


def find_run_dirs(paths):
    """Run folders given directly, or the run sub-folders of a folder that holds several runs."""
    run_dirs = []
    for p in paths:
        if not os.path.isdir(p):
            raise InputError(f"run folder {p} " + ("is a file, not a folder" if os.path.exists(p) else "not found"))
        if os.path.isfile(os.path.join(p, "results.json")):
            run_dirs.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p)
                      if os.path.isfile(os.path.join(p, d, "results.json")))
        if not subs:
            raise InputError(f"{p} has no results.json (is training finished?) and no run folders inside")
        run_dirs.extend(subs)
    return run_dirs


def stale_perplexity(ppl, results):
    """Why a calc_perplexity.py result does not measure the run's finished model (None when it does, or cannot be
    told): another run_id means the run was trained again after it was measured, an earlier iter_num that it was
    measured on a checkpoint before the end. Files from before run_ids were recorded (either side lacks one) are
    taken as they are, as they always were: there is nothing to compare them with."""
    measured, trained = ppl.get("run_id"), results.get("run_id")
    if not measured or not trained:
        return None
    if measured != trained:
        return "it was measured on an earlier training of the run (another run_id)"
    if ppl.get("iter_num") is not None and results.get("iters") is not None and ppl["iter_num"] != results["iters"]:
        return f"it was measured at iteration {ppl['iter_num']}, before the end of training ({results['iters']})"
    return None


def read_perplexity(run_dir, split="test", results=None):
    """(calc_perplexity.py's JSON in run_dir/{split}_perplexity.json, or None; why it was left out, or None). A
    stale file (stale_perplexity) counts as missing: a number of an older model must never pass for this one; so
    does a damaged one. results: the run's results.json if the caller has read it already."""
    path = os.path.join(run_dir, f"{split}_perplexity.json")
    if not os.path.isfile(path):
        return None, None
    try:
        ppl = read_json(path)
        why = None if isinstance(ppl, dict) and "loss" in ppl else "it is not a calc_perplexity.py result"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a damaged file is as good as none: measure again
        why = f"it is not valid JSON ({e})"
    if why is None:
        if results is None:
            results_path = os.path.join(run_dir, "results.json")
            results = read_json(results_path) if os.path.isfile(results_path) else {}
        why = stale_perplexity(ppl, results)
    return (None, f"{path} is not used: {why}; run calc_perplexity.py on the run again") if why else (ppl, None)


def test_loss_of(run_dir, results=None):
    """Test-split loss written next to the run by `calc_perplexity.py RUN --out RUN/test_perplexity.json`, or None
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
            res = read_json(os.path.join(d, "results.json"))
        except json.JSONDecodeError as e:
            raise InputError(f"{d}/results.json is not valid JSON ({e})")
        for key in ("model_type", "n_params", "val_loss"):
            if res.get(key) is None:
                raise InputError(f"{d}/results.json lacks {key}")
        rows.append({"family": res["model_type"], "run": os.path.basename(os.path.normpath(d)), "run_dir": d,
                     "n_params": float(res["n_params"]),
                     "n_params_non_embedding": _float_or_none(res.get("n_params_non_embedding")),
                     "tokens": _float_or_none(res.get("tokens_trained")),
                     "wall_time_s": _float_or_none(res.get("wall_time_s")),
                     "peak_mem_bytes": _float_or_none(res.get("peak_mem_bytes")),
                     "val_loss": float(res["val_loss"]), "test_loss": _float_or_none(test_loss_of(d, res))})
    have_test = all(r["test_loss"] is not None for r in rows)
    if loss == "test" and not have_test:
        missing = [r["run"] for r in rows if r["test_loss"] is None]
        raise InputError(f"--loss=test but no test_perplexity.json of the finished model in {', '.join(missing)}")
    loss_name = "test_loss" if loss == "test" or (loss == "auto" and have_test) else "val_loss"
    for r in rows:
        r["loss"] = r[loss_name]
    return rows, loss_name


def _float_or_none(x):
    return None if x is None else float(x)


def group_by_family(rows):
    """{family: its runs sorted by size}, or InputError for a family no curve can be fitted to."""
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        sizes = {r["n_params"] for r in rs}
        if len(sizes) < MIN_POINTS:
            raise InputError(f"family '{fam}' has {len(sizes)} model size(s); a power-law fit needs at least "
                             f"{MIN_POINTS} different sizes")
        bad = [r["run"] for r in rs if r["n_params"] <= 0 or r["loss"] <= 0]
        if bad:
            raise InputError(f"family '{fam}': n_params and loss must be positive (runs {', '.join(bad)})")
        rs.sort(key=lambda r: r["n_params"])
    return families


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


def _refit(u, L, counts, theta_hat, pure):
    """Fit every row of counts (a resample of the runs), started from the full-data optimum and a few grid points
    (6x cheaper than the full grid)."""
    if not len(counts):
        return np.empty((0, len(theta_hat)))
    starts = np.concatenate([theta_hat[None], _start_grid(u, L, pure)[[2, 12, 21] if not pure else [1, 3]]])
    return refit(lambda th: _model(th, u, pure), np.log(L), counts, starts, *_bounds(np.log(L), pure))


def fit_power_law(N, L, pure=False, grid=None, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED):
    """Fit one power law with bootstrap intervals (n_bootstrap resamples drawn with seed, ci_level intervals).

    N, L: arrays of model sizes and losses. Returns a dict with alpha, a, (c), their intervals, the bootstrap
    band of the fitted curve on `grid` (sizes, default spanning the data) and the log-space residual.
    """
    N, L = np.asarray(N, float), np.asarray(L, float)
    n = len(N)
    mean_logN = float(np.mean(np.log(N)))
    u = np.log(N) - mean_logN  # centred: a change of unit of N shifts only A, so alpha and c are unit-invariant
    n_free = 2 if pure else 3
    theta = fit_one(u, L, pure)

    def sizes_in(counts):  # distinct model sizes each resample contains
        return np.array([len(np.unique(N[c > 0])) for c in counts])

    # as many sizes as parameters: the curve interpolates them and every resample gives the same curve back, so
    # there is no interval to compute (an interval of zero width would claim the opposite)
    identifiable = len(np.unique(N)) > n_free
    no_sets = np.zeros((0, n), int)
    boot_sets, loo_sets = (resample_runs(n, n_bootstrap, seed, lambda c: sizes_in(c) >= n_free) if identifiable
                           else (no_sets, no_sets))  # fewer sizes than parameters define nothing
    boot, loo = _refit(u, L, boot_sets, theta, pure), _refit(u, L, loo_sets, theta, pure)

    def to_user(th):  # (A, alpha[, C]) -> (a, alpha[, c]) with a in the user's unit of N
        th = np.atleast_2d(th)
        out = [np.exp(th[:, 0] + th[:, 1] * mean_logN), th[:, 1]]
        if not pure:
            out.append(np.exp(th[:, 2]))
        return np.stack(out, axis=1)

    point = to_user(theta)[0]
    lo, hi = intervals(point, to_user(boot), to_user(loo), ci_level)
    grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 80) if grid is None else np.asarray(grid, float)
    u_grid = np.log(grid) - mean_logN
    band = interval(np.array([predict(th, u_grid) for th in boot]), ci_level) if len(boot) else (None, None)
    out = {"n_points": n, "n_bootstrap": len(boot), "n_leave_one_out": len(loo)}
    for i, name in enumerate(["a", "alpha"] + ([] if pure else ["c"])):
        out[name] = float(point[i])
        out[name + "_ci"] = [float(lo[i]), float(hi[i])] if identifiable else None
    out["curve"] = {"n": grid.tolist(), "loss": predict(theta, u_grid).tolist(),
                    "band_lo": None if band[0] is None else band[0].tolist(),
                    "band_hi": None if band[1] is None else band[1].tolist()}
    out["residual_rms"] = float(np.sqrt(np.mean((np.log(predict(theta, u)) - np.log(L)) ** 2)))
    return out


def diagnose(N, L, sat, pure, ci_level=CI_LEVEL):
    """Plain-language warnings for a fit the data cannot pin down."""
    warns = []
    sizes = len(set(N))
    pct = percent(ci_level)
    if sizes < 4:
        warns.append(f"only {sizes} model sizes for a 3-parameter curve: the curve passes through every point, so "
                     f"it has no interval and its numbers describe these runs, not a law; train at least 4-5 sizes.")
    elif sizes == 4:
        warns.append("only 4 model sizes for a 3-parameter curve: one degree of freedom, so the interval says how "
                     "well these 4 losses agree with one curve, not how far alpha would move if each run were trained "
                     "again with another seed; a fifth size, or repeated seeds, make the interval mean that.")
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
    by_size = np.asarray(L)[np.argsort(N)]
    if by_size[-1] > Lmin * 1.001:
        warns.append(f"the largest model is not the best (loss {by_size[-1]:.3g} vs best {Lmin:.3g}): it is "
                     f"under-trained or over-fitting at this token budget, which bends the curve.")
    return warns


def fit_family(rows, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED):
    """All fits of one family: saturating and pure, on all and on non-embedding parameters."""
    settings = {"n_bootstrap": n_bootstrap, "ci_level": ci_level, "seed": seed}
    L = np.array([r["loss"] for r in rows])
    out = {"n_points": len(rows), "runs": [r["run"] for r in rows]}
    variants = [("", [r["n_params"] for r in rows])]
    ne = [r.get("n_params_non_embedding") for r in rows]
    if all(x is not None and x > 0 for x in ne) and len(set(ne)) >= MIN_POINTS:
        variants.append(("_non_embedding", ne))
    for suffix, N in variants:
        N = np.array(N, float)
        sat, pure = fit_power_law(N, L, **settings), fit_power_law(N, L, pure=True, **settings)
        for name in ("alpha", "a", "c"):  # keys like alpha, alpha_ci, alpha_non_embedding, alpha_non_embedding_ci
            out[name + suffix], out[name + suffix + "_ci"] = sat[name], sat[name + "_ci"]
        for name in ("alpha", "a"):
            out[name + "_pure" + suffix], out[name + "_pure" + suffix + "_ci"] = pure[name], pure[name + "_ci"]
        warns = diagnose(list(N), list(L), sat, pure, ci_level)
        out["warnings" + suffix] = warns
        out["n_params" + suffix] = N.tolist()
        if not suffix:
            out["loss"] = L.tolist()
            out["residual_rms_log"] = sat["residual_rms"]
            out["n_bootstrap"], out["n_leave_one_out"] = sat["n_bootstrap"], sat["n_leave_one_out"]
        out["curve" + suffix] = sat["curve"]
        out["curve_pure" + suffix] = {k: pure["curve"][k] for k in ("n", "loss")}
    joint = fit_family_joint(rows, **settings)  # L(N, D), where the runs were trained on several token counts
    if joint is not None:
        out["joint"] = joint
    out["ci_level"] = ci_level  # the markdown and the plots label the intervals with it
    return out


def fit_all(rows, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED):
    """{family: fit_family(...)} for every family of rows (InputError for too few sizes or bad settings)."""
    check_settings(n_bootstrap, ci_level)
    return {fam: fit_family(rs, n_bootstrap, ci_level, seed) for fam, rs in sorted(group_by_family(rows).items())}


# -----------------------------------------------------------------------------
# the fits as text

def fit_markdown(fits, loss_name="loss"):
    """The fit table (and warnings) as markdown, for fit.md and the study report."""
    pct = percent(next(iter(fits.values()), {}).get("ci_level", CI_LEVEL))  # every family has the same level
    lines = [f"Fits of the {loss_name.replace('_', ' ')} (nats/token) vs parameters N; intervals are {pct} "
             f"bootstrap intervals over runs "
             f"(widened to cover every leave-one-out fit when there are ≤ {LOO_MAX_POINTS} runs). "
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

