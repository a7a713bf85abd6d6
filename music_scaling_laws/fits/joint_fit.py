"""
The joint scaling law L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla's "approach 3") of one model family, fitted to
runs that differ in parameters N and in training tokens D, and the compute-optimal allocation it implies.

Compute is counted as the models compute it: C = k·N^p·D, with k and p fitted to the runs' own FLOPs per token
(train.py's flops_per_token, results.json's train_flops, a table's flops column) as a function of the fitted N. For
this suite's GPTs that is 2.0x 6N at gpt_16 and 1.27x at gpt_128 (attention and the untied position table); a
size-dependent error in C bends the frontier's exponents (Porian et al. 2024, Pearce & Song 2024). Runs without FLOPs
fall back to Kaplan's C = 6·N·D (k = 6, p = 1), and the output says so. Minimising L(N, C/(k·N^p)) over N gives
    N_opt(C) = G·(C/k)^a,   D_opt(C) = (C/k) / N_opt^p,
    a = beta/(alpha+p·beta),  b = alpha/(alpha+p·beta) (D_opt ∝ C^b),  G = (alpha·A / (p·beta·B))^(1/(alpha+p·beta)).
The frontier is tabled and drawn only from the smallest run's compute to one decade beyond the largest's, and every
budget whose N_opt or D_opt leaves the trained range, or whose D_opt exceeds the training set (more than one epoch,
where Muennighoff et al. 2023 apply instead), is flagged in the table and warned about.
power_law.fit_family adds fit_family_joint's result as `joint` when the runs span at least two token budgets;
power_law.fit_markdown prints joint_markdown; plots.py draws the surface and the frontier.

The recipe is the 1-D fit's (fitting.py: Huber loss on log-loss residuals, a grid of starts, bootstrap intervals over
runs, widened by leave-one-out with few runs) in two dimensions. log N and log D are centred on their means, so
multiplying N or D by a constant changes only A or B, never E or the exponents. The solver runs from the whole grid,
then scipy's L-BFGS-B polishes the best point (it treats the bounds exactly, and an exponent at 0 is a possible
answer here); the bootstrap refits use the vectorised solver alone, since one L-BFGS-B call per resample costs ~0.3 s.
"""
import math

import numpy as np

from music_scaling_laws.fits.fitting import (ALPHA_BOUNDS, CI_LEVEL, N_BOOTSTRAP, SEED, fit_batch, fmt, huber, human,
                                            interval, intervals, open_interval, percent, refit, resample_runs,
                                            with_ci)

NAMES = ("E", "A", "alpha", "B", "beta", "a", "b")  # the fitted constants and the frontier exponents, in fit.json
MIN_VALUES = 3      # fewer distinct values of N (or D) than this cannot define a term c·x^-k next to E
N_FREE = 5          # parameters of the surface: a fit needs more runs than this to leave a residual to resample
COLLINEAR = 0.95    # |corr(log N, log D)| above this: the runs cannot tell the N term from the D term
ZERO = 1e-6         # an exponent this close to its bound sits on it


# -----------------------------------------------------------------------------
# the surface. Parameters theta = (e, a, alpha, b, beta) in centred units u = ln N - mean ln N, v = ln D - mean ln D:
#   ln L = logsumexp(e, a - alpha*u, b - beta*v)   i.e. L = e^e + e^a·e^(-alpha*u) + e^b·e^(-beta*v)
# so E = e^e, A = e^(a + alpha*mean ln N) and B = e^(b + beta*mean ln D) in the user's units.

def _model(theta, u, v):
    """Predicted ln L (M, n) and its Jacobian (M, n, 5) for a batch of parameter vectors theta (M, 5)."""
    z = np.stack(np.broadcast_arrays(theta[:, :1], theta[:, 1:2] - theta[:, 2:3] * u,
                                     theta[:, 3:4] - theta[:, 4:5] * v), -1)
    m = z.max(-1, keepdims=True)
    ez = np.exp(z - m)
    s = ez.sum(-1, keepdims=True)
    w = ez / s  # share of each term in the predicted loss
    return (m + np.log(s))[..., 0], np.stack([w[..., 0], w[..., 1], -w[..., 1] * u, w[..., 2], -w[..., 2] * v], -1)


