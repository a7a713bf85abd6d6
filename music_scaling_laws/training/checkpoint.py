"""
A run folder (out_dir of train.py): claimed by one writer at a time, its ckpt.pt written atomically with
everything an exact resume needs, read back with weights_only=True (never an arbitrary unpickle), together
with the tokenizer of the dataset it was trained on.
"""
import os
import uuid

import torch

from music_scaling_laws.errors import DISK_FULL, UserError
from music_scaling_laws.lifetime import hold_lock
from music_scaling_laws.training.hardware import rng_state, set_rng_state
from music_scaling_laws.run_files import LOCK, is_perplexity_file, is_run_file


def _disk_full(e):
    """Whether an error of torch.save means the disk (or the quota) is full: an OSError, or the RuntimeError torch's
    zip writer raises when a write comes up short ("[enforce fail at inline_container.cc] . unexpected pos ...")."""
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    return isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "file write failed" in str(e))


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old file intact. On a full disk the
    partial temporary file is removed and a UserError says so; the file at path, if any, is the last good one."""
    tmp = path + ".tmp"
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not _disk_full(e):
            raise
        kept = f"{path} keeps the last good state" if os.path.exists(path) else f"nothing was written to {path}"
        raise UserError(f"the disk holding {os.path.dirname(os.path.abspath(path))} is full: {kept} and the partial "
                        f"{os.path.basename(tmp)} is removed; free space there and resume (--init_from=resume)")
    os.replace(tmp, path)


CHECKPOINT_KEYS = ("model_type", "model_args", "model", "config")


def read_checkpoint(path):
    """The checkpoint dict of a ckpt.pt (weights_only: never an arbitrary unpickle), or a one-line error naming
    the file when it is truncated, damaged or not a checkpoint of this suite."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file; all mean "unreadable"
        raise UserError(f"{path} is damaged or not a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise UserError(f"{path} is not a checkpoint written by train.py")
    return ckpt


def claim_out_dir(out_dir, init_from, overwrite):
    """Create or check out_dir and lock it for this process. Refuses (one line) a file, a folder of other
    things, a second writer, and a run that scratch training would overwrite unless asked to; with overwrite,
    the old run's own files (and the evaluations made of it) are removed, nothing else. Returns the lock."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"out_dir {out_dir} is a file, not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:  # e.g. a read-only parent folder
        raise UserError(f"cannot create out_dir {out_dir}: {e.strerror}")
    path = os.path.join(out_dir, LOCK)
    lock = hold_lock(path, f"another train.py is writing {out_dir} (it holds {path}); wait for it or use another "
                           f"out_dir", what="train.py's lock")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    if init_from == "scratch":
        ours = sorted(f for f in os.listdir(out_dir) if is_run_file(f))
        others = [f for f in os.listdir(out_dir) if not is_run_file(f) and f != LOCK and
                  not is_perplexity_file(f) and not f.endswith(".tmp")]
        if ours and not overwrite:
            raise UserError(f"{out_dir} already holds a run ({', '.join(ours)}): --init_from=resume continues it, "
                 f"--overwrite=True replaces it, or choose another out_dir")
        if others and not ours and not overwrite:
            raise UserError(f"{out_dir} holds files that are not a train.py run ({', '.join(sorted(others)[:3])}...): "
                 f"choose an empty or new out_dir")
        if overwrite:  # only what an earlier run of train.py wrote, and the test losses computed from it
            for f in os.listdir(out_dir):
                if is_run_file(f) or is_perplexity_file(f):
                    os.remove(os.path.join(out_dir, f))
    return lock


def save_checkpoint(path, raw_model, optimizer, scaler, cfg, model_args, plan, progress, meta, device_type, ddp):
    """Write ckpt.pt (rank 0) with every rank's RNG state; a diverged model never overwrites the last good one."""
    if not torch.stack([torch.isfinite(p).all() for p in raw_model.parameters()]).all():
        raise UserError(f"non-finite weights at iteration {progress['iter_num']}; {path} keeps the last good state")
    rngs = [rng_state(device_type)]
    if ddp:
        rngs = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(rngs, rng_state(device_type))
    if not ddp or torch.distributed.get_rank() == 0:
        it = progress["iter_num"]
        save_atomic({"model_type": cfg["model_type"], "model_args": model_args, "model": raw_model.state_dict(),
                     "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "config": cfg, "iter_num": it,
                     "total_iters": plan["total_iters"], "tokens_seen": progress["tokens_seen"],
                     "data_position": it * plan["windows_per_iter"],  # windows of the global order consumed
                     "rng": rngs, "progress": progress,
                     "dataset": {k: meta.get(k) for k in ("tokenizer", "vocab_size", "eot_id", "fingerprint",
                                                          "tokenizer_fingerprint")}}, path)


def restore_progress(ckpt, optimizer, scaler, total_iters, rank, world_size, device_type):
    """Optimizer, scaler and RNG state of a checkpoint, and its progress counters."""
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if total_iters is not None and ckpt["total_iters"] != total_iters:  # None: a branch continues its trunk
        raise UserError(f"the run was planned for {ckpt['total_iters']} iterations but the dataset now gives "
             f"{total_iters}; resume with the same dataset")
    if len(ckpt["rng"]) == world_size:
        set_rng_state(ckpt["rng"][rank], device_type)
    elif rank == 0:
        print(f"warning: checkpoint from {len(ckpt['rng'])} ranks resumed on {world_size}: "
              f"dropout randomness will differ from an uninterrupted run")
    if "progress" not in ckpt:  # a checkpoint written before progress was kept in one place
        return {"iter_num": ckpt["iter_num"], "train_time_s": ckpt["train_time_s"], "compile_time_s": 0.0,
                "steady_time_s": ckpt["train_time_s"], "steady_tokens": ckpt["tokens_seen"],
                "wall_time_s": ckpt["wall_time_s"], "run_id": uuid.uuid4().hex}
    return {"run_id": uuid.uuid4().hex, **ckpt["progress"]}
