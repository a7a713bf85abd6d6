"""study.py end to end: the smoke study (the real pipeline at tiny sizes) writes every table of the report,
continues instead of redoing finished work, and refuses a bad study config with one line."""
import json
import os
import shlex

import pytest

import study
from music_scaling_laws.study import study_plan
import train
from helpers import REPO, config_values, study_runs

pytestmark = pytest.mark.slow  # end-to-end: each test runs real studies (make test-fast leaves them out)

SMOKE_CFG = config_values(study, "config/study_smoke.py")  # the smoke study's settings, as study.py reads them
RUNS = tuple(spec["name"] for spec in study_runs("config/study_smoke.py"))


def tokens_per_step(config):
    """The most tokens one optimizer step of any run of a study config trains (batch x accumulation x block), with
    the config's train_args and each run's own overrides, as study.py passes them to train.py."""
    train_args = shlex.split(config_values(study, config)["train_args"])
    steps = []
    for spec in study_runs(config):
        t = config_values(train, spec["config"], *train_args, *spec["overrides"])
        steps.append(t["batch_size"] * t["gradient_accumulation_steps"] * t["block_size"])
    return max(steps)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, run_script):
    out = tmp_path_factory.mktemp("study") / "smoke"
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}"], timeout=900,
                      env={"OMP_NUM_THREADS": "1"})
    return out, proc


