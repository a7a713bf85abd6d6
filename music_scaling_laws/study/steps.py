"""
A study's steps after training, as study.py runs them: the exact test loss of every run (calc_perplexity.py), the
fits and plots (in the study's process), the sample sets (sample.py) and their evaluation (eval_syntax.py); and the
plan's table as a dry run prints it and writes it to plan.json.
"""
import os
import shutil
import time

from music_scaling_laws.configurator import lines_of
from music_scaling_laws.data import abc_text
from music_scaling_laws.data.dataset import read_json, write_json_atomic
from music_scaling_laws.errors import UserError
from music_scaling_laws.fits import fit_text, joint_fit, power_law, run_table
from music_scaling_laws.fits.fitting import human, with_ci
from music_scaling_laws.fits.plots import plot_lr_sweeps, write_outputs
from music_scaling_laws.lifetime import usable_cpus
from music_scaling_laws.run_files import (EVAL_SYNTAX, PLOTS, SAMPLE_SETS, perplexity_path, plan_path, read_perplexity,
                                          read_results, sample_records, samples_path)
from music_scaling_laws.study.script_runs import run_script


# -----------------------------------------------------------------------------
# the plan's table

def plan_table(plan, vocab_known):
    """The plan as print_plan shows it and plan.json holds it: one row per run (learning_rate None while the sweep
    has to choose it, learning_rate_note saying why), the total training compute, and whether the vocabulary and
    the epoch are known yet (before prepare.py: a vocabulary of 128 assumed, one epoch planned as 0 tokens)."""
    rows = [{"run": r["name"], "family": r["model_type"], "role": r.get("role", "run"), "n_params": r["n_params"],
             "n_params_non_embedding": r["n_params_non_embedding"], "tokens": r["tokens"],
             "train_flops": r["flops_per_token"] * r["tokens"],
             "learning_rate": None if r.get("pending") or r.get("waiting") else r["train_config"]["learning_rate"],
             "learning_rate_note": "sweep's best" if r.get("pending") else "centred later" if r.get("waiting") else ""}
            for r in plan]
    total = sum(r["flops_per_token"] * r.get("trains", r["tokens"]) for r in plan)  # a wsd branch: its cooldown
    return {"runs": rows, "total_train_flops": total, "vocab_known": vocab_known}


def print_plan(table):
    width = max([14] + [len(r["run"]) for r in table["runs"]])
    print(f"{'run':{width}s} {'family':6s} {'params':>12s} {'non-emb':>12s} {'tokens':>13s} {'train FLOPs':>11s} "
          f"{'learning rate':>13s}")
    for r in table["runs"]:
        lr = r["learning_rate_note"] or f"{r['learning_rate']:.4g}"
        print(f"{r['run']:{width}s} {r['family']:6s} {r['n_params']:12,d} {r['n_params_non_embedding']:12,d} "
              f"{r['tokens']:13,d} {r['train_flops']:11.2e} {lr:>13s}")
    print(f"total training compute {table['total_train_flops']:.2e} FLOPs" + (
        "" if table["vocab_known"] else " (dataset not prepared yet: vocabulary of 128 assumed, one epoch unknown)"))


def write_plan(table, out):
    """out/plan.json: the plan of a dry run for programs (tests, scripts) to read, instead of the printed columns."""
    path = plan_path(out)
    try:
        os.makedirs(out, exist_ok=True)
        write_json_atomic(table, path, indent=1)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}")


def device_flag(cfg):
    return [] if cfg["device"] == "auto" else ["--device", cfg["device"]]


def perplexity_all(plan, cfg, timings, logs):
    """The exact loss of every run on perplexity_split (calc_perplexity.py), unless the run has it already."""
    for i, r in enumerate(plan, start=1):
        out = perplexity_path(r["run_dir"], cfg["perplexity_split"])
        if read_perplexity(r["run_dir"], cfg["perplexity_split"])[0] is not None:
            continue  # measured on this very run; one measured before it was retrained is measured again
        print(f"[perplexity {i}/{len(plan)}] {r['name']} on the {cfg['perplexity_split']} split", flush=True)
        timings.add("perplexity", run_script(
            ["calc_perplexity.py", r["run_dir"], "--split", cfg["perplexity_split"], "--out_file", out, *device_flag(cfg)],
            os.path.join(logs, f"perplexity_{r['name']}.log"), f"calc_perplexity on {r['name']}", echo=False))


