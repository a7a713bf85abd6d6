"""
The pieces of one optimizer step as train.py and bench.py run it (forward and backward over the micro-batches,
clipping, AdamW), how DDP ranks share a step, and what a step watches for (a loss that stops being finite).
"""
import os
import sys

import torch

from music_scaling_laws import run_files
from music_scaling_laws.errors import UserError, fail
from music_scaling_laws.training.windows import spread_windows, windows_loss


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
        raise UserError(f"loss became {loss} at iteration {int(it)}; stopped, {kept} (try a lower learning_rate)")


def estimate_loss(raw_model, tokens, c, ctx, rank, world_size):
    """Mean loss on a fixed spread of eval_iters x batch_size windows of tokens (the same ones every time), by the
    uncompiled model: eval mode costs no second compilation."""
    starts = spread_windows(tokens.n, c.block_size, c.eval_iters * c.batch_size)
    loss_sum, count = windows_loss(raw_model, tokens, starts, c.block_size, c.batch_size, ctx, rank=rank,
                                   world_size=world_size)
    return loss_sum / count


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


def leave(ddp, lock, error=None):
    """The end of a process, or of a run that stopped (error: the one line that says so): out_dir's lock is released
    and, under torchrun, every DDP rank (all are at the same step: a stop is agreed) leaves together and then ends its
    process here, without Python's shutdown, with exit status 0, or 1 after the error. Without DDP, an error is
    fail(error).

    Why not let Python shut down: gloo's worker threads keep finished collectives (whose tensors hold Python objects)
    a moment after they complete, and the DDP wrapper keeps the process group alive past destroy_process_group. A rank
    whose Python began shutting down in that moment aborted ('terminate called without an active exception', SIGABRT)
    in about one run in 20 of tests/test_train.py's 4-rank run on a loaded 2-core machine: the thread cannot take the
    GIL to drop those objects. Everything the run writes is written by now (a stop has closed its wandb run)."""
    if lock:
        lock.close()
    if not ddp:
        if error:
            fail(error)
        return
    if error:
        print(f"error: {error}", file=sys.stderr)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if error else 0)
