"""
Weights & Biases, complete and optional. With wandb_log=True:

  - train.py logs every log.jsonl line against tokens (and FLOPs) as the x-axis, to a wandb run whose id is the
    run's run_id: `--init_from=resume` continues the same wandb run instead of starting a new one;
  - study.py puts its runs in one group (wandb_group, default the name of out_dir) and, once the report is
    written, logs a run of its own (job_type 'study') with the test loss of every run (a table and a scatter
    plot), the fits (a table), every plot, the sample audio and report.md (an artifact with the plots).

`wandb login` first, or WANDB_MODE=offline to keep the runs on disk (out_dir/wandb, `wandb sync` later).
wandb missing, not logged in or unreachable is one line; the training or study goes on without it.
wandb is imported here only when asked for (the GPU machine may lack it).
"""
import glob
import os

MAX_AUDIO = 50  # sample WAVs logged by a study at most (the best model's first)


def start_wandb(**init_args):
    """The wandb module after wandb.init(**init_args), or None after one line saying why it could not start."""
    try:
        import wandb
    except ImportError:
        print("wandb_log: wandb is not installed (pip install wandb); going on without it", flush=True)
        return None
    try:
        wandb.init(**init_args)
    except Exception as e:  # not logged in, unreachable, refused: never a reason to lose the run
        reason = (str(e).strip().splitlines() or [""])[0]
        print(f"wandb_log: wandb did not start ({type(e).__name__}: {reason}); going on without it "
              f"(`wandb login`, or WANDB_MODE=offline)", flush=True)
        return None
    return wandb


def start_training_run(cfg, run_id, out_dir):
    """train.py's wandb run, or None: id = the run's run_id (resumed with it), grouped, x-axis tokens."""
    wandb = start_wandb(project=cfg["wandb_project"], group=cfg["wandb_group"] or None, job_type="train",
                        name=cfg["wandb_run_name"] or os.path.basename(os.path.abspath(out_dir)), id=run_id,
                        resume="allow", config=cfg, dir=out_dir)
    if wandb is not None:
        wandb.define_metric("tokens")
        wandb.define_metric("*", step_metric="tokens")
    return wandb


def log_training(wandb, entry, flops_per_token):
    """One log.jsonl line, with its training FLOPs so far (the other x-axis)."""
    values = {k: v for k, v in entry.items() if v is not None}
    values["flops"] = entry["tokens"] * flops_per_token
    wandb.log(values)


def study_group(cfg):
    return cfg["wandb_group"] or os.path.basename(os.path.abspath(cfg["out_dir"]))


def training_args(cfg, run_name):
    """train.py options that put a study's run into the study's wandb group ([] when wandb_log is off)."""
    if not cfg["wandb_log"]:
        return []
    return ["--wandb_log=True", f"--wandb_project={cfg['wandb_project']}", f"--wandb_group={study_group(cfg)}",
            f"--wandb_run_name={study_group(cfg)}/{run_name}"]


def log_study(cfg, plan, losses, fits, plots, sample_folders, report_path):
    """The study's own wandb run (job_type 'study', in the study's group): test losses, fits, plots, sample audio
    and the report. plan: the runs (name, model_type, n_params, tokens, flops_per_token); losses: {run name:
    test (or val) loss}; fits: power_law.fit_all's; plots: {name: png}; sample_folders: [(name, folder)]."""
    if not cfg["wandb_log"]:
        return
    group = study_group(cfg)
    wandb = start_wandb(project=cfg["wandb_project"], group=group, job_type="study", name=f"{group}/study",
                        config={k: v for k, v in cfg.items() if not k.startswith("_")}, dir=cfg["out_dir"])
    if wandb is None:
        return
    split = cfg["perplexity_split"]
    runs = wandb.Table(columns=["run", "family", "n_params", "n_params_non_embedding", "tokens", "train_flops",
                                f"{split}_loss"],
                       data=[[r["name"], r["model_type"], r["n_params"], r["n_params_non_embedding"], r["tokens"],
                              r["flops_per_token"] * r["tokens"], losses[r["name"]]] for r in plan])
    fit_rows = [[fam, f["n_points"], f["alpha"], *(f["alpha_ci"] or [None, None]), f["a"], f["c"],
                 len(f["warnings"])] for fam, f in fits.items()]
    fit_table = wandb.Table(columns=["family", "points", "alpha", "alpha_lo", "alpha_hi", "a", "c", "warnings"],
                            data=fit_rows)
    values = {"runs": runs, "fits": fit_table,
              f"{split}_loss_vs_params": wandb.plot.scatter(runs, "n_params", f"{split}_loss",
                                                            title=f"{split} loss vs parameters")}
    images = {name: path for name, path in plots.items() if path.endswith(".png") and os.path.isfile(path)}
    values.update({f"plots/{name}": wandb.Image(path) for name, path in images.items()})
    wavs = [(name, path) for name, folder in sample_folders for path in sorted(glob.glob(os.path.join(folder, "*.wav")))]
    for name, path in wavs[:MAX_AUDIO]:
        stem = os.path.splitext(os.path.basename(path))[0]  # no dot in a key: wandb reads it as nesting
        values[f"samples/{name}/{stem}"] = wandb.Audio(path, caption=f"{name} {stem}")
    wandb.log(values)
    for fam, f in fits.items():
        wandb.summary[f"alpha_{fam}"] = f["alpha"]
    report = wandb.Artifact(f"{group}-report", type="report")
    report.add_file(report_path)
    for path in images.values():
        report.add_file(path, name=os.path.join("plots", os.path.basename(path)))
    wandb.log_artifact(report)
    wandb.finish()
