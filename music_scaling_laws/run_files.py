"""
The run-folder contract: the names of the files a training run and the evaluations made of it hold, and how every
other script reads them. The one place these names are written (tests name them literally: they check the contract
from outside). Torch-free, so the fitting, plotting and report code can read runs without it.

A run folder (train.py's out_dir):
    ckpt.pt                   the model and everything an exact resume needs (checkpoint.py writes and reads it)
    log.jsonl                 one JSON line per logged iteration (train and validation loss), appended as it trains
    results.json              written once training has finished: its presence means "finished"
    diverged.json             written instead when the loss became NaN or inf ({iteration, loss}), so that a study
                              tells a diverged run (in a learning-rate sweep, a result: the rate is too high) from one
                              that failed, without reading the words of the error message
    branch_<tokens>.pt        a wsd trunk's state at the start of a token budget's cooldown (train.py --branch_budgets)
    train.lock                held by the one train.py writing the folder
    <split>_perplexity.json   calc_perplexity.py's exact loss of the finished model on a split (study.py puts it
                              there); it records the run_id and iteration it measured, so a stale one is recognised
A sample folder (sample.py's --out): sample_NNN.abc (.mid, .wav, .svg) and samples.jsonl, one record per tune.
A fit's output folder (scaling.py's --out, a study's out_dir): fit.json and fit.md (power_law.write_fit); a study's
also eval_syntax.json (eval_syntax.py over every sample folder).
A study folder (study.py's out_dir), besides those:
    runs/<name>/              one run folder per planned run
    samples/, plots/, logs/   the sample folders, every plot (PNG, SVG, PDF), the output of every script it ran
    plan.json                 the plan of a --dry_run, for programs (study/steps.write_plan)
    study_config.json         the study's settings; study.lock: held by the one study.py writing the folder
    timings.json              seconds spent in each step, added up across resumed invocations (script_runs.Timings)
    run_timings.json          each training process's wall-clock against its steps' seconds (script_runs.Timings)
    lr_sweep.json             the learning-rate sweep's choice of rate per size (study_plan.write_choice)
    estimate.json             --estimate's projected training time per run, from estimate/<run>.json (bench.py's)
    report.md, report.html    report.py's report of the finished study
"""
import json
import os
import re

from music_scaling_laws.data.dataset import read_json, read_jsonl, write_json_atomic

CKPT = "ckpt.pt"
LOG = "log.jsonl"
RESULTS = "results.json"
DIVERGED = "diverged.json"
LOCK = "train.lock"
RUN_FILES = (CKPT, LOG, RESULTS)  # what makes a folder one of train.py's runs
PERPLEXITY_SUFFIX = "_perplexity.json"
SAMPLES = "samples.jsonl"
FIT_JSON, FIT_MD = "fit.json", "fit.md"
EVAL_SYNTAX = "eval_syntax.json"
PLAN = "plan.json"
STUDY_CONFIG = "study_config.json"
STUDY_LOCK = "study.lock"
TIMINGS = "timings.json"
RUN_TIMINGS = "run_timings.json"
LR_SWEEP = "lr_sweep.json"
ESTIMATE = "estimate.json"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
RUNS, SAMPLE_SETS, PLOTS, LOGS = "runs", "samples", "plots", "logs"  # a study's folders


# ----------------------------------------------------------------------------- a run folder

def ckpt_path(run_dir):
    return os.path.join(run_dir, CKPT)


def log_path(run_dir):
    return os.path.join(run_dir, LOG)


def results_path(run_dir):
    return os.path.join(run_dir, RESULTS)


def is_finished(run_dir):
    """Whether the run's training has finished (train.py writes results.json last)."""
    return os.path.isfile(results_path(run_dir))


def read_results(run_dir):
    """The results.json of a finished run."""
    return read_json(results_path(run_dir))


def branch_checkpoint_path(trunk_dir, budget):
    """Where a wsd trunk (train.py --branch_budgets) keeps its state at the start of a token budget's cooldown,
    for the branch that trains that cooldown (--init_from=branch); the one place that names these files."""
    return os.path.join(trunk_dir, f"branch_{int(budget)}.pt")


def is_branch_checkpoint(name):
    return name.startswith("branch_") and name.endswith(".pt")


def is_run_file(name):
    """A file train.py writes into its out_dir: RUN_FILES, the DIVERGED marker and a trunk's branch checkpoints."""
    return name in RUN_FILES or name == DIVERGED or is_branch_checkpoint(name)


# ----------------------------------------------------------------------------- the diverged marker

def write_diverged(run_dir, iteration, loss):
    """Mark a run whose loss became NaN or inf (train.py, before it stops with an error)."""
    write_json_atomic({"iteration": int(iteration), "loss": str(loss)}, os.path.join(run_dir, DIVERGED))


def is_diverged(run_dir):
    return os.path.isfile(os.path.join(run_dir, DIVERGED))


# ----------------------------------------------------------------------------- perplexity files

def perplexity_path(run_dir, split):
    """Where calc_perplexity.py puts a run's loss on a split (study.py asks it to)."""
    return os.path.join(run_dir, f"{split}{PERPLEXITY_SUFFIX}")


