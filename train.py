"""
Train one GPT or LSTM language model on a prepared dataset, for exactly the token budget asked
(default: one epoch of train.bin), in a data order shared by every model of the study.

    python train.py config/gpt_small.py --max_tokens=2e6 --device=cpu
    python train_rnn.py config/lstm_small.py                  # same loop, LSTM defaults
    torchrun --standalone --nproc_per_node=8 train.py config/gpt_xl.py   # DDP (NCCL; gloo on CPU): any number
                                                                         # of ranks that divides the step's windows
    python train.py --out_dir=out/gpt_small --init_from=resume   # continue a killed run exactly
    python train.py config/gpt_small.py --lr_schedule=wsd --branch_budgets=5e5,1e6,2e6 --out_dir=out/trunk
    python train.py --init_from=branch --branch_from=out/trunk --max_tokens=1e6 --out_dir=out/gpt_small.d1M

Schedules: 'cosine' (warm-up, cosine decay to min_lr at the last step) or 'wsd' (warm-up, the constant rate, a
1-sqrt decay over the last cooldown_frac of the steps). A wsd trunk (--branch_budgets) trains the constant rate up
to the largest budget's cooldown and writes branch_<tokens>.pt where each budget's cooldown starts; a branch
(--init_from=branch) trains one budget's cooldown from there into its own out_dir and is that budget's run, bit for
bit the run that budget would be alone (its results.json counts the whole budget and records its trunk). The trunk's
results.json is no budget's run (it records branch_budgets; scaling fits skip it). docs/wsd.md has the measurements.

Writes out_dir/log.jsonl (one JSON per logged iteration), out_dir/ckpt.pt (atomically: every
ckpt_interval_s seconds, every ckpt_interval iterations if set, and at the end) and out_dir/results.json.
The data order (dataset.py): windows of block_size+1 tokens at stride block_size, shuffled by data_seed
alone; optimizer step i reads windows [i*W, (i+1)*W) of that order, whatever the model, the number of DDP
ranks or a resume in between.

Safety: train.py writes only into a folder that is new, empty or one of its own runs; a finished or started
run is replaced only with --overwrite=True (its old evaluations go with it). A lock file stops a second
train.py on the same out_dir (released by the kernel when a process dies, so a killed run never leaves it
stuck). SIGTERM, SIGINT or SIGHUP (docker stop, pre-emption, Ctrl-C, a closed terminal) ends the run at the next
step with a checkpoint and a one-line message; --init_from=resume continues exactly.

Speed: the training split lives on the device and a batch is one gather there (windows.py); the host
waits for the device only where it must read a number (log lines, evaluations, checkpoints), so a step
queues its work and returns. Evaluations run the uncompiled model, which costs no second compilation.
Throughput figures leave the first step of a process (compilation, warm-up) out and report it as
compile_time_s.

Progress: a tqdm bar on a terminal; into a log (nohup, SLURM, a pipe) a plain line every PROGRESS_INTERVAL_S
seconds (default 30) with the iteration, tokens, loss and tokens/s (progress.py).
"""

import json
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from music_scaling_laws import run_files
from music_scaling_laws.training.checkpoint import claim_out_dir, read_checkpoint, restore_progress, save_checkpoint
from music_scaling_laws.configurator import config_keys, configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.data.dataset import TrainOrder, bits_per_char, iteration_plan, load_dataset, write_json_atomic
from music_scaling_laws.training.hardware import (check_compile, compile_model, device_name, lookup_peak_flops, mfu, peak_memory_bytes,
                      setup_device, synchronize)
from model import MODEL_CLASSES, build_model, configure_optimizer, model_args_from_config
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.training.tracking import log_training, start_training_run
from music_scaling_laws.training.windows import Tokens, TrainBatches, exact_loss, spread_windows, windows_loss

# -----------------------------------------------------------------------------
# default config values; config/*.py files and --key=value override them
# I/O
out_dir = 'out'
data_dir = 'data/music21'
init_from = 'scratch'      # 'scratch', 'resume' (from out_dir/ckpt.pt) or 'branch' (a wsd cooldown from branch_from)
branch_from = ''           # init_from='branch': the trunk's out_dir; the branch trains the cooldown of its max_tokens
overwrite = False          # from scratch into out_dir that holds a run: replace it (else a one-line refusal)
log_interval = 10          # iterations between log.jsonl lines (the host reads the loss only then)
eval_interval = 50         # iterations between validation estimates (0: only the final exact pass)
eval_iters = 10            # batches per validation estimate: a fixed set, the same every time
ckpt_interval_s = 300.0    # seconds between checkpoints, decided at log lines (0: only at the end)
ckpt_interval = 0          # also checkpoint every this many iterations (0: off)
wandb_log = False          # needs `wandb login`, or WANDB_MODE=offline (tracking.py); without it: one line, no wandb
wandb_project = 'music-scaling-laws'
wandb_run_name = ''        # '' -> the name of out_dir
wandb_group = ''           # runs of one study share a group (study.py sets it)
# data and budget
data_seed = 1337           # the window order; keep it fixed across a study
data_order = 'tunes'       # 'tunes': each window starts at a tune; 'stride': windows at stride block_size (dataset.py;
                           # docs/results.md "Training order" has both measured: tunes gives the better samples)
