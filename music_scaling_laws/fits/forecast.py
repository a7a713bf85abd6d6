"""Will a planned study conclude? Before any GPU time: its runs for the fits (sizes, budgets, seeds, wsd trunks, as
study.py plans them) drawn many times from the laws and the noise a finished study measured (that study's fit.json),
each draw fitted exactly as the study will fit it (power_law.fit_all), and the intervals summed up per family and
exponent: the median width of the 95% interval against the exponent, the share of draws whose interval is no wider
than half the exponent (issue #30's bar for a study that concludes), and how often the interval held the truth.

The errors of a draw, in ln loss: one per size that all of the size's runs share (fit.json's size_sigma), one per
training that a wsd trunk's branches share (its sigma: what repeated seeds differ by), and each run's own: at the
largest budget the rest of what L(N)'s runs scattered there (its residual_rms_log), below it the rest of what those
runs scattered about the joint surface (the quick study's: GPT 1.25%, LSTM 1.32%; at its largest budget 0.2-1%).
Every draw follows the law down to the smallest size: a forecast says what a design can resolve through such
errors, not what a surface that misses the law costs (the study's lack-of-fit check tells); docs/fits.md compares
the forecast of the quick study's design with the intervals that study got."""
import numpy as np

from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.joint_fit import predict
from music_scaling_laws.fits.power_law import fit_all

EXPONENTS = (("alpha", "L(N) alpha", lambda f: f), ("alpha", "joint alpha", lambda f: f.get("joint")),
             ("beta", "joint beta", lambda f: f.get("joint")))


def fit_rows(plan, fit_params="all"):
    """The rows of the planned runs for the fits, as run_table makes them from results.json (loss left out)."""
    rows = []
    for r in plan:
        if r.get("trunk"):  # a trunk is no budget's run: the fits skip it (its branches are the runs)
            continue
        rows.append({"family": r["model_type"], "run": r["name"], "seed": r.get("repeat", 1), "lr": None,
                     "n_params": float(r["n_params"]), "n_params_non_embedding": float(r["n_params_non_embedding"]),
                     "tokens": float(r["tokens"]), "trunk": (r.get("trunk_run") or {}).get("name"),
                     "law_n": float(r["n_params_non_embedding" if fit_params == "non_embedding" else "n_params"])})
    return rows


def assumed(fit, family, noise, fit_params="all"):
    """(law, errors) of one family from a finished study's fit.json: the joint law L = E + A/N^alpha + B/D^beta, and
    (per size, per training, per run at the largest budget, per run below it) errors in ln loss, from fit.json where
    noise is None. A one-line UserError where fit.json cannot say them for this plan."""
    fam = fit.get(family)
    if not isinstance(fam, dict):
        raise UserError(f"the fit.json given to forecast has no {family} fit (the plan trains {family}; give a study "
                        f"that fitted it)")
    if fam.get("n_fitted", fit_params) != fit_params:
        raise UserError(f"the fit.json given to forecast fitted {family} on {fam['n_fitted']} parameters, this "
                        f"study's fits use fit_params={fit_params}: set the same")
    joint = fam.get("joint") or {}
    if not all(k in joint for k in ("E", "A", "alpha", "B", "beta")):
        raise UserError(f"the fit.json given to forecast has no joint L(N, D) fit for {family} (it needs a study "
                        f"with 2+ token budgets of that family)")
    law = {k: float(joint[k]) for k in ("E", "A", "alpha", "B", "beta")}
    if noise is None:
        size, training = float(fam.get("size_sigma") or 0.0), float(fam.get("sigma") or 0.0)
        shared = size ** 2 + training ** 2
        rest = lambda rms: max(0.0, float(rms or 0.0) ** 2 - shared) ** 0.5  # noqa: E731
        noise = (size, training, rest(fam.get("residual_rms_log")), rest(below_top_scatter(joint, law)))
    return law, noise


def below_top_scatter(joint, law):
    """The rms of ln(loss / law) of the joint fit's runs below its largest budget (the whole fit's where fit.json
    does not list its runs' N, D and loss)."""
    try:
        n, d, loss = (np.asarray(joint[k], float) for k in ("n_params", "tokens", "loss"))
        below = d < 0.99 * d.max()
        return float(np.sqrt(np.mean(np.log(loss[below] / predict(law, n[below], d[below])) ** 2))) \
            if below.any() else 0.0
    except (KeyError, TypeError, ValueError):
        return joint.get("residual_rms_log")


def parse_noise(text):
    """--forecast_noise: '' (fit.json's) or 'SIZE,TRAINING,RUN,RUN_BELOW': errors in ln loss (0.002 = 0.2%) per
    size, per training, per run at the largest budget and per run at the smaller ones."""
    if not text:
        return None
    try:
        noise = tuple(float(x) for x in text.split(","))
    except ValueError:
        noise = ()
    if len(noise) != 4 or any(not 0 <= x < 1 for x in noise):
        raise UserError(f"forecast_noise must be four errors in ln loss: per size, per training, per run at the "
                        f"largest budget and per run below it (e.g. 0.002,0.002,0.002,0.005), got {text!r}")
    return noise