def is_perplexity_file(name):
    return name.endswith(PERPLEXITY_SUFFIX)


def stale_perplexity(ppl, results):
    """Why a calc_perplexity.py result does not measure the run's finished model (None when it does, or cannot be
    told): another run_id means the run was trained again after it was measured, an earlier iter_num that it was
    measured on a checkpoint before the end. Files from before run_ids were recorded (either side lacks one) are
    taken as they are, as they always were: there is nothing to compare them with."""
    measured, trained = ppl.get("run_id"), results.get("run_id")
    if not measured or not trained:
        return None
    if measured != trained:
        return "it was measured on an earlier training of the run (another run_id)"
    if ppl.get("iter_num") is not None and results.get("iters") is not None and ppl["iter_num"] != results["iters"]:
        return f"it was measured at iteration {ppl['iter_num']}, before the end of training ({results['iters']})"
    return None


def read_perplexity(run_dir, split="test", results=None):
    """(calc_perplexity.py's JSON in run_dir/<split>_perplexity.json, or None; why it was left out, or None). A
    stale file (stale_perplexity) counts as missing: a number of an older model must never pass for this one; so
    does a damaged one. results: the run's results.json if the caller has read it already."""
    path = perplexity_path(run_dir, split)
    if not os.path.isfile(path):
        return None, None
    try:
        ppl = read_json(path)
        why = None if isinstance(ppl, dict) and "loss" in ppl else "it is not a calc_perplexity.py result"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a damaged file is as good as none: measure again
        why = f"it is not valid JSON ({e})"
    if why is None:
        if results is None:
            results = read_results(run_dir) if is_finished(run_dir) else {}
        why = stale_perplexity(ppl, results)
    return (None, f"{path} is not used: {why}; run calc_perplexity.py on the run again") if why else (ppl, None)


# ----------------------------------------------------------------------------- sample folders

def samples_path(folder):
    return os.path.join(folder, SAMPLES)


def sample_records(folder):
    """The samples.jsonl records of a sample folder, each with `path`: the absolute path of its tune, found by file
    name inside the folder (so a study folder that has moved still finds its tunes)."""
    return [dict(rec, path=os.path.abspath(os.path.join(folder, os.path.basename(rec["file"]))))
            for rec in read_jsonl(samples_path(folder))]


# ----------------------------------------------------------------------------- a study folder

def study_run_dir(study_dir, name):
    """The run folder of a study's planned run `name`."""
    return os.path.join(study_dir, RUNS, name)


def plan_path(study_dir):
    return os.path.join(study_dir, PLAN)


def study_config_path(study_dir):
    return os.path.join(study_dir, STUDY_CONFIG)


def study_lock_path(study_dir):
    return os.path.join(study_dir, STUDY_LOCK)


def timings_path(study_dir):
    return os.path.join(study_dir, TIMINGS)


def run_timings_path(study_dir):
    """{run: {wall_s, steps_s}}: each training process's wall-clock (start-up included) and its steps' seconds."""
    return os.path.join(study_dir, RUN_TIMINGS)


def lr_sweep_path(study_dir):
    return os.path.join(study_dir, LR_SWEEP)


def estimate_path(study_dir, run=None):
    """estimate.json, the projection of the whole plan; with run, estimate/<run>.json, bench.py's timing of it."""
    return os.path.join(study_dir, ESTIMATE) if run is None else os.path.join(study_dir, "estimate", f"{run}.json")


def report_paths(study_dir):
    """(report.md, report.html) of a study."""
    return os.path.join(study_dir, REPORT_MD), os.path.join(study_dir, REPORT_HTML)


# ----------------------------------------------------------------------------- a run's role in its study

ROLES = ("run", "sweep", "seed_repeat", "trunk", "branch")
SWEEP_SUFFIX = re.compile(r"\.sweep[0-9.e+-]+$")  # study_plan.run_name's suffix of a learning-rate sweep run
SEED_SUFFIX = re.compile(r"\.seed\d+$")           # study_plan's suffix of a repeat with another seed


def run_role(results, name=None):
    """What a finished run is to its study, from its results.json: 'run' (for the fits), 'sweep' (a learning-rate
    sweep run on a share of the budget), 'seed_repeat' (a run for the fits repeated with another seed), 'trunk' (a
    wsd trunk: no budget's run) or 'branch' (a wsd budget's cooldown from a trunk). results["role"] where train.py
    wrote it (the study passes --run_role); for a results.json written before, from what it records: branch_budgets
    (a trunk), init_from 'branch', else the folder name (name, or the config's out_dir) as study_plan names runs."""
    role = results.get("role")
    if role:
        return role
    config = results.get("config") or {}
    if results.get("branch_budgets") or config.get("branch_budgets"):
        return "trunk"
    if config.get("init_from") == "branch":
        return "branch"
    name = name or os.path.basename(str(config.get("out_dir", "")).rstrip("/"))
    if SWEEP_SUFFIX.search(name):
        return "sweep"
    if SEED_SUFFIX.search(name):
        return "seed_repeat"
    return "run"
