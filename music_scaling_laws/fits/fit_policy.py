"""
The fit policy, the same for scaling.py and study.py: which runs of a family each fit sees (select_runs), which runs
are repeats and what run-to-run noise they measure (run_to_run_noise), and the settings every fit checks.
"""
import math

import numpy as np

from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.fitting import human

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


def check_settings(n_bootstrap, ci_level, fit_params="all"):
    """Raise UserError for settings no fit can use (study.py checks before hours of training, not after)."""
    if n_bootstrap < 1:
        raise UserError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0 < ci_level < 1:
        raise UserError(f"ci_level must be between 0 and 1, got {ci_level}")
    if fit_params not in FIT_PARAMS:
        raise UserError(f"fit_params must be {' or '.join(repr(x) for x in FIT_PARAMS)}, got {fit_params!r}")


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
      one law: one rate stands for the size (choose_rate: a parabola through every rate's loss, against the winner's
      curse); the others are left out.
    - Runs of one size, budget and rate that share a seed are the same run twice: the first is kept. Those with
      different seeds are repeats: they measure the run-to-run noise (run_to_run_noise) and all enter the fits.
    - L(N) is fitted on the largest token budget with MIN_POINTS model sizes, so that its exponent is not mixed with
      the data axis; every budget enters the joint fit.
    """
    budget = token_budgets([r.get("tokens") for r in rows])
    groups = {}
    for r, b in zip(rows, budget):
        groups.setdefault((r["n_params"], b), []).append((r, b))
    kept, other_rates, twins, selected = [], [], [], []
    for runs in groups.values():
        by_rate = {}
        for r, b in runs:
            by_rate.setdefault(r.get("lr"), []).append((r, b))
        best = by_rate[choose_rate({lr: [r["loss"] for r, _ in g] for lr, g in by_rate.items()})]
        other_rates += [r["run"] for g in by_rate.values() if g is not best for r, _ in g]
        if len(by_rate) > 1:
            selected.append(best[0][0]["run"])
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
    if selected:
        notes.append(f"{len(selected)} size(s) had runs at several learning rates; the rate was chosen by a parabola "
                     f"through every rate's loss (in ln rate), not by the lowest single loss, so that one lucky run "
                     f"wins less often, but the chosen run's loss is still one of those it was chosen by (a winner's "
                     f"curse of up to the seed noise): that error differs between sizes, and the intervals carry it "
                     f"as part of the error per size (sigma_source 'residual' or 'repeats+sizes').")
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


def choose_rate(losses):
    """The learning rate (a key of losses: {rate: [losses of its runs]}) that stands for a size: with 3 or more
    positive rates whose mean ln losses bend upwards around an interior minimum, the tried rate nearest the vertex of
    a parabola through them in ln rate (it reads every rate's loss, so the noise of one run moves the choice less than
    taking the lowest loss does, and the chosen loss is less biased low); otherwise the rate with the lowest mean."""
    mean = {lr: float(np.mean(np.log(v))) for lr, v in losses.items()}
    lowest = min(mean, key=mean.get)
    rates = [lr for lr in mean if lr is not None and lr > 0]
    if len(rates) < 3 or len(rates) < len(mean):
        return lowest
    x = np.log(rates)
    curv, slope, _ = np.polyfit(x, [mean[lr] for lr in rates], 2)
    if curv <= 0 or not x.min() < -slope / (2 * curv) < x.max():
        return lowest
    return rates[int(np.argmin(np.abs(x + slope / (2 * curv))))]


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