def draw(rows, law, noise, rng):
    """One simulated study: rows with a loss from the law and the errors."""
    shared, top = {}, max(r["tokens"] for r in rows)  # each size's and training's error, drawn once
    losses = predict(law, np.array([r["law_n"] for r in rows]), np.array([r["tokens"] for r in rows]))
    out = []
    for r, loss in zip(rows, losses):
        err = (shared.setdefault(("size", r["law_n"]), rng.normal(0, noise[0]))
               + shared.setdefault(("training", r["trunk"] or r["run"]), rng.normal(0, noise[1]))
               + rng.normal(0, noise[2] if r["tokens"] >= 0.99 * top else noise[3]))
        out.append({**r, "loss": float(loss * np.exp(err))})
    return out


def forecast_fits(plan, fit, studies=40, n_bootstrap=200, ci_level=0.95, fit_params="all", noise=None, seed=0,
                  progress=None):
    """{family: {"law", "noise", "studies", "budgets", "exponents": {label: {truth, median_width, width_over_truth,
    share_within_half, coverage, fitted}}}} for every family of plan. A draw whose fit gives no interval counts as
    one that did not conclude (not within half, not covering); a family with one budget has no joint exponents."""
    rows = fit_rows(plan, fit_params)
    families = sorted({r["family"] for r in rows})
    assumptions = {family: assumed(fit, family, noise, fit_params) for family in families}  # every error first
    out = {}
    for family in families:
        law, fam_noise = assumptions[family]
        fam_rows = [r for r in rows if r["family"] == family]
        budgets = len({f"{r['tokens']:.3g}" for r in fam_rows})
        rng = np.random.default_rng(seed)
        found = {label: [] for _, label, _ in EXPONENTS}
        for i in range(studies):
            fitted = fit_all(draw(fam_rows, law, fam_noise, rng), n_bootstrap, ci_level, seed + i, fit_params)[family]
            for name, label, part in EXPONENTS:
                ci = (part(fitted) or {}).get(f"{name}_ci")
                found[label].append(None if ci is None else (float(ci[0]), float(ci[1])))
            if progress:
                progress()
        exponents = {}
        for name, label, _ in EXPONENTS:
            if label.startswith("joint") and budgets < 2:
                exponents[label] = None
                continue
            truth, cis = law[name], [ci for ci in found[label] if ci is not None]
            widths = np.array([hi - lo for lo, hi in cis])
            exponents[label] = {
                "truth": truth, "fitted": len(cis),
                "median_width": float(np.median(widths)) if cis else None,
                "width_over_truth": float(np.median(widths) / truth) if cis else None,
                "share_within_half": float(np.sum(widths <= truth / 2)) / studies,
                "coverage": sum(lo <= truth <= hi for lo, hi in cis) / studies}
        out[family] = {"law": law, "noise": list(fam_noise), "studies": studies, "budgets": budgets,
                       "exponents": exponents}
    return out


def forecast_text(result, source, n_bootstrap, ci_level):
    """The forecast as the lines study.py prints."""
    pct = f"{ci_level:.0%}"
    lines = [f"forecast: this plan's fits on studies drawn from {source}'s laws and errors ({n_bootstrap} resamples "
             f"each)"]
    for family, f in result.items():
        law, noise = f["law"], f["noise"]
        lines.append(f"{family}: L = {law['E']:.3g} + {law['A']:.3g}/N^{law['alpha']:.3g} + {law['B']:.3g}/D^"
                     f"{law['beta']:.3g}; errors in ln loss {noise[0]:.2%} per size, {noise[1]:.2%} per training, "
                     f"{noise[2]:.2%} per run at the largest budget, {noise[3]:.2%} below it; {f['studies']} draws")
        lines.append(f"  {'exponent':12s} {'truth':>6s} {'median ' + pct + ' width':>17s} {'width/truth':>11s} "
                     f"{'width <= half':>13s} {'coverage':>8s}")
        for label, e in f["exponents"].items():
            if e is None:
                lines.append(f"  {label:12s} no joint fit: the plan has one token budget of {family}")
            elif e["median_width"] is None:
                lines.append(f"  {label:12s} {e['truth']:6.3f}  no interval in any draw")
            else:
                missing = f"  (an interval in {e['fitted']} of {f['studies']} draws)" if e["fitted"] < f["studies"] else ""
                lines.append(f"  {label:12s} {e['truth']:6.3f} {e['median_width']:17.3f} {e['width_over_truth']:11.2f} "
                             f"{e['share_within_half']:13.0%} {e['coverage']:8.0%}{missing}")
    return "\n".join(lines)
