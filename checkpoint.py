"""
A run folder's checkpoint (out_dir/ckpt.pt): written atomically by train.py, read back with
weights_only=True (never an arbitrary unpickle) together with the tokenizer of the dataset it was trained on.
"""
import os

import torch

from configurator import fail


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old file intact."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_run(run, device, data_dir=""):
    """(model in eval mode, checkpoint dict, tokenizer, data_dir) for a run folder or its ckpt.pt; the
    tokenizer comes from data_dir, or the dataset the run recorded, and must match the model."""
    from dataset import load_dataset
    from model import load_checkpoint
    path = os.path.join(run, "ckpt.pt") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        fail(f"no checkpoint at {path} (give a run folder holding ckpt.pt, or the ckpt.pt itself)")
    model, ckpt = load_checkpoint(path, device=device)
    data_dir = data_dir or ckpt.get("config", {}).get("data_dir")
    if not data_dir:
        fail(f"{path} does not record its data_dir; pass --data_dir")
    if not os.path.isdir(data_dir):
        fail(f"the run's dataset {data_dir} is not there (pass --data_dir if it moved)")
    tokenizer = load_dataset(data_dir, need_stats=False).tokenizer()
    if tokenizer.vocab_size != model.config.vocab_size:
        fail(f"tokenizer in {data_dir} has {tokenizer.vocab_size} tokens but the model was trained "
             f"with {model.config.vocab_size}: wrong --data_dir?")
    return model, ckpt, tokenizer, data_dir
