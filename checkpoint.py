"""
A run folder (out_dir of train.py): claimed by one writer at a time, its ckpt.pt written atomically with
everything an exact resume needs, read back with weights_only=True (never an arbitrary unpickle), together
with the tokenizer of the dataset it was trained on.
"""
import os
import uuid

import torch

from configurator import fail
from dataset import hold_lock
from hardware import rng_state, set_rng_state
from model import build_model
from run_files import LOCK, ckpt_path, is_perplexity_file, is_run_file


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old file intact."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


CHECKPOINT_KEYS = ("model_type", "model_args", "model", "config")


def read_checkpoint(path, device="cpu"):
    """The checkpoint dict of a ckpt.pt (weights_only: never an arbitrary unpickle), or a one-line error naming
    the file when it is truncated, damaged or not a checkpoint of this suite."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file; all mean "unreadable"
        fail(f"{path} is damaged or not a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        fail(f"{path} is not a checkpoint written by train.py")
    return ckpt


def model_from_checkpoint(ckpt, device="cpu"):
    """The checkpoint's model, with its weights, on device and in eval mode."""
    model = build_model(ckpt["model_type"], **ckpt["model_args"])
    # a state dict saved from a torch.compile'd module carries this prefix
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    return model.to(device).eval()


def load_checkpoint(path, device="cpu"):
    """(model in eval mode, checkpoint dict) from a run folder or a ckpt.pt file."""
    if os.path.isdir(path):
        path = ckpt_path(path)
    ckpt = read_checkpoint(path, device)
    return model_from_checkpoint(ckpt, device), ckpt


def load_run(run, device, data_dir=""):
    """(model in eval mode, checkpoint dict, tokenizer, data_dir) for a run folder or its ckpt.pt; the
    tokenizer comes from data_dir, or the dataset the run recorded, and must match the model."""
    from dataset import load_dataset
    path = ckpt_path(run) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        fail(f"no checkpoint at {path} (give a run folder holding ckpt.pt, or the ckpt.pt itself)")
    ckpt = read_checkpoint(path, device)
    model = model_from_checkpoint(ckpt, device)
    data_dir = data_dir or ckpt.get("config", {}).get("data_dir")
    if not data_dir:
        fail(f"{path} does not record its data_dir; pass --data_dir")
    if not os.path.isdir(data_dir):
        fail(f"the run's dataset {data_dir} is not there (pass --data_dir if it moved)")
    dataset = load_dataset(data_dir, need_stats=False)
    tokenizer = dataset.tokenizer()
    trained_with = ckpt.get("dataset", {}).get("tokenizer_fingerprint")
    if trained_with and trained_with != dataset.fingerprints()["tokenizer_fingerprint"]:
        fail(f"the tokenizer of {data_dir} is not the one {path} was trained with (its token ids would decode to "
             f"other characters): pass the run's own --data_dir")
    if tokenizer.vocab_size != model.config.vocab_size:
        fail(f"tokenizer in {data_dir} has {tokenizer.vocab_size} tokens but the model was trained "
             f"with {model.config.vocab_size}: wrong --data_dir?")
    return model, ckpt, tokenizer, data_dir


def claim_out_dir(out_dir, init_from, overwrite):
    """Create or check out_dir and lock it for this process. Refuses (one line) a file, a folder of other
    things, a second writer, and a run that scratch training would overwrite unless asked to; with overwrite,
    the old run's own files (and the evaluations made of it) are removed, nothing else. Returns the lock."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail(f"out_dir {out_dir} is a file, not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:  # e.g. a read-only parent folder
        fail(f"cannot create out_dir {out_dir}: {e.strerror}")
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
            fail(f"{out_dir} already holds a run ({', '.join(ours)}): --init_from=resume continues it, "
                 f"--overwrite=True replaces it, or choose another out_dir")
        if others and not ours and not overwrite:
            fail(f"{out_dir} holds files that are not a train.py run ({', '.join(sorted(others)[:3])}...): "
                 f"choose an empty or new out_dir")
        if overwrite:  # only what an earlier run of train.py wrote, and the test losses computed from it
            for f in os.listdir(out_dir):
                if is_run_file(f) or is_perplexity_file(f):
                    os.remove(os.path.join(out_dir, f))
    return lock


def save_checkpoint(path, raw_model, optimizer, scaler, cfg, model_args, plan, progress, meta, device_type, ddp):
    """Write ckpt.pt (rank 0) with every rank's RNG state; a diverged model never overwrites the last good one."""
    if not torch.stack([torch.isfinite(p).all() for p in raw_model.parameters()]).all():
        fail(f"non-finite weights at iteration {progress['iter_num']}; {path} keeps the last good state")
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
        fail(f"the run was planned for {ckpt['total_iters']} iterations but the dataset now gives "
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
