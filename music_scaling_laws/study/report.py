"""
report.md of a scaling study: one function per section, each returning markdown lines, and write_report, which
joins them. The Study class reads once what the pipeline's steps wrote (results.json and the perplexity of every
run, samples.jsonl of every sample folder, eval_syntax.json); study.py runs the steps and then calls write_report.
"""
import math
import os
import platform
import re
import shlex
import shutil

from music_scaling_laws.data.dataset import STATS, read_json
from music_scaling_laws.fits.fit_text import fit_markdown
from music_scaling_laws.fits.fitting import human
from music_scaling_laws.evaluation.eval_metrics import YANG_LERCH_FEATURES, YANG_LERCH_NAMES
from music_scaling_laws.study.report_html import write_html
from music_scaling_laws.training.settings import changed_settings
from music_scaling_laws.run_files import (CKPT, EVAL_SYNTAX, FIT_JSON, FIT_MD, LOG, LOGS, LR_SWEEP, PERPLEXITY_SUFFIX,
                                          PLOTS, REPORT_HTML, RESULTS, RUN_TIMINGS, RUNS, SAMPLE_SETS, SAMPLES,
                                          STUDY_CONFIG, TIMINGS, perplexity_path, read_results, report_paths,
                                          run_timings_path, sample_records, samples_path)
from music_scaling_laws.progress import fmt_seconds
from music_scaling_laws.evaluation.tune_checks import format_table, summarize

DATASET_STATS = "dataset_stats.md"  # the dataset's stats.md, copied into the study folder for the report's link


# -----------------------------------------------------------------------------
# formatting

def md_text(text):
    """Text a user or a dataset chose (a dataset's source, a config's name), as Markdown that shows it and nothing
    else: every character Markdown could read as markup (a link, emphasis, a table cell) is escaped."""
    return re.sub(r"([\\`*_\[\]()<>|!#])", r"\\\1", str(text))


def md_code(text):
    """Text shown as code (a prompt, a path, a command): a code span whose fence is longer than any run of backticks
    in the text, so a backtick inside cannot close it early and turn the rest into Markdown."""
    text = str(text)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or len(fence) > 1 else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fmt_duration(seconds):
    """3725 -> '1 h 02 min': durations as a reader says them."""
    return fmt_seconds(seconds, compact=False)


