"""
The learning-rate law of a study's sweep: per model family, every size's sweep fitted at once as

    loss(N, lr) ~= L*(N) + k * (ln lr - ln lr*(N))^2,      ln lr*(N) = a + b * ln N

one free L* per size (its loss at its best rate), one curvature k per family (the loss cost of a mis-set rate:
a rate 2x off costs k * (ln 2)^2 nats), and the best rate a power law of the parameter count, lr* = e^a * N^b,
as DeepSeek LLM (2024) fits its optimal rates. Each size's rate is then read off the law instead of being the
argmin of its own grid: an argmin of 4 noisy points 2x apart can only land on a grid point and moves with
noise of the size of the loss gaps a scaling fit needs, while the law pools every size's sweep.

The fit: least squares on the losses; for given (a, b) the model is linear in the L*s and k, so only (a, b) are
searched (variable projection) and the rest solved exactly. Only points within LAW_WINDOW of a size's own best
rate enter: a parabola in ln lr describes the loss near its minimum, not the steep rise toward divergence far
above it or the slow one far below. Diverged runs (loss inf) never enter.

The interval on b is a profile-likelihood interval: b is held at each value, everything else refitted, and the
interval is where the residual sum of squares stays below RSS_min * (1 + F(level; 1, dof) / dof) -- the F-test
form, which scales by the sweep's own residual with its real degrees of freedom (points - sizes - 3). It measures
how well the sweeps pin b down given their scatter about the parabolas; it does not know the horizon bias of a
sweep on a fraction of the budget (docs/lr_law.md measures that once).
"""
import math

import numpy as np

LAW_WINDOW = 4.0         # points further than this factor from a size's best rate are left out of the fit
MIN_LAW_SIZES = 3        # sizes a law needs before every size is trained at its rate (two fix a line exactly)
MIN_CENTRE_SIZES = 2     # swept sizes from which the next size's grid is centred on the law's prediction
B_SEARCH = 5.0           # the profile interval on b is sought within b_hat +- this (a slope beyond is no law)


def _design(sizes, window=LAW_WINDOW):
    """(size index, ln N, ln lr, loss) arrays of the points that enter the fit."""
    idx, n, x, y = [], [], [], []
    for i, s in enumerate(sizes):
        pts = [(p["lr"], p["val_loss"]) for p in s["points"] if p.get("val_loss") is not None
               and math.isfinite(p["val_loss"])]
        if not pts:
            continue
        best = min(pts, key=lambda p: p[1])[0]
        for lr, loss in pts:
            if abs(math.log(lr / best)) <= math.log(window) + 1e-9:
                idx.append(i), n.append(math.log(s["n_params"])), x.append(math.log(lr)), y.append(loss)
    return np.array(idx, dtype=int), np.array(n), np.array(x), np.array(y)


def _inner(idx, n_c, x, y, a, b, m):
    """For fixed (a, b): the exact least-squares L*s and k, and the residuals."""
    z = (x - a - b * n_c) ** 2
    X = np.zeros((len(y), m + 1))
    X[np.arange(len(y)), idx] = 1.0
    X[:, m] = z
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef, y - X @ coef


def _fit_ab(idx, n_c, x, y, m, start, fixed_b=None):
    from scipy.optimize import least_squares
    if fixed_b is None:
        res = least_squares(lambda t: _inner(idx, n_c, x, y, t[0], t[1], m)[1], start, method="lm",
                            xtol=1e-12, ftol=1e-12)
        return res.x
    res = least_squares(lambda t: _inner(idx, n_c, x, y, t[0], fixed_b, m)[1], start[:1], method="lm",
                        xtol=1e-12, ftol=1e-12)
    return np.array([res.x[0], fixed_b])