batch_size = 32            # sequences per micro-step; under DDP at most this many per rank (rank_split)
block_size = 256
gradient_accumulation_steps = 1   # micro-steps per optimizer step: batch_size x this = windows per step, on any
                                  # number of DDP ranks that divides it
max_tokens = 0             # training tokens; 0 = one epoch of train.bin
max_iters = 0              # > 0: exactly this many optimizer steps instead of max_tokens
# model
model_type = 'gpt'         # 'gpt' or 'lstm'
n_layer = 4
n_head = 4                 # GPT only
n_embd = 128
dropout = 0.0              # one epoch rarely overfits; 0 is the scaling-law convention
bias = True                # GPT only: biases in Linear and LayerNorm as in GPT-2
grad_checkpoint = False    # GPT only: activation checkpointing, trades compute for memory
# AdamW and schedule: linear warmup, then cosine decay to min_lr at the last iteration ('cosine'), or
# warmup-stable-decay ('wsd', Hagele et al. 2024): the constant rate, then a decay over the last cooldown_frac
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 30
lr_schedule = 'cosine'     # 'cosine' or 'wsd'
cooldown_frac = 0.2        # wsd: the share of the run's iterations spent decaying to min_lr
branch_budgets = ''        # wsd trunk: token budgets, e.g. '5e5,1e6,2e6'; trains the constant rate up to the largest
                           # budget's cooldown and writes branch_<tokens>.pt where each budget's cooldown starts
weight_decay = 0.1         # on matrices only
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0            # 0: no clipping
# system
device = 'auto'            # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'             # 'auto' (bfloat16 on CUDA if supported, else float16; float32 elsewhere)
compile = 'auto'           # torch.compile: 'auto' on CUDA only, where it pays for its compile time; True also on
                           # CPU (needs a C/C++ compiler); False never (hardware.compile_model)
compile_mode = 'auto'      # torch.compile mode: 'auto' (CUDA graphs for launch-bound GPT steps on CUDA, else
                           # 'default': hardware.choose_compile_mode), 'default', 'reduce-overhead', 'max-autotune'
seed = 1337                # initialisation and dropout
peak_flops = 0.0           # the device's peak FLOP/s for MFU; 0 = look the GPU up in hardware.PEAK_FLOPS
# -----------------------------------------------------------------------------

# keys that change the trained result; a resumed run must keep them
RESUME_MUST_MATCH = ("model_type", "n_layer", "n_head", "n_embd", "dropout", "bias", "data_seed", "data_order",
                     "batch_size", "block_size", "gradient_accumulation_steps", "max_tokens", "max_iters",
                     "learning_rate", "min_lr", "warmup_iters", "weight_decay", "beta1", "beta2",
                     "grad_clip", "seed", "lr_schedule", "cooldown_frac", "branch_budgets")
# a branch keeps its trunk's RESUME_MUST_MATCH settings except these, which set its own budget
BRANCH_MAY_CHANGE = ("max_tokens", "max_iters", "branch_budgets")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
# (knob, smallest allowed value); checked where the configuration is read
AT_LEAST = (("batch_size", 1), ("block_size", 1), ("gradient_accumulation_steps", 1), ("n_layer", 1),
            ("n_head", 1), ("n_embd", 1), ("log_interval", 1), ("eval_iters", 1), ("eval_interval", 0),
            ("ckpt_interval", 0), ("ckpt_interval_s", 0), ("max_tokens", 0), ("max_iters", 0), ("warmup_iters", 0),
            ("learning_rate", 0), ("min_lr", 0), ("weight_decay", 0), ("grad_clip", 0), ("peak_flops", 0))


# -----------------------------------------------------------------------------
# configuration, resume and the pieces of one optimizer step

