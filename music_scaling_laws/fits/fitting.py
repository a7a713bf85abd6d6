"""
The machinery every scaling-law fit here shares: power_law.py's L(N) fits and joint_fit.py's L(N, D) fit use the same
robust loss on log-loss residuals, the same vectorised solver, the same interval settings and the same way of writing
a fitted number with its interval; the joint fit's intervals resample runs (resample_runs), L(N)'s simulate new
losses around the fitted curve (simulated_noise, power_law.fit_power_law).

Why these choices (the Chinchilla "approach 3" recipe, adapted to 4-16 runs):
  - residuals are taken in log-loss space (relative errors, so large and small losses weigh alike),
  - a Huber loss keeps one diverged or badly tuned run from dragging an exponent around,
  - the solver starts from a grid of points and the caller keeps the best,
  - intervals come from refitting many resamples with the same solver: a bootstrap over runs widened by
    leave-one-out fits (the joint fit), or a parametric bootstrap with the measured noise (L(N); docs/fits.md).
"""
import numpy as np

# the method's constants: fixed by the recipe above, not settings of a study
HUBER_DELTA = 1e-3     # Huber threshold on log-loss residuals (Chinchilla uses 1e-3: ~0.1% relative error)
TIE_BREAK = 1e-3       # a quadratic term this much weaker than Huber's: without it a near-L1 loss has flat valleys
                       # (e.g. 8 evenly spaced sizes) where the optimum, and so alpha, depends on rounding
LOO_MAX_POINTS = 8     # with at most this many runs, intervals are widened to cover every leave-one-out fit
ALPHA_BOUNDS = (0.0, 10.0)  # exponents outside this are not a scaling law (and 10 keeps a = e^(alpha*logN) finite)

# the user's settings and their defaults (scaling.py and study.py expose them as knobs)
N_BOOTSTRAP = 1000     # bootstrap resamples of the runs for the confidence intervals
CI_LEVEL = 0.95        # two-sided confidence level of every interval
SEED = 1337            # bootstrap RNG seed, so a re-run gives the same intervals


# -----------------------------------------------------------------------------
# the solver

def huber(r, delta=HUBER_DELTA):
    """Huber loss divided by delta (~|r| for large r) plus the tie-break, its derivative psi and its IRLS
    curvature psi/r."""
    small = np.abs(r) <= delta
    k = TIE_BREAK / delta
    loss = np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta) + 0.5 * k * r * r
    psi = np.where(small, r / delta, np.sign(r)) + k * r
    curvature = np.where(small, 1 / delta, 1 / np.maximum(np.abs(r), delta)) + k
    return loss, psi, curvature


def fit_batch(model, logL, counts, starts, lo, hi, max_iter=400):
    """Minimise the Huber loss of log-loss residuals for many problems at once (Levenberg-Marquardt steps with the
    IRLS curvature, kept inside the box lo..hi). Vectorised because the bootstrap needs thousands of tiny fits; one
    scipy.optimize call per fit costs ~20 ms of Python overhead (L-BFGS on the joint fit: ~0.3 s), this ~0.1 ms.

    model(theta (M, k)) -> predicted ln L (M, n) and its Jacobian (M, n, k); logL (n,), the losses every problem
    fits, or (M, n), each problem's own (a parametric bootstrap's simulated losses); counts (M, n): how often each
    run enters problem m (1 for a plain fit, the multiplicities for a resample); starts (M, k).
    Returns theta (M, k) and the objective (M,)."""
    theta = np.clip(np.array(starts, float), lo, hi)
    k = theta.shape[1]
    logL = np.asarray(logL, float)

    def evaluate(th, c, rows=slice(None)):
        pred, J = model(th)
        loss, psi, curv = huber(pred - (logL if logL.ndim == 1 else logL[rows]))
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
        f_new, psi_new, curv_new, J_new = evaluate(new, c, act)
        better = f_new < f[act]
        b = act[better]
        progress = np.zeros(len(act), bool)
        progress[better] = f[b] - f_new[better] > 1e-12 * np.maximum(1.0, f[b])
        theta[b], f[b] = new[better], f_new[better]
        psi[b], curv[b], J[b] = psi_new[better], curv_new[better], J_new[better]
        lam[act] = np.clip(np.where(better, lam[act] * 0.3, lam[act] * 10), 1e-12, 1e12)
        stalled[act] = np.where(progress, 0, stalled[act] + 1)
    return theta, f


