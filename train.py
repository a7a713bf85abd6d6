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
step (under torchrun every rank at the same one; after the last step, once its checkpoint is written) with a
checkpoint and a one-line message; --init_from=resume continues exactly.

Speed: the training split lives on the device and a batch is one gather there (windows.py); the host
waits for the device only where it must read a number (log lines, evaluations, checkpoints), so a step
queues its work and returns. Evaluations run the uncompiled model, which costs no second compilation.
Throughput figures leave the first step of a process (compilation, warm-up; under CUDA graphs the second too,
which records them) out and report it as compile_time_s.

Progress: a tqdm bar on a terminal; into a log (nohup, SLURM, a pipe) a plain line every PROGRESS_INTERVAL_S
seconds (default 30) with the iteration, tokens, loss and tokens/s (progress.py).
"""

import sys
import time
from types import SimpleNamespace

import torch

from music_scaling_laws import run_files
from music_scaling_laws.configurator import config_keys
from music_scaling_laws.errors import DISK_FULL, exit_on_user_error, fail
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.training import settings
from music_scaling_laws.training.checkpoint import claim_out_dir, save_checkpoint
from music_scaling_laws.training.hardware import (compile_model, cuda_graph_skips, lookup_peak_flops, mfu,
                                                  peak_memory_bytes, setup_device, warmup_steps)
from music_scaling_laws.training.loop_state import LoopState, StopSignals, start_progress
from music_scaling_laws.training.run_output import append_log, open_log, print_plan, run_results, write_results
from music_scaling_laws.training.schedule import load_plan, lr_at
from music_scaling_laws.training.step import (accumulate_gradients, agree, apply_gradients, check_divergence,
                                              estimate_loss, leave, note_divergence, rank_split, setup_distributed)
from music_scaling_laws.training.tracking import start_training_run
from music_scaling_laws.training.windows import Tokens, TrainBatches, exact_loss
from model import MODEL_CLASSES, build_model, configure_optimizer, model_args_from_config

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
run_role = 'run'           # what the run is to a study, written into results.json as its role: 'run' (a point of the
                           # law), 'sweep' (a learning-rate sweep run: a measurement of the rate, left out of the fits)
                           # or 'seed_repeat'; a wsd trunk or branch is 'trunk' / 'branch' by itself
# -----------------------------------------------------------------------------


def read_config(argv, defaults):
    """The run's config: these knobs, updated by defaults (train_rnn.py's), config files and --key=value in argv,
    checked, and on resume or branching held to the checkpoint's (settings.read_config). Returns (config,
    checkpoint or None)."""
    base = config_keys(globals())
    unknown = set(defaults) - set(base)
    if unknown:
        raise KeyError(f"unknown defaults {sorted(unknown)}")
    return settings.read_config({**base, **defaults}, argv, tuple(MODEL_CLASSES))


def build(c, model_args, device, dtype_name, state=None, ddp=False, local_rank=0):
    """What trains, as train.py and bench.py both train it: the model of model_args with seed's initial weights
    (the same on every rank) or a checkpoint's (state), on device; AdamW (model.configure_optimizer); the
    GradScaler (float16 only); torch.compile where the compile knob asks (hardware.compile_model); DDP around it
    under torchrun. Returns (raw_model, fast_model, train_model, optimizer, scaler, compile_mode): raw_model holds the
    weights (evaluations, checkpoints, clipping), fast_model is it compiled (in compile_mode) or itself (None),
    train_model what a step calls."""
    device_type = torch.device(device).type
    torch.manual_seed(c.seed)
    raw_model = build_model(c.model_type, **model_args)
    if state is not None:
        raw_model.load_state_dict(state)
    raw_model.to(device)
    optimizer = configure_optimizer(raw_model, c.learning_rate, c.weight_decay, (c.beta1, c.beta2), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype_name == "float16"))
    fast_model, compile_mode = compile_model(raw_model, c.compile, c.compile_mode, device_type,
                                             c.batch_size * c.block_size, c.gradient_accumulation_steps)
    train_model = fast_model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(fast_model, device_ids=[local_rank] if device_type == "cuda" else None)
    return raw_model, fast_model, train_model, optimizer, scaler, compile_mode


@exit_on_user_error
def main(argv=None, **defaults):
    """Train with the module defaults, updated by defaults (train_rnn.py's LSTM ones), config files
    and --key=value in argv. Returns the results dict; under torchrun no rank returns: each ends its process once
    the run is written (step.leave)."""
    # the stop signals are caught from the start: one that arrives while the run sets up (a study stopped the moment
    # its training began) stops it at its first step boundary, with a checkpoint, like one during training
    stop = StopSignals()
    try:
        return train_run(argv, defaults, stop)
    except OSError as e:  # a checkpoint on a full disk says so itself (checkpoint.save_atomic); any other write too
        if e.errno not in DISK_FULL:
            raise
        fail(f"the disk is full ({e.strerror}) writing {e.filename or 'the run'}: the run's last checkpoint, if one was written, is kept; "
             f"free space there and continue it with --init_from=resume")
    finally:
        stop.restore()


def train_run(argv, defaults, stop):
    """One run, in the order it happens: its configuration, the devices, the data and its plan, the model, the loop,
    the end (final checkpoint, exact validation loss, results.json)."""
    t_start = time.time()
    cfg, ckpt = read_config(sys.argv[1:] if argv is None else argv, defaults)
    c = SimpleNamespace(**cfg)  # c.batch_size reads better than cfg["batch_size"] below

    # devices: this rank's under torchrun, its dtype and autocast context
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
    graph_skips_before = cuda_graph_skips()  # a study's worker runs many trainings in one process
    raw_model, fast_model, train_model, optimizer, scaler, compile_mode = build(c, model_args, dev, dtype_name,
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
    s = LoopState.start(progress, t_start, dev, device_type, warmup_steps(compile_mode, device_type))

    def stopped(at):  # every rank stops at the same step: each rank's stop is agreed
        pbar.close()
        if wandb is not None:  # a resume continues the same wandb run (start_training_run)
            wandb.finish(exit_code=1)
        leave(ddp, lock, f"stopped by {stop.received or 'a signal to another rank'} at iteration {at}: {ckpt_path} "
                         f"holds the run; continue it with --out_dir={c.out_dir} --init_from=resume")

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
                    stopped(s.iter_num)
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

    # the end: checkpoint, an exact pass over the whole validation split, a train-loss estimate
    s.finish()
    check_divergence(s.bad, ckpt_path)
    checkpoint()
    for budget in branch_at.get(total_iters, ()):  # the largest budget branches where the trunk ends
        checkpoint(run_files.branch_checkpoint_path(c.out_dir, budget))
    # a stop that came during the last step or while its checkpoints were written stops here, every rank alike (a
    # resume then only evaluates); from here on a signal acts as usual, and the checkpoint holds the whole training
    stop.restore()
    if agree(stop.received is not None, dev, ddp):
        stopped(s.iter_num)
    val_loss, val_targets = exact_loss(raw_model, data.split("val"), data.eot_id, c.block_size, c.batch_size, dev, ctx,
                                       rank=rank, world_size=world_size)
    train_loss = estimate_loss(raw_model, train_tokens, c, ctx, rank, world_size)
    results = run_results(c, raw_model, data, plan, progress, (train_loss, val_loss, val_targets), device_type,
                          dtype_name, world_size, peak, s.wall_time_s()) if master else None
    if master:
        results["cuda_graph_skips"] = skipped = cuda_graph_skips() - graph_skips_before
        if skipped:
            print(f"note: torch.compile ran {skipped} of its CUDA graphs op by op (its warning above says why)")
        write_results(results, c.out_dir, log, s.train_loss(), wandb)
    leave(ddp, lock)  # under torchrun each rank's process ends in there
    return results


if __name__ == "__main__":
    main()