def read_config(argv, defaults):
    """The run's config, from the module defaults, train_rnn.py's defaults, config files and --key=value; on
    resume the checkpoint's config is the default and the settings that shape the result must not change.
    Returns (config, checkpoint or None)."""
    base = config_keys(globals())
    unknown = set(defaults) - set(base)
    if unknown:
        raise KeyError(f"unknown defaults {sorted(unknown)}")
    base.update(defaults)
    cfg = configure(base, argv)
    ckpt = None
    if cfg["init_from"] == "resume":
        path = run_files.ckpt_path(cfg["out_dir"])
        if not os.path.isfile(path):
            fail(f"init_from=resume but {path} does not exist")
        ckpt = read_checkpoint(path)
        # `--out_dir=X --init_from=resume` is enough; what the command line sets again must agree
        # a checkpoint from before data_order existed was trained in stride order, whatever today's default
        saved = {"data_order": "stride", **{k: v for k, v in ckpt["config"].items() if k in base}}
        if isinstance(saved.get("compile"), bool):  # from before compile='auto', when True meant on CUDA only
            saved["compile"] = "auto" if saved["compile"] else "False"
        cfg = configure({**base, **saved, "init_from": "resume"}, argv)
        changed = changed_settings(saved, cfg, ())
        if changed:
            fail(f"resume must keep the run's settings, but these changed: {'; '.join(changed)}")
    elif cfg["init_from"] == "branch":
        # the trunk's settings are the defaults of a branch: --branch_from, --max_tokens and --out_dir are enough
        trunk = cfg["branch_from"]
        if not trunk or not os.path.isdir(trunk):
            fail(f"init_from=branch needs --branch_from=TRUNK_OUT_DIR (a run trained with --branch_budgets), got "
                 f"{trunk!r}")
        path = run_files.branch_checkpoint_path(trunk, cfg["max_tokens"])
        if not os.path.isfile(path):
            have = sorted(f for f in os.listdir(trunk) if run_files.is_branch_checkpoint(f))
            fail(f"{path} not found: --max_tokens must be one of the budgets the trunk has reached "
                 f"({', '.join(have) or 'none yet'})")
        ckpt = read_checkpoint(path)
        saved = {k: v for k, v in ckpt["config"].items() if k in base and k not in ("out_dir", *BRANCH_MAY_CHANGE)}
        cfg = configure({**base, **saved, "init_from": "branch", "branch_from": trunk}, argv)
        changed = changed_settings(ckpt["config"], cfg, BRANCH_MAY_CHANGE)
        if changed:
            fail(f"a branch must keep its trunk's settings, but these changed: {'; '.join(changed)}")
        if cfg["branch_budgets"] or cfg["max_iters"]:
            fail("a branch trains one budget: set --max_tokens (one of the trunk's branch_budgets), not "
                 "branch_budgets or max_iters")
        if os.path.abspath(cfg["out_dir"]) == os.path.abspath(trunk):
            fail(f"a branch writes into its own out_dir, not into its trunk {trunk}")
    if cfg["init_from"] not in ("scratch", "resume", "branch"):
        fail(f"init_from must be 'scratch', 'resume' or 'branch', got {cfg['init_from']!r}")
    if cfg["lr_schedule"] not in ("cosine", "wsd"):
        fail(f"lr_schedule must be 'cosine' or 'wsd', got {cfg['lr_schedule']!r}")
    if not 0 < cfg["cooldown_frac"] <= 1:
        fail(f"cooldown_frac must be in (0, 1], got {cfg['cooldown_frac']}")
    if cfg["branch_budgets"]:
        budgets = parse_budgets(cfg["branch_budgets"])
        if cfg["lr_schedule"] != "wsd" or cfg["max_tokens"] or cfg["max_iters"]:
            fail("branch_budgets trains a wsd trunk whose length the budgets set: use --lr_schedule=wsd and leave "
                 "max_tokens and max_iters at 0")
        cfg["branch_budgets"] = ",".join(str(b) for b in budgets)  # one spelling, so that a resume compares equal
    if cfg["model_type"] not in MODEL_CLASSES:
        fail(f"model_type must be one of {sorted(MODEL_CLASSES)}, got {cfg['model_type']!r}")
    for key, least in AT_LEAST:
        if not cfg[key] >= least:  # also catches nan
            fail(f"{key} must be at least {least}, got {cfg[key]}")
    check_compile(cfg["compile"])
    if not 0 <= cfg["dropout"] < 1:
        fail(f"dropout must be in [0, 1), got {cfg['dropout']}")
    if cfg["compile_mode"] not in COMPILE_MODES:  # checked on every device, not only where compile is used
        fail(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {cfg['compile_mode']!r}")
    if cfg["model_type"] == "gpt" and cfg["n_embd"] % cfg["n_head"]:
        fail(f"n_embd={cfg['n_embd']} must be a multiple of n_head={cfg['n_head']}")
    return cfg, ckpt


def changed_settings(saved, cfg, may_change):
    """'key: old -> new' for each setting that shapes the result and differs (cooldown_frac only under wsd)."""
    keys = [k for k in RESUME_MUST_MATCH if k not in may_change and k in saved and saved[k] != cfg[k]]
    if "cooldown_frac" in keys and saved.get("lr_schedule", "cosine") == cfg["lr_schedule"] == "cosine":
        keys.remove("cooldown_frac")
    return [f"{k}: {saved[k]!r} -> {cfg[k]!r}" for k in keys]


def parse_budgets(text):
    """'5e5,1e6,2e6' -> [500000, 1000000, 2000000] (sorted, whole tokens), or a one-line error."""
    try:
        budgets = sorted({int(float(b)) for b in str(text).split(",") if b.strip()})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] <= 0:
        fail(f"branch_budgets must be positive token counts separated by commas, e.g. '5e5,1e6,2e6', got {text!r}")
    return budgets


def wsd_decay_start(total_iters, warmup_iters, cooldown_frac):
    """The first iteration of a wsd run's decay: the last cooldown_frac of its iterations (at least the last one),
    not inside the warm-up unless the run is that short. Everything before it is the same for every budget, which
    is what makes branching exact."""
    return min(total_iters - 1, max(warmup_iters, total_iters - max(1, round(cooldown_frac * total_iters))))