def sample_jobs(plan, best, cfg):
    """(name, folder, sample.py arguments, what its samples.jsonl must record) of every sample set of the study."""
    common = ["--max_new_tokens", cfg["max_new_tokens"], "--temperature", cfg["temperature"], "--top_k",
              cfg["top_k"], "--top_p", cfg["top_p"], "--seed", cfg["sample_seed"], *device_flag(cfg)]
    render = ["--midi", "--wav", "--svg"] if cfg["render"] else []
    root = os.path.join(cfg["out_dir"], SAMPLE_SETS)

    def job(name, run, n, prompt="", extra=()):
        prompt_args = ["--prompt", prompt] if prompt else []
        expect = {"run_id": read_results(run["run_dir"]).get("run_id"),
                  "prompt": abc_text.prompt_from_command_line(prompt), "max_new_tokens": cfg["max_new_tokens"],
                  "temperature": cfg["temperature"], "top_k": cfg["top_k"], "top_p": cfg["top_p"],
                  "seeds": [cfg["sample_seed"] + i for i in range(n)], "rendered": "--midi" in extra}
        return (name, os.path.join(root, *name.split("/")),
                ["--run", run["run_dir"], "--num_samples", n, *prompt_args, *extra, *common], expect)

    jobs = [job("best/unconditional", best, cfg["num_samples"], extra=render)]
    for j, prompt in enumerate(lines_of(cfg["prompts"]), start=1):
        jobs.append(job(f"best/prompt_{j}", best, cfg["samples_per_prompt"], prompt, render))
    if cfg["samples_per_size"] > 0:
        for r in plan:
            jobs.append(job(f"by_size/{r['name']}", r, cfg["samples_per_size"], extra=render))  # report.html plays them
    return jobs


def samples_hold(folder, expect):
    """Whether a sample folder holds what its job would write: the tunes of this very training of the run
    (run_id), with these sampling settings, prompt and seeds, rendered (MIDI, WAV, SVG) or not as asked. A
    folder written by a killed call (no samples.jsonl), by an earlier training or with other settings is stale."""
    try:
        records = sample_records(folder)
    except (OSError, ValueError):
        return False
    settings = {k: v for k, v in expect.items() if k not in ("seeds", "rendered")}
    return ([rec.get("seed") for rec in records] == expect["seeds"]
            and all(("midi" in rec) == expect["rendered"] and all(rec.get(k) == v for k, v in settings.items())
                    for rec in records))


def sample_all(jobs, timings, logs):
    """Every sample set of sample_jobs that its folder does not hold yet (see samples_hold)."""
    for i, (name, folder, args, expect) in enumerate(jobs, start=1):
        if samples_hold(folder, expect):
            continue
        print(f"[samples {i}/{len(jobs)}] {name}", flush=True)
        # a stale folder is replaced (only sample.py's own files), never mixed with the new tunes
        timings.add("sample", run_script(["sample.py", *args, "--out_dir", folder, "--overwrite=True"],
                                         os.path.join(logs, f"sample_{name.replace('/', '_')}.log"),
                                         f"sampling {name}", echo=False))


