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


def resample_runs(n, n_bootstrap, seed, usable):
    """Which runs each refit sees, as count vectors (rows of how often each of n runs enters): n_bootstrap bootstrap
    resamples drawn with seed, and with at most LOO_MAX_POINTS runs every leave-one-out set. usable(counts) -> bool
    per row drops the sets that cannot define the fit (e.g. fewer model sizes than parameters)."""
    rng = np.random.default_rng(seed)
    boot = rng.multinomial(n, np.full(n, 1 / n), size=n_bootstrap)
    loo = 1 - np.eye(n, dtype=int) if n <= LOO_MAX_POINTS else np.zeros((0, n), int)
    return boot[usable(boot)], loo[usable(loo)]


def simulated_noise(n_bootstrap, n, sigma, df, seed):
    """(n_bootstrap, n) log-loss noise for a parametric bootstrap: N(0, s^2) per run, where each replicate's s is drawn
    from what sigma, estimated with df degrees of freedom, allows (s^2 = sigma^2 * df / chi^2_df, its scaled inverse
    chi-square distribution). A sigma measured from a handful of residuals or repeats is itself uncertain, and this
    widens the interval as Student's t widens a mean's: with df = 2 about 2.2x a known sigma's, with df = 20 ~1.05x."""
    rng = np.random.default_rng(seed)
    scale = sigma * np.sqrt(df / rng.chisquare(df, size=n_bootstrap))
    return scale[:, None] * rng.standard_normal((n_bootstrap, n))


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


def ci_text(ci):
    return "–" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def with_ci(fit, key):
    """'0.31 [0.25, 0.4]': a fitted number and its interval, or '(no interval)' where the data cannot give one."""
    return f"{fit[key]:.3g} " + ("(no interval)" if fit[key + "_ci"] is None else ci_text(fit[key + "_ci"]))