def md_table(header, rows, align=None):
    """A markdown table; None cells print as a dash, columns after the first are right-aligned unless align says."""
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join("–" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def num(x, spec=".3f"):
    return None if x is None else format(x, spec)


def pct(x):
    return None if x is None else f"{100 * x:.0f}%"


def pct_ci(block, key):
    """A rate of an eval_syntax summary with its Wilson 95% interval: '80% (38–96%)'."""
    ci = block.get("ci95", {}).get(key)  # an eval_syntax.json written before the intervals has none
    return pct(block.get(key)) if ci is None or block.get(key) is None else \
        f"{pct(block[key])} ({100 * ci[0]:.0f}–{100 * ci[1]:.0f}%)"


def ci_cell(block, key, spec=".2f"):
    """A number with its interval in brackets: '0.71 [0.62, 0.80]'; a dash without a number."""
    if not block or block.get(key) is None:
        return None
    ci = block.get(key + "_ci")
    return format(block[key], spec) + (f" [{format(ci[0], spec)}, {format(ci[1], spec)}]" if ci else "")


def yang_lerch_table(comparison, label, min_tunes=10):
    """Markdown lines of a Yang & Lerch comparison (eval_metrics.yang_lerch) of one set of tunes with the real
    tunes, each number beside the real-vs-real baseline at the same n; [] without one."""
    if not comparison:
        return []
    rows = []
    for feature in YANG_LERCH_FEATURES:
        c = comparison.get(feature)
        if c is None:
            continue
        name = YANG_LERCH_NAMES.get(feature, feature.replace("_", " "))
        if not c["compared"]:  # too few tunes of the set (or real ones) have the feature: said, not hidden
            short = "tunes" if c["n"] < min_tunes else "real tunes"
            rows.append([name, f"{c['n']} of {c['n_tunes']}", f"not compared: < {min_tunes} {short}", None, None,
                         None, None])
            continue
        b = c.get("baseline")
        rows.append([name, f"{c['n']} of {c['n_tunes']}", ci_cell(c, "overlap"), ci_cell(b, "overlap"),
                     ci_cell(c, "kl"), ci_cell(b, "kl"),
                     f"{c['intra_mean']:.3g} / {c['intra_real_mean']:.3g} / {c['inter_mean']:.3g}"])
    n_real = next(iter(comparison.values()))["n_real"]
    return [f"{label} against the real tunes the way Yang & Lerch (2018) compare them: per feature, the distances "
            f"between every two tunes of the set and between every two real tunes (intra-set), and between each tune "
            f"of the set and each real tune (inter-set); a density of each with its own bandwidth; and how far the "
            f"inter-set distances agree with the real intra-set ones: *overlap* (1 = a tune of the set lies as far "
            f"from the real tunes as they lie from each other, 0 = nothing in common) and *KL* (0 = the same). "
            f"Brackets: 95% intervals (bootstrap over the set's tunes). *Real vs real* is the same comparison for "
            f"as many real tunes, drawn "
            f"at random, against the others: what real music scores at this n, so a set is real-like where its "
            f"number lies inside that interval. Only the tunes that have a feature count for it (the pitch features "
            f"need a MIDI file with notes, bar fill a tune that parses); fewer than {min_tunes} are not compared. "
            f"{n_real} real tunes with notes at most.", "",
            md_table(["feature", "tunes", "overlap", "overlap, real vs real", "KL", "KL, real vs real",
                      "mean distance: within set / within real / between"], rows), ""]


def message_table(results_summary, reference):
    """Markdown lines of the abc2midi messages by kind (tune_checks.message_counts) of a set of tunes and of the
    real tunes: how many tunes print each; [] when neither printed any."""
    ours, real = results_summary.get("abc2midi_messages") or {}, (reference or {}).get("abc2midi_messages") or {}
    if not ours and not real:
        return []
    n, n_real = results_summary["n_files"], (reference or {}).get("n_files")

    def cell(counts, kind, total):
        c = counts.get(kind)
        return "–" if not c else f"{c['tunes']} ({c['tunes'] / total:.0%})" + (
            f", {c['count']} times" if c["count"] > c["tunes"] else "")
    rows = [[f"`{kind}`", cell(ours, kind, n), cell(real, kind, n_real) if n_real else None]
            for kind in dict.fromkeys([*ours, *real])]
    return ["What abc2midi says about these tunes and about the real ones, by kind of message (an *Error* makes a "
            "tune fail *without errors*; a *Warning* does not): real, hand-checked tunes get some too, for "
            "decorations and directions abc2midi does not know, so part of that rate measures abc2midi's "
            "strictness.", "",
            md_table(["abc2midi message", f"tunes of {n}", f"real tunes of {n_real}" if n_real else "real tunes"],
                     rows, ["---", "---:", "---:"]), ""]


def means_coverage(summary, reference):
    """One sentence: over how many tunes the means are (the others have no value: they do not parse, or have no
    MIDI notes)."""
    def part(block):
        nv, n = block.get("n_values") or {}, block["n_files"]
        return (f"score statistics over {nv.get('notes', '?')} of {n} tunes (those that parse), pitch and rhythm "
                f"statistics over {nv.get('pitch_range', '?')} of {n} (those whose MIDI has notes)")
    return [f"Means: {part(summary)}" + (f"; real tunes: {part(reference)}" if reference else "") + ".", ""]


def machine_description():
    """CPU model, cores, RAM and OS: what a reader needs to compare the report's wall-clock times."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram = ""
    return f"{cpu}, {os.cpu_count()} CPU cores{ram}, {platform.system()} {platform.release()}"


# -----------------------------------------------------------------------------
# what the steps wrote

class Study:
    """Everything the report needs, read once from the files the steps wrote."""

    def __init__(self, plan, best, jobs, cfg, data_path):
        self.plan, self.best, self.jobs, self.cfg, self.data_path = plan, best, jobs, cfg, data_path
        self.out, self.split = cfg["out_dir"], cfg["perplexity_split"]
        self.results = {r["name"]: read_results(r["run_dir"]) for r in plan}
        self.ppl = {r["name"]: read_json(perplexity_path(r["run_dir"], self.split)) for r in plan}
        self.eval = read_json(os.path.join(self.out, EVAL_SYNTAX))
        self.by_path = {os.path.abspath(f["path"]): f for f in self.eval["files"]}

    def link(self, path):
        """path relative to the study folder, with / on every OS: how report.md links its files."""
        return os.path.relpath(path, self.out).replace(os.sep, "/")

    def samples(self, folder):
        """(samples.jsonl record, eval_syntax result or None) of every tune of a sample folder."""
        return [(rec, self.by_path.get(rec["path"])) for rec in sample_records(folder)]

    def folder(self, job_name):
        """The folder of a sample job of this study ('best/unconditional', 'by_size/gpt_16'); None if it has none."""
        return next((folder for name, folder, _, _ in self.jobs if name == job_name), None)

    def yang_lerch(self, job_name):
        """eval_syntax's Yang & Lerch comparison of a sample job's tunes with the real tunes; None without one."""
        folder = self.folder(job_name)
        sets = (self.eval.get("yang_lerch") or {}).get("sets", {})
        return next((c for key, c in sets.items() if folder and os.path.abspath(key) == os.path.abspath(folder)), None)

    def size(self, name):
        """A run's parameter count as the report prints it: '1.23M'."""
        return human(self.results[name]["n_params"])


# -----------------------------------------------------------------------------
# the sections, in report order; each returns its markdown lines ([] when the study has nothing for it)

def section_header(st, step_seconds, started, invocation_s):
    import torch  # only for its version: the report says what it was made with
    first = st.results[st.plan[0]["name"]]
    name = os.path.splitext(os.path.basename(st.cfg["_config_file"] or "study"))[0]
    total = sum(step_seconds.values())
    return [f"# Scaling study: {md_text(name)}", "",
            f"Written by {md_code(shlex.join(['python', 'study.py', *st.cfg['_argv']]))} on "
            f"{started:%Y-%m-%d %H:%M} UTC.",
            f"Machine: {machine_description()}; training device {first.get('device')} ({first.get('device_name')}), "
            f"torch {torch.__version__}, Python {platform.python_version()}.", "",
            f"Time per step, summed over every invocation of this study (this invocation: "
            f"{fmt_duration(invocation_s)}):", "",
            md_table(["step", "wall-clock"], [[k, fmt_duration(v)] for k, v in step_seconds.items()]
                     + [["**total**", f"**{fmt_duration(total)}**"]]), ""] + training_overhead(st.cfg["out_dir"])


def training_overhead(out_dir):
    """One line: the training processes' wall-clock against their steps' seconds (run_timings.json), i.e. what the
    runs cost besides their steps: start-up, evaluations, the final exact pass, checkpoints."""
    path = run_timings_path(out_dir)
    runs = read_json(path) if os.path.isfile(path) else {}
    steps, wall = sum(r["steps_s"] for r in runs.values()), sum(r["wall_s"] for r in runs.values())
    if not runs or steps <= 0:
        return []
    return [f"The {len(runs)} training processes took {fmt_duration(wall)} of wall-clock in all for "
            f"{fmt_duration(steps)} of optimizer steps ({wall / steps:.2f}x: start-up, evaluations, final exact "
            f"passes, checkpoints; `{RUN_TIMINGS}` has each run).", ""]


def section_dataset(st, plots):
    stats = read_json(os.path.join(st.data_path, STATS))
    L = ["## Dataset", "",
         f"{md_code(st.data_path)} — {md_text(stats.get('source', '?'))}; tokenizer "
         f"**{md_text(stats.get('tokenizer'))}** "
         f"(vocabulary {stats.get('vocab_size')}); {stats.get('files_converted', '?')} of "
         f"{stats.get('files_found', '?')} files converted, {stats.get('tunes_found', '?')} tunes found, "
         f"{stats.get('duplicates_removed', 0)} duplicates removed, {stats.get('tunes_kept', '?')} kept. "
         f"All statistics: {dataset_stats_link(st)}.", "",
         md_table(["split", "tunes", "tokens", "characters", "chars/token"],
                  [[s, v["tunes"], f"{v['tokens']:,}", f"{v['chars']:,}", num(v["chars"] / v["tokens"], ".2f")]
                   for s, v in stats["splits"].items()]), ""]
    if "length_tokens" in stats:
        keys = ["p5", "p50", "p95", "max", "mean"]
        L += ["Tune length in tokens (end-of-tune included):", "",
              md_table(["split", *keys], [[s, *[v.get(k) for k in keys]] for s, v in stats["length_tokens"].items()]),
              ""]
    if plots.get("length_histogram"):
        L += [f"![tune lengths]({st.link(plots['length_histogram'])})", ""]
    return L


def dataset_stats_link(st):
    """A link to the dataset's stats.md, copied into the study folder (the dataset may live anywhere, and no link of
    the report leaves its folder), or its name as text where the dataset has none."""
    src = os.path.join(st.data_path, "stats.md")
    if not os.path.isfile(src):
        return "`stats.md` (not written by this dataset's prepare.py)"
    dst = os.path.join(st.out, DATASET_STATS)
    if os.path.abspath(src) != os.path.abspath(dst):
        shutil.copyfile(src, dst)
    return f"[`{DATASET_STATS}`]({DATASET_STATS}) (a copy of the dataset's stats.md)"


def section_models(st):
    rows = []
    for r in st.plan:
        res = st.results[r["name"]]
        trained = res.get("config") or r["train_config"]  # what the run was trained with, even if the config changed
        rows.append([r["name"], r["model_type"], res["n_layer"], res["n_embd"], res["n_head"], f"{res['n_params']:,}",
                     f"{res['n_params_non_embedding']:,}", trained["block_size"],
                     f"{res.get('tokens_per_iter', 0):,}", f"{trained['learning_rate']:g}",
                     f"`{r['config']}` {' '.join(r['overrides'])}".strip()])
    return ["## Models", "",
            md_table(["run", "family", "layers", "width", "heads", "parameters", "non-embedding", "context",
                      "tokens/step", "learning rate", "config"], rows, ["---", "---"] + ["---:"] * 8 + ["---"]), "",
            schedule_text(st), ""] + kept_runs_text(st)


def kept_runs_text(st):
    """Finished runs the study kept although the config now gives them other settings (the terminal's WARNING at
    each rerun): said in the report too, with what changed, since their numbers are the old settings'."""
    kept = [(r["name"], changed) for r in st.plan
            if (changed := changed_settings(st.results[r["name"]].get("config") or {}, r["train_config"]))]
    if not kept:
        return []
    return [f"**{len(kept)} run(s) were trained with other settings than the config now gives** and were kept, not "
            f"trained again (their numbers are those settings'; delete a run's folder under `runs/` to train it "
            f"again): " + "; ".join(f"{md_text(name)} ({md_text(', '.join(changed))})" for name, changed in kept) + ".",
            ""]


def schedule_text(st):
    """The learning-rate schedule(s) the runs were trained with, in one sentence each (train.py's lr_schedule)."""
    trained = [st.results[r["name"]].get("config") or r["train_config"] for r in st.plan]
    words = []
    for schedule in dict.fromkeys(t.get("lr_schedule", "cosine") for t in trained):
        runs = [t for t in trained if t.get("lr_schedule", "cosine") == schedule]
        warmup = "/".join(map(str, sorted({t["warmup_iters"] for t in runs})))
        if schedule == "wsd":
            share = "/".join(f"{t:.0%}" for t in sorted({t["cooldown_frac"] for t in runs}))
            branched = sum(bool(t.get("branch_from")) for t in runs)
            words.append(f"Learning-rate schedule: **wsd** (warmup-stable-decay, Hägele et al. 2024): a linear "
                         f"warm-up over {warmup} steps, the constant rate, then a 1-sqrt decay to min_lr over the "
                         f"last {share} of the steps" + (f"; {branched} run(s) are branches: the cooldown of their budget trained "
                                            f"from their size's trunk (`*.trunk`), the same run as that budget trained "
                                            f"alone" if branched else "") + ".")
        else:
            words.append(f"Learning-rate schedule: **cosine**: a linear warm-up over {warmup} steps, then a cosine "
                         f"decay to min_lr at the last step.")
    return " ".join(words)


def section_training(st, plots):
    rows = []
    for r in st.plan:
        res, p = st.results[r["name"]], st.ppl[r["name"]]
        rows.append([r["name"], f"{res['tokens_trained']:,}", num(res.get("epochs"), ".2f"),
                     fmt_duration(res["wall_time_s"]),
                     f"{res['tokens_per_s']:,.0f}" if res.get("tokens_per_s") else None,
                     f"{res['peak_mem_bytes'] / 2 ** 20:,.0f} MiB" if res.get("peak_mem_bytes") else None,
                     num(res.get("train_loss")), num(res["val_loss"]), num(p["loss"]), num(p["bpc"]),
                     num(p["perplexity"], ".2f")])
    L = ["## Training", "",
         f"Losses in nats/token. The {st.split} loss, bits per character and perplexity are exact, by "
         f"`calc_perplexity.py` over the whole {st.split} split. Peak memory: the process's peak resident set on CPU, "
         f"allocated tensors on GPU.", "",
         md_table(["run", "tokens", "epochs", "wall-clock", "tokens/s", "peak memory", "train loss", "val loss",
                   f"{st.split} loss", f"{st.split} bpc", f"{st.split} perplexity"], rows), ""]
    for key, title in (("training_curves", "training curves"), ("efficiency", "wall-clock and memory")):
        if plots.get(key):
            L += [f"![{title}]({st.link(plots[key])})", ""]
    return L


def section_lr_sweep(st, sweep, plots):
    """The learning-rate sweep (study_plan.choose_rates): validation loss of every size at every rate it was swept
    at, its best in bold; per family the learning-rate law (lr_law.py) with its interval, the cost of a mis-set
    rate and the rate each size is trained at; a plot per family; the warnings."""
    if not sweep or not sweep["sizes"]:
        return []
    fraction = st.cfg["lr_sweep_tokens"]
    by_law = any(s["by"] == "law" for s in sweep["sizes"])
    L = ["## Learning-rate sweep", "",
         f"Every size trained at the rates of `lr_sweep = '{st.cfg['lr_sweep']}'` on "
         f"{'the full budget' if fraction >= 1 else f'{fraction:g}× the budget'}, each run with its own schedule "
         f"(min_lr scaled with the rate{'' if fraction >= 1 else ', the warm-up of the full run unless that is over half the run'}), sizes in order "
         f"of N: from the third size on, the grid is shifted by whole steps to centre on the rate the smaller sizes' "
         f"law predicts, and a grid whose best rate is its lowest or highest grows by a step on that side "
         f"(study_plan.py). Final validation loss (exact pass over the val split, nats/token); each size's lowest "
         f"in **bold**. "
         + ("Every size is then trained on the full budget at the rate of the learning-rate law below, fitted to "
            "the sweeps of all sizes at once, not at its own argmin: those are the runs of the tables above and "
            "of the fits." if by_law else
            "Each size is then trained at its own best rate (argmin)"
            + (" on the full budget" if fraction < 1 else "") + ": those are the runs of the tables above and of "
            "the fits.")
         + (" The smaller token budgets reuse the rate chosen at the largest." if st.cfg["token_budgets"] else ""), ""]
    for fam in dict.fromkeys(s["family"] for s in sweep["sizes"]):
        sizes = sorted((s for s in sweep["sizes"] if s["family"] == fam), key=lambda s: s["n_params"])
        multiples = sizes[0]["points"][0]["rate"].startswith("x")
        rates = sorted({p["rate"]: float(p["rate"].lstrip("x")) for s in sizes for p in s["points"]}.items(),
                       key=lambda kv: kv[1])
        rows = []
        for s in sizes:
            cells = {}
            for i, p in enumerate(s["points"]):
                cell = "diverged" if p["diverged"] else f"{p['val_loss']:.4f}"
                cell = f"**{cell}**" if i == s["best"] else cell
                cells[p["rate"]] = cell + (f" ({p['lr']:.3g})" if multiples else "")
            best = s["points"][s["best"]]
            rows.append([s["size"], human(s["n_params"]), f"{s['tokens']:,}", *[cells.get(r) for r, _ in rates],
                         f"{best['lr']:.3g}" + (f" ({best['rate']})" if multiples else "")
                         + (f", +{s['extended']} step(s)" if s["extended"] else ""),
                         num(s["lr_law"], ".3g"), f"**{s['lr']:.3g}** ({s['by']})"])
        L += [f"**{fam}**", "", md_table(["size", "parameters", "tokens per run", *[r for r, _ in rates],
                                          "best of sweep", "law's rate", "trained at"], rows), ""]
        law = sweep["laws"].get(fam)
        if law and "error" not in law:
            ci = law["b_ci"]
            ci_text = "no interval (see the warnings)" if ci is None else \
                f"[{'−∞' if ci[0] is None else f'{ci[0]:.3f}'}, {'∞' if ci[1] is None else f'{ci[1]:.3f}'}]"
            L += [f"Learning-rate law ({law['n_sizes']} sizes, {law['n_points']} points within "
                  f"{law['window']:g}× of each size's best rate): loss ≈ L\\*(N) + k·(ln lr − ln lr\\*(N))², "
                  f"**lr\\*(N) = {math.exp(law['a']):.3g} · N^{law['b']:.3f}**, exponent b {ci_text} "
                  f"({law['ci_level']:.0%} profile-likelihood interval, F-test on the sweeps' residual with "
                  f"{law['dof']} degrees of freedom); k = {law['k']:.3g}, so a rate 2× off its best costs "
                  f"**{law['cost_2x']:.4f} nats** (k·(ln 2)²).", ""]
            L += [f"- {w}" for w in law["warnings"]] + ([""] if law["warnings"] else [])
        if plots.get(f"lr_sweep_{fam}"):
            L += [f"![learning-rate sweep, {fam}]({st.link(plots[f'lr_sweep_{fam}'])})", ""]
    warns = [s["warning"] for s in sweep["sizes"] if s["warning"]] + sweep["warnings"]
    if warns:
        L += ["**Warnings:**"] + [f"- {w}" for w in warns] + [""]
    return L + [f"All sweep numbers: [`{LR_SWEEP}`]({LR_SWEEP}).", ""]


def section_fits(st, fits, loss_name, plots):
    # fit_markdown says per family which runs (token budget), which N and which noise each fit rests on, alpha
    # without the largest model where that is not the best, and every warning
    L = ["## Scaling laws", "", fit_markdown(fits, loss_name), ""]
    for key in (["scaling"] + [f"scaling_{fam}" for fam in fits]
                + ["scaling_non_embedding", "compute", "iso_loss", "iso_flop"]):
        if plots.get(key):
            L += [f"![{key.replace('_', ' ')}]({st.link(plots[key])})", ""]
    return L + [f"All fit numbers: [`{FIT_JSON}`]({FIT_JSON}), [`{FIT_MD}`]({FIT_MD}).", ""]


def section_best_samples(st):
    c = st.cfg
    L = [f"## Samples from the best model: {st.best['name']}", "",
         f"{st.best['name']} has the lowest {st.split} loss ({st.ppl[st.best['name']]['loss']:.4f} nats/token). "
         f"Sampling: temperature {c['temperature']}, top_k {c['top_k'] or 'off'}, top_p {c['top_p']}, at most "
         f"{c['max_new_tokens']} new tokens, seed {c['sample_seed']}. *Headers added*: the ABC header fields "
         f"sample.py had to add to make a complete tune; *converts to MIDI*: abc2midi writes a MIDI file with notes "
         f"(what the seed projects count); *without errors*: and prints no error on the way.", ""]
    rows, results = [], []
    for name, folder, _, _ in st.jobs:
        if not name.startswith("best/"):
            continue
        for rec, res in st.samples(folder):
            results.append(res)
            links = [f"[abc]({st.link(rec['path'])})"]
            for kind in ("midi", "wav", "svg"):  # link only what was rendered (a tool may be missing or fail)
                media = os.path.join(folder, os.path.basename(rec.get(kind) or ""))
                if rec.get(kind) and os.path.isfile(media):
                    links.append(f"[{kind}]({st.link(media)})")
            prompt = md_code(rec["prompt"].replace("\n", "⏎")).replace("|", "\\|")
            rows.append([len(rows) + 1, prompt if rec["prompt"] else "(none)", rec["tokens"],
                         "yes" if rec["ended_with_eot"] else "no", ",".join(rec["headers_added"]) or "–",
                         None if res is None else "yes" if res["parse_ok"] else "no",
                         None if res is None else "yes" if res["midi_notes"] > 0 else "no",
                         None if res is None else "yes" if res["midi_ok"] else "no",
                         None if res is None else res["reason"] or "no", " · ".join(links)])
    L += [md_table(["#", "prompt", "tokens", "ended", "headers added", "parses", "converts to MIDI",
                    "without errors", "degenerate", "files"], rows, ["---:", "---", "---:"] + ["---"] * 7), ""]
    ref = st.eval.get("reference")
    results = [r for r in results if r is not None]
    summary = summarize(results)
    L += [f"Validity and musical statistics of these {len(rows)} tunes (`files`) next to "
          f"{ref['n_files'] if ref else 0} real {st.split} tunes (`reference`), by `eval_syntax.py`:", "",
          "```", format_table(summary, ref), "```", ""]
    L += means_coverage(summary, ref) + message_table(summary, ref)
    return L + yang_lerch_table(st.yang_lerch("best/unconditional"), f"The unconditional tunes of {st.best['name']}",
                                (st.eval.get("yang_lerch") or {}).get("min_tunes", 10))


CAPABILITIES = [
    ("ends the tune (end-of-tune token)", lambda rec, res: rec["ended_with_eot"]),
    ("writes its own X:/M:/L:/K: headers", lambda rec, res: not rec["headers_added"]),
    ("parses (music21)", lambda rec, res: res["parse_ok"]),
    ("converts to MIDI (abc2midi writes notes)", lambda rec, res: res["midi_notes"] > 0),
    ("converts to MIDI without errors", lambda rec, res: res["midi_ok"]),
    ("not degenerate", lambda rec, res: not res["degenerate"]),
    ("bars fill the meter (≥ 90% of bars)", lambda rec, res: (res.get("bars_matching_meter") or 0) >= 0.9),
]


def section_sizes(st):
    share = st.cfg["capability_share"]
    stat_keys = ["notes", "bars", "pitch_range", "pitch_class_entropy", "notes_per_bar", "bars_matching_meter"]
    rate_keys = ["parse_valid_rate", "midi_converts_rate", "midi_clean_rate", "degenerate_rate"]
    rows, caps, sized = [], {}, []
    folders = {name: folder for name, folder, _, _ in st.jobs}  # this study's sample sets, not any left on disk
    for r in st.plan:
        folder = folders.get(f"by_size/{r['name']}")
        if folder is None or not os.path.isfile(samples_path(folder)):
            continue
        pairs = [(rec, res) for rec, res in st.samples(folder) if res is not None]
        if not pairs:
            continue
        sized.append(r)
        s = summarize([res for _, res in pairs])
        caps[r["name"]] = [sum(bool(test(rec, res)) for rec, res in pairs) / len(pairs) for _, test in CAPABILITIES]
        rows.append([r["name"], st.size(r["name"]), num(st.ppl[r["name"]]["loss"]), s["n_files"],
                     *[pct_ci(s, k) for k in rate_keys], *[num(s["means"].get(k), ".2f") for k in stat_keys]])
    if not sized:
        return []
    ref = st.eval.get("reference")
    if ref:
        rows.append([f"*real {st.split} tunes*", "", "", ref["n_files"], *[pct_ci(ref, k) for k in rate_keys],
                     *[num(ref["means"].get(k), ".2f") for k in stat_keys]])
    L = ["## What each model size can do", "",
         f"{st.cfg['samples_per_size']} unconditional tunes per model (the sampling settings above), scored by "
         f"`eval_syntax.py`; the last row is the real {st.split} tunes. Rates with their Wilson 95% interval (a "
         f"handful of tunes pins a rate down only loosely); musical statistics are means over the tunes that parse "
         f"(notes, bars) or convert to MIDI (pitch).", "",
         md_table(["run", "params", f"{st.split} loss", "tunes", "parses", "converts to MIDI", "MIDI without errors",
                   "degenerate", *[k.replace("_", " ") for k in stat_keys]], rows), "",
         f"Capabilities by size: the share of each model's tunes that show it, **bold** where at least "
         f"{share:.0%} do.", "",
         md_table(["capability", *[f"{r['name']} ({st.size(r['name'])})" for r in sized]],
                  [[name, *[f"**{pct(caps[r['name']][i])}**" if caps[r["name"]][i] >= share
                            else pct(caps[r["name"]][i]) for r in sized]]
                   for i, (name, _) in enumerate(CAPABILITIES)], ["---"] + ["---:"] * len(sized)), ""]
    for fam in dict.fromkeys(r["model_type"] for r in sized):
        fam_runs = sorted((r for r in sized if r["model_type"] == fam), key=lambda r: st.results[r["name"]]["n_params"])
        parts = []
        for i, (name, _) in enumerate(CAPABILITIES):
            first = next((r for r in fam_runs if caps[r["name"]][i] >= share), None)
            parts.append(f"{name}: " + (f"from {st.size(first['name'])} parameters" if first else "not at these sizes"))
        L.append(f"- **{fam}** — " + "; ".join(parts) + ".")
    return L + [""]


def section_files(st):
    return ["## Files", "",
            f"- `{RUNS}/<run>/`: `{RESULTS}`, `{LOG}`, `{CKPT}` and `{st.split}{PERPLEXITY_SUFFIX}` of every model",
            f"- `{SAMPLE_SETS}/best/`, `{SAMPLE_SETS}/by_size/<run>/`: the tunes (`.abc`, `.mid`, `.wav`, `.svg`) and "
            f"their `{SAMPLES}`; `{REPORT_HTML}`: this report with the plots inline and every tune to listen to",
            f"- `{EVAL_SYNTAX}`: every tune's checks and statistics; `{FIT_JSON}`, `{FIT_MD}`: the fits; "
            f"`{LR_SWEEP}`: the learning-rate sweep, if the study ran one; `{PLOTS}/` (each plot as PNG, SVG and PDF); "
            f"`{LOGS}/`: the output of every script the study ran; `{TIMINGS}`; `{STUDY_CONFIG}`", ""]


def write_report(plan, best, jobs, cfg, data_path, step_seconds, fits, loss_name, plots, started, invocation_s,
                 sweep=None):
    """out_dir/report.md of a finished study, and report.html from the same lines (report_html.py); returns the
    path of report.md. step_seconds: {step: wall-clock seconds} of every
    invocation; plots: {name: png path} (plots.write_outputs plus the dataset's length histogram and the sweep's);
    sweep: study_plan.choose_rates of the learning-rate sweep, if the study ran one."""
    st = Study(plan, best, jobs, cfg, data_path)
    lines = (section_header(st, step_seconds, started, invocation_s) + section_dataset(st, plots) + section_models(st)
             + section_training(st, plots) + section_lr_sweep(st, sweep, plots)
             + section_fits(st, fits, loss_name, plots) + section_best_samples(st)
             + section_sizes(st) + section_files(st))
    path, html = report_paths(cfg["out_dir"])
    with open(path, "w") as f:
        f.write("\n".join(lines))
    write_html(st, lines, fits, html)  # the same lines, as a page
    return path