def fit_law(sizes, ci_level=0.95, window=LAW_WINDOW):
    """sizes: [{size, n_params, points: [{lr, val_loss}]}] of one family (val_loss None or inf: left out).
    Returns {a, b, b_ci, k, cost_2x, L_star: {size: loss}, rates: {size: lr*(N)}, n_sizes, n_points, dof, rss,
    ci_level, ci_method, window, warnings}, or None when the sweeps cannot define a law (fewer than two sizes
    of different N with points, or no curvature: k <= 0), with the reason in the returned dict's 'error'."""
    used = [s for s in sizes if any(p.get("val_loss") is not None and math.isfinite(p["val_loss"])
                                    for p in s["points"])]
    if len({s["n_params"] for s in used}) < 2:
        return {"error": "a law needs the sweeps of at least two sizes of different N"}
    idx, n, x, y = _design(used, window)
    m = len(used)
    n_mean = float(np.mean([math.log(s["n_params"]) for s in used]))
    n_c = n - n_mean
    # start: each size's best rate, a line through them
    best = np.array([x[idx == i][np.argmin(y[idx == i])] for i in range(m)])
    nn = np.array([math.log(s["n_params"]) for s in used]) - n_mean
    b0 = float(np.polyfit(nn, best, 1)[0])
    a_c, b = _fit_ab(idx, n_c, x, y, m, np.array([float(best.mean()), b0]))
    coef, r = _inner(idx, n_c, x, y, a_c, b, m)
    k = float(coef[m])
    if not k > 0:
        return {"error": f"the sweeps show no curvature (k = {k:.3g} <= 0): the loss does not rise on both sides "
                         f"of a best rate, so no rate is best"}
    a = a_c - b * n_mean
    for i, s in enumerate(used):  # a vertex far outside the rates tried is a slope read as a valley, not a law
        xs, vertex = x[idx == i], a + b * math.log(s["n_params"])
        if not xs.min() - math.log(2) <= vertex <= xs.max() + math.log(2):
            return {"error": f"the fitted law puts {s['size']}'s best rate at e^{vertex:.3g}, outside the rates "
                             f"its sweep tried ({math.exp(xs.min()):.3g} to {math.exp(xs.max()):.3g}) by more "
                             f"than a factor 2"}
    rss = float(r @ r)
    dof = len(y) - (m + 3)
    warnings = []
    b_ci = _profile_ci(idx, n_c, x, y, m, a_c, b, rss, dof, ci_level, warnings)
    if b_ci is not None and (b_ci[0] is None or b_ci[0] <= 0) and (b_ci[1] is None or b_ci[1] >= 0):
        warnings.append(f"b's {ci_level:.0%} interval [{_end(b_ci[0])}, {_end(b_ci[1])}] holds 0: the sweeps do not "
                        f"show the best rate changing with N at all, so the law's slope is not a result (a rate flat "
                        f"in N fits them as well), only the rates near the swept sizes are")
    return {"a": float(a), "b": float(b), "b_ci": b_ci, "k": k, "cost_2x": k * math.log(2) ** 2,
            "L_star": {s["size"]: float(coef[i]) for i, s in enumerate(used)},
            "rates": {s["size"]: rate(a, b, s["n_params"]) for s in used},
            "n_sizes": m, "n_points": int(len(y)), "dof": int(dof), "rss": rss, "ci_level": ci_level,
            "ci_method": "profile likelihood (F-test on the residual)", "window": window, "warnings": warnings}


def _end(x):
    return "open" if x is None else f"{x:.3g}"


def _profile_ci(idx, n_c, x, y, m, a_c, b_hat, rss, dof, ci_level, warnings):
    """[lo, hi] of b where the profile RSS stays under the F threshold; a side not reached within B_SEARCH is
    None. None (with a warning) without degrees of freedom."""
    if dof < 1:
        warnings.append(f"{len(y)} points for {m + 3} parameters: no degrees of freedom left, so no interval on b")
        return None
    from scipy.optimize import brentq
    from scipy.stats import f as f_dist
    limit = rss * (1 + f_dist.ppf(ci_level, 1, dof) / dof)
    if limit <= 0:  # the points lie exactly on the law: b is known as well as the arithmetic
        return [float(b_hat), float(b_hat)]

    def excess(b):
        t = _fit_ab(idx, n_c, x, y, m, np.array([a_c, b]), fixed_b=b)
        r = _inner(idx, n_c, x, y, t[0], b, m)[1]
        return float(r @ r) - limit

    ends = []
    for side in (-1, 1):
        step, end = 0.05, None
        inner = b_hat
        while step <= B_SEARCH:
            outer = b_hat + side * step
            if excess(outer) > 0:
                end = brentq(excess, min(inner, outer), max(inner, outer), xtol=1e-6)
                break
            inner, step = outer, step * 2
        ends.append(None if end is None else float(end))
    if None in ends:
        warnings.append(f"b's {ci_level:.0%} interval does not close within +-{B_SEARCH:g} of its estimate: the "
                        f"sweeps do not pin the law's slope down")
    return ends


def describe(law):
    """One line: the law, its interval and what a 2x mis-set rate costs."""
    ci = law["b_ci"]
    ci = "no interval" if ci is None else f"[{'-inf' if ci[0] is None else f'{ci[0]:.3f}'}, " \
         f"{'inf' if ci[1] is None else f'{ci[1]:.3f}'}]"
    return (f"lr*(N) = {math.exp(law['a']):.3g} * N^{law['b']:.3f}, b {ci} ({law['ci_level']:.0%} profile), "
            f"k = {law['k']:.3g}: a rate 2x off costs {law['cost_2x']:.4f} nats ({law['n_sizes']} sizes, "
            f"{law['n_points']} points)")


def rate(a, b, n_params):
    """lr*(N) = exp(a + b ln N)."""
    return math.exp(a + b * math.log(n_params))


def loss_curve(law, size, lr):
    """The law's loss at learning rates lr (array) for a size it was fitted to (its parabola, for the plot)."""
    return law["L_star"][size] + law["k"] * (np.log(lr) - math.log(law["rates"][size])) ** 2
