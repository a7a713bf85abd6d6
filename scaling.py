"""
Fit scaling laws L(N) to finished training runs (or to a published table) and plot them.

    python scaling.py out/study_quick/runs/* --out out/study_quick/fit
    python scaling.py --table runs.csv --out fit_published

For every model family (gpt, lstm, ...) it fits
    L = a * N^(-alpha) + c      (saturating power law, c = irreducible loss)
    L = a * N^(-alpha)          (pure power law, the Kaplan et al. form)
on N = all parameters and on N = non-embedding parameters, and writes DIR/fit.json, DIR/fit.md and PNG plots.

Why not a plain scipy curve_fit: with 4-6 points the least-squares problem is ill-posed and its answer depends
on the starting point and on the unit of N (one seed's table gives alpha~0.87 with N in millions and alpha~3.8
with N in parameters). So, following the Chinchilla "approach 3" recipe, we
  - fit in log-loss space (relative errors, so large and small losses weigh alike),
  - use a Huber loss (one diverged or badly tuned run cannot drag the exponent around),
  - start the optimiser from a grid of points and keep the best,
  - work with log N centred on its mean, so multiplying N by any constant changes only `a`, never alpha or c,
and we report bootstrap intervals (resampling runs; with few points widened by leave-one-out) plus plain-language
warnings whenever the data cannot pin the fit down.
"""
import argparse
import csv
import json
import math
import os
import sys

import numpy as np

# -----------------------------------------------------------------------------
# knobs (also settable from the command line)
n_bootstrap = 1000     # bootstrap resamples of the runs for the confidence intervals
ci_level = 0.95        # two-sided confidence level of every interval
huber_delta = 1e-3     # Huber threshold on log-loss residuals (Chinchilla uses 1e-3: ~0.1% relative error)
tie_break = 1e-3       # a quadratic term this much weaker than Huber's: without it a near-L1 loss has flat valleys
                       # (e.g. 8 evenly spaced sizes) where the optimum, and so alpha, depends on rounding
loo_max_points = 8     # with at most this many runs, intervals are widened to cover every leave-one-out fit
seed = 1337            # bootstrap RNG seed, so a re-run gives the same intervals
min_points = 3         # fewer distinct model sizes than this cannot define a 3-parameter curve
alpha_bounds = (0.0, 10.0)  # exponents outside this are not a scaling law (and 10 keeps a = e^(alpha*logN) finite)
# -----------------------------------------------------------------------------

REQUIRED_COLUMNS = ("family", "n_params", "loss")
OPTIONAL_COLUMNS = ("n_params_non_embedding", "tokens", "wall_time_s", "peak_mem_bytes", "run")


class InputError(Exception):
    """A user mistake (bad file, bad column, too few runs): main() prints it as one line and exits non-zero."""


# -----------------------------------------------------------------------------
# input

def _number(value, what):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not a number: {value!r}")
    if not math.isfinite(x):
        raise InputError(f"{what} is not finite: {value!r}")
    return x


def load_table(path):
    """Rows of a CSV with columns family,n_params,loss (+ optional columns) -> list of run dicts."""
    if not os.path.isfile(path):
        raise InputError(f"table {path} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
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
            raise InputError(f"run folder {p} not found")
        if os.path.isfile(os.path.join(p, "results.json")):
            run_dirs.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p)
                      if os.path.isfile(os.path.join(p, d, "results.json")))
        if not subs:
            raise InputError(f"{p} has no results.json (is training finished?) and no run folders inside")
        run_dirs.extend(subs)
    return run_dirs


def test_loss_of(run_dir):
    """Test-split loss written next to the run by `calc_perplexity.py RUN --out RUN/test_perplexity.json`."""
    path = os.path.join(run_dir, "test_perplexity.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("loss")
    return None


def load_runs(paths, loss="auto"):
    """results.json of each run -> list of run dicts. loss: 'test', 'val' or 'auto' (test when every run has it)."""
    run_dirs = find_run_dirs(paths)
    rows = []
    for d in run_dirs:
        try:
            with open(os.path.join(d, "results.json")) as f:
                res = json.load(f)
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
                     "val_loss": float(res["val_loss"]), "test_loss": _float_or_none(test_loss_of(d))})
    have_test = all(r["test_loss"] is not None for r in rows)
    if loss == "test" and not have_test:
        missing = [r["run"] for r in rows if r["test_loss"] is None]
        raise InputError(f"--loss=test but no test_perplexity.json in {', '.join(missing)}")
    loss_name = "test_loss" if loss == "test" or (loss == "auto" and have_test) else "val_loss"
    for r in rows:
        r["loss"] = r[loss_name]
    return rows, loss_name