def branch_points(cfg, order):
    """A wsd trunk's ({iteration: [budgets whose cooldown starts there]}, the largest budget's iterations) in the
    window order of dataset.TrainOrder. Nothing of the order or the warm-up depends on the budget (step i reads
    windows [i*W, (i+1)*W) of an order seeded by data_seed alone), so nothing had to change there for branching."""
    branch_at, budget_iters = {}, 0
    for budget in parse_budgets(cfg["branch_budgets"]):
        budget_iters = iteration_plan(cfg["batch_size"], cfg["gradient_accumulation_steps"], budget, 0,
                                      order)["total_iters"]
        start = wsd_decay_start(budget_iters, cfg["warmup_iters"], cfg["cooldown_frac"])
        branch_at.setdefault(start, []).append(budget)
    if max(branch_at) == 0:
        fail("every budget's cooldown starts at iteration 0: the trunk has nothing to train (lower cooldown_frac or "
             "raise warmup_iters)")
    return branch_at, budget_iters


def lr_at(it, total_iters, learning_rate, min_lr, warmup_iters, schedule="cosine", cooldown_frac=0.2):
    """Linear warmup over warmup_iters, then (cosine) cosine decay reaching min_lr at the last iteration, or (wsd)
    the constant learning_rate up to wsd_decay_start and a 1-sqrt decay reaching min_lr at the last iteration.
    Why 1-sqrt and not linear: Hagele et al. 2024 (Fig. 4, 5) measured it to beat a linear cooldown of the same
    length and to match or beat cosine at 20% cooldown; their 1-sqrt shape decays to 0, ours to min_lr like the
    cosine schedule, so that the two schedules differ only in their shape. The warm-up depends on warmup_iters
    alone, never on total_iters, so a trunk and every budget trained alone share it."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if schedule == "wsd":
        start = wsd_decay_start(total_iters, warmup_iters, cooldown_frac)
        if it < start:
            return learning_rate
        ratio = min(1.0, (it - start) / max(1, total_iters - 1 - start))
        return min_lr + (1.0 - math.sqrt(ratio)) * (learning_rate - min_lr)
    decay_iters = max(1, total_iters - 1 - warmup_iters)
    ratio = min(1.0, (it - warmup_iters) / decay_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def rank_split(batch_size, gradient_accumulation_steps, world_size):
    """(micro-batch, micro-steps per rank) that spread one optimizer step of batch_size x
    gradient_accumulation_steps windows over world_size DDP ranks: the accumulation is split across the ranks
    where it divides, else the micro-batch too (the configs accumulate 1 step: on 8 ranks each takes 4 of the
    32 windows). The step reads the same windows and the same number of tokens on any number of ranks, and no
    micro-batch is larger than the config's (its memory). Raises ValueError when the ranks cannot share the
    step's windows evenly."""
    windows = batch_size * gradient_accumulation_steps
    if windows % world_size:
        raise ValueError(f"batch_size x gradient_accumulation_steps = {windows} windows per optimizer step cannot "
                         f"be shared evenly by {world_size} DDP ranks; use a number of ranks that divides {windows}")
    per_rank = windows // world_size
    steps = next(s for s in range(1, per_rank + 1) if per_rank % s == 0 and per_rank // s <= batch_size)
    return per_rank // steps, steps


def accumulate_gradients(model, scaler, ctx, micro_batches, accum, by_targets=False):
    """Forward and backward over accum (x, y) micro-batches, gradients summed as for one batch.
    Returns the mean loss (under DDP: of all ranks) as a 0-d tensor (no GPU sync). Under DDP the gradients are
    all-reduced on the last micro-step only. by_targets: micro-batches score different numbers of targets (tune-aligned
    windows, unscored positions -1), so each is weighted by its share of the step's targets over all ranks,
    which makes the step the mean over its targets, as one big batch would (equal shares: plain 1/accum)."""
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    by_targets = by_targets and (accum > 1 or ddp)  # one micro-batch on one rank: its share is exactly 1, skip the ops
    if by_targets:
        micro_batches = list(micro_batches)
        counts = [(y >= 0).sum() for _, y in micro_batches]
        total = torch.stack(counts).sum().float()
        world = torch.distributed.get_world_size() if ddp else 1
        if ddp:  # DDP averages the ranks' gradients: scale so that the average is the mean over all targets
            torch.distributed.all_reduce(total)
        shares = [n * world / total for n in counts]
    loss_sum = None
    for micro, (x, y) in enumerate(micro_batches):
        if ddp:
            model.require_backward_grad_sync = micro == accum - 1
        with ctx:
            _, loss = model(x, y)
            loss = loss * shares[micro] if by_targets else loss / accum
        scaler.scale(loss).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    if ddp:
        torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)
    return loss_sum