def eval_all(jobs, data_path, cfg, timings, logs):
    """One eval_syntax.py call over every sample folder, with the real test tunes as reference; skipped when
    eval_syntax.json already scores every tune, is newer than every sample set and has what report.md shows
    (intervals, Yang & Lerch's comparison: an eval_syntax.json of an older version has none, and is redone)."""
    out = os.path.join(cfg["out_dir"], EVAL_SYNTAX)
    folders = [folder for _, folder, _, _ in jobs]
    wanted = {rec["path"] for f in folders for rec in sample_records(f)}
    done = read_json(out) if os.path.isfile(out) else None
    newest_samples = max(os.path.getmtime(samples_path(f)) for f in folders)
    if (done and "ci95" in done and "yang_lerch" in done
            and wanted <= {os.path.abspath(x["path"]) for x in done["files"]}
            and os.path.getmtime(out) >= newest_samples):
        return
    print(f"[eval_syntax] {len(wanted)} generated tunes and {cfg['reference_tunes']} real test tunes", flush=True)
    workers = cfg["eval_workers"] or usable_cpus()
    timings.add("eval_syntax", run_script(
        ["eval_syntax.py", *folders, "--reference", data_path, "--reference_tunes", cfg["reference_tunes"],
         "--workers", workers, "--out_file", out], os.path.join(logs, "eval_syntax.log"), "eval_syntax", echo=False))


def fit_and_plot(plan, cfg, data_path, timings, sweep=None):
    """Step 4, in this process: the fits of every family, fit.json, fit.md and the plots (out_dir/plots/, with the
    dataset's length histogram and the learning-rate sweep's). The fit policy is power_law's, the same as
    scaling.py's on these runs: L(N) on each family's largest token budget (the plots of runs show those runs), the
    joint L(N, D) on every run. Returns (fits, name of the loss fitted, {plot name: path})."""
    t0 = time.time()
    rows, loss_name = run_table.load_runs([r["run_dir"] for r in plan],
                                          "test" if cfg["perplexity_split"] == "test" else "val")
    fits = power_law.fit_all(rows, n_bootstrap=cfg["n_bootstrap"], ci_level=cfg["ci_level"],
                             fit_params=cfg.get("fit_params", "all"))
    fitted = {run for f in fits.values() for run in f["runs"]}
    plot_dir = os.path.join(cfg["out_dir"], PLOTS)
    fit_text.write_fit(fits, cfg["out_dir"], loss_name)
    plots = write_outputs([row for row in rows if row["run"] in fitted], fits, plot_dir, loss_name)
    plots.update(plot_lr_sweeps(sweep, plot_dir))
    hist = os.path.join(data_path, "length_histogram.png")
    if os.path.isfile(hist):
        plots["length_histogram"] = shutil.copy(hist, os.path.join(plot_dir, "length_histogram.png"))
    timings.add("fit", time.time() - t0)
    for fam, f in fits.items():
        print(fit_summary(fam, f))
    return fits, loss_name, plots


def fit_summary(fam, f):
    """The [fit] lines of a family: alpha with its interval, the N fitted, the noise behind the interval, alpha
    without the largest model where that is not the best, and every warning in words."""
    budget = f", {human(f['budget_tokens'])}-token budget" if f.get("budget_tokens") else ""
    lines = [f"[fit] {fam}: alpha = {with_ci(f, 'alpha')}, c = {f['c']:.3g} "
             f"(N = {fit_text.N_WORDS[f['n_fitted']]}, {f['n_points']} runs{budget})",
             f"[fit] {fam}: {fit_text.noise_text(f)}"]
    if f.get("alpha_without_largest") is not None:
        lines.append(f"[fit] {fam}: the largest model is not the best; without it alpha = "
                     f"{with_ci(f, 'alpha_without_largest')}")
    if fit_text.n_definition_text(f):
        lines.append(f"[fit] {fam}: {fit_text.n_definition_text(f)}")
    lines += [f"[fit] {fam} warning: {w}" for w in f["warnings"]]
    if "joint" in f:
        j = f["joint"]
        lines.append(f"[fit] {fam} L(N, D): alpha = {with_ci(j, 'alpha')}, beta = "
                     f"{with_ci(j, 'beta')}, E = {j['E']:.3g}; {joint_fit.compute_text(j)}")
        lines += [f"[fit] {fam} L(N, D) warning: {w}" for w in j["warnings"]]
    return "\n".join(lines)