def _float_or_none(x):
    return None if x is None else float(x)


def group_by_family(rows):
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    for fam, rs in families.items():
        sizes = {r["n_params"] for r in rs}
        if len(sizes) < min_points:
            raise InputError(f"family '{fam}' has {len(sizes)} model size(s); a power-law fit needs at least "
                             f"{min_points} different sizes")
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

def _huber(r, delta):
    """Huber loss divided by delta (~|r| for large r) plus the tie-break, its derivative psi and its IRLS
    curvature psi/r."""
    small = np.abs(r) <= delta
    k = tie_break / delta
    loss = np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta) + 0.5 * k * r * r
    psi = np.where(small, r / delta, np.sign(r)) + k * r
    curvature = np.where(small, 1 / delta, 1 / np.maximum(np.abs(r), delta)) + k
    return loss, psi, curvature


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
    lo, hi = [-np.inf, alpha_bounds[0]], [np.inf, alpha_bounds[1]]
    if not pure:
        lo.append(float(logL.min()) - math.log(1e6))
        hi.append(float(logL.max()))
    return np.array(lo), np.array(hi)


def _fit_batch(u, logL, counts, starts, pure, max_iter=400):
    """Minimise the Huber loss of log-loss residuals for many problems at once (Levenberg-Marquardt steps with the
    IRLS curvature, kept inside the bounds). Vectorised because the bootstrap needs thousands of tiny fits; one
    scipy.optimize call per fit costs ~20 ms of Python overhead, this costs ~0.1 ms per fit.

    u (n,): centred ln N; logL (n,); counts (M, n): how often each run enters problem m (1 for a plain fit, the
    multiplicities for a bootstrap resample); starts (M, k). Returns theta (M, k) and the objective (M,)."""
    lo, hi = _bounds(logL, pure)
    theta = np.clip(np.array(starts, float), lo, hi)
    k = theta.shape[1]

    def evaluate(th, c):
        pred, J = _model(th, u, pure)
        loss, psi, curv = _huber(pred - logL, huber_delta)
        return (c * loss).sum(1), psi, curv, J

    f, psi, curv, J = evaluate(theta, counts)
    lam = np.full(len(theta), 1e-3)
    stalled = np.zeros(len(theta), int)  # iterations in a row without progress; 8 means converged
    for _ in range(max_iter):
        act = np.flatnonzero(stalled < 8)  # only problems still moving cost anything
        if not len(act):
            break
        c = counts[act]
        g = np.einsum("mn,mnk->mk", c * psi[act], J[act])
        H = np.einsum("mn,mnk,mnl->mkl", c * curv[act], J[act], J[act])
        H = H + (lam[act, None] * np.diagonal(H, axis1=1, axis2=2) + 1e-12)[:, :, None] * np.eye(k)
        new = np.clip(theta[act] - np.linalg.solve(H, g[..., None])[..., 0], lo, hi)
        f_new, psi_new, curv_new, J_new = evaluate(new, c)
        better = f_new < f[act]
        b = act[better]
        progress = np.zeros(len(act), bool)
        progress[better] = f[b] - f_new[better] > 1e-12 * np.maximum(1.0, f[b])
        theta[b], f[b] = new[better], f_new[better]
        psi[b], curv[b], J[b] = psi_new[better], curv_new[better], J_new[better]
        lam[act] = np.clip(np.where(better, lam[act] * 0.3, lam[act] * 10), 1e-12, 1e12)
        stalled[act] = np.where(progress, 0, stalled[act] + 1)
    return theta, f


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
    theta, f = _fit_batch(u, np.log(L), np.ones((len(starts), len(u))), starts, pure)
    return theta[np.argmin(f)]


def predict(theta, u):
    if len(theta) == 2:
        return np.exp(theta[0] - theta[1] * u)
    return np.exp(theta[0] - theta[1] * u) + np.exp(theta[2])