def apply_gradients(model, optimizer, scaler, grad_clip):
    """Clip the gradient norm (after unscaling fp16 gradients), step, and clear the gradients."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def note_divergence(bad, loss, it):
    """bad = [first iteration whose loss was not finite (-1: none yet), that loss], updated on the device, so
    watching for divergence costs no synchronisation; check_divergence reads it where the host waits anyway."""
    newly = ~torch.isfinite(loss) & (bad[0] < 0)
    return torch.where(newly, torch.stack([torch.full_like(bad[0], it), loss.double()]), bad)


def check_divergence(bad, ckpt_path):
    it, loss = bad.tolist()
    if it >= 0:
        kept = f"{ckpt_path} keeps the last good checkpoint" if os.path.exists(ckpt_path) else \
            "no checkpoint had been written yet"
        # the marker a study reads (a diverged sweep run is a result, not a failure), not this message's words
        run_files.write_diverged(os.path.dirname(ckpt_path), it, loss)
        fail(f"loss became {loss} at iteration {int(it)}; stopped, {kept} (try a lower learning_rate)")


class StepClock:
    """Wall-clock seconds of training steps only. The clock is read where the host waits for the device anyway
    (a log line, an evaluation, a checkpoint), so timing adds no synchronisation between them."""

    def __init__(self, device_type):
        self.device_type, self.t0, self.seconds = device_type, time.perf_counter(), 0.0

    def stop(self):
        synchronize(self.device_type)
        self.seconds += time.perf_counter() - self.t0

    def start(self):
        self.t0 = time.perf_counter()

    def take(self):
        seconds, self.seconds = self.seconds, 0.0
        return seconds


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


class StopSignals:
    """SIGTERM and SIGINT ask the run to stop at the next step boundary (with a checkpoint) instead of dying
    mid-step; a second signal acts as usual. SIGHUP (the terminal closed, or the study.py that ran this died: its
    parent-death signal) does the same, with the output sent to /dev/null first: whoever read it is gone, and a
    write to the broken pipe would end the run before its checkpoint. The previous handlers come back on restore()."""

    def __init__(self):
        self.received = None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def handle(self, signum, frame):
        if signum == signal.SIGHUP:
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
        self.received = signal.Signals(signum).name
        signal.signal(signum, self.previous[signum])

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def setup_distributed(device):
    """(ddp, rank, local_rank, world_size, device) under torchrun (which sets RANK, LOCAL_RANK and WORLD_SIZE):
    NCCL with one GPU per rank, or gloo on CPU; a plain process is rank 0 of 1."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 0, 1, device
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    use_cuda = device != "cpu" and (device.startswith("cuda") or torch.cuda.is_available())
    if use_cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True, rank, local_rank, world_size, device


def leave(ddp, lock):
    """The end of a process: every DDP rank leaves together (a rank that tore gloo down while rank 0 was still writing
    its results was seen to abort, 'terminate called without an active exception', on a loaded 2-core machine), then
    out_dir's lock is released."""
    if ddp:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if lock:
        lock.close()


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
        "wall_time_s": wall_time_s, "train_time_s": progress["train_time_s"],
        "process_steps_s": progress["process_steps_s"],  # the steps of the process that finished the run
        "compile_time_s": progress["compile_time_s"], "tokens_per_s": tokens_per_s,
        "mfu": mfu(flops_per_token, tokens_per_s, peak, world_size),
        "peak_mem_bytes": peak_memory_bytes(device_type), "device": device_type,
        "device_name": device_name(device_type), "dtype": dtype_name, "world_size": world_size,
        "torch_version": torch.__version__, "run_id": progress["run_id"],
        "data_fingerprint": data.fingerprints()["fingerprint"], "config": vars(c),
    }


# -----------------------------------------------------------------------------
# the pieces of main: the plan, what trains, the loop's state, the end

def load_plan(cfg, ckpt):
    """The dataset and the run's plan through it, or a one-line error where the data cannot hold the run or is not
    the checkpoint's (its fingerprint, its vocabulary). Returns (data, the window order, dataset.iteration_plan,
    branch_at: a wsd trunk's {iteration: the budgets whose cooldown starts there}, schedule_iters: the length lr_at
    plans the decay for; a trunk stops before its decay)."""
    c = SimpleNamespace(**cfg)
    data = load_dataset(c.data_dir)
    for split in ("train", "val"):
        if len(data.split(split)) < c.block_size + 1:
            fail(f"block_size {c.block_size} is larger than the {split} split of {c.data_dir} "
                 f"({len(data.split(split))} tokens)")
    try:
        order = TrainOrder(data.split("train"), c.block_size, c.data_seed, c.data_order, data.eot_id)
        branch_at = {}
        if c.branch_budgets:
            branch_at, schedule_iters = branch_points(cfg, order)
            # the trunk follows the largest budget's schedule (the constant rate) and stops where its decay starts
            plan = iteration_plan(c.batch_size, c.gradient_accumulation_steps, 0, max(branch_at), order)
        else:
            plan = iteration_plan(c.batch_size, c.gradient_accumulation_steps, c.max_tokens, c.max_iters, order)
            schedule_iters = plan["total_iters"]
    except ValueError as e:
        fail(f"{c.data_dir}: {e}")
    decay_start = wsd_decay_start(plan["total_iters"], c.warmup_iters, c.cooldown_frac)
    if c.init_from == "branch" and ckpt["iter_num"] != decay_start:
        fail(f"the trunk's checkpoint for {c.max_tokens:.0f} tokens is at iteration {ckpt['iter_num']}, but this "
             f"run's cooldown starts at {decay_start}: the trunk was trained with other settings")
    fingerprint = data.fingerprints()["fingerprint"]
    if ckpt and ckpt["dataset"].get("fingerprint", fingerprint) != fingerprint:
        fail(f"{c.data_dir} is not the dataset this run was trained on (its fingerprint differs); resume with "
             f"the same data")
    if ckpt and ckpt["model_args"]["vocab_size"] != data.vocab_size:
        fail(f"checkpoint vocabulary ({ckpt['model_args']['vocab_size']} tokens) differs from the dataset's "
             f"({data.vocab_size} tokens in {c.data_dir}/meta.json)")
    return data, order, plan, branch_at, schedule_iters


