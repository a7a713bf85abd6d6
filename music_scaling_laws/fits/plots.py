"""
The plots of a scaling study, drawn from the fits of power_law.py and the run rows they were fitted to, and
write_outputs, which draws every plot of a fit's output folder for scaling.py and study.py alike (fit.json and fit.md
are power_law.write_fit's: this file only draws).

Every plot is a PNG (200 dpi) and the same figure as vector SVG and PDF beside it (report.html shows the SVG, a
paper takes the PDF), with log axes labelled in plain numbers; a plot whose data no run has (no log.jsonl, no
timings, no token counts, no joint L(N, D) fit, no finished learning-rate sweep) is skipped rather than drawn empty.
"""
import os

import numpy as np

from music_scaling_laws.fits import lr_law
from music_scaling_laws.data.dataset import read_jsonl
from music_scaling_laws.fits.fitting import human, percent, with_ci
from music_scaling_laws.fits.joint_fit import compute_optimal, predict, tokens_at
from music_scaling_laws.fits.fit_text import N_WORDS
from music_scaling_laws.run_files import log_path

COLORS = {"gpt": "tab:blue", "lstm": "tab:orange"}
PNG_DPI = 200  # the PNG beside each SVG and PDF: sharp on a high-density screen


def _pyplot():
    # imported on first use: matplotlib costs a second to import, and Agg draws without a display
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _color(fam, i):
    return COLORS.get(fam, f"C{i + 2}")


def _plain_log_ticks(ax, y=True):
    """Label a log axis 0.7, 0.8, 1 instead of 7x10^-1: every minor tick within one decade, the 2s and 5s within
    three (a loss axis from 0.9 to 4 reads 1, 2, 3, 4 rather than a lone 1), none beyond."""
    from matplotlib.ticker import FuncFormatter
    axis = ax.yaxis if y else ax.xaxis
    lo, hi = ax.get_ylim() if y else ax.get_xlim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 0
    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def minor(v, _):
        lead = round(v / 10 ** np.floor(np.log10(v) + 1e-9), 6) if v > 0 else 0
        return f"{v:g}" if decades < 1 or (decades < 3 and lead in (2, 5)) else ""
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(minor))