def test_smoke_study_report_has_every_table(smoke_study):
    out, proc = smoke_study
    report = (out / "report.md").read_text()
    for heading in ("## Dataset", "## Models", "## Training", "## Scaling laws", "## Samples from the best model"):
        assert heading in report, heading
    # the architecture table and the training table name every run of the config
    for run in RUNS:
        assert report.count(f"| {run} |") >= 2, run
        results = json.loads((out / "runs" / run / "results.json").read_text())
        # the budget to within one step of batch x block positions (tune-aligned windows score fewer than a block)
        step = results["config"]["batch_size"] * results["config"]["block_size"]
        assert abs(results["tokens_trained"] - SMOKE_CFG["max_tokens"]) <= step
        ppl = json.loads((out / "runs" / run / "test_perplexity.json").read_text())
        assert ppl["tokens"] == json.loads((out / "data" / "stats.json").read_text())["splits"]["test"]["tokens"]
    # fits of both families, with the plain-language warning three sizes deserve
    fits = json.loads((out / "fit.json").read_text())
    assert set(fits) == {"gpt", "lstm"}
    assert any("only 3 model sizes" in w for w in fits["gpt"]["warnings"])
    assert "only 3 model sizes" in report
    for plot in ("scaling.png", "training_curves.png", "efficiency.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"plots/{plot}" in report
    # >= 10 unconditional and >= 5 prompted tunes from the best model, evaluated against real test tunes
    evaluation = json.loads((out / "eval_syntax.json").read_text())
    best = [f for f in evaluation["files"] if "/best/" in f["path"].replace("\\", "/")]
    assert len([f for f in best if "/unconditional/" in f["path"]]) >= 10
    assert len([f for f in best if "/prompt_" in f["path"]]) >= 5
    assert "done in" in proc.stdout


def test_report_html_shows_and_plays_every_tune_offline(smoke_study, tmp_path_factory):
    """report.html in headless Chromium (tests/browser.py): no console error, every image decodes, every audio
    player has a duration, every plot is there inline as SVG; every tune of every size is on the page with its
    player, every link resolves inside the study folder and nothing points to the network. The screenshot of the
    first screen is kept (its path is printed)."""
    import re
    from urllib.parse import unquote
    from browser import check_page
    out, _ = smoke_study
    page = (out / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page), "a resource from the network"
    refs = set(re.findall(r'(?:src|href)="([^"#][^"]*)"', page))
    assert refs and all((out / unquote(ref)).exists() for ref in refs), [r for r in refs if not (out / r).exists()]
    inside = lambda ref: os.path.realpath(out / unquote(ref)).startswith(os.path.realpath(out) + os.sep)  # noqa: E731
    assert all(inside(ref) for ref in refs), [r for r in refs if not inside(r)]  # no link leaves the study folder
    md_links = re.findall(r"\]\(([^)\s]+)\)", (out / "report.md").read_text())
    assert md_links and all(inside(ref) for ref in md_links), [r for r in md_links if not inside(r)]
    records = {folder.parent.name: [json.loads(line) for line in folder.read_text().splitlines()]
               for folder in out.glob("samples/*/*/samples.jsonl")}
    for run in RUNS:  # every size's tunes, rendered: heard and seen on the page
        names = [os.path.basename(r["file"]) for r in records[run]]
        assert names and all(f"samples/by_size/{run}/{name}" in page for name in names), run
        assert any(r.get("wav") for r in records[run]) and all("svg" in r for r in records[run]), run
    with_audio = sum(bool(r.get("wav")) for rs in records.values() for r in rs)
    plots = sorted(p.name for p in (out / "plots").glob("*.svg"))
    assert {"scaling.svg", "training_curves.svg", "compute.svg"} <= set(plots)
    assert all((out / "plots" / p.replace(".svg", ".pdf")).is_file() for p in plots)  # vector for a paper too
    assert "Yang &amp; Lerch" in page and "overlap, real vs real" in page and "abc2midi message" in page

    shots = tmp_path_factory.mktemp("report_html")
    found = check_page(out / "report.html", shots / "first_screen.png", shots / "profile")
    print(f"screenshot of report.html: {shots / 'first_screen.png'}")
    assert found["console_errors"] == []
    assert found["images"] and all(i["ok"] for i in found["images"]), [i for i in found["images"] if not i["ok"]]
    assert len(found["audio"]) == with_audio
    assert all(a["duration"] > 0 and a["error"] is None for a in found["audio"]), found["audio"]
    assert len(found["svgs"]) == len(plots) and all(s["width"] > 100 and s["height"] > 100 for s in found["svgs"])
    assert (shots / "first_screen.png").read_bytes()[:4] == b"\x89PNG"
    # issue 29: the page is no wider than a 1280-px window; the listening grid scrolls inside its own box; the
    # summary leads with the fits and keeps each family's warnings in one closed item (at most 4 such items)
    assert found["window_width"] == 1280 and found["page_width"] <= found["window_width"], found["page_width"]
    assert found["grids"] and all(g["right"] <= 1280 and g["overflow_x"] == "auto" for g in found["grids"])
    summary = found["summary"]
    assert len(summary) <= 6 and not summary[0]["warning"]
    assert sum(i["warning"] for i in summary) <= 4 and all(i["details"] and not i["open"] for i in summary
                                                            if i["warning"])
    assert (out / "dataset_stats.md").is_file() and 'href="dataset_stats.md"' in page


def test_a_finished_study_is_not_redone(smoke_study, run_script):
    out, _ = smoke_study
    kept = ["runs/*/ckpt.pt", "samples/*/*/samples.jsonl", "eval_syntax.json"]
    before = {p: p.stat().st_mtime_ns for pattern in kept for p in out.glob(pattern)}
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}"], timeout=900,
                      env={"OMP_NUM_THREADS": "1"})
    assert before and before == {p: p.stat().st_mtime_ns for pattern in kept for p in out.glob(pattern)}
    assert (out / "report.md").exists() and "done in" in proc.stdout



def test_two_trainings_at_once_are_each_the_run_they_are_alone(smoke_study, run_script, tmp_path):
    """parallel_runs=2 trains two models at a time; each ends with exactly the losses of the study that trained
    them one by one: same data, and by default the same threads per run whatever parallel_runs (the environment
    of the smoke study, whose OMP_NUM_THREADS the default takes; it used to be cores / parallel_runs)."""
    out, _ = smoke_study
    par = tmp_path / "parallel"
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={par}", f"--data_dir={out / 'data'}",
                       "--parallel_runs=2", "--stop_after=train"], timeout=900, env={"OMP_NUM_THREADS": "1"})
    lines = proc.stdout.splitlines()
    started = [i for i, line in enumerate(lines) if line.endswith(": started")]
    finished = [i for i, line in enumerate(lines) if ": done in " in line]
    assert len(started) == len(finished) == len(RUNS) and started[1] < finished[0], "never two at once"
    for run in RUNS:
        alone = json.loads((out / "runs" / run / "results.json").read_text())
        together = json.loads((par / "runs" / run / "results.json").read_text())
        assert (together["val_loss"], together["train_loss"]) == (alone["val_loss"], alone["train_loss"]), run
        log = lambda path: [(e["iter"], e["train_loss"], e.get("val_loss"))  # noqa: E731
                            for e in map(json.loads, (path / "runs" / run / "log.jsonl").read_text().splitlines())]
        assert log(par) == log(out), run
    assert not (par / "report.md").exists()  # stop_after=train