def build(c, model_args, device, dtype_name, state=None, ddp=False, local_rank=0):
    """What trains, as train.py and bench.py both train it: the model of model_args with seed's initial weights
    (the same on every rank) or a checkpoint's (state), on device; AdamW (model.configure_optimizer); the
    GradScaler (float16 only); torch.compile where the compile knob asks (hardware.compile_model); DDP around it
    under torchrun. Returns (raw_model, fast_model, train_model, optimizer, scaler): raw_model holds the weights
    (evaluations, checkpoints, clipping), fast_model is it compiled or itself, train_model what a step calls."""
    device_type = torch.device(device).type
    torch.manual_seed(c.seed)
    raw_model = build_model(c.model_type, **model_args)
    if state is not None:
        raw_model.load_state_dict(state)
    raw_model.to(device)
    optimizer = configure_optimizer(raw_model, c.learning_rate, c.weight_decay, (c.beta1, c.beta2), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype_name == "float16"))
    fast_model = train_model = compile_model(raw_model, c.compile, c.compile_mode, device_type,
                                               c.batch_size * c.block_size, c.gradient_accumulation_steps)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(fast_model, device_ids=[local_rank] if device_type == "cuda" else None)
    return raw_model, fast_model, train_model, optimizer, scaler


def start_progress(ckpt, c, optimizer, scaler, total_iters, rank, world_size, device_type):
    """The counters a checkpoint keeps (checkpoint.save_checkpoint): new from scratch (and dropout seeded per rank),
    else restored with the optimizer, scaler and RNG state; a branch restores its trunk's under a new run id and
    records the trunk (kept on its own resumes)."""
    if not ckpt:
        torch.manual_seed(c.seed + rank)  # dropout differs across ranks, reproducibly
        return {"iter_num": 0, "train_time_s": 0.0, "compile_time_s": 0.0, "steady_time_s": 0.0,
                "steady_tokens": 0, "wall_time_s": 0.0, "run_id": uuid.uuid4().hex}  # run_id: kept on resume
    branching = c.init_from == "branch"
    progress = restore_progress(ckpt, optimizer, scaler, None if branching else total_iters, rank, world_size,
                                device_type)
    if branching:
        progress["trunk"] = {"out_dir": os.path.abspath(c.branch_from), "run_id": progress["run_id"],
                             "iter": progress["iter_num"], "tokens": progress["tokens_seen"],
                             "wall_time_s": progress["wall_time_s"]}
        progress["run_id"] = uuid.uuid4().hex
    return progress


def estimate_loss(raw_model, tokens, c, ctx, rank, world_size):
    """Mean loss on a fixed spread of eval_iters x batch_size windows of tokens (the same ones every time), by the
    uncompiled model: eval mode costs no second compilation."""
    starts = spread_windows(tokens.n, c.block_size, c.eval_iters * c.batch_size)
    loss_sum, count = windows_loss(raw_model, tokens, starts, c.block_size, c.batch_size, ctx, rank=rank,
                                   world_size=world_size)
    return loss_sum / count


def agree(flag, device, ddp, decider=None):
    """flag as every DDP rank takes it, so that all act at the same step: rank decider's (e.g. rank 0's clock), or
    True where any rank's is (decider None: a signal to one rank stops every rank). Without DDP, flag."""
    if not ddp:
        return bool(flag)
    value = torch.tensor(float(flag), device=device)
    if decider is None:
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    else:
        torch.distributed.broadcast(value, decider)
    return bool(value)