def refit(model, logL, counts, starts, lo, hi, max_iter=400):
    """Fit every row of counts (a resample of the runs) from each of a few starts and keep each resample's best:
    starting from the full-data optimum and a few grid points is enough to leave its basin when a resample wants
    another optimum, and far cheaper than the full grid. logL: (n,) or one row per resample (simulated losses).
    Returns theta (len(counts), k)."""
    S = len(starts)
    logL = np.asarray(logL, float)
    targets = logL if logL.ndim == 1 else np.repeat(logL, S, axis=0)
    theta, f = fit_batch(model, targets, np.repeat(counts, S, axis=0), np.tile(starts, (len(counts), 1)), lo, hi,
                         max_iter)
    best = np.argmin(f.reshape(-1, S), axis=1)
    return theta.reshape(len(counts), S, -1)[np.arange(len(counts)), best]


# -----------------------------------------------------------------------------
# intervals

def interval(samples, level):
    """Two-sided percentile interval of samples (along axis 0) at the given level."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def resample_runs(n, n_bootstrap, seed, usable, groups=None):
    """Which runs each refit sees, as count vectors (rows of how often each of n runs enters): n_bootstrap bootstrap
    resamples drawn with seed, and with at most LOO_MAX_POINTS runs (or groups) every leave-one-out set. usable(counts)
    -> bool per row drops the sets that cannot define the fit (e.g. fewer model sizes than parameters).

    groups: a label per run (e.g. the wsd trunk a branch was cooled down from), or None. Runs of one group share its
    errors (a branch inherits its trunk's weights), so they are resampled together, a block bootstrap: each
    resample draws groups with replacement and every run of a drawn group enters as often as its group was drawn,
    and the leave-one-out sets leave a whole group out."""
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = list(range(n))
    labels = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    member = np.array([labels[g] for g in groups])
    k = len(labels)
    drawn = rng.multinomial(k, np.full(k, 1 / k), size=n_bootstrap)
    boot = drawn[:, member]
    loo = (1 - np.eye(k, dtype=int))[:, member] if k <= LOO_MAX_POINTS else np.zeros((0, n), int)
    return boot[usable(boot)], loo[usable(loo)]


def simulated_noise(n_bootstrap, n, sigma, df, seed, size_of=None, size_scatter=None, size_df=None):
    """(n_bootstrap, n) log-loss noise for a parametric bootstrap: N(0, s^2) per run, where each replicate's s is drawn
    from what sigma, estimated with df degrees of freedom, allows (s^2 = sigma^2 * df / chi^2_df, its scaled inverse
    chi-square distribution). A sigma measured from a handful of residuals or repeats is itself uncertain, and this
    widens the interval as Student's t widens a mean's: with df = 2 about 2.2x a known sigma's, with df = 20 ~1.05x.

    With size_of (the index of each run's model size) and size_scatter (the scatter of the sizes' mean ln loss about
    the curve, estimated with size_df degrees of freedom), every replicate also draws an error per size that all runs
    of the size share (a random effect: a learning rate set a little off, an architecture choice), with the variance
    the sizes show beyond what the seeds explain: tau^2 = max(0, m^2 - s^2 * mean(1/runs per size)), m^2 drawn from
    size_scatter's own scaled inverse chi-square. Where the seeds explain the sizes' scatter, tau is ~0 and this is
    the seeds-only bootstrap; where they do not, the sizes' scatter sets the interval."""
    rng = np.random.default_rng(seed)
    scale = sigma * np.sqrt(df / rng.chisquare(df, size=n_bootstrap))
    noise = scale[:, None] * rng.standard_normal((n_bootstrap, n))
    if size_of is not None and size_scatter is not None and size_df:
        size_of = np.asarray(size_of)
        per_size = np.bincount(size_of)
        m2 = size_scatter ** 2 * size_df / rng.chisquare(size_df, size=n_bootstrap)
        tau = np.sqrt(np.maximum(m2 - scale ** 2 * float(np.mean(1 / per_size)), 0.0))
        noise += (tau[:, None] * rng.standard_normal((n_bootstrap, len(per_size))))[:, size_of]
    return noise


def intervals(point, boot, loo, level):
    """(lo, hi) per column: the bootstrap interval (the point itself when there is no resample), widened to cover
    every leave-one-out fit, so that with few runs one influential run cannot hide."""
    lo, hi = interval(boot, level) if len(boot) else (point.copy(), point.copy())
    if len(loo):
        lo, hi = np.minimum(lo, loo.min(0)), np.maximum(hi, loo.max(0))
    return lo, hi


# -----------------------------------------------------------------------------
# numbers as text

def percent(level):
    """0.95 -> '95%', the label of an interval."""
    return f"{100 * level:g}%"


def fmt(x):
    return "–" if x is None else f"{x:.3g}"


def human(n):
    """1234567 -> '1.23M': parameter counts a reader can compare at a glance."""
    if n is None:
        return None
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def at_bound(ci, bounds, tol=1e-3):
    """Which ends of an interval sit on the search box (bounds = (lo, hi)): (lower, upper) booleans. An end on the
    box is where the solver stopped, not where the data put it: the interval is open on that side."""
    if ci is None or bounds is None:
        return False, False
    span = max(abs(bounds[1] - bounds[0]), 1e-12) if np.isfinite(bounds[1] - bounds[0]) else 1.0
    return (bounds[0] is not None and ci[0] <= bounds[0] + tol * span,
            bounds[1] is not None and ci[1] >= bounds[1] - tol * span)


def ci_text(ci, bounds=None, name="x"):
    """'[0.25, 0.4]', or where an end reaches the search box, what the interval does bound: 'α > 0.02, no upper
    bound', 'α < 0.9, no lower bound', or 'not bounded by the runs' (both ends)."""
    if ci is None:
        return "–"
    low, high = at_bound(ci, bounds)
    if low and high:
        return "not bounded by the runs"
    if high:
        return f"{name} > {ci[0]:.3g}, no upper bound"
    if low:
        return f"{name} < {ci[1]:.3g}, no lower bound"
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


SYMBOLS = {"alpha": "α", "beta": "β", "alpha_pure": "α", "alpha_non_embedding": "α", "alpha_without_largest": "α",
           "alpha_pure_non_embedding": "α", "a": "a", "b": "b"}


def bounds_of(fit, key):
    """The search box of a fitted constant: fit[key + '_bounds'] where the fit records one, ALPHA_BOUNDS for an
    exponent, else None (no box to reach)."""
    return fit.get(key + "_bounds") or (ALPHA_BOUNDS if key in SYMBOLS and key not in ("a", "b") else None)


def open_interval(fit, key):
    """True where the interval of fit[key] reaches its search box on either side (it bounds only one side, or none)."""
    return any(at_bound(fit.get(key + "_ci"), bounds_of(fit, key)))


def with_ci(fit, key):
    """'0.31 [0.25, 0.4]': a fitted number and its interval; '(no interval)' where the data cannot give one; and
    '0.31 (α > 0.02, no upper bound)' where the interval reaches the search box, so that [0.02, 10] is never read as
    an interval the runs set."""
    ci = fit.get(key + "_ci")
    if ci is None:
        return f"{fit[key]:.3g} (no interval)"
    text = ci_text(ci, bounds_of(fit, key), SYMBOLS.get(key, key))
    return f"{fit[key]:.3g} " + (text if text.startswith("[") else f"({text})")