# two of the smoke study's runs, one per family: the SLURM launcher's test stays short
TWO_RUNS = ("gpt_16 config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16\n"
            "lstm_16 config/lstm_tiny.py --n_layer=1 --n_embd=16")


def train_as_jobs(smoke_study, run_script, folder, runs, *options, env=None):
    """Train the smoke study's runs (runs: all of RUNS, or those of TWO_RUNS) on its data with options; assert
    each ends with exactly the losses the smoke study's local launcher gave; returns {run: submitit job id}."""
    out, _ = smoke_study
    table = [f"--runs={TWO_RUNS}"] if runs != RUNS else []
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={folder}", f"--data_dir={out / 'data'}",
                       *table, "--train_threads=1", "--stop_after=train", *options], timeout=900, env=env)
    for run in runs:
        alone = json.loads((out / "runs" / run / "results.json").read_text())
        as_job = json.loads((folder / "runs" / run / "results.json").read_text())
        assert (as_job["val_loss"], as_job["train_loss"]) == (alone["val_loss"], alone["train_loss"]), run
    assert "training" in (folder / "logs" / "train_gpt_16.log").read_text()  # the run's output where it always is
    return {line.split()[1].rstrip(":"): line.split()[-1] for line in proc.stdout.splitlines()
            if line.startswith("[job] ")}


def test_submitit_jobs_train_the_runs_the_local_launcher_trains(smoke_study, run_script, tmp_path):
    """`study.py config/study_smoke.py --launcher=submitit_local`: every run is a submitit job (a real subprocess
    job through submitit's LocalExecutor, the path SLURM jobs take) and ends with exactly the losses the local
    launcher gave."""
    jobs = train_as_jobs(smoke_study, run_script, tmp_path / "submitit", RUNS, "--launcher=submitit_local",
                         "--parallel_runs=2")
    assert set(jobs) == set(RUNS)
    for run, job_id in jobs.items():
        assert list((tmp_path / "submitit" / "logs" / "submitit" / job_id).glob("*_result.pkl")), run


def test_slurm_jobs_ask_for_the_config_s_resources_and_train_the_same_runs(smoke_study, run_script, tmp_path):
    """launcher=slurm: each run is one SLURM job, submitted by submitit's SlurmExecutor with the resources of the
    slurm_* knobs. SLURM's commands are stand-ins here (tests/fake_slurm: sbatch runs the batch script at once on
    this machine, srun runs its task), so what is tested is everything up to SLURM: the batch scripts, the jobs
    finding the repository, their answers, the losses."""
    state = tmp_path / "slurm_state"
    state.mkdir()
    env = {"PATH": f"{REPO / 'tests' / 'fake_slurm'}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_STATE": str(state)}
    jobs = train_as_jobs(smoke_study, run_script, tmp_path / "slurm", ("gpt_16", "lstm_16"), "--launcher=slurm",
                         "--slurm_partition=gpu", "--slurm_time=30", "--slurm_cpus_per_run=4",
                         "--slurm_args=account=proj", env=env)
    assert set(jobs) == {"gpt_16", "lstm_16"}
    for run, job_id in jobs.items():
        script = (state / f"{job_id}.sh").read_text()
        for line in (f"--job-name={run}", "--partition=gpu", "--time=30", "--gpus-per-node=1", "--cpus-per-task=4",
                     "--account=proj"):
            assert f"#SBATCH {line}\n" in script, (run, line)


def test_a_second_study_on_the_same_out_dir_stops_with_one_line(tmp_path, run_script):
    import fcntl
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / "study.lock", "a+") as held:  # what a running study.py holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "another study.py is running" in proc.stderr.strip().splitlines()[-1]
    assert not (out / "data").exists()


