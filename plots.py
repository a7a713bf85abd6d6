"""
The plots of a scaling study, drawn from the fits of power_law.py and the run rows they were fitted to, and
write_outputs, which writes a fit's whole output folder (fit.json, fit.md and every plot) for scaling.py and
study.py alike.

Every plot is a PNG with log axes labelled in plain numbers; a plot whose data no run has (no log.jsonl, no
timings, no token counts, no joint L(N, D) fit, no finished learning-rate sweep) is skipped rather than drawn empty.
"""
import os

import numpy as np

import lr_law
from dataset import read_jsonl, write_json_atomic
from fitting import human, percent, with_ci
from joint_fit import compute_optimal, predict
from power_law import fit_markdown, fits_for_json

COLORS = {"gpt": "tab:blue", "lstm": "tab:orange"}


def _pyplot():
    # imported on first use: matplotlib costs a second to import, and Agg draws without a display
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _color(fam, i):
    return COLORS.get(fam, f"C{i + 2}")


def _plain_log_ticks(ax, y=True):
    """Label a log axis 0.7, 0.8, 1 instead of 7x10^-1; minor ticks get labels only when the range is < 1 decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    axis = ax.yaxis if y else ax.xaxis
    lo, hi = ax.get_ylim() if y else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


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
    fig.tight_layout()
    fig.savefig(path)
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
        ax.plot(cur["n"], cur["loss"], color=col, lw=2,
                label=f"{fam}: α = {with_ci(f, 'alpha' + suffix)}, c = {f['c' + suffix]:.3g}")
        if cur["band_lo"] is not None:
            ax.fill_between(cur["n"], cur["band_lo"], cur["band_hi"], color=col, alpha=0.18, lw=0,
                            label=f"{fam}: {percent(f['ci_level'])} band")
        pure = f["curve_pure" + suffix]
        ax.plot(pure["n"], pure["loss"], color=col, lw=1, ls="--",
                label=f"{fam}: pure $aN^{{-\\alpha}}$, α = {with_ci(f, 'alpha_pure' + suffix)}")
    title = r"Scaling: $L = aN^{-\alpha} + c$" + (" (non-embedding N)" if suffix else "")
    _log_axes(ax, "non-embedding parameters N" if suffix else "parameters N", _loss_label(loss_name),
              title + (f" — {families[0]}" if len(families) == 1 else ""))
    if shown:
        ax.set_ylim(min(shown) / 1.15, max(shown) * 1.3)
        _plain_log_ticks(ax)
    ax.legend(fontsize=8, loc="best")
    return _save(plt, fig, path)


def plot_training_curves(rows, path):
    """Train (thin) and validation (thick, dots) loss vs tokens for every run with a log.jsonl."""
    logs = {r["run"]: read_jsonl(os.path.join(r["run_dir"], "log.jsonl")) for r in rows
            if r.get("run_dir") and os.path.isfile(os.path.join(r["run_dir"], "log.jsonl"))}
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
            tr = [(e["tokens"], e["train_loss"]) for e in log if e.get("train_loss") is not None and e.get("tokens")]
            va = [(e["tokens"], e["val_loss"]) for e in log if e.get("val_loss") is not None and e.get("tokens")]
            if tr:
                ax.plot(*zip(*tr), color=col, lw=0.8, alpha=0.5)
            if va:
                ax.plot(*zip(*va), color=col, lw=2, marker="o", ms=3,
                        label=f"{r['run']} ({r['n_params'] / 1e6:.3g}M)")
        _log_axes(ax, "training tokens", "loss (nats/token)", f"{fam}: validation (thick) and train (thin) loss")
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
        if subset:
            ax.legend()
    return _save(plt, fig, path)


def plot_compute(rows, path, loss_name="loss"):
    """Loss vs training compute C ≈ 6·N·D FLOPs (D = tokens trained), for runs that know their token count."""
    rs = [r for r in rows if r.get("tokens")]
    if not rs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=130)
    for i, fam in enumerate(sorted({r["family"] for r in rs})):
        fr = sorted((r for r in rs if r["family"] == fam), key=lambda r: 6 * r["n_params"] * r["tokens"])
        ax.plot([6 * r["n_params"] * r["tokens"] for r in fr], [r["loss"] for r in fr], marker="o",
                color=_color(fam, i), label=fam)
    _log_axes(ax, "training compute ≈ 6·N·D (FLOPs)", _loss_label(loss_name), "Loss vs training compute")
    ax.legend()
    return _save(plt, fig, path)


def _joint_panels(fits, height):
    """pyplot, a figure with one panel per family that has a joint L(N, D) fit and [(panel, family, joint fit,
    (N, D, L) of its runs)]; no figure and no panels when no family has one."""
    fams = [fam for fam, f in fits.items() if "joint" in f]
    if not fams:
        return None, None, []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fams), figsize=(7 * len(fams), height), dpi=130, squeeze=False)
    joint = [fits[fam]["joint"] for fam in fams]
    return plt, fig, [(ax, fam, j, tuple(np.array(j[k]) for k in ("n_params", "tokens", "loss")))
                      for ax, fam, j in zip(axes[0], fams, joint)]


def _finish_joint(ax, ylabel, title, counts_on_y=False):
    """Log axes with parameter (and token) counts written 100k, 1M, and the legend under the panel, where it hides
    no run."""
    from matplotlib.ticker import FuncFormatter
    _log_axes(ax, "parameters N", ylabel, title)
    for axis in (ax.xaxis, ax.yaxis) if counts_on_y else (ax.xaxis,):
        axis.set_major_formatter(FuncFormatter(lambda x, _: human(x)))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def plot_iso_loss(fits, path, loss_name="loss"):
    """Contours of each family's fitted L(N, D) over parameters and tokens, its runs as points coloured on the same
    scale by their measured loss, lines of equal compute C = 6·N·D, and the compute-optimal frontier."""
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
        ax.scatter(N, D, c=L, cmap="viridis", norm=norm, s=44, edgecolor="black", zorder=4,
                   label="runs (fill: measured loss)")
        C_lo, C_hi = 6 * NN.min() * DD.min(), 6 * NN.max() * DD.max()
        for k, row in enumerate(r for r in j["frontier"] or [] if C_lo < r["C"] < C_hi):
            ax.plot(NN[0], row["C"] / (6 * NN[0]), color="tab:orange", ls="--", lw=1,
                    label="equal compute C = 6·N·D" if k == 0 else None)
        opt = compute_optimal(j, np.geomspace(C_lo, C_hi, 100))
        if opt is not None:
            ax.plot(*opt, color="red", lw=2, label=f"compute-optimal: N ∝ C^{j['a']:.2f}, D ∝ C^{j['b']:.2f}")
        ax.set_xlim(NN.min(), NN.max())
        ax.set_ylim(DD.min(), DD.max())
        _finish_joint(ax, "training tokens D", f"{fam}: " + r"$L = E + A/N^{\alpha} + B/D^{\beta}$"
                      + f" (α = {j['alpha']:.2f}, β = {j['beta']:.2f})", counts_on_y=True)
        ax.grid(False, which="both")  # the contour lines are the grid here
    return _save(plt, fig, path)


def plot_iso_flop(fits, path, loss_name="loss"):
    """Loss along lines of fixed compute C = 6·N·D from each family's fitted surface, its minimum N_opt(C) starred,
    with the runs whose 6·N·D is nearest each C (within 2x) as points."""
    plt, fig, panels = _joint_panels(fits, 5.8)
    if not panels:
        return None
    for ax, fam, j, (N, D, L) in panels:
        C_runs = 6 * N * D
        Cs = np.geomspace(C_runs.min(), C_runs.max(), 4 if C_runs.max() > 1.5 * C_runs.min() else 1)
        nearest = np.argmin(np.abs(np.log(C_runs[:, None] / Cs[None])), axis=1)
        n_grid = np.geomspace(N.min() / 10, N.max() * 10, 200)
        opt = compute_optimal(j, Cs)
        shown = []
        for k, C in enumerate(Cs):
            col = plt.get_cmap("plasma")(0.85 * k / max(1, len(Cs) - 1))
            curve = predict(j, n_grid, C / (6 * n_grid))
            ax.plot(n_grid, curve, color=col, lw=2, label=f"C = {C:.2g}")
            near = (nearest == k) & (np.abs(np.log(C_runs / C)) <= np.log(2))
            ax.scatter(N[near], L[near], color=col, s=40, edgecolor="black", zorder=3)
            shown += [curve.min(), *L[near]]
            if opt is not None:
                ax.scatter(opt[0][k], predict(j, opt[0][k], opt[1][k]), marker="*", s=180, color=col,
                           edgecolor="black", zorder=4)
        ax.scatter([], [], color="white", s=40, edgecolor="black", label="runs within 2x of that C")
        if opt is not None:
            ax.scatter([], [], marker="*", s=180, color="white", edgecolor="black", label="compute-optimal N_opt(C)")
        ax.set_ylim(min(shown) * 0.95, max(max(shown), L.max()) * 1.25)
        _finish_joint(ax, _loss_label(loss_name), f"{fam}: fitted loss at fixed compute C = 6·N·D")
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


def write_outputs(rows, fits, out_dir, loss_name="loss", plot_dir=None):
    """fit.json and fit.md into out_dir, every plot into plot_dir (default out_dir); returns {name: path}."""
    plot_dir = plot_dir or out_dir
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(plot_dir, exist_ok=True)
    written = {"fit.json": os.path.join(out_dir, "fit.json"), "fit.md": os.path.join(out_dir, "fit.md")}
    write_json_atomic(fits_for_json(fits), written["fit.json"])
    with open(written["fit.md"], "w") as f:
        f.write(f"# Scaling-law fits\n\n{fit_markdown(fits, loss_name)}\n")
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