def _bounds(logL):
    """Box for (e, a, alpha, b, beta): each term from ~0 (1e-6 of the smallest loss) up to the largest loss."""
    lo_term, hi_term = float(logL.min()) - math.log(1e6), float(logL.max())
    lo = np.array([lo_term, lo_term, ALPHA_BOUNDS[0], lo_term, ALPHA_BOUNDS[0]])
    hi = np.array([hi_term, hi_term, ALPHA_BOUNDS[1], hi_term, ALPHA_BOUNDS[1]])
    return lo, hi


def _start_grid(L):
    """Starting points: E as a share of the smallest loss, both exponents, and how the rest of the loss at the centre
    of the data is split between the N and the D term (4 x 4 x 4 x 3 = 192 points)."""
    starts = []
    for e_frac in (0.05, 0.4, 0.7, 0.9):
        E0 = e_frac * L.min()
        reducible = float(np.exp(np.mean(np.log(L - E0))))
        for alpha0 in (0.1, 0.3, 0.7, 1.5):
            for beta0 in (0.1, 0.3, 0.7, 1.5):
                for share in (0.25, 0.5, 0.75):
                    starts.append([math.log(E0), math.log(share * reducible), alpha0,
                                   math.log((1 - share) * reducible), beta0])
    return np.array(starts)