def _count_ticks(ax, y=False):
    """Parameter, token and FLOP counts written 30k, 1M, 2G: a reader compares them at a glance."""
    from matplotlib.ticker import FuncFormatter
    axis = ax.yaxis if y else ax.xaxis
    lo, hi = ax.get_ylim() if y else ax.get_xlim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 0

    def minor(v, _):
        lead = round(v / 10 ** np.floor(np.log10(v) + 1e-9), 6) if v > 0 else 0
        return human(v) if decades < 1 or (decades < 3 and lead in (2, 5)) else ""
    axis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _log_axes(ax, xlabel, ylabel, title):
    """The look every plot shares: log-log, plain tick labels, a grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _plain_log_ticks(ax)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _save(plt, fig, path):
    """path (a .png) and the same figure as .svg and .pdf beside it; returns path."""
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    stem = os.path.splitext(path)[0]
    for ext in (".svg", ".pdf"):
        fig.savefig(stem + ext)
    plt.close(fig)
    return path


def _loss_label(loss_name):
    return f"{loss_name.replace('_', ' ')} (nats/token)"


def plot_scaling(fits, path, families=None, suffix="", loss_name="loss"):
    """Points, saturating fit with its bootstrap band and pure power law of each family; suffix '_non_embedding'
    plots against non-embedding parameters."""
    plt = _pyplot()
    families = list(fits) if families is None else families
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=130)
    shown = []  # losses of the points and fitted curves: the axis spans these, and a wild band is cut at its edge
    for i, fam in enumerate(families):
        f, col = fits[fam], _color(fam, i)
        if "alpha" + suffix not in f:
            continue
        cur = f["curve" + suffix]
        shown += list(f["loss"]) + list(cur["loss"]) + list(f["curve_pure" + suffix]["loss"])
        ax.scatter(f["n_params" + suffix], f["loss"], color=col, s=36, zorder=3, edgecolor="black", linewidth=0.5)
        for name, n, loss in zip(f.get("runs") or [], f["n_params" + suffix], f["loss"]):
            ax.annotate(name, (n, loss), xytext=(4, 5), textcoords="offset points", fontsize=7, color=col)
        ax.plot(cur["n"], cur["loss"], color=col, lw=2,
                label=f"{fam}: α = {with_ci(f, 'alpha' + suffix)}, c = {f['c' + suffix]:.3g}")
        if cur["band_lo"] is not None:
            # over the sizes trained only: beyond them the band is an extrapolation's, and it only gets wider
            n, lo, hi = (np.asarray(cur[k], float) for k in ("n", "band_lo", "band_hi"))
            inside = (n >= min(f["n_params" + suffix]) * 0.999) & (n <= max(f["n_params" + suffix]) * 1.001)
            ax.fill_between(n[inside], lo[inside], hi[inside], color=col, alpha=0.18, lw=0,
                            label=f"{fam}: {percent(f['ci_level'])} band (sizes trained)")
        pure = f["curve_pure" + suffix]
        ax.plot(pure["n"], pure["loss"], color=col, lw=1, ls="--",
                label=f"{fam}: pure $aN^{{-\\alpha}}$, α = {with_ci(f, 'alpha_pure' + suffix)}")
    title = r"Scaling: $L = aN^{-\alpha} + c$" + (" (non-embedding N)" if suffix else "")
    fitted_on = {fits[fam].get("n_fitted", "all") for fam in families}  # which N the main fits use (fit_params)
    xlabel = "non-embedding parameters N" if suffix or fitted_on == {"non_embedding"} else \
        " or ".join(N_WORDS[k] for k in sorted(fitted_on)) + " N" if len(fitted_on) > 1 else "parameters N"
    _log_axes(ax, xlabel, _loss_label(loss_name),
              title + (f" — {families[0]}" if len(families) == 1 else ""))
    if shown:
        ax.set_ylim(min(shown) / 1.15, max(shown) * 1.3)
        _plain_log_ticks(ax)
    _count_ticks(ax)
    ax.legend(fontsize=8, loc="best")
    return _save(plt, fig, path)


def _smooth(values, span=5):
    """Exponential moving average over about span points: the train loss of one batch is noisy."""
    out, level, w = [], None, 2 / (span + 1)
    for v in values:
        level = v if level is None else w * v + (1 - w) * level
        out.append(level)
    return out


def plot_training_curves(rows, path):
    """Validation loss (thick, dots) and the smoothed train loss (thin, faint) vs tokens for every run with a
    log.jsonl."""
    logs = {r["run"]: read_jsonl(log_path(r["run_dir"])) for r in rows
            if r.get("run_dir") and os.path.isfile(log_path(r["run_dir"]))}
    if not logs:
        return None
    plt = _pyplot()
    families = sorted({r["family"] for r in rows if r["run"] in logs})
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 4.8), dpi=130, squeeze=False)
    for ax, fam in zip(axes[0], families):
        rs = sorted((r for r in rows if r["family"] == fam and r["run"] in logs), key=lambda r: r["n_params"])
        cmap = plt.get_cmap("viridis")
        for j, r in enumerate(rs):
            col = cmap(j / max(1, len(rs) - 1) * 0.9)  # small to large: dark to light
            log = logs[r["run"]]
            # one point per logged step (an eval step logs its train loss a second time, with the val loss)
            tr = sorted({e["tokens"]: e["train_loss"] for e in log
                         if e.get("train_loss") is not None and e.get("tokens")}.items())
            va = [(e["tokens"], e["val_loss"]) for e in log if e.get("val_loss") is not None and e.get("tokens")]
            if tr:
                ax.plot([t for t, _ in tr], _smooth([v for _, v in tr]), color=col, lw=0.8, alpha=0.35, zorder=1)
            if va:
                ax.plot(*zip(*va), color=col, lw=2.2, marker="o", ms=3.5, zorder=3,
                        label=f"{r['run']} ({human(r['n_params'])})")
        _log_axes(ax, "training tokens", "loss (nats/token)",
                  f"{fam}: validation loss (thick) and smoothed train loss (faint)")
        _count_ticks(ax)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_efficiency(rows, path):
    """Wall-clock time and peak memory vs parameters, per family."""
    have_time = [r for r in rows if r.get("wall_time_s")]
    have_mem = [r for r in rows if r.get("peak_mem_bytes")]
    if not have_time and not have_mem:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=130)
    families = sorted({r["family"] for r in rows})
    for ax, subset, key, scale, label in ((axes[0], have_time, "wall_time_s", 1 / 60, "wall-clock (minutes)"),
                                          (axes[1], have_mem, "peak_mem_bytes", 1 / 2 ** 20, "peak memory (MiB)")):
        for i, fam in enumerate(families):
            rs = sorted((r for r in subset if r["family"] == fam), key=lambda r: r["n_params"])
            if rs:
                ax.plot([r["n_params"] for r in rs], [r[key] * scale for r in rs], marker="o",
                        color=_color(fam, i), label=fam)
        _log_axes(ax, "parameters N", label, label.split(" (")[0] + " vs model size")
        _count_ticks(ax)
        if subset:
            ax.legend()
    return _save(plt, fig, path)


def compute_frontier(curves, grid_points=200):
    """The compute frontier of loss curves [(compute, loss) arrays, compute increasing]: at each compute C (a log
    grid over all of them), the lowest loss any run reached with at most C FLOPs (a run that has ended keeps the
    loss it reached); (compute, loss) arrays."""
    lo = min(c[0] for c, _ in curves)
    hi = max(c[-1] for c, _ in curves)
    # the log grid and every logged point: the frontier passes exactly through each run's losses
    grid = np.unique(np.concatenate([np.geomspace(lo, hi, grid_points), *[c for c, _ in curves]]))
    best = np.full(len(grid), np.inf)
    for c, loss in curves:
        inside = (grid >= c[0]) & (grid <= c[-1])
        best[inside] = np.minimum(best[inside], np.exp(np.interp(np.log(grid[inside]), np.log(c), np.log(loss))))
    best = np.minimum.accumulate(best)
    keep = np.isfinite(best)
    return grid[keep], best[keep]


def flops_per_token(r):
    """A run's training FLOPs per token as its model computes them (results.json's train_flops, a table's flops
    column, over its tokens), else 6·N."""
    return r["flops"] / r["tokens"] if r.get("flops") and r.get("tokens") else 6 * r["n_params"]


def plot_compute(rows, path, loss_name="loss"):
    """Validation loss vs training compute C (the runs' own FLOPs per token times the tokens so far; 6·N·D where a
    run records none) along every run's training, one panel per family, with the family's compute frontier (the
    lowest loss any size reached at each compute) and each run's final loss (the loss of the fits) as a point; runs
    without a log.jsonl are points only."""
    rs = [r for r in rows if r.get("tokens")]
    if not rs:
        return None
    plt = _pyplot()
    families = sorted({r["family"] for r in rs})
    fig, axes = plt.subplots(1, len(families), figsize=(6.8 * len(families), 4.9), dpi=130, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, fam in zip(axes[0], families):
        fr = sorted((r for r in rs if r["family"] == fam), key=lambda r: r["n_params"])
        curves = []
        for j, r in enumerate(fr):
            col = cmap(j / max(1, len(fr) - 1) * 0.9)  # small to large: dark to light, as the training curves
            log = log_path(r["run_dir"]) if r.get("run_dir") else None
            va = [(flops_per_token(r) * e["tokens"], e["val_loss"]) for e in
                  (read_jsonl(log) if log and os.path.isfile(log) else [])
                  if e.get("val_loss") is not None and e.get("tokens")]
            if len(va) > 1:
                c, loss = (np.array(v, float) for v in zip(*sorted(va)))
                curves.append((c, loss))
                ax.plot(c, loss, color=col, lw=1.6, label=f"{r['run']} ({human(r['n_params'])})")
            ax.scatter([flops_per_token(r) * r["tokens"]], [r["loss"]], color=col, s=40, edgecolor="black", zorder=4,
                       label=None if len(va) > 1 else f"{r['run']} ({human(r['n_params'])})")
        if curves:
            fc, fl = compute_frontier(curves)
            ax.plot(fc, fl, color="black", lw=6, alpha=0.18, zorder=1, solid_capstyle="round",
                    label="compute frontier (lowest loss with at most C)")
        ax.scatter([], [], color="white", s=40, edgecolor="black", label=f"final {loss_name.replace('_', ' ')}")
        measured = all(r.get("flops") for r in fr)
        _log_axes(ax, "training compute C (FLOPs" + (", as the models compute them)" if measured else
                                                     " ≈ 6·N·D where unrecorded)"),
                  "validation loss (nats/token)" if curves
                  else _loss_label(loss_name), f"{fam}: loss vs training compute")
        _count_ticks(ax)
        ax.legend(fontsize=7.5)
    return _save(plt, fig, path)


def _joint_panels(fits, height):
    """pyplot, a figure with one panel per family that has a joint L(N, D) fit and [(panel, family, joint fit,
    (N, D, L) of its runs)]; no figure and no panels when no family has one."""
    fams = [fam for fam, f in fits.items() if "joint" in f]
    if not fams:
        return None, None, []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fams), figsize=(8.4 * len(fams), height), dpi=130, squeeze=False)
    joint = [fits[fam]["joint"] for fam in fams]
    return plt, fig, [(ax, fam, j, tuple(np.array(j[k]) for k in ("n_params", "tokens", "loss")))
                      for ax, fam, j in zip(axes[0], fams, joint)]


def _finish_joint(ax, ylabel, title, counts_on_y=False):
    """Log axes with parameter (and token) counts written 100k, 1M, and the legend under the panel, where it hides
    no run."""
    _log_axes(ax, "parameters N", ylabel, title)
    _count_ticks(ax)
    if counts_on_y:
        _count_ticks(ax, y=True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def plot_iso_loss(fits, path, loss_name="loss"):
    """Contours of each family's fitted L(N, D) over parameters and tokens; its runs as outlined points coloured on
    a scale of their own by how far the measured loss lies from the fitted one (red above, blue below); lines of
    equal compute C = k·N^p·D (joint_fit's compute model), each labelled with its C; and the compute-optimal
    frontier from the runs' smallest compute to one decade beyond their largest, dotted where it extrapolates
    beyond the runs."""
    plt, fig, panels = _joint_panels(fits, 6.4)
    if not panels:
        return None
    from matplotlib.colors import LogNorm
    for ax, fam, j, (N, D, L) in panels:
        NN, DD = np.meshgrid(np.geomspace(N.min() / 3, N.max() * 3, 150), np.geomspace(D.min() / 3, D.max() * 3, 150))
        Z = predict(j, NN, DD)
        # levels over the losses the runs reach: the surface's corners (tiny N and D) would squash them otherwise
        levels = np.geomspace(min(Z.min(), L.min()), max(L.max(), Z.min() * 1.01) * 1.3, 13)
        norm = LogNorm(levels[0], levels[-1])
        filled = ax.contourf(NN, DD, Z, levels=levels, cmap="viridis", norm=norm, extend="max")
        ax.clabel(ax.contour(NN, DD, Z, levels=levels[::2], colors="white", linewidths=0.6), fmt="%.3g", fontsize=7)
        fig.colorbar(filled, ax=ax, label="fitted " + _loss_label(loss_name), format="%.3g")
        from matplotlib.colors import TwoSlopeNorm
        resid = L - predict(j, N, D)
        span = max(float(np.abs(resid).max()), 1e-3)
        dots = ax.scatter(N, D, c=resid, cmap="coolwarm", norm=TwoSlopeNorm(0, -span, span), s=70,
                          edgecolor="black", linewidth=1.4, zorder=4, label="runs (fill: measured − fitted loss)")
        fig.colorbar(dots, ax=ax, label="run: measured − fitted loss", format="%+.3f", pad=0.08)
        cm = j["compute"]
        C_name = "6·N·D" if cm["source"] == "6ND" else f"{cm['k']:.3g}·N^{cm['p']:.3g}·D"
        for k, row in enumerate(j["frontier"] or []):
            d_line = tokens_at(j, NN[0], row["C"])
            ax.plot(NN[0], d_line, color="tab:orange", ls="--", lw=1,
                    label=f"equal compute C = {C_name}" if k == 0 else None)
            inside = np.flatnonzero((d_line > DD.min() * 1.5) & (d_line < DD.max() / 1.5))
            if len(inside):  # the label on the line, a third of its way across the panel
                at = inside[len(inside) // 3]
                ax.annotate(f"C = {row['C']:.2g}", (NN[0][at], d_line[at]), fontsize=7, color="tab:orange",
                            ha="center", va="center", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none",
                                                                alpha=0.8))
        C_lo, C_hi = cm["range"]
        for Cs, style, label in ((np.geomspace(C_lo, C_hi, 50), "-",
                                  f"compute-optimal: N ∝ C^{j['a']:.2f}, D ∝ C^{j['b']:.2f}"),
                                 (np.geomspace(C_hi, 10 * C_hi, 30), ":", "extrapolation beyond the trained range")):
            opt = compute_optimal(j, Cs)
            if opt is not None and not (j.get("lack_of_fit") or {}).get("failed"):  # a misfit surface has no frontier
                ax.plot(*opt, color="red", lw=2, ls=style, label=label)
        ax.set_xlim(NN.min(), NN.max())
        ax.set_ylim(DD.min(), DD.max())
        _finish_joint(ax, "training tokens D", f"{fam}: " + r"$L = E + A/N^{\alpha} + B/D^{\beta}$"
                      + f"\nα = {with_ci(j, 'alpha')}, β = {with_ci(j, 'beta')}"
                      + ("\nlack of fit: no compute-optimal frontier" if (j.get("lack_of_fit") or {}).get("failed")
                         else ""), counts_on_y=True)
        ax.grid(False, which="both")  # the contour lines are the grid here
    return _save(plt, fig, path)


def plot_iso_flop(fits, path, loss_name="loss"):
    """Loss along lines of fixed compute C (joint_fit's compute model) from each family's fitted surface, its minimum
    N_opt(C) starred (hollow where it lies outside the trained range of N), with the runs whose compute is nearest
    each C (within 2x) as points."""
    plt, fig, panels = _joint_panels(fits, 5.8)
    if not panels:
        return None
    for ax, fam, j, (N, D, L) in panels:
        C_runs = D / tokens_at(j, N, 1.0)  # k·N^p·D
        Cs = np.geomspace(C_runs.min(), C_runs.max(), 4 if C_runs.max() > 1.5 * C_runs.min() else 1)
        nearest = np.argmin(np.abs(np.log(C_runs[:, None] / Cs[None])), axis=1)
        n_grid = np.geomspace(N.min() / 10, N.max() * 10, 200)
        opt = compute_optimal(j, Cs)
        shown = []
        for k, C in enumerate(Cs):
            col = plt.get_cmap("plasma")(0.85 * k / max(1, len(Cs) - 1))
            curve = predict(j, n_grid, tokens_at(j, n_grid, C))
            ax.plot(n_grid, curve, color=col, lw=2, label=f"C = {C:.2g} FLOPs")
            at = int(np.argmin(curve))  # the label at the line's minimum, where the eye looks
            ax.annotate(f"C = {C:.2g}", (n_grid[at], curve[at]), xytext=(0, -12), textcoords="offset points",
                        fontsize=7, color=col, ha="center")
            near = (nearest == k) & (np.abs(np.log(C_runs / C)) <= np.log(2))
            ax.scatter(N[near], L[near], color=col, s=40, edgecolor="black", zorder=3)
            shown += [curve.min(), *L[near]]
            if opt is not None:
                inside = N.min() <= opt[0][k] <= N.max()
                ax.scatter(opt[0][k], predict(j, opt[0][k], opt[1][k]), marker="*", s=180,
                           color=col if inside else "none", edgecolor="black" if inside else col, zorder=4)
        ax.scatter([], [], color="white", s=40, edgecolor="black", label="runs within 2x of that C")
        if opt is not None:
            ax.scatter([], [], marker="*", s=180, color="white", edgecolor="black", label="compute-optimal N_opt(C)")
            if not all(N.min() <= n <= N.max() for n in opt[0]):
                ax.scatter([], [], marker="*", s=180, color="none", edgecolor="black",
                           label="N_opt outside the trained range (extrapolation)")
        ax.set_ylim(min(shown) * 0.95, max(max(shown), L.max()) * 1.25)
        _finish_joint(ax, _loss_label(loss_name), f"{fam}: fitted loss at fixed compute C"
                      f"\nα = {with_ci(j, 'alpha')}, β = {with_ci(j, 'beta')}")
    return _save(plt, fig, path)


def plot_lr_sweeps(sweep, plot_dir):
    """Per family (lr_sweep_FAMILY.png), sweep: study_plan.choose_rates. Left: final validation loss vs learning
    rate, one colour per size, its best rate starred (hollow where it is still the edge of its grid), the fitted
    parabola of the learning-rate law dashed and its rate lr*(N) a diamond. Right: the best rate of each sweep and
    the law's line lr*(N) vs N. Returns {lr_sweep_FAMILY: path}; {} without a sweep."""
    written = {}
    done = [s for s in (sweep or {"sizes": []})["sizes"] if s["best"] is not None]
    for fam in dict.fromkeys(s["family"] for s in done):
        sizes = sorted((s for s in done if s["family"] == fam), key=lambda s: s["n_params"])
        law = sweep["laws"].get(fam)
        law = law if law and "error" not in law else None
        plt = _pyplot()
        fig, (ax, ax_n) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=130, gridspec_kw={"width_ratios": [3, 2]})
        cmap = plt.get_cmap("viridis")
        for j, s in enumerate(sizes):
            col = cmap(j / max(1, len(sizes) - 1) * 0.9)  # small to large: dark to light, as the training curves
            ok = [p for p in s["points"] if not p["diverged"]]
            gone = [p["rate"] for p in s["points"] if p["diverged"]]
            label = f"{s['size']} ({human(s['n_params'])})" + (f", diverged at {', '.join(gone)}" if gone else "")
            ax.plot([p["lr"] for p in ok], [p["val_loss"] for p in ok], color=col, marker="o", lw=1, label=label)
            best = s["points"][s["best"]]
            ax.scatter([best["lr"]], [best["val_loss"]], marker="*", s=200, zorder=4, edgecolor="black",
                       color="white" if s["warning"] else col)
            if s["warning"]:  # study_plan: the best rate is at an end of the grid and may lie beyond it
                ax.scatter([best["lr"]], [best["val_loss"]], marker="o", s=420, facecolor="none", edgecolor="red",
                           linewidth=1.5, zorder=5)
                ax.annotate("edge of the grid", (best["lr"], best["val_loss"]), xytext=(0, 14),
                            textcoords="offset points", ha="center", fontsize=7, color="red")
            if law and s["size"] in law["rates"]:
                # drawn over the rates the fit used (within its window of the best) and out to the law's rate
                near = [p["lr"] for p in ok if abs(np.log(p["lr"] / best["lr"])) <= np.log(law["window"]) + 1e-9]
                ends = near + [law["rates"][s["size"]]]
                lrs = np.exp(np.linspace(np.log(min(ends)), np.log(max(ends)), 60))
                ax.plot(lrs, lr_law.loss_curve(law, s["size"], lrs), color=col, ls="--", lw=1.2)
                ax.scatter([law["rates"][s["size"]]], [law["L_star"][s["size"]]], marker="D", s=40, color=col,
                           edgecolor="black", zorder=5)
            ax_n.scatter([s["n_params"]], [best["lr"]], marker="*", s=160, edgecolor="black", zorder=4,
                         color="white" if s["warning"] else col)
        ax.scatter([], [], marker="*", s=200, color="grey", edgecolor="black", label="best of the sweep")
        if any(s["warning"] for s in sizes):
            ax.scatter([], [], marker="*", s=200, color="white", edgecolor="black", label="best, at the grid's edge")
        if law:
            ax.plot([], [], color="grey", ls="--", label="learning-rate law (fit of all sizes)")
            ax.scatter([], [], marker="D", s=40, color="grey", edgecolor="black", label="law's rate lr*(N)")
            n = np.exp(np.linspace(np.log(sizes[0]["n_params"] / 1.5), np.log(sizes[-1]["n_params"] * 1.5), 20))
            ax_n.plot(n, np.exp(law["a"]) * n ** law["b"], color="black", lw=1.5,
                      label=f"lr*(N) = {np.exp(law['a']):.3g}·N^{law['b']:.3f}")
            on_law = [s for s in sizes if s["size"] in law["rates"]]
            ax_n.scatter([s["n_params"] for s in on_law], [law["rates"][s["size"]] for s in on_law], marker="D",
                         s=30, color="black", zorder=5, label="law's rate (trained)")
            ax_n.legend(fontsize=8)
        _log_axes(ax, "learning rate", "final validation loss (nats/token)",
                  f"{fam}: learning-rate sweep ({human(sizes[0]['tokens'])} tokens per run)")
        _log_axes(ax_n, "parameters N", "learning rate", f"{fam}: best rate vs size")
        # ticks at the swept rates only: log-axis minor labels between them would crowd each other
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
        rates = sorted({p["lr"] for s in sizes for p in s["points"]})
        ax.xaxis.set_major_locator(FixedLocator(rates if len(rates) <= 8 else rates[::2]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax_n.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
        written[f"lr_sweep_{fam}"] = _save(plt, fig, os.path.join(plot_dir, f"lr_sweep_{fam}.png"))
    return written


def write_outputs(rows, fits, plot_dir, loss_name="loss"):
    """Every plot of the fits and their runs into plot_dir; returns {name: path}."""
    os.makedirs(plot_dir, exist_ok=True)
    written = {}
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
                       ("compute", plot_compute(rows, png("compute"), loss_name)),
                       ("iso_loss", plot_iso_loss(fits, png("iso_loss"), loss_name)),
                       ("iso_flop", plot_iso_flop(fits, png("iso_flop"), loss_name))):
        if path:
            written[name] = path
    return written