def test_estimate_projects_every_run_without_training(smoke_study, run_script, tmp_path):
    out, _ = smoke_study
    est = tmp_path / "estimate"
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={est}", f"--data_dir={out / 'data'}",
                       "--estimate=True", "--estimate_steps=2"], timeout=600, env={"OMP_NUM_THREADS": "1"})
    projected = json.loads((est / "estimate.json").read_text())
    assert [r["run"] for r in projected["runs"]] == list(RUNS)
    trained = {r: json.loads((out / "runs" / r / "results.json").read_text())["tokens_trained"] for r in RUNS}
    assert all(r["tokens"] == trained[r["run"]] and r["tokens_per_s"] > 0 and r["projected_s"] > r["warmup_s"]
               for r in projected["runs"])
    assert f"projected total, one run at a time: {projected['projected_total_s']:.0f} s" in proc.stdout.splitlines()
    assert not (est / "runs").exists()


@pytest.mark.parametrize("override, message", [
    ("--runs=gpt_x config/nope.py", "not found"),
    ("--no_such_key=1", "no_such_key"),
    ("--launcher=pbs", "launcher must be one of"),
    ("--devices=gpu0", "devices entries"),
])
def test_bad_study_config_is_one_line(tmp_path, run_script, override, message):
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={tmp_path / 's'}", override], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def test_changed_settings_are_reported_not_silently_mixed(smoke_study, run_script):
    """A finished run whose config has changed since is kept (hours of training), but the user is told."""
    out, _ = smoke_study
    results = out / "runs" / "gpt_16" / "results.json"
    before = json.loads(results.read_text())["tokens_trained"]
    half = SMOKE_CFG["max_tokens"] // 2
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}", f"--max_tokens={half}"], timeout=900,
                      env={"OMP_NUM_THREADS": "1"})
    assert "WARNING: trained with other settings" in proc.stdout
    assert f"max_tokens: {SMOKE_CFG['max_tokens']} -> {half}" in proc.stdout
    assert json.loads(results.read_text())["tokens_trained"] == before  # kept, not retrained
    report = (out / "report.md").read_text()  # the report says it too, not only the terminal
    assert "were trained with other settings than the config now gives" in report
    assert f"gpt\\_16 (max\\_tokens: {SMOKE_CFG['max_tokens']} -\\> {half})" in report


def test_a_setting_cosine_runs_never_read_changes_no_finished_run(smoke_study, run_script):
    """cooldown_frac shapes only wsd runs: after a change of it, the smoke study's finished cosine runs are the same
    runs, skipped without a warning that they were trained with other settings (settings.changed_settings, the one
    rule train.py's resume and the study share)."""
    out, _ = smoke_study
    train_args = SMOKE_CFG["train_args"] + " --cooldown_frac=0.5"
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}", f"--train_args={train_args}",
                       "--stop_after=train"], timeout=900, env={"OMP_NUM_THREADS": "1"})
    assert "finished earlier, skipped" in proc.stdout
    assert "WARNING" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("config", ["config/study_quick.py", "config/study_lakh.py"])
def test_study_plans_have_both_families_and_every_size_at_every_budget(run_script, tmp_path, config):
    """The shipped studies resolve (every config file and override valid) into >= 4 sizes per family over more
    than a decade, each trained for the fits at every budget of the config (token_budgets, else max_tokens); a
    study with lr_sweep also sweeps each of its rates per size on its lr_sweep_tokens share of the largest budget.
    Read from the plan.json the dry run writes, the budgets and rates from the config itself."""
    cfg = config_values(study, config)
    run_script(["study.py", config, f"--out_dir={tmp_path}", "--dry_run=True"])
    plan = json.loads((tmp_path / "plan.json").read_text())
    # the runs for the fits: neither sweep runs nor wsd trunks (which train up to the largest budget's cooldown)
    fit_rows = [r for r in plan["runs"] if ".sweep" not in r["run"] and not r["run"].endswith(".trunk")]
    for family in ("gpt", "lstm"):
        sizes = list(dict.fromkeys(r["n_params"] for r in fit_rows if r["family"] == family))
        assert len(sizes) >= 4 and sizes == sorted(sizes), (family, sizes)
        assert sizes[-1] / sizes[0] > 20  # more than a decade of N
    step = tokens_per_step(config)

    def near(tokens, budget):
        """Whole steps: before the dataset exists (stride order), the budget rounded down to a step; with the
        dataset there (tunes order, data/music21 prepared) steps of windows that start at tunes and score fewer
        tokens than a block, whose first ones in the shuffled order may hold a few percent more or less than the
        average the steps are planned on (measured on data/music21: +0.2% at 2M tokens, +1.0% at 250k)."""
        return abs(tokens - budget) <= 0.05 * budget if plan["vocab_known"] else budget - step < tokens <= budget

    budgets = [tokens for _, tokens in study_plan.parse_budgets(cfg["token_budgets"])] or [cfg["max_tokens"]]
    all_sizes = {r["n_params"] for r in fit_rows}
    for budget in budgets:
        assert {r["n_params"] for r in fit_rows if near(r["tokens"], budget)} == all_sizes, budget
    assert all(any(near(r["tokens"], budget) for budget in budgets) for r in fit_rows)
    sweep_rows = [r for r in plan["runs"] if ".sweep" in r["run"]]
    assert len(sweep_rows) == len(study_plan.parse_rates(cfg["lr_sweep"])) * len(study_runs(config))
    for r in sweep_rows:
        assert near(r["tokens"], cfg["lr_sweep_tokens"] * max(budgets)), r