def _interval(samples, level):
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def _refit(u, L, counts, theta_hat, pure):
    """Fit every row of counts (a resample of the runs), started from the full-data optimum and a few grid points:
    enough to leave its basin when a resample wants another optimum, 6x cheaper than the full grid."""
    starts = np.concatenate([theta_hat[None], _start_grid(u, L, pure)[[2, 12, 21] if not pure else [1, 3]]])
    S = len(starts)
    theta, f = _fit_batch(u, np.log(L), np.repeat(counts, S, axis=0), np.tile(starts, (len(counts), 1)), pure)
    best = np.argmin(f.reshape(-1, S), axis=1)
    return theta.reshape(len(counts), S, -1)[np.arange(len(counts)), best]


def fit_power_law(N, L, pure=False, grid=None):
    """Fit one power law with bootstrap intervals.

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
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=n_bootstrap if identifiable else 0)
    counts = counts[sizes_in(counts) >= n_free]  # fewer sizes than parameters define nothing
    boot = _refit(u, L, counts, theta, pure) if len(counts) else np.empty((0, n_free))
    loo = np.empty((0, n_free))
    if identifiable and n <= loo_max_points:
        drop_one = 1 - np.eye(n, dtype=int)
        drop_one = drop_one[sizes_in(drop_one) >= n_free]
        if len(drop_one):
            loo = _refit(u, L, drop_one, theta, pure)

    def to_user(th):  # (A, alpha[, C]) -> (a, alpha[, c]) with a in the user's unit of N
        th = np.atleast_2d(th)
        out = [np.exp(th[:, 0] + th[:, 1] * mean_logN), th[:, 1]]
        if not pure:
            out.append(np.exp(th[:, 2]))
        return np.stack(out, axis=1)

    point = to_user(theta)[0]
    lo, hi = _interval(to_user(boot), ci_level) if len(boot) else (point.copy(), point.copy())
    if len(loo):
        loo_user = to_user(loo)
        lo, hi = np.minimum(lo, loo_user.min(0)), np.maximum(hi, loo_user.max(0))
    grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 80) if grid is None else np.asarray(grid, float)
    u_grid = np.log(grid) - mean_logN
    band = _interval(np.array([predict(th, u_grid) for th in boot]), ci_level) if len(boot) else (None, None)
    out = {"n_points": n, "n_bootstrap": len(boot), "n_leave_one_out": len(loo)}
    for i, name in enumerate(["a", "alpha"] + ([] if pure else ["c"])):
        out[name] = float(point[i])
        out[name + "_ci"] = [float(lo[i]), float(hi[i])] if identifiable else None
    out["curve"] = {"n": grid.tolist(), "loss": predict(theta, u_grid).tolist(),
                    "band_lo": None if band[0] is None else band[0].tolist(),
                    "band_hi": None if band[1] is None else band[1].tolist()}
    out["residual_rms"] = float(np.sqrt(np.mean((np.log(predict(theta, u)) - np.log(L)) ** 2)))
    return out


def diagnose(N, L, sat, pure):
    """Plain-language warnings for a fit the data cannot pin down."""
    warns = []
    sizes = len(set(N))
    pct = f"{100 * ci_level:g}%"
    if sizes < 4:
        warns.append(f"only {sizes} model sizes for a 3-parameter curve: the curve passes through every point, so "
                     f"it has no interval and its numbers describe these runs, not a law; train at least 4-5 sizes.")
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
    if sat["alpha"] <= alpha_bounds[0] + 1e-6 or sat["alpha"] >= alpha_bounds[1] - 1e-6:
        warns.append(f"alpha sits at the search bound {sat['alpha']:.3g}: the losses do not follow a power law in N.")
    by_size = np.asarray(L)[np.argsort(N)]
    if by_size[-1] > Lmin * 1.001:
        warns.append(f"the largest model is not the best (loss {by_size[-1]:.3g} vs best {Lmin:.3g}): it is "
                     f"under-trained or over-fitting at this token budget, which bends the curve.")
    return warns


def fit_family(rows):
    """All fits of one family: saturating and pure, on all and on non-embedding parameters."""
    L = np.array([r["loss"] for r in rows])
    out = {"n_points": len(rows), "runs": [r["run"] for r in rows]}
    variants = [("", [r["n_params"] for r in rows])]
    ne = [r.get("n_params_non_embedding") for r in rows]
    if all(x is not None and x > 0 for x in ne) and len(set(ne)) >= min_points:
        variants.append(("_non_embedding", ne))
    for suffix, N in variants:
        N = np.array(N, float)
        sat, pure = fit_power_law(N, L), fit_power_law(N, L, pure=True)
        for name in ("alpha", "a", "c"):  # keys like alpha, alpha_ci, alpha_non_embedding, alpha_non_embedding_ci
            out[name + suffix], out[name + suffix + "_ci"] = sat[name], sat[name + "_ci"]
        for name in ("alpha", "a"):
            out[name + "_pure" + suffix], out[name + "_pure" + suffix + "_ci"] = pure[name], pure[name + "_ci"]
        warns = diagnose(list(N), list(L), sat, pure)
        out["warnings" + suffix] = warns
        out["n_params" + suffix] = N.tolist()
        if not suffix:
            out["loss"] = L.tolist()
            out["residual_rms_log"] = sat["residual_rms"]
            out["n_bootstrap"], out["n_leave_one_out"] = sat["n_bootstrap"], sat["n_leave_one_out"]
        out["curve" + suffix] = sat["curve"]
        out["curve_pure" + suffix] = {k: pure["curve"][k] for k in ("n", "loss")}
    out["ci_level"] = ci_level
    return out


def fit_all(rows):
    return {fam: fit_family(rs) for fam, rs in sorted(group_by_family(rows).items())}


# -----------------------------------------------------------------------------
# output

def _fmt(x):
    return "–" if x is None else f"{x:.3g}"


def human(n):
    """1234567 -> '1.23M': parameter counts a reader can compare at a glance."""
    if n is None:
        return None
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _ci(ci):
    return "–" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _with_ci(fit, key):
    ci = fit[key + "_ci"]
    return f"{fit[key]:.3g} " + ("(no interval)" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]")


def fit_markdown(fits, loss_name="loss"):
    """The fit table (and warnings) as markdown, for fit.md and the study report."""
    pct = f"{100 * ci_level:g}%"
    lines = [f"Fits of the {loss_name.replace('_', ' ')} (nats/token) vs parameters N; intervals are {pct} bootstrap intervals over runs "
             f"(widened to cover every leave-one-out fit when there are ≤ {loo_max_points} runs). "
             f"`a` is for N in the unit of the input (parameters for run folders).", "",
             "| family | runs | N range | α | α CI | c | c CI | a | α pure (L = a·N^-α) | α pure CI "
             "| α non-emb. | α non-emb. CI | α pure non-emb. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, f in fits.items():
        lines.append(
            f"| {fam} | {f['n_points']} | {human(min(f['n_params']))}–{human(max(f['n_params']))} "
            f"| **{_fmt(f['alpha'])}** | {_ci(f['alpha_ci'])} | {_fmt(f['c'])} | {_ci(f['c_ci'])} | {_fmt(f['a'])} "
            f"| {_fmt(f['alpha_pure'])} | {_ci(f['alpha_pure_ci'])} "
            f"| {_fmt(f.get('alpha_non_embedding'))} | {_ci(f.get('alpha_non_embedding_ci'))} "
            f"| {_fmt(f.get('alpha_pure_non_embedding'))} |")
    lines.append("")
    for fam, f in fits.items():
        warns = f["warnings"] + [f"(non-embedding fit) {w}" for w in f.get("warnings_non_embedding", [])]
        if warns:
            lines.append(f"**Warnings for {fam}:**")
            lines.extend(f"- {w}" for w in warns)
        else:
            lines.append(f"**{fam}:** no warnings — the fit is well conditioned.")
        lines.append("")
    return "\n".join(lines)


def fits_for_json(fits):
    """fit.json content: everything except the plotted curves."""
    return {fam: {k: v for k, v in f.items() if not k.startswith("curve")} for fam, f in fits.items()}


COLORS = {"gpt": "tab:blue", "lstm": "tab:orange"}


def _plain_log_ticks(ax, y=True):
    """Label a log axis 0.7, 0.8, 1 instead of 7x10^-1; minor ticks get labels only when the range is < 1 decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    axis = ax.yaxis if y else ax.xaxis
    lo, hi = ax.get_ylim() if y else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


