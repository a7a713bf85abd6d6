"""
The fits as text: the fit table, the plain-language lines under it and the warnings (fit.md, report.md, report.html
and study.py's [fit] lines all read them from here), and fit.json / fit.md on disk.
"""
import os

from music_scaling_laws.data.dataset import write_json_atomic
from music_scaling_laws.fits.fitting import ALPHA_BOUNDS, CI_LEVEL, ci_text, fmt, human, percent, with_ci
from music_scaling_laws.fits.joint_fit import joint_markdown
from music_scaling_laws.run_files import FIT_JSON, FIT_MD

N_WORDS = {"all": "all parameters", "non_embedding": "non-embedding parameters"}


def noise_text(f):
    """What the family's intervals are scaled by, in words."""
    if f["sigma_source"] in ("repeats", "repeats+sizes"):
        n = f["noise"]
        text = (f"run-to-run noise σ = {f['sigma']:.2g} in ln loss ({100 * f['sigma']:.2g}% of the loss), measured "
                f"from {n['runs']} runs of {n['repeated_sizes']} size(s) trained more than once "
                f"({n['df']} degree(s) of freedom)")
        if f.get("size_scatter") is None:
            return text + "; the intervals are scaled by it"
        tau = f.get("size_sigma") or 0.0
        return (text + f"; the sizes' mean losses miss the curve by {100 * f['size_scatter']:.2g}% (RMS), so the "
                f"intervals "
                + (f"also carry an error per size of {100 * tau:.2g}% that its seeds share (a random effect per size, "
                   f"{f['size_scatter_df']} degree(s) of freedom)" if tau > 0 else
                   f"rest on the seeds' noise, which explains that scatter (an error per size beyond it is drawn "
                   f"from what {f['size_scatter_df']} degree(s) of freedom allow)"))
    if f["sigma_source"] == "residual":
        return (f"no repeated runs, so σ = {f['sigma']:.2g} in ln loss comes from the fit's own residual scatter "
                f"({f['sigma_df']} degree(s) of freedom), which holds the seeds' noise and any error per size alike")
    return "no interval: too few model sizes and no repeated runs to measure the noise"


def n_definition_text(f):
    """Where alpha on all parameters and alpha on non-embedding parameters disagree beyond their intervals (neither
    holds the other's point), the two side by side and which one the headline uses; else None."""
    ne, ci, ci_ne = f.get("alpha_non_embedding"), f.get("alpha_ci"), f.get("alpha_non_embedding_ci")
    if ne is None or ci is None or ci_ne is None:
        return None
    if ci[0] <= ne <= ci[1] or ci_ne[0] <= f["alpha"] <= ci_ne[1]:
        return None
    other = "non_embedding" if f["n_fitted"] == "all" else "all"
    return (f"α depends on which N is fitted: on all parameters α = {with_ci(f, 'alpha')}, on non-embedding "
            f"parameters α = {with_ci(f, 'alpha_non_embedding')}; each lies outside the other's interval. The "
            f"headline α uses {N_WORDS[f['n_fitted']]}; a comparison with a published exponent must use the N it "
            f"used ({N_WORDS[other]} would give the other number).")


def family_lines(fam, f):
    """The plain-language lines under the fit table for one family: N, budget, noise, alpha without the largest."""
    budget = f" on the {human(f['budget_tokens'])}-token budget" if f.get("budget_tokens") else ""
    lines = [f"**{fam}:** L(N) fitted on N = {N_WORDS[f['n_fitted']]}, {f['n_points']} runs{budget}; "
             f"{noise_text(f)}."]
    if "alpha_without_largest" in f:
        lines.append("- α without the largest model (it is not the best): "
                     + ("too few sizes remain to fit." if f["alpha_without_largest"] is None
                        else with_ci(f, "alpha_without_largest") + "."))
    if n_definition_text(f):
        lines.append(f"- **{n_definition_text(f)}**")
    lines.extend(f"- {n}" for n in f.get("notes", []))
    return lines


def fit_markdown(fits, loss_name="loss"):
    """The fit table (and warnings) as markdown, for fit.md and the study report."""
    pct = percent(next(iter(fits.values()), {}).get("ci_level", CI_LEVEL))  # every family has the same level
    lines = [f"Fits of the {loss_name.replace('_', ' ')} (nats/token) vs parameters N; intervals are {pct} "
             f"parametric-bootstrap intervals: the fitted curve plus ln-loss noise (where sizes were run more than "
             f"once: the repeats' σ per run plus an error per size that its runs share, as large as the sizes' misses "
             f"show; else the residual scatter with its degrees of freedom), refitted and read off at the percentiles; "
             f"an interval that reaches the search bound is written as the one-sided bound it is (α > x) "
             f"(docs/fits.md: what they mean and how their coverage was checked). "
             f"`a` is for N in the unit of the input (parameters for run folders).", "",
             "| family | runs | N range | α | α CI | c | c CI | a | α pure (L = a·N^-α) | α pure CI "
             "| α non-emb. | α non-emb. CI | α pure non-emb. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, f in fits.items():
        lines.append(
            f"| {fam} | {f['n_points']} | {human(min(f['n_params']))}–{human(max(f['n_params']))} "
            f"| **{fmt(f['alpha'])}** | {ci_text(f['alpha_ci'], ALPHA_BOUNDS, 'α')} | {fmt(f['c'])} "
            f"| {ci_text(f['c_ci'], f.get('c_bounds'), 'c')} | {fmt(f['a'])} "
            f"| {fmt(f['alpha_pure'])} | {ci_text(f['alpha_pure_ci'], ALPHA_BOUNDS, 'α')} "
            f"| {fmt(f.get('alpha_non_embedding'))} "
            f"| {ci_text(f.get('alpha_non_embedding_ci'), ALPHA_BOUNDS, 'α')} "
            f"| {fmt(f.get('alpha_pure_non_embedding'))} |")
    lines.append("")
    for fam, f in fits.items():
        lines.extend(family_lines(fam, f) + [""])
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


def write_fit(fits, out_dir, loss_name="loss"):
    """fit.json and fit.md into out_dir (scaling.py and study.py alike); returns {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    written = {FIT_JSON: os.path.join(out_dir, FIT_JSON), FIT_MD: os.path.join(out_dir, FIT_MD)}
    write_json_atomic(fits_for_json(fits), written[FIT_JSON])
    with open(written[FIT_MD], "w") as f:
        f.write(f"# Scaling-law fits\n\n{fit_markdown(fits, loss_name)}\n")
    return written

