"""
The joint scaling law L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla's "approach 3") of one model family, fitted to
runs that differ in parameters N and in training tokens D, and the compute-optimal allocation it implies under
C ≈ 6·N·D. Minimising L(N, C/(6N)) over N gives
    N_opt(C) = G·(C/6)^a,   D_opt(C) = (C/6)^b / G,
    a = beta/(alpha+beta),  b = alpha/(alpha+beta),  G = (alpha·A / (beta·B))^(1/(alpha+beta)).
power_law.fit_family adds fit_family_joint's result as `joint` when the runs carry at least two distinct token
counts; power_law.fit_markdown prints joint_markdown; plots.py draws the surface and the frontier.

The recipe is the 1-D fit's (fitting.py: Huber loss on log-loss residuals, a grid of starts, bootstrap intervals over
runs, widened by leave-one-out with few runs) in two dimensions. log N and log D are centred on their means, so
multiplying N or D by a constant changes only A or B, never E or the exponents. The solver runs from the whole grid,
then scipy's L-BFGS-B polishes the best point (it treats the bounds exactly, and an exponent at 0 is a possible
answer here); the bootstrap refits use the vectorised solver alone, since one L-BFGS-B call per resample costs ~0.3 s.
"""
import math

import numpy as np

from fitting import (ALPHA_BOUNDS, CI_LEVEL, N_BOOTSTRAP, SEED, fit_batch, fmt, huber, human, intervals, percent,
                     refit, resample_runs, with_ci)

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


def log_optimum(A, alpha, B, beta, C):
    """ln N_opt and ln D_opt for budgets C = 6·N·D (arrays broadcast), from minimising L along N·D = C/6."""
    s = alpha + beta
    log_G = (np.log(alpha * A) - np.log(beta * B)) / s
    x = np.log(np.asarray(C, float) / 6)
    return log_G + beta / s * x, -log_G + alpha / s * x


def predict(j, N, D):
    """The fitted loss E + A/N^alpha + B/D^beta of a joint fit j at N, D (arrays broadcast)."""
    return j["E"] + np.exp(np.log(j["A"]) - j["alpha"] * np.log(N)) + np.exp(np.log(j["B"]) - j["beta"] * np.log(D))


def compute_optimal(j, C):
    """N_opt(C), D_opt(C) of a joint fit j for budgets C (None when an exponent is 0: no finite optimum)."""
    if min(j["alpha"], j["beta"]) <= ZERO:
        return None
    log_n, log_d = log_optimum(j["A"], j["alpha"], j["B"], j["beta"], C)
    return np.exp(log_n), np.exp(log_d)


def budgets(N, D):
    """A few round compute budgets: powers of 10 over the runs' 6·N·D and one decade beyond (every other one when
    that is more than six)."""
    C = 6 * np.asarray(N) * np.asarray(D)
    lo, hi = math.floor(math.log10(C.min())), math.ceil(math.log10(C.max())) + 1
    return 10.0 ** np.arange(lo, hi + 1, 1 if hi - lo < 6 else 2)


# -----------------------------------------------------------------------------
# the fit

def fit_joint(N, D, L, n_bootstrap=N_BOOTSTRAP, ci_level=CI_LEVEL, seed=SEED):
    """Fit L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals (n_bootstrap resamples drawn with seed,
    ci_level intervals) and the compute-optimal frontier. N, D, L: arrays, one entry per run. Returns a dict with
    the NAMES, their intervals (None where the runs cannot give one), the frontier at a few budgets and warnings."""
    N, D, L = (np.asarray(x, float) for x in (N, D, L))
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
    boot_sets, loo_sets = resample_runs(n, n_bootstrap, seed, usable) if identifiable else (no_sets, no_sets)
    # each resample starts from the full-data optimum and three spread grid points (see fitting.refit)
    refit_starts = np.concatenate([theta[None], starts[[21, 97, 170]]])

    def refit_all(sets):
        if not len(sets):
            return np.empty((0, N_FREE))
        return refit(lambda th: _model(th, u, v), logL, sets, refit_starts, lo, hi)

    def to_user(th):  # (e, a, alpha, b, beta) -> NAMES in the user's units
        th = np.atleast_2d(th)
        alpha, beta = th[:, 2], th[:, 4]
        s = alpha + beta
        share = np.divide(beta, s, out=np.full_like(s, 0.5), where=s > 0)  # both 0: nothing to allocate; say 1/2
        return np.stack([np.exp(th[:, 0]), np.exp(th[:, 1] + alpha * mean_logN), alpha,
                         np.exp(th[:, 3] + beta * mean_logD), beta, share, 1 - share], axis=1)

    boot, loo = to_user(refit_all(boot_sets)), to_user(refit_all(loo_sets))
    point = to_user(theta)[0]
    ci_lo, ci_hi = intervals(point, boot, loo, ci_level)
    out = {"n_points": n, "n_bootstrap": len(boot), "n_leave_one_out": len(loo)}
    for i, name in enumerate(NAMES):
        out[name] = float(point[i])
        out[name + "_ci"] = [float(ci_lo[i]), float(ci_hi[i])] if identifiable else None
    pred = _model(theta[None], u, v)[0][0]
    out["residual_rms_log"] = float(np.sqrt(np.mean((pred - logL) ** 2)))
    out["frontier"] = _frontier(out, budgets(N, D), boot, loo, identifiable, ci_level)
    out["n_params"], out["tokens"], out["loss"] = N.tolist(), D.tolist(), L.tolist()
    out["warnings"] = diagnose_joint(N, D, out, ci_level)
    out["ci_level"] = ci_level
    return out