@dataclass
class LoopState:
    """The training loop's state from step to step, besides the model and optimizer: where it is, the clock of its
    steps, when it checkpoints or stops next, and progress, the counters every checkpoint keeps."""
    progress: dict              # start_progress's counters, run_id (and trunk); save_checkpoint writes them
    clock: StepClock            # seconds of training steps only
    t_start: float              # time.time() when this process started
    iter_num: int               # optimizer steps done
    start_iter: int             # where this process began: its first step (compilation, warm-up) is timed apart
    wall_before: float          # wall-clock seconds of the run before this process (a resume's)
    bad: torch.Tensor           # note_divergence's [first non-finite iteration, its loss], on the device
    steps_before: float = 0.0   # train_time_s of the run before this process (a resume's, a branch's trunk)
    loss: torch.Tensor = None   # the last step's mean loss, on the device; None before this process's first step
    interval_tokens: int = 0    # tokens of the steady steps since the last log line
    last_ckpt: float = field(default_factory=time.time)  # when the last checkpoint was written (or the loop began)
    ckpt_due: bool = False      # ckpt_interval_s has passed on rank 0's clock: checkpoint before the next step
    stop_now: bool = False      # a stop signal (to any rank): checkpoint and stop before the next step

    @classmethod
    def start(cls, progress, t_start, device, device_type):
        """The state at the start of this process's loop: at progress's iteration, the clock running."""
        bad = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=device)
        return cls(progress, StepClock(device_type), t_start, progress["iter_num"], progress["iter_num"],
                   progress["wall_time_s"], bad, progress["compile_time_s"] + progress["steady_time_s"])

    def train_loss(self):
        """The last step's loss (the host waits for it), or the checkpoint's when this process has made no step."""
        return self.progress.get("train_loss") if self.loss is None else self.loss.item()

    def wall_time_s(self):
        return self.wall_before + time.time() - self.t_start

    def snapshot(self, tokens_seen):
        """progress as a checkpoint at iter_num keeps it; train_loss: the last step's, for a resume's first log."""
        self.progress.update(iter_num=self.iter_num, tokens_seen=tokens_seen, wall_time_s=self.wall_time_s(),
                             train_loss=self.train_loss())
        return self.progress

    def at_checkpoint(self, ckpt_interval):
        """Checkpoint before this step: a stop (also before this process's first step: "ckpt.pt holds the run" stays
        true), ckpt_interval_s passed (ckpt_due) or every ckpt_interval iterations; never at the step resumed from."""
        return self.stop_now or (self.iter_num > self.start_iter and (self.ckpt_due or bool(
            ckpt_interval and self.iter_num % ckpt_interval == 0)))

    def stepped(self, tokens_per_iter):
        """Count an optimizer step; the first of a process (compilation, warm-up) goes to compile_time_s."""
        self.iter_num += 1
        if self.iter_num == self.start_iter + 1:
            self.clock.stop()
            self.progress["compile_time_s"] += self.clock.take()
            self.clock.start()
        else:
            self.interval_tokens += tokens_per_iter

    def interval(self):
        """At a log line: stop the clock; tokens/s of the steady steps since the last one (None if none ran), their
        time and tokens added to progress."""
        self.clock.stop()
        seconds = self.clock.take()
        self.progress["steady_time_s"] += seconds
        self.progress["steady_tokens"] += self.interval_tokens
        tokens_per_s = self.interval_tokens / seconds if self.interval_tokens and seconds > 0 else None
        self.interval_tokens = 0
        return tokens_per_s

    def finish(self):
        """After the last step: stop the clock; train_time_s is the first steps' and the steady steps' time,
        process_steps_s the part of it this process spent (study.py sets it against the process's wall-clock)."""
        self.clock.stop()
        self.progress["train_time_s"] = self.progress["compile_time_s"] + self.progress["steady_time_s"]
        self.progress["process_steps_s"] = self.progress["train_time_s"] - self.steps_before


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


# -----------------------------------------------------------------------------

@exit_on_user_error
def main(argv=None, **defaults):
    """Train with the module defaults, updated by defaults (train_rnn.py's LSTM ones), config files
    and --key=value in argv. Returns the results dict (on rank 0; None on other DDP ranks)."""
    # the stop signals are caught from the start: one that arrives while the run sets up (a study stopped the moment
    # its training began) stops it at its first step boundary, with a checkpoint, like one during training
    stop = StopSignals()
    try:
        return train_run(argv, defaults, stop)
    finally:
        stop.restore()