def _color(fam, i):
    return COLORS.get(fam, f"C{i + 2}")


def plot_scaling(fits, path, families=None, suffix="", loss_name="loss"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    families = list(fits) if families is None else families
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=130)
    pct = f"{100 * ci_level:g}%"
    for i, fam in enumerate(families):
        f, col = fits[fam], _color(fam, i)
        if "alpha" + suffix not in f:
            continue
        cur = f["curve" + suffix]
        ax.scatter(f["n_params" + suffix], f["loss"], color=col, s=36, zorder=3, edgecolor="black", linewidth=0.5)
        ax.plot(cur["n"], cur["loss"], color=col, lw=2,
                label=f"{fam}: α = {_with_ci(f, 'alpha' + suffix)}, c = {f['c' + suffix]:.3g}")
        if cur["band_lo"] is not None:
            ax.fill_between(cur["n"], cur["band_lo"], cur["band_hi"], color=col, alpha=0.18, lw=0,
                            label=f"{fam}: {pct} band")
        pure = f["curve_pure" + suffix]
        ax.plot(pure["n"], pure["loss"], color=col, lw=1, ls="--",
                label=f"{fam}: pure $aN^{{-\\alpha}}$, α = {_with_ci(f, 'alpha_pure' + suffix)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N" if suffix else "parameters N")
    ax.set_ylabel(f"{loss_name.replace('_', ' ')} (nats/token)")
    _plain_log_ticks(ax)
    title = r"Scaling: $L = aN^{-\alpha} + c$" + (" (non-embedding N)" if suffix else "")
    ax.set_title(title + (f" — {families[0]}" if len(families) == 1 else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(rows, path):
    """Train (thin) and validation (thick, dots) loss vs tokens for every run with a log.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    logs = {}
    for r in rows:
        p = os.path.join(r.get("run_dir") or "", "log.jsonl")
        if r.get("run_dir") and os.path.isfile(p):
            with open(p) as f:
                logs[r["run"]] = [json.loads(line) for line in f if line.strip()]
    if not logs:
        return None
    families = sorted({r["family"] for r in rows if r["run"] in logs})
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.8), dpi=130, squeeze=False)
    for ax, fam in zip(axes[0], families):
        rs = sorted((r for r in rows if r["family"] == fam and r["run"] in logs), key=lambda r: r["n_params"])
        cmap = plt.get_cmap("viridis")
        for j, r in enumerate(rs):
            col = cmap(j / max(1, len(rs) - 1) * 0.9)
            log = logs[r["run"]]
            tr = [(e["tokens"], e["train_loss"]) for e in log if e.get("train_loss") is not None and e.get("tokens")]
            va = [(e["tokens"], e["val_loss"]) for e in log if e.get("val_loss") is not None and e.get("tokens")]
            if tr:
                ax.plot(*zip(*tr), color=col, lw=0.8, alpha=0.5)
            if va:
                ax.plot(*zip(*va), color=col, lw=2, marker="o", ms=3,
                        label=f"{r['run']} ({r['n_params'] / 1e6:.3g}M)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss (nats/token)")
        _plain_log_ticks(ax)
        ax.set_title(f"{fam}: validation (thick) and train (thin) loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_efficiency(rows, path):
    """Wall-clock time and peak memory vs parameters, per family."""
    have_time = [r for r in rows if r.get("wall_time_s")]
    have_mem = [r for r in rows if r.get("peak_mem_bytes")]
    if not have_time and not have_mem:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=130)
    families = sorted({r["family"] for r in rows})
    for ax, subset, key, scale, label in ((axes[0], have_time, "wall_time_s", 1 / 60, "wall-clock (minutes)"),
                                          (axes[1], have_mem, "peak_mem_bytes", 1 / 2 ** 20, "peak memory (MiB)")):
        for i, fam in enumerate(families):
            rs = sorted((r for r in subset if r["family"] == fam), key=lambda r: r["n_params"])
            if rs:
                ax.plot([r["n_params"] for r in rs], [r[key] * scale for r in rs], marker="o",
                        color=_color(fam, i), label=fam)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel(label)
        _plain_log_ticks(ax)
        ax.set_title(label.split(" (")[0] + " vs model size")
        ax.grid(True, which="both", alpha=0.3)
        if subset:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_compute(rows, path, loss_name="loss"):
    """Loss vs training compute C ≈ 6·N·D FLOPs (D = tokens trained), for runs that know their token count."""
    rs = [r for r in rows if r.get("tokens")]
    if not rs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=130)
    for i, fam in enumerate(sorted({r["family"] for r in rs})):
        fr = sorted((r for r in rs if r["family"] == fam), key=lambda r: 6 * r["n_params"] * r["tokens"])
        ax.plot([6 * r["n_params"] * r["tokens"] for r in fr], [r["loss"] for r in fr], marker="o",
                color=_color(fam, i), label=fam)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute ≈ 6·N·D (FLOPs)")
    ax.set_ylabel(f"{loss_name.replace('_', ' ')} (nats/token)")
    _plain_log_ticks(ax)
    ax.set_title("Loss vs training compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(rows, fits, out_dir, loss_name="loss", plot_dir=None):
    """fit.json and fit.md into out_dir, every plot into plot_dir (default out_dir); returns {name: path}."""
    plot_dir = plot_dir or out_dir
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(plot_dir, exist_ok=True)
    written = {"fit.json": os.path.join(out_dir, "fit.json"), "fit.md": os.path.join(out_dir, "fit.md")}
    with open(written["fit.json"], "w") as f:
        json.dump(fits_for_json(fits), f, indent=2)
    with open(written["fit.md"], "w") as f:
        f.write(f"# Scaling-law fits\n\n{fit_markdown(fits, loss_name)}\n")
    png = lambda name: os.path.join(plot_dir, name + ".png")  # noqa: E731
    written["scaling"] = plot_scaling(fits, png("scaling"), loss_name=loss_name)
    for fam in fits:
        written[f"scaling_{fam}"] = plot_scaling(fits, png(f"scaling_{fam}"), [fam], loss_name=loss_name)
    with_non_embedding = [fam for fam, f in fits.items() if "alpha_non_embedding" in f]
    if with_non_embedding:
        written["scaling_non_embedding"] = plot_scaling(fits, png("scaling_non_embedding"), with_non_embedding,
                                                        suffix="_non_embedding", loss_name=loss_name)
    for name, path in (("training_curves", plot_training_curves(rows, png("training_curves"))),
                       ("efficiency", plot_efficiency(rows, png("efficiency"))),
                       ("compute", plot_compute(rows, png("compute"), loss_name))):
        if path:
            written[name] = path
    return written


def main(argv=None):
    global n_bootstrap, ci_level, seed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (with results.json), or folders holding run folders")
    parser.add_argument("--table", help="CSV with columns family,n_params,loss "
                                        "[,n_params_non_embedding,tokens,wall_time_s,peak_mem_bytes,run]")
    parser.add_argument("--out", required=True, help="output folder for fit.json, fit.md and the plots")
    parser.add_argument("--loss", default="auto", choices=["auto", "test", "val"],
                        help="which loss of run folders to fit: test (test_perplexity.json), val, "
                             "or auto = test when every run has it")
    parser.add_argument("--n_bootstrap", type=int, default=n_bootstrap)
    parser.add_argument("--ci_level", type=float, default=ci_level)
    parser.add_argument("--seed", type=int, default=seed)
    args = parser.parse_args(argv)
    n_bootstrap, ci_level, seed = args.n_bootstrap, args.ci_level, args.seed
    try:
        if bool(args.runs) == bool(args.table):
            raise InputError("give run folders or --table runs.csv (exactly one of them)")
        if not 0 < ci_level < 1:
            raise InputError(f"--ci_level must be between 0 and 1, got {ci_level}")
        rows, loss_name = load_table(args.table) if args.table else load_runs(args.runs, args.loss)
        fits = fit_all(rows)
    except InputError as e:
        sys.exit(f"error: {e}")
    written = write_outputs(rows, fits, args.out, loss_name)
    print(fit_markdown(fits, loss_name))
    print("wrote " + ", ".join(sorted(written.values())))


if __name__ == "__main__":
    main()