def _polish(theta, u, v, logL, lo, hi):
    """L-BFGS-B from the best grid fit, kept only where it lowers the objective."""
    from scipy.optimize import minimize  # imported on first use: it takes ~0.5 s, and most importers never fit

    def objective(th):
        pred, J = _model(th[None], u, v)
        loss, psi, _ = huber(pred[0] - logL)
        return loss.sum(), J[0].T @ psi

    res = minimize(objective, theta, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    return res.x if res.fun < objective(theta)[0] else theta


def log_optimum(A, alpha, B, beta, C, k=6.0, p=1.0):
    """ln N_opt and ln D_opt for budgets C = k·N^p·D (arrays broadcast), from minimising L along k·N^p·D = C."""
    s = alpha + p * beta
    log_G = (np.log(alpha * A) - np.log(p * beta * B)) / s
    x = np.log(np.asarray(C, float) / k)
    log_n = log_G + beta / s * x
    return log_n, x - p * log_n


def compute_model(N, D, flops=None):
    """How the runs' training compute depends on the fitted N: C = k·N^p·D, {k, p, source, max_error}. With every
    run's FLOPs known, k and p are fitted to ln(FLOPs per token) = ln k + p ln N (max_error: the fit's largest
    relative miss on a run); otherwise C = 6·N·D, source '6ND'."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    if flops is None or any(f is None or not f > 0 for f in flops):
        return {"k": 6.0, "p": 1.0, "source": "6ND", "max_error": None}
    per_token = np.asarray(flops, float) / D
    if len(np.unique(N)) > 1:
        p, log_k = np.polyfit(np.log(N), np.log(per_token), 1)
    else:
        p, log_k = 1.0, float(np.mean(np.log(per_token / N)))
    err = float(np.max(np.abs(np.exp(log_k + p * np.log(N)) / per_token - 1)))
    return {"k": float(np.exp(log_k)), "p": float(p), "source": "flops", "max_error": err}


def tokens_at(j, N, C):
    """The token count D that spends compute C on a model of N parameters under the joint fit j's compute model."""
    c = j.get("compute") or {"k": 6.0, "p": 1.0}
    return np.asarray(C, float) / (c["k"] * np.asarray(N, float) ** c["p"])


def predict(j, N, D):
    """The fitted loss E + A/N^alpha + B/D^beta of a joint fit j at N, D (arrays broadcast)."""
    return j["E"] + np.exp(np.log(j["A"]) - j["alpha"] * np.log(N)) + np.exp(np.log(j["B"]) - j["beta"] * np.log(D))


def compute_optimal(j, C):
    """N_opt(C), D_opt(C) of a joint fit j for budgets C (None when an exponent is 0: no finite optimum)."""
    if min(j["alpha"], j["beta"]) <= ZERO:
        return None
    c = j.get("compute") or {"k": 6.0, "p": 1.0}
    log_n, log_d = log_optimum(j["A"], j["alpha"], j["B"], j["beta"], C, c["k"], c["p"])
    return np.exp(log_n), np.exp(log_d)


def budgets(C_runs):
    """Round compute budgets from the runs' smallest compute to one decade beyond their largest, and nowhere else: the
    powers of 10 there (every other one when that is more than six), or four budgets evenly spaced in log C when
    fewer than two powers of 10 fall inside."""
    lo, hi = float(np.min(C_runs)), 10 * float(np.max(C_runs))
    powers = np.arange(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)
    if len(powers) < 2:
        return np.geomspace(lo, hi, 4)
    return 10.0 ** powers[::1 if len(powers) <= 6 else 2]


# -----------------------------------------------------------------------------
# the fit

def fit_joint(N, D, L, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED, flops=None, dataset_tokens=None,
              groups=None):
    """Fit L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals (n_bootstrap resamples drawn with seed,
    ci_level intervals) and the compute-optimal frontier. N, D, L: arrays, one entry per run; flops: each run's
    training FLOPs (None: C = 6·N·D); dataset_tokens: the training set's size in tokens (None: unknown), above which
    a D_opt means several epochs; groups: a label per run (the wsd trunk a branch was cooled down from), so that runs
    of one group, which share its errors, are resampled together (fitting.resample_runs). Returns a dict with the
    NAMES, their intervals (None where the runs cannot give one), the compute model, the lack-of-fit check
    (lack_of_fit), the frontier at a few budgets (tabled as a result only where the check passes) and warnings."""
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    compute = compute_model(N, D, flops)
    p = compute["p"]
    n, logL = len(L), np.log(L)
    mean_logN, mean_logD = float(np.mean(np.log(N))), float(np.mean(np.log(D)))
    u, v = np.log(N) - mean_logN, np.log(D) - mean_logD  # centred: a unit of N or D shifts only a or b
    lo, hi = _bounds(logL)
    starts = _start_grid(L)
    theta, f = fit_batch(lambda th: _model(th, u, v), logL, np.ones((len(starts), n)), starts, lo, hi)
    theta = _polish(theta[np.argmin(f)], u, v, logL, lo, hi)

    def usable(counts):  # resamples with enough distinct N and D to define both terms
        return np.array([len(np.unique(N[c > 0])) >= MIN_VALUES and len(np.unique(D[c > 0])) >= MIN_VALUES
                         for c in counts], bool)

    identifiable = usable(np.ones((1, n)))[0] and n > N_FREE
    no_sets = np.zeros((0, n), int)
    boot_sets, loo_sets = resample_runs(n, n_bootstrap, seed, usable, groups) if identifiable else (no_sets, no_sets)
    # each resample starts from the full-data optimum and three spread grid points (see fitting.refit)
    refit_starts = np.concatenate([theta[None], starts[[21, 97, 170]]])

    def refit_all(sets):
        if not len(sets):
            return np.empty((0, N_FREE))
        return refit(lambda th: _model(th, u, v), logL, sets, refit_starts, lo, hi)

    def to_user(th):  # (e, a, alpha, b, beta) -> NAMES in the user's units
        th = np.atleast_2d(th)
        alpha, beta = th[:, 2], th[:, 4]
        s = alpha + p * beta
        a = np.divide(beta, s, out=np.full_like(s, 0.5 / p), where=s > 0)  # both 0: nothing to allocate; say 1/2
        return np.stack([np.exp(th[:, 0]), np.exp(th[:, 1] + alpha * mean_logN), alpha,
                         np.exp(th[:, 3] + beta * mean_logD), beta, a, 1 - p * a], axis=1)

    boot, loo = to_user(refit_all(boot_sets)), to_user(refit_all(loo_sets))
    point = to_user(theta)[0]
    ci_lo, ci_hi = intervals(point, boot, loo, ci_level)
    out = {"n_points": n, "n_bootstrap": len(boot), "n_leave_one_out": len(loo)}
    for i, name in enumerate(NAMES):
        out[name] = float(point[i])
        out[name + "_ci"] = [float(ci_lo[i]), float(ci_hi[i])] if identifiable else None
    out["E_bounds"] = [float(np.exp(lo[0])), float(np.exp(hi[0]))]
    out["resampled_by"] = "trunk" if groups is not None and len(set(groups)) < n else "run"
    pred = _model(theta[None], u, v)[0][0]
    out["residual_rms_log"] = float(np.sqrt(np.mean((pred - logL) ** 2)))
    loso = [np.flatnonzero(N != x) for x in np.unique(N)] if identifiable and len(np.unique(N)) > MIN_VALUES else []
    loso_sets = np.array([np.isin(np.arange(n), keep).astype(int) for keep in loso]).reshape(-1, n)
    loso_sets = loso_sets[usable(loso_sets)] if len(loso_sets) else loso_sets
    out["lack_of_fit"] = lack_of_fit(N, D, logL - pred, u, v, point[5], to_user(refit_all(loso_sets))[:, 5],
                                     interval(boot[:, 5], ci_level) if len(boot) else None, ci_level)
    C_runs = np.asarray(flops, float) if compute["source"] == "flops" else 6 * N * D
    compute["range"] = [float(C_runs.min()), float(C_runs.max())]
    out["compute"] = compute
    out["dataset_tokens"] = dataset_tokens
    out["n_params"], out["tokens"], out["loss"] = N.tolist(), D.tolist(), L.tolist()
    out["frontier"] = _frontier(out, budgets(C_runs), boot, loo, identifiable, ci_level)
    for row in out["frontier"] or []:
        row["extrapolation"] = extrapolation(out, row)
    out["warnings"] = diagnose_joint(N, D, out, ci_level) + extrapolation_warnings(out)
    if out["lack_of_fit"]["failed"]:
        out["warnings"].insert(0, "lack of fit: " + "; ".join(out["lack_of_fit"]["reasons"]) + ". So the surface "
                               "is not a law of these runs, and its compute-optimal frontier is not given as a result "
                               "(fit.json keeps it under `frontier` for inspection).")
    out["ci_level"] = ci_level
    return out


LOF_P = 0.01        # a misfit test at this level fails the surface (two tests run, so ~2% false alarms in all)
LOSO_MIN_SHIFT = 0.05  # a leave-one-size-out move of the frontier exponent a smaller than this is never instability


def lack_of_fit(N, D, resid, u, v, a, a_loso, a_ci, ci_level=CI_LEVEL):
    """Does the surface fit the runs well enough for its frontier to be a result? Three checks, in words in `reasons`
    where they fail (failed: any did):
      - scale: where runs repeat an (N, D) with other seeds, their spread sigma is the run-to-run noise, and the
        residuals must not exceed it (F test of residual variance over the repeats', p < LOF_P);
      - structure: the residuals must not follow log N x log D, the interaction an additive surface cannot bend to
        (F test of that one regressor, p < LOF_P): a Kaplan-style law, or a learning rate tuned per size at one budget;
      - stability: leaving out any one model size must not move the frontier exponent a (N_opt ∝ C^a) outside its
        bootstrap interval (and by more than LOSO_MIN_SHIFT): a frontier one size can move is not measured.
    Returns {failed, reasons, residual_rms, sigma (repeats', or None), interaction_p, a_leave_one_size_out}."""
    from scipy.stats import f as f_dist  # imported on first use: it takes ~0.5 s
    n = len(resid)
    out = {"residual_rms": float(np.sqrt(np.mean(resid ** 2))), "sigma": None, "interaction_p": None,
           "a_leave_one_size_out": [float(x) for x in a_loso], "reasons": []}
    exact = out["residual_rms"] < 1e-9  # the surface passes through every run: rounding, not misfit, is all that's left
    cells = {}
    for key, r in zip(zip(N, D), resid):
        cells.setdefault(key, []).append(r)
    rep = [np.array(c) for c in cells.values() if len(c) > 1]
    df_rep = sum(len(c) - 1 for c in rep)
    if df_rep and n > N_FREE and not exact:
        sigma2 = sum(float(((c - c.mean()) ** 2).sum()) for c in rep) / df_rep
        if sigma2 > 0:
            out["sigma"] = float(np.sqrt(sigma2))
            p = float(f_dist.sf(np.sum(resid ** 2) / (n - N_FREE) / sigma2, n - N_FREE, df_rep))
            if p < LOF_P:
                out["reasons"].append(f"the runs miss the surface by {100 * out['residual_rms']:.2g}% RMS in ln loss, "
                                      f"more than the {100 * out['sigma']:.2g}% their repeats scatter by (F test, "
                                      f"p = {p:.2g})")
    x = (u - u.mean()) * (v - v.mean())
    if n > N_FREE + 1 and np.sum(x ** 2) > 0 and not exact:
        b = float(x @ resid / (x @ x))
        rest = float(np.sum((resid - b * x) ** 2)) / (n - N_FREE - 1)
        if rest > 0:
            out["interaction_p"] = p = float(f_dist.sf(b * b * float(x @ x) / rest, 1, n - N_FREE - 1))
            if p < LOF_P:
                out["reasons"].append(f"the residuals follow log N × log D (F test, p = {p:.2g}): the loss's "
                                      f"dependence on N changes with D in a way E + A/N^α + B/D^β cannot bend to")
    if a_ci is not None and len(a_loso):
        worst = float(a_loso[np.argmax(np.abs(a_loso - a))])
        if (worst < a_ci[0] or worst > a_ci[1]) and abs(worst - a) > LOSO_MIN_SHIFT:
            out["reasons"].append(f"leaving out one model size moves the frontier exponent a from {a:.2f} to "
                                  f"{worst:.2f}, outside its {percent(ci_level)} bootstrap interval "
                                  f"[{a_ci[0]:.2f}, {a_ci[1]:.2f}]")
    out["failed"] = bool(out["reasons"])
    return out


def _frontier(j, C, boot, loo, identifiable, ci_level):
    """[{C, N_opt, D_opt, loss, N_opt_ci, D_opt_ci}] at the budgets C, or None when an exponent is 0; the intervals
    come from the same resamples as the constants'."""
    opt = compute_optimal(j, C)
    if opt is None:
        return None

    cm = j["compute"]

    def optima(fits):  # (N_opt, D_opt) per budget of every fit with a finite optimum
        fits = fits[(fits[:, 2] > ZERO) & (fits[:, 4] > ZERO)]
        return np.exp(np.concatenate(log_optimum(*fits[:, 1:5, None].transpose(1, 0, 2), C[None], cm["k"], cm["p"]),
                                     axis=1))

    lo, hi = intervals(np.concatenate(opt), optima(boot), optima(loo), ci_level)
    k = len(C)
    rows = []
    for i, c in enumerate(C):
        rows.append({"C": float(c), "N_opt": float(opt[0][i]), "D_opt": float(opt[1][i]),
                     "loss": float(predict(j, opt[0][i], opt[1][i])),
                     "N_opt_ci": [float(lo[i]), float(hi[i])] if identifiable else None,
                     "D_opt_ci": [float(lo[k + i]), float(hi[k + i])] if identifiable else None})
    return rows


def _leaves(row, key, values):
    """'point' where row[key] lies outside [min(values), max(values)], 'interval' where only its interval reaches
    outside, None where both lie inside."""
    lo, hi = min(values), max(values)
    if not lo <= row[key] <= hi:
        return "point"
    ci = row.get(key + "_ci")
    if ci is not None and (ci[0] < lo or ci[1] > hi):
        return "interval"
    return None


def extrapolation(j, row):
    """What makes a frontier row an extrapolation, in words ([] for none): its budget beyond the runs' compute, its
    N_opt or D_opt (or their intervals: an optimum that may lie outside is not measured inside) outside the trained
    range, its D_opt above the training set."""
    why = []
    if row["C"] > j["compute"]["range"][1] * 1.0001:
        why.append("budget beyond the trained range")
    for key, values in (("N_opt", j["n_params"]), ("D_opt", j["tokens"])):
        where = _leaves(row, key, values)
        if where == "point":
            why.append(f"{key} outside the trained range")
        elif where == "interval":
            why.append(f"{key}'s interval reaches outside the trained range")
    if j.get("dataset_tokens") and row["D_opt"] > j["dataset_tokens"]:
        why.append("D_opt above the training set (several epochs)")
    return why


def _flops_list(rows):
    return ", ".join(f"{r['C']:.3g}" for r in rows)


def extrapolation_warnings(j):
    """Warnings for a frontier that leaves the runs: N_opt or D_opt outside the trained range, D_opt above the
    training set (the multi-epoch regime)."""
    warns = []
    rows = j["frontier"] or []
    for key, what, values in (("N_opt", "model sizes", j["n_params"]), ("D_opt", "token counts", j["tokens"])):
        out = [r for r in rows if _leaves(r, key, values)]
        if out:
            warns.append(f"{key} or its interval is outside the trained range of {what} "
                         f"({human(min(values))}–{human(max(values))}) at C = {_flops_list(out)} FLOPs ({key} = "
                         f"{', '.join(_human_ci(r[key], r.get(key + '_ci')) for r in out)}): there the frontier "
                         f"extrapolates the fitted law beyond any run, and is a hypothesis to test, not a "
                         f"measurement.")
    over = [r for r in rows if j.get("dataset_tokens") and r["D_opt"] > j["dataset_tokens"]]
    if over:
        warns.append(f"D_opt exceeds the {human(j['dataset_tokens'])} tokens of the training set at C = "
                     f"{_flops_list(over)} FLOPs (D_opt = "
                     f"{', '.join(human(r['D_opt']) for r in over)}): that is "
                     f"{over[0]['D_opt'] / j['dataset_tokens']:.2g}+ epochs, the multi-epoch regime, where repeated "
                     f"tokens are worth less than fresh ones (Muennighoff et al. 2023, Scaling Data-Constrained "
                     f"Language Models) and this law, fitted to runs of at most a few epochs, overstates what they "
                     f"buy.")
    return warns


def diagnose_joint(N, D, j, ci_level=CI_LEVEL):
    """Plain-language warnings for a joint fit the runs cannot pin down."""
    warns = []
    pct = percent(ci_level)
    for values, what, term in ((N, "model sizes", "alpha (the N term)"), (D, "token counts", "beta (the D term)")):
        k, span = len(set(values)), max(values) / min(values)
        if k < MIN_VALUES:
            warns.append(f"only {k} distinct {what}: {term} cannot be determined, so it, the frontier exponents a and "
                         f"b and N_opt/D_opt are guesses without intervals; train at {MIN_VALUES} or more {what}.")
        elif span < 10:
            warns.append(f"{what} span only {span:.1f}x; an exponent needs at least one, better two decades.")
    if len(N) <= N_FREE:
        warns.append(f"only {len(N)} runs for a {N_FREE}-parameter surface: it passes through every point, so it "
                     f"has no intervals; train more (N, D) combinations.")
    if len(set(N)) > 1 and len(set(D)) > 1:
        r = float(np.corrcoef(np.log(N), np.log(D))[0, 1])
        if abs(r) > COLLINEAR:
            warns.append(f"N and D move together in these runs (correlation of log N and log D = {r:.2f}): the fit "
                         f"cannot tell the N term from the D term; train some sizes at several token counts.")
    for name in ("alpha", "beta"):
        x, ci = j[name], j[name + "_ci"]
        if ci is not None and open_interval(j, name):
            warns.append(f"{name} is not bounded by these runs: {with_ci(j, name)}; the frontier's a and b are as "
                         f"loose.")
        elif ci is not None and ci[1] - ci[0] > x:
            warns.append(f"{name} is poorly determined: its {pct} interval [{ci[0]:.3g}, {ci[1]:.3g}] is wider than "
                         f"{name} ({x:.3g}) itself, and so are the frontier's a and b; only the intervals are results.")
        if x <= ALPHA_BOUNDS[0] + ZERO or x >= ALPHA_BOUNDS[1] - ZERO:
            warns.append(f"{name} sits at the search bound {x:.3g}: the loss does not follow a power law in "
                         f"{'N' if name == 'alpha' else 'D'} here" + (", so there is no compute-optimal frontier."
                                                                    if x <= ZERO else "."))
    if j["E_ci"] is not None and j["E_ci"][0] < 0.01 * min(j["loss"]):
        warns.append(f"the irreducible loss E is not determined: its {pct} interval [{j['E_ci'][0]:.3g}, "
                     f"{j['E_ci'][1]:.3g}] reaches zero.")
    return warns


def fit_family_joint(rows, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED):
    """fit_joint on the runs of one family that know their token count D, or None when fewer than two distinct
    token counts leave no D axis to fit."""
    with_d = [r for r in rows if r.get("tokens") is not None and r["tokens"] > 0]
    if len({r["tokens"] for r in with_d}) < 2:
        return None
    sizes = [r["dataset_tokens"] for r in with_d if r.get("dataset_tokens")]
    out = fit_joint([r["n_params"] for r in with_d], [r["tokens"] for r in with_d], [r["loss"] for r in with_d],
                    n_bootstrap, ci_level, seed, flops=[r.get("flops") for r in with_d],
                    dataset_tokens=min(sizes) if sizes else None,
                    groups=[r.get("trunk") or ("run", i) for i, r in enumerate(with_d)])
    out["runs"] = [r["run"] for r in with_d]
    if len(with_d) < len(rows):
        out["warnings"].insert(0, f"{len(rows) - len(with_d)} run(s) without a token count are left out of the "
                                  f"joint fit.")
    return out


# -----------------------------------------------------------------------------
# the fits as text

def _human_ci(x, ci):
    return f"{human(x)} " + ("(no interval)" if ci is None else f"[{human(ci[0])}, {human(ci[1])}]")


def compute_text(j):
    """How the joint fit counts compute, in words."""
    c = j["compute"]
    if c["source"] == "flops":
        return (f"C = {c['k']:.3g}·N^{c['p']:.3g}·D, fitted to the runs' own FLOPs per token (largest miss on a run "
                f"{100 * c['max_error']:.2g}%)")
    return ("C = 6·N·D: the runs record no FLOPs (results.json's train_flops, or a flops column), so Kaplan's "
            "approximation stands in for what the models compute; where their FLOPs per token differ from 6N by a "
            "size-dependent factor, the frontier's exponents bend")


def joint_markdown(fits):
    """The joint fits and their frontiers as markdown lines (none when no family has a joint fit)."""
    joint = {fam: f["joint"] for fam, f in fits.items() if "joint" in f}
    if not joint:
        return []
    lines = ["### Joint fit L(N, D) = E + A/N^α + B/D^β and the compute-optimal frontier", "",
             "Fitted per family to every run that knows its training tokens D, at every budget. For a budget C = "
             "k·N^p·D FLOPs the lowest loss comes from N_opt = G·(C/k)^a parameters trained on D_opt = (C/k)/N_opt^p "
             "tokens, a = β/(α+pβ), b = α/(α+pβ) (D_opt ∝ C^b), G = (αA/(pβB))^(1/(α+pβ)) (C = 6·N·D is k = 6, "
             "p = 1). A, B and C are in the input's units of N and D (parameters, tokens and FLOPs for run "
             "folders). In brackets: "
             f"{percent(next(iter(joint.values()))['ci_level'])} bootstrap intervals over runs. The frontier is "
             "tabled from the runs' smallest compute to one decade beyond their largest; a row beyond the trained "
             "range is marked as an extrapolation.", "",
             "| family | runs | N range | D range | E | A | α | B | β | a (N_opt ∝ C^a) | b (D_opt ∝ C^b) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, j in joint.items():
        lines.append(f"| {fam} | {j['n_points']} | {human(min(j['n_params']))}–{human(max(j['n_params']))} "
                     f"| {human(min(j['tokens']))}–{human(max(j['tokens']))} | "
                     + " | ".join(with_ci(j, name) for name in NAMES) + " |")
    lines += [""] + [f"Compute of {fam}: {compute_text(j)}." for fam, j in joint.items()]
    lines += [f"Resampling of {fam}: " + ("the branches of one wsd trunk share its errors, so the bootstrap draws "
                                          "whole trunks (a block bootstrap)." if j.get("resampled_by") == "trunk"
                                          else "every run on its own.") for fam, j in joint.items()]
    lines += [f"Fit check of {fam}: residual RMS {100 * j['lack_of_fit']['residual_rms']:.2g}% in ln loss"
              + (f" against {100 * j['lack_of_fit']['sigma']:.2g}% run-to-run noise" if j["lack_of_fit"]["sigma"]
                 else "") + "; "
              + ("**the surface does not fit these runs** (" + "; ".join(j["lack_of_fit"]["reasons"]) + "), so its "
                 "frontier is not a result and is not tabled." if j["lack_of_fit"]["failed"] else
                 "no sign of misfit (scale, log N × log D structure, leave-one-size-out stability of the frontier).")
              for fam, j in joint.items() if j.get("lack_of_fit")]
    tabled = {fam: j for fam, j in joint.items() if not (j.get("lack_of_fit") or {}).get("failed")}
    lines += ["", "| family | budget C | N_opt | D_opt | D_opt / N_opt | fitted loss | extrapolation |",
              "|---|---|---|---|---|---|---|"] if any(j["frontier"] for j in tabled.values()) else [""]
    for fam, j in tabled.items():
        for row in j["frontier"] or []:
            why = row["extrapolation"]
            lines.append(f"| {fam} | {row['C']:.3g} | {_human_ci(row['N_opt'], row['N_opt_ci'])} "
                         f"| {_human_ci(row['D_opt'], row['D_opt_ci'])} | {fmt(row['D_opt'] / row['N_opt'])} "
                         f"| {fmt(row['loss'])} | {'; '.join(why) if why else 'no: within the runs'} |")
    lines.append("")
    for fam, j in joint.items():
        if j["warnings"]:
            lines.append(f"**Joint-fit warnings for {fam}:**")
            lines.extend(f"- {w}" for w in j["warnings"])
        else:
            lines.append(f"**{fam} (joint fit):** no warnings — the fit is well conditioned.")
        lines.append("")
    return lines
