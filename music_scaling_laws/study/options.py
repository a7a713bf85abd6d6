"""
A study's settings checked before anything runs (one line now rather than a failure hours into the study), and
its `runs` table read into run specs.
"""
import os
import re
import shlex
import shutil

from music_scaling_laws.errors import UserError
from music_scaling_laws.fits import fit_policy
from music_scaling_laws.study import study_plan
from music_scaling_laws.study.jobs import LAUNCHERS, slurm_parameters
from music_scaling_laws.study.script_runs import WORKER_RUNS

RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_runs(text):
    """[{name, config, overrides}] from the `runs` table."""
    specs = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UserError(f"runs line {line_no} ({line!r}): {e}")
        if len(words) < 2:
            raise UserError(f"runs line {line_no} ({line!r}): expected a name and a config file")
        name, config, overrides = words[0], words[1], words[2:]
        if not RUN_NAME.match(name):
            raise UserError(f"run name {name!r} may hold only letters, digits, '_', '-' and '.'")
        if any(s["name"] == name for s in specs):
            raise UserError(f"run name {name!r} appears twice in runs")
        if not os.path.isfile(config):
            raise UserError(f"run {name}: config file {config} not found")
        bad = [w for w in overrides if not w.startswith("--") or "=" not in w]
        if bad:
            raise UserError(f"run {name}: overrides must look like --key=value, got {' '.join(bad)}")
        specs.append({"name": name, "config": config, "overrides": overrides})
    if not specs:
        raise UserError("the study has no runs")
    return specs


def check_config(cfg):
    """Settings no study can use: one line now rather than a failure hours into the study."""
    for key in ("num_samples", "samples_per_prompt", "reference_tunes", "max_new_tokens", "estimate_steps",
                "forecast_studies", "forecast_bootstrap"):
        if cfg[key] < 1:
            raise UserError(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["stop_after"] not in ("", "prepare", "train"):
        raise UserError(f"stop_after must be '', 'prepare' or 'train', got {cfg['stop_after']!r}")
    for key in ("max_tokens", "samples_per_size", "parallel_runs", "train_threads", "eval_workers", "top_k",
                "temperature"):
        if not cfg[key] >= 0:  # also catches nan
            raise UserError(f"{key} must not be negative, got {cfg[key]}")
    for key in ("top_p", "capability_share"):
        if not 0 < cfg[key] <= 1:
            raise UserError(f"{key} must be in (0, 1], got {cfg[key]}")
    if str(cfg["worker_runs"]) not in WORKER_RUNS:
        raise UserError(f"worker_runs must be auto, True or False, got {cfg['worker_runs']!r}")
    if cfg["perplexity_split"] not in ("train", "val", "test"):
        raise UserError(f"perplexity_split must be train, val or test, got {cfg['perplexity_split']!r}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg["device"]):
        raise UserError(f"device must be auto, cpu, cuda, cuda:N or mps, got {cfg['device']!r}")
    check_launcher(cfg)
    study_plan.check_knobs(cfg)
    fit_policy.check_settings(cfg["n_bootstrap"], cfg["ci_level"], cfg["fit_params"])


def check_launcher(cfg):
    """launcher, devices and the slurm_* knobs: one line now rather than when the first run is submitted."""
    if cfg["launcher"] not in LAUNCHERS:
        raise UserError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {cfg['launcher']!r}")
    for d in (d.strip() for d in cfg["devices"].split(",")):
        if d and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", d):
            raise UserError(f"devices entries must look like cuda:0, cuda, cpu or mps, got {d!r}")
    for key in ("slurm_gpus_per_run", "slurm_cpus_per_run", "slurm_time"):
        if cfg[key] < 1:
            raise UserError(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["slurm_mem_gb"] < 0:
        raise UserError(f"slurm_mem_gb must not be negative (0: the partition's default), got {cfg['slurm_mem_gb']}")
    if cfg["launcher"] == "slurm":
        if cfg["devices"]:
            raise UserError("devices is for launcher=local or submitit_local; under SLURM each job gets its own GPUs "
                 "(slurm_gpus_per_run)")
        slurm_parameters(cfg, "check")  # slurm_args
        if not (cfg["dry_run"] or cfg["estimate"]) and not (shutil.which("sbatch") and shutil.which("srun")):
            raise UserError("launcher=slurm needs SLURM's sbatch and srun on this machine's PATH (run study.py on the "
                 "cluster's login node)")
    if cfg["launcher"] != "local":
        try:
            import submitit  # noqa: F401 -- only whether it is there
        except ImportError:
            raise UserError(f"launcher={cfg['launcher']} needs submitit: pip install submitit")
