"""
Scaling laws L(N) fitted to training runs: the fits with their intervals and plain-language warnings. run_table.py
reads the runs (run folders or a CSV table), fit_policy.py chooses which runs each fit sees, fit_text.py writes
fit.json / fit.md; plots.py draws the fits, scaling.py is the command line, study.py fits the runs of a study: both
through fit_all and fit_text.write_fit, so the same runs give the same fit.json.

On the runs of the family's largest token budget (fit_policy.select_runs) fit_all fits
    L = a * N^(-alpha) + c      (saturating power law, c = irreducible loss)
    L = a * N^(-alpha)          (pure power law, the Kaplan et al. form)
and, where the largest model is not the best, alpha without it (alpha_without_largest); where the runs span several
budgets, the joint L(N, D) = E + A/N^alpha + B/D^beta of joint_fit.py, with its compute-optimal frontier.

Why not a plain scipy curve_fit: with 4-6 points the least-squares problem is ill-posed and its answer depends
on the starting point and on the unit of N (one seed's table gives alpha~0.87 with N in millions and alpha~3.8
with N in parameters). So, following the Chinchilla "approach 3" recipe (fitting.py: Huber loss on log-loss
residuals, a grid of starts), we work with log N centred on its mean, so multiplying N by any constant changes only
`a`, never alpha or c, and we add plain-language warnings whenever the data cannot pin the fit down. The intervals
are a parametric bootstrap around the fitted curve with the noise the runs show: run-to-run noise that repeats
measure plus an error per size that its seeds share, whichever the residuals show (fit_power_law says how;
docs/fits.md says what they mean and what coverage a simulation measured).

The settings a user chooses (n_bootstrap, ci_level, seed, fit_params) are arguments of fit_all; every fit records
its ci_level, so the markdown and the plots read it from the fits instead of from a setting that could disagree.
"""
import math

import numpy as np

from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.fit_policy import (MIN_POINTS, MIN_SIZES_FOR_CI, REFIT_MAX_ITER, check_settings,
                                               group_by_family, run_to_run_noise, select_runs)
from music_scaling_laws.fits.fitting import (ALPHA_BOUNDS, CI_LEVEL, N_BOOTSTRAP, SEED, fit_batch, interval,
                                            open_interval, percent, refit, simulated_noise, with_ci)
from music_scaling_laws.fits.joint_fit import fit_family_joint

# what the bootstrap of each sigma_source simulates (fit.json's noise_model, in words)
NOISE_MODELS = {
    "repeats+sizes": "per-run noise with the repeats' sigma plus an error per size that its runs share, as large as "
                     "the sizes' misses show beyond the seeds (a random effect per size)",
    "residual": "per-run noise with the residual scatter about the curve (no repeats: seeds and any error per size "
                "are measured together)",
    None: "none: too few sizes and no repeats to measure the noise, so no interval",
}


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
    size_values, size_of = np.unique(N, return_inverse=True)
    sizes = len(size_values)
    resid = np.log(L) - fitted
    size_scatter = size_df = None
    if noise is not None and sizes > n_free:
        # seeds measure the run-to-run noise; the sizes' mean misses measure whatever error a size's runs share
        # (a rate set a little off, a lucky architecture), which the seeds cannot see: both enter the bootstrap
        sigma, df = noise["sigma"], noise["df"]
        size_mean = np.bincount(size_of, resid) / np.bincount(size_of)
        size_scatter, size_df = float(np.sqrt(np.sum(size_mean ** 2) / (sizes - n_free))), sizes - n_free
        source = "repeats+sizes"
    elif sizes >= MIN_SIZES_FOR_CI and n > n_free:
        sigma, df, source = float(np.sqrt(np.sum(resid ** 2) / (n - n_free))), n - n_free, "residual"
    else:  # as many sizes as parameters, or too few to tell noise from curve: an interval would be made up
        sigma = df = source = None
    sims = (fitted + simulated_noise(n_bootstrap, n, sigma, df, seed, size_of, size_scatter, size_df) if source
            else np.zeros((0, n)))
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
    out = {"n_points": n, "n_bootstrap": len(boot), "sigma": sigma, "sigma_df": df, "sigma_source": source,
           "size_scatter": size_scatter, "size_scatter_df": size_df,
           # the per-size error beyond the seeds (tau), as the point estimate of the random effect
           "size_sigma": (None if size_scatter is None else
                          float(math.sqrt(max(size_scatter ** 2 - sigma ** 2 * float(np.mean(1 / np.bincount(size_of))),
                                              0.0))))}
    if not pure:  # the box c was searched in: an interval reaching its floor bounds c only from above
        out["c_bounds"] = [float(L.min()) * 1e-6, float(L.max())]
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
        if open_interval(sat, "alpha"):
            warns.append(f"alpha is not bounded by these runs: its {pct} interval reaches the search bound "
                         f"({with_ci(sat, 'alpha')}), so they support only that one-sided statement about alpha.")
        elif a_hi - a_lo > sat["alpha"]:
            warns.append(f"alpha is poorly determined: its {pct} interval [{a_lo:.3g}, {a_hi:.3g}] is "
                         f"{a_hi / max(a_lo, 1e-9):.2g}x from end to end, wider than alpha ({sat['alpha']:.3g}) "
                         f"itself; only the interval, not the point, is a result.")
    if sat["alpha"] <= ALPHA_BOUNDS[0] + 1e-6 or sat["alpha"] >= ALPHA_BOUNDS[1] - 1e-6:
        warns.append(f"alpha sits at the search bound {sat['alpha']:.3g}: the losses do not follow a power law in N.")
    p = lack_of_fit(N, L, sat, noise)
    if p is not None and p < 0.05:
        tau = sat.get("size_sigma")
        warns.append(f"the curve misses the sizes by more than the seeds explain (lack-of-fit F test, p = {p:.2g}): "
                     f"each size carries an error its seeds share (a rate or a setting a little off for that size, "
                     f"or a law of another form)"
                     + (f", about {100 * tau:.2g}% of the loss; the intervals include it as an error per size, "
                        f"so they are wider than the seeds alone would make them." if tau else "."))
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
        out["c_bounds" + suffix] = sat["c_bounds"]
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
            for key in ("sigma", "sigma_df", "sigma_source", "size_sigma", "size_scatter", "size_scatter_df"):
                out[key] = sat[key]
            out["noise_model"] = NOISE_MODELS[sat["sigma_source"]]
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