def _frontier(j, C, boot, loo, identifiable, ci_level):
    """[{C, N_opt, D_opt, loss, N_opt_ci, D_opt_ci}] at the budgets C, or None when an exponent is 0; the intervals
    come from the same resamples as the constants'."""
    opt = compute_optimal(j, C)
    if opt is None:
        return None

    def optima(fits):  # (N_opt, D_opt) per budget of every fit with a finite optimum
        fits = fits[(fits[:, 2] > ZERO) & (fits[:, 4] > ZERO)]
        return np.exp(np.concatenate(log_optimum(*fits[:, 1:5, None].transpose(1, 0, 2), C[None]), axis=1))

    lo, hi = intervals(np.concatenate(opt), optima(boot), optima(loo), ci_level)
    k = len(C)
    rows = []
    for i, c in enumerate(C):
        rows.append({"C": float(c), "N_opt": float(opt[0][i]), "D_opt": float(opt[1][i]),
                     "loss": float(predict(j, opt[0][i], opt[1][i])),
                     "N_opt_ci": [float(lo[i]), float(hi[i])] if identifiable else None,
                     "D_opt_ci": [float(lo[k + i]), float(hi[k + i])] if identifiable else None})
    return rows


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
        if ci is not None and ci[1] - ci[0] > x:
            warns.append(f"{name} is poorly determined: its {pct} interval [{ci[0]:.3g}, {ci[1]:.3g}] is wider than "
                         f"{name} ({x:.3g}) itself, and so are the frontier's a and b; read them as a rough guide.")
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
    out = fit_joint([r["n_params"] for r in with_d], [r["tokens"] for r in with_d], [r["loss"] for r in with_d],
                    n_bootstrap, ci_level, seed)
    out["runs"] = [r["run"] for r in with_d]
    if len(with_d) < len(rows):
        out["warnings"].insert(0, f"{len(rows) - len(with_d)} run(s) without a token count are left out of the "
                                  f"joint fit.")
    return out


# -----------------------------------------------------------------------------
# the fits as text

def _human_ci(x, ci):
    return f"{human(x)} " + ("(no interval)" if ci is None else f"[{human(ci[0])}, {human(ci[1])}]")


def joint_markdown(fits):
    """The joint fits and their frontiers as markdown lines (none when no family has a joint fit)."""
    joint = {fam: f["joint"] for fam, f in fits.items() if "joint" in f}
    if not joint:
        return []
    lines = ["### Joint fit L(N, D) = E + A/N^α + B/D^β and the compute-optimal frontier", "",
             "Fitted per family to the runs that know their training tokens D. For a budget C = 6·N·D the lowest "
             "loss comes from N_opt = G·(C/6)^a parameters trained on D_opt = (C/6)^b / G tokens, a = β/(α+β), "
             "b = α/(α+β), G = (αA/(βB))^(1/(α+β)). A, B and C are in the input's units of N and D "
             "(parameters, tokens and FLOPs for run folders). In brackets: "
             f"{percent(next(iter(joint.values()))['ci_level'])} bootstrap intervals over runs.", "",
             "| family | runs | N range | D range | E | A | α | B | β | a (N_opt ∝ C^a) | b (D_opt ∝ C^b) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, j in joint.items():
        lines.append(f"| {fam} | {j['n_points']} | {human(min(j['n_params']))}–{human(max(j['n_params']))} "
                     f"| {human(min(j['tokens']))}–{human(max(j['tokens']))} | "
                     + " | ".join(with_ci(j, name) for name in NAMES) + " |")
    lines += ["", "| family | budget C | N_opt | D_opt | D_opt / N_opt | fitted loss |", "|---|---|---|---|---|---|"]
    for fam, j in joint.items():
        for row in j["frontier"] or []:
            lines.append(f"| {fam} | {row['C']:.3g} | {_human_ci(row['N_opt'], row['N_opt_ci'])} "
                         f"| {_human_ci(row['D_opt'], row['D_opt_ci'])} | {fmt(row['D_opt'] / row['N_opt'])} "
                         f"| {fmt(row['loss'])} |")
    lines.append("")
    for fam, j in joint.items():
        if j["warnings"]:
            lines.append(f"**Joint-fit warnings for {fam}:**")
            lines.extend(f"- {w}" for w in j["warnings"])
        else:
            lines.append(f"**{fam} (joint fit):** no warnings — the fit is well conditioned.")
        lines.append("")
    return lines