def test_a_sample_folder_holds_its_job_only_with_every_setting_equal(tmp_path):
    """samples_hold: the tunes of this training of the run, with these settings, seeds and rendering, or redo."""
    from music_scaling_laws.study.steps import samples_hold
    expect = {"run_id": "abc", "prompt": "X:1\nM:6/8\n", "max_new_tokens": 64, "temperature": 1.0, "top_k": 0,
              "top_p": 0.9, "seeds": [7, 8], "rendered": True}
    assert not samples_hold(tmp_path / "missing", expect)
    good = [{"file": f"sample_00{i}.abc", "seed": 7 + i, "midi": None, **{k: v for k, v in expect.items()
                                                                          if k not in ("seeds", "rendered")}}
            for i in range(2)]
    for change, holds in [({}, True), ({"top_p": 1.0}, False), ({"run_id": "other"}, False),
                          ({"prompt": "X:1\\nM:6/8\\n"}, False), ({"seed": 9}, False), ({"midi": "drop"}, False)]:
        records = [dict(r, **change) for r in good]
        for r in records:
            if r.get("midi") == "drop":
                del r["midi"]
        (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        assert samples_hold(tmp_path, expect) == holds, change
    (tmp_path / "samples.jsonl").write_text(json.dumps(good[0]) + "\n")  # a set cut short
    assert not samples_hold(tmp_path, expect)


def test_samples_drawn_with_other_settings_are_drawn_again(smoke_study, run_script):
    """Runs last in this file (it changes the study's samples). A study run again with another sampling setting
    draws every sample set again and scores them again: report.md never states settings its tunes were not
    drawn with, and eval_syntax.json never scores tunes that are no longer there."""
    out, _ = smoke_study
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={out}", "--top_p=0.8"], timeout=900,
                      env={"OMP_NUM_THREADS": "1"})
    folders = sorted(out.glob("samples/*/*/samples.jsonl"))
    assert len(folders) >= 3 and proc.stdout.count("[samples ") == len(folders)
    for folder in folders:
        records = [json.loads(line) for line in folder.read_text().splitlines()]
        assert records and {r["top_p"] for r in records} == {0.8}, folder
    assert (out / "eval_syntax.json").stat().st_mtime >= max(f.stat().st_mtime for f in folders)
    assert "[eval_syntax]" in proc.stdout and "top_p 0.8" in (out / "report.md").read_text()


def test_the_docstring_s_slurm_command_plans_the_lakh_study(run_script, tmp_path):
    """`python study.py config/study_lakh.py --launcher=slurm --slurm_partition=gpu` (study.py's docstring) needs
    SLURM, GPUs and Lakh MIDI to run; here its plan, which checks every knob it sets, as a dry run."""
    proc = run_script(["study.py", "config/study_lakh.py", "--launcher=slurm", "--slurm_partition=gpu",
                       f"--out_dir={tmp_path}", "--dry_run=True"])
    assert "total training compute" in proc.stdout and (tmp_path / "plan.json").is_file()


