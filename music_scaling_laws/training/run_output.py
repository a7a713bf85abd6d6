"""
What a run writes besides its checkpoint: the plan it prints, log.jsonl (kept across a resume, taken over from a
trunk by its branch) and results.json with the one line the user reads at the end.
"""
import json
import os

import torch

from music_scaling_laws import run_files
from music_scaling_laws.data.dataset import bits_per_char, write_json_atomic
from music_scaling_laws.training.hardware import device_name, mfu, peak_memory_bytes
from music_scaling_laws.training.settings import parse_budgets
from music_scaling_laws.training.tracking import log_training


def print_plan(c, raw_model, compiled, data, plan, order, device, ranks):
    """What is about to train: the model, the device, the ranks, and the budget in iterations, tokens and epochs."""
    print(f"{c.model_type}: {raw_model.num_params():,} parameters "
          f"({raw_model.num_params(non_embedding=True):,} non-embedding), vocab {data.vocab_size}, "
          f"{device}{' compiled' if compiled else ''}, {ranks}")
    print(f"{plan['total_iters']} iterations x {plan['windows_per_iter']} windows of {c.block_size} ({c.data_order} "
          f"order) = {plan['tokens']:,} training tokens, {plan['epochs']:.4f} epochs of {order.targets_per_epoch:,}")
    if plan["epochs"] > 1:
        print(f"note: the budget is more than one epoch ({plan['epochs']:.3f}); later epochs reuse the windows "
              f"in new orders")


def open_log(path, resume_iter, source=None, log_interval=1):
    """Start log.jsonl; a resumed run keeps what the killed run logged before its checkpoint (the evaluation at
    the checkpoint's own iteration runs again, so it is dropped), a branch what its trunk (source) logged before
    its cooldown (not the trunk's last line, logged because the trunk ended there, unless it is a log_interval's)."""
    kept = []
    if resume_iter is not None and os.path.exists(source or path):
        with open(source or path) as f:
            entries = [json.loads(line) for line in f if line.strip()]
        at_start = source is None or resume_iter % log_interval == 0
        kept = [json.dumps(e) + "\n" for e in entries
                if e["iter"] < resume_iter or (e["iter"] == resume_iter and "val_loss" not in e and at_start)]
    with open(path, "w") as f:
        f.writelines(kept)


def append_log(path, entry, wandb, flops_per_token):
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    if wandb is not None:
        log_training(wandb, entry, flops_per_token)


def run_results(c, raw_model, data, plan, progress, losses, device_type, dtype_name, world_size, peak, wall_time_s):
    """results.json: the run's size, budget, losses, speed (warm-up kept out of tokens/s and MFU) and config."""
    train_loss, val_loss, val_targets = losses
    steady_s, steady_tokens = progress["steady_time_s"], progress["steady_tokens"]
    tokens_per_s = steady_tokens / steady_s if steady_tokens and steady_s > 0 else \
        plan["tokens"] / progress["train_time_s"] if progress["train_time_s"] > 0 else None
    flops_per_token = raw_model.flops_per_token()
    return {
        "model_type": c.model_type, "n_params": raw_model.num_params(),
        "n_params_non_embedding": raw_model.num_params(non_embedding=True), "n_layer": c.n_layer,
        "n_embd": c.n_embd, "n_head": c.n_head if c.model_type == "gpt" else None,
        "vocab_size": data.vocab_size, "tokenizer": data.meta.get("tokenizer"),
        "iters": plan["total_iters"], "tokens_per_iter": plan["tokens_per_iter"], "tokens_trained": plan["tokens"],
        "epochs": plan["epochs"], "flops_per_token": flops_per_token, "train_flops": flops_per_token * plan["tokens"],
        "train_loss": train_loss, "train_bpc": bits_per_char(train_loss, data.split_stats("train")),
        "val_loss": val_loss, "val_bpc": bits_per_char(val_loss, data.split_stats("val")), "val_targets": val_targets,
        # a wsd trunk is no budget's run (scaling fits skip it); trunk: the run a wsd branch continues
        "lr_schedule": c.lr_schedule, "branch_budgets": parse_budgets(c.branch_budgets) if c.branch_budgets else None,
        "trunk": progress.get("trunk"),
        # what the run is to a study (run_files.run_role reads it): a trunk or branch by its schedule, else as told
        "role": "trunk" if c.branch_budgets else "branch" if progress.get("trunk") else c.run_role,
        "wall_time_s": wall_time_s, "train_time_s": progress["train_time_s"],
        "process_steps_s": progress["process_steps_s"],  # the steps of the process that finished the run
        "compile_time_s": progress["compile_time_s"], "tokens_per_s": tokens_per_s,
        "mfu": mfu(flops_per_token, tokens_per_s, peak, world_size),
        "peak_mem_bytes": peak_memory_bytes(device_type), "device": device_type,
        "device_name": device_name(device_type), "dtype": dtype_name, "world_size": world_size,
        "torch_version": torch.__version__, "run_id": progress["run_id"],
        "data_fingerprint": data.fingerprints()["fingerprint"], "config": vars(c),
    }


def write_results(results, out_dir, log, last_train_loss, wandb):
    """The end of a run on rank 0: log.jsonl's final line, results.json, one line for the user, the wandb summary.
    last_train_loss: the last step's loss (a resume from the last checkpoint makes no step: the checkpoint's)."""
    log({"iter": results["iters"], "tokens": results["tokens_trained"], "lr": None, "train_loss": last_train_loss,
         "val_loss": results["val_loss"], "tokens_per_s": None, "mfu": None,
         "peak_mem_bytes": results["peak_mem_bytes"], "final": True})
    write_json_atomic(results, run_files.results_path(out_dir))
    print(f"done: val loss {results['val_loss']:.4f} ({results['val_bpc']:.4f} bpc), train loss "
          f"{results['train_loss']:.4f}, {results['tokens_trained']:,} tokens in {results['wall_time_s']:.1f}s "
          f"-> {out_dir}")
    if wandb is not None:
        wandb.summary.update({k: v for k, v in results.items() if k != "config"})
        wandb.finish()