def train_run(argv, defaults, stop):
    t_start = time.time()
    cfg, ckpt = read_config(sys.argv[1:] if argv is None else argv, defaults)
    c = SimpleNamespace(**cfg)  # c.batch_size reads better than cfg["batch_size"] below

    ddp, rank, local_rank, world_size, device_arg = setup_distributed(c.device)
    master = rank == 0
    dev, device_type, dtype_name, ctx = setup_device(device_arg, c.dtype)
    try:  # the step's windows shared by the ranks: micro_batch windows in each of accum micro-steps per rank
        micro_batch, accum = rank_split(c.batch_size, c.gradient_accumulation_steps, world_size)
    except ValueError as e:
        fail(str(e))

    # data and budget
    data, order, plan, branch_at, schedule_iters = load_plan(cfg, ckpt)
    total_iters = plan["total_iters"]
    branching = c.init_from == "branch"
    # a branch starts a new run in its out_dir, as scratch does: a finished run there is replaced only with overwrite
    lock = claim_out_dir(c.out_dir, "scratch" if branching else c.init_from, c.overwrite) if master else None

    # model and optimizer, from scratch or from the checkpoint
    model_args = ckpt["model_args"] if ckpt else model_args_from_config(cfg, data.vocab_size)
    raw_model, fast_model, train_model, optimizer, scaler = build(c, model_args, dev, dtype_name,
                                                                  ckpt and ckpt["model"], ddp, local_rank)
    progress = start_progress(ckpt, c, optimizer, scaler, total_iters, rank, world_size, device_type)
    ckpt = None  # free the checkpoint's copy of the weights

    # the splits on the device and the window order
    train_tokens, val_tokens = Tokens(data.split("train"), dev), Tokens(data.split("val"), dev)
    batches = TrainBatches(train_tokens, order, micro_batch, plan["windows_per_iter"], rank, world_size)
    tokens_at = lambda it: order.targets_before(it * plan["windows_per_iter"])  # noqa: E731 (targets trained)
    flops_per_token, peak = raw_model.flops_per_token(), lookup_peak_flops(device_type, c.peak_flops)
    ckpt_path, log_path = run_files.ckpt_path(c.out_dir), run_files.log_path(c.out_dir)
    if master:
        print_plan(c, raw_model, fast_model is not raw_model, data, plan, order, f"{device_type} {dtype_name}",
                   f"{world_size} rank(s) x {accum} micro-step(s) of {micro_batch}")
        open_log(log_path, progress["iter_num"] if c.init_from != "scratch" else None,
                 run_files.log_path(c.branch_from) if branching else None, c.log_interval)
    wandb = start_training_run(cfg, progress["run_id"], c.out_dir) if master and c.wandb_log else None  # resumable
    log = (lambda entry: append_log(log_path, entry, wandb, flops_per_token)) if master else (lambda entry: None)

    # the training loop
    s = LoopState.start(progress, t_start, dev, device_type)

    def checkpoint(path=ckpt_path):
        save_checkpoint(path, raw_model, optimizer, scaler, cfg, model_args, plan, s.snapshot(tokens_at(s.iter_num)),
                        {**data.meta, **data.fingerprints()}, device_type, ddp)
    pbar = progress_bar(total=total_iters, initial=s.iter_num, disable=not master, desc="train", unit="it",
                        dynamic_ncols=True)
    try:
        while s.iter_num < total_iters:
            s.stop_now = s.stop_now or (not ddp and stop.received is not None)  # under DDP: agreed at log lines
            at_ckpt = s.at_checkpoint(c.ckpt_interval)
            at_eval = c.eval_interval > 0 and s.iter_num % c.eval_interval == 0
            lr = lr_at(s.iter_num, schedule_iters, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_schedule,
                       c.cooldown_frac)
            if at_ckpt or at_eval or s.iter_num in branch_at:
                s.clock.stop()  # evaluations and checkpoints are not training time
                check_divergence(s.bad, ckpt_path)
                if at_ckpt:
                    checkpoint()
                    s.last_ckpt, s.ckpt_due = time.time(), False
                for budget in branch_at.get(s.iter_num, ()):
                    checkpoint(run_files.branch_checkpoint_path(c.out_dir, budget))
                if s.stop_now:
                    fail(f"stopped by {stop.received or 'a signal to another rank'} at iteration {s.iter_num}: "
                         f"{ckpt_path} holds the run; continue it with --out_dir={c.out_dir} --init_from=resume")
                if at_eval:
                    val_loss = estimate_loss(raw_model, val_tokens, c, ctx, rank, world_size)
                    if master:
                        pbar.write(f"iter {s.iter_num}: val loss {val_loss:.4f}")
                    log({"iter": s.iter_num, "tokens": tokens_at(s.iter_num), "lr": lr, "train_loss": s.train_loss(),
                         "val_loss": val_loss, "tokens_per_s": None, "mfu": None,
                         "peak_mem_bytes": peak_memory_bytes(device_type)})
                s.clock.start()

            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = (batches.micro_batch(s.iter_num, m) for m in range(accum))
            s.loss = accumulate_gradients(train_model, scaler, ctx, micro_batches, accum, c.data_order == "tunes")
            s.bad = note_divergence(s.bad, s.loss, s.iter_num)
            apply_gradients(raw_model, optimizer, scaler, c.grad_clip)
            s.stepped(plan["tokens_per_iter"])
            pbar.update(1)
            if s.iter_num % c.log_interval == 0 or s.iter_num == total_iters:
                last_loss = s.loss.item()  # the host waits for the device here, and only here between log lines
                check_divergence(s.bad, ckpt_path)
                tokens_per_s = s.interval()
                if master:
                    pbar.set_postfix(loss=f"{last_loss:.4f}", tokens=f"{tokens_at(s.iter_num):,}",
                                     tok_s=f"{tokens_per_s or 0:,.0f}")
                log({"iter": s.iter_num, "tokens": tokens_at(s.iter_num), "lr": lr, "train_loss": last_loss,
                     "tokens_per_s": tokens_per_s, "mfu": mfu(flops_per_token, tokens_per_s, peak, world_size),
                     "peak_mem_bytes": peak_memory_bytes(device_type)})
                # every rank checkpoints (rank 0's clock decides) and stops (a signal to any rank) at the same step
                if c.ckpt_interval_s > 0:
                    s.ckpt_due = agree(time.time() - s.last_ckpt >= c.ckpt_interval_s, dev, ddp, decider=0)
                s.stop_now = agree(stop.received is not None, dev, ddp)
                s.clock.start()
    finally:
        pbar.close()  # also when a divergence or a signal stops the run
        stop.restore()  # after the loop a signal acts as usual: the final checkpoint is written first thing

    # the end: checkpoint, an exact pass over the whole validation split, a train-loss estimate
    s.finish()
    check_divergence(s.bad, ckpt_path)
    checkpoint()
    for budget in branch_at.get(total_iters, ()):  # the largest budget branches where the trunk ends
        checkpoint(run_files.branch_checkpoint_path(c.out_dir, budget))
    val_loss, val_targets = exact_loss(raw_model, data.split("val"), data.eot_id, c.block_size, c.batch_size, dev, ctx,
                                       rank=rank, world_size=world_size)
    train_loss = estimate_loss(raw_model, train_tokens, c, ctx, rank, world_size)
    results = run_results(c, raw_model, data, plan, progress, (train_loss, val_loss, val_targets), device_type,
                          dtype_name, world_size, peak, s.wall_time_s()) if master else None
    if master:
        write_results(results, c.out_dir, log, s.train_loss(), wandb)
    leave(ddp, lock)
    return results

if __name__ == "__main__":
    main()