def fit_design(plan):
    """From a dry run's plan.json: {family: sorted N of the runs for the fits}, the budgets of the wsd branches,
    {family: sizes with a seed repeat}, and the sweep runs."""
    rows = plan["runs"]
    fit_rows = [r for r in rows if r["role"] in ("run", "branch", "seed_repeat")]
    sizes = {fam: sorted({r["n_params"] for r in fit_rows if r["family"] == fam}) for fam in ("gpt", "lstm")}
    budgets = sorted({r["tokens"] for r in rows if r["role"] == "branch"})
    seeded = {fam: {r["run"].split(".")[0] for r in rows if r["family"] == fam and ".seed" in r["run"]}
              for fam in ("gpt", "lstm")}
    return sizes, budgets, seeded, [r for r in rows if r["role"] == "sweep"]


def test_the_gpu_study_plans_a_design_whose_fits_can_conclude(tmp_path):
    """config/study_gpu.py (issue #30): per family >= 6 sizes over >= 2.5 decades of N, budgets from wsd branches
    over a decade of D up to at most one epoch of data/music21 (~2.85M training tokens), a learning-rate sweep fitted
    as the law, and seed repeats of >= 2 sizes per family; asserted from the plan.json of its dry run."""
    from helpers import study_dry_run
    cfg = config_values(study, "config/study_gpu.py")
    study_dry_run("config/study_gpu.py", f"--out_dir={tmp_path}")
    sizes, budgets, seeded, sweep = fit_design(json.loads((tmp_path / "plan.json").read_text()))
    for fam, n in sizes.items():
        assert len(n) >= 6 and n[-1] / n[0] >= 10 ** 2.5 and n[0] < 20_000 and n[-1] > 2_000_000, (fam, n)
        assert len(seeded[fam]) >= 2, fam
    assert len(budgets) >= 4 and budgets[-1] / budgets[0] >= 9.9 and budgets[-1] <= 2_850_000, budgets
    assert cfg["wsd_branches"] and "--lr_schedule=wsd" in cfg["train_args"]
    assert cfg["lr_choice"] == "law" and cfg["lr_sweep_tokens"] < 1
    assert len(sweep) == len(study_plan.parse_rates(cfg["lr_sweep"])) * sum(len(n) for n in sizes.values())
    assert cfg["device"] == "cuda"


def test_the_lakh_study_plans_the_same_design_at_the_seeds_scale(tmp_path):
    """config/study_lakh.py: a sweep on a share of the budget, wsd budgets over >= 4x up to 100M tokens, seed
    repeats of 2 sizes per family."""
    from helpers import study_dry_run
    cfg = config_values(study, "config/study_lakh.py")
    study_dry_run("config/study_lakh.py", f"--out_dir={tmp_path}")
    sizes, budgets, seeded, sweep = fit_design(json.loads((tmp_path / "plan.json").read_text()))
    assert len(budgets) >= 4 and budgets[-1] / budgets[0] >= 4 and 0.95e8 < budgets[-1] <= 1e8, budgets
    assert all(len(seeded[fam]) == 2 for fam in sizes), seeded
    assert sweep and all(r["tokens"] <= cfg["lr_sweep_tokens"] * 1e8 for r in sweep)
    assert len(sweep) == len(study_plan.parse_rates(cfg["lr_sweep"])) * sum(len(n) for n in sizes.values())


def test_estimate_of_a_study_that_prepares_its_data_prepares_it_first(tmp_path, run_script):
    """--estimate on a study whose dataset is not there yet prepares it first, so every run is planned and timed
    on the dataset's real vocabulary and epoch (it used to assume a vocabulary of 128 and time random tokens)."""
    from helpers import many_tunes
    (tmp_path / "tunes.abc").write_text("\n".join(many_tunes(40)))
    out = tmp_path / "s"
    args = ["study.py", "config/study_smoke.py", f"--out_dir={out}", f"--dataset_input={tmp_path / 'tunes.abc'}",
            "--runs=gpt_16 config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16"]
    proc = run_script([*args, "--estimate=True", "--estimate_steps=1"], timeout=600, env={"OMP_NUM_THREADS": "1"})
    assert "vocabulary of 128 assumed" not in proc.stdout
    assert (out / "data" / "meta.json").exists() and not (out / "runs").exists()
    estimated = json.loads((out / "plan.json").read_text())
    assert estimated["vocab_known"]
    log = (out / "logs" / "estimate_gpt_16.log").read_text()
    assert "--synthetic" not in log and "--vocab_size=128" not in log
    run_script([*args, "--dry_run=True"])  # the plan of the dataset now there: the same runs, parameters, tokens
    assert json.loads((out / "plan.json").read_text()) == estimated
