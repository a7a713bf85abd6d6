"""
Train one GPT or LSTM language model on a prepared dataset, for exactly the token budget asked
(default: one epoch of train.bin), in a data order shared by every model of the study.

    python train.py config/gpt_small.py --max_tokens=2e6 --device=cpu
    python train_rnn.py config/lstm_small.py                  # same loop, LSTM defaults
    torchrun --standalone --nproc_per_node=8 train.py config/gpt_xl.py   # DDP (NCCL; gloo on CPU)
    python train.py config/gpt_small.py --init_from=resume    # continue a killed run exactly

Writes out_dir/log.jsonl (one JSON per logged iteration), out_dir/ckpt.pt (atomically, every
ckpt_interval iterations and at the end) and out_dir/results.json (at the end).

Data order: train.bin is cut into windows of block_size+1 tokens at stride block_size, so every
token is a prediction target exactly once per epoch. The windows are shuffled by a permutation
seeded with data_seed alone and consumed in order: optimizer step i reads windows
[i*W, (i+1)*W) of that order (W = batch_size * gradient_accumulation_steps), whatever the model,
the number of DDP ranks or a resume in between.
"""

import json
import math
import os
import platform
import resource
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from configurator import configure, config_keys
from model import MODEL_CLASSES, build_model, configure_optimizer, model_args_from_config

# -----------------------------------------------------------------------------
# default config values; config/*.py files and --key=value override them
# I/O
out_dir = 'out'
data_dir = 'data/music21'
init_from = 'scratch'      # 'scratch' or 'resume' (from out_dir/ckpt.pt)
log_interval = 10          # iterations between log.jsonl lines
eval_interval = 50         # iterations between validation estimates (0: only the final exact pass)
eval_iters = 10            # batches per validation estimate: a fixed set, the same every time
ckpt_interval = 100        # iterations between checkpoints (0: only at the end)
wandb_log = False          # needs `wandb login`, or WANDB_MODE=offline
wandb_project = 'music-scaling-laws'
wandb_run_name = ''        # '' -> the name of out_dir
# data and budget
data_seed = 1337           # the window order; keep it fixed across a study
batch_size = 32            # sequences per micro-step (per DDP rank)
block_size = 256
gradient_accumulation_steps = 1   # micro-steps per optimizer step, summed over all DDP ranks
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
# AdamW and schedule: linear warmup, then cosine decay to min_lr at the last iteration
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 30
weight_decay = 0.1         # on matrices only
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0            # 0: no clipping
# system
device = 'auto'            # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'             # 'auto' (bfloat16 on CUDA if supported, else float16; float32 elsewhere)
compile = True             # torch.compile; used on CUDA only, where it pays for its compile time
seed = 1337                # initialisation and dropout
peak_flops = 0.0           # the device's peak FLOP/s for MFU; 0 = look the GPU up in PEAK_FLOPS
# -----------------------------------------------------------------------------

# bf16 dense tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name(); first hit wins
PEAK_FLOPS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
]

# keys that change the trained result; a resumed run must keep them
RESUME_MUST_MATCH = ("model_type", "n_layer", "n_head", "n_embd", "dropout", "bias", "data_seed",
                     "batch_size", "block_size", "gradient_accumulation_steps", "max_tokens", "max_iters",
                     "learning_rate", "min_lr", "warmup_iters", "weight_decay", "beta1", "beta2",
                     "grad_clip", "seed")


def fail(message):
    """A user mistake or a failed run: one line on stderr, non-zero exit."""
    sys.exit(f"error: {message}")


# -----------------------------------------------------------------------------
# dataset and data order

def load_dataset(data_dir):
    """meta, stats and memmapped train/val splits of a prepare.py folder."""
    if not os.path.isdir(data_dir):
        fail(f"dataset folder {data_dir} not found (run prepare.py first or set --data_dir)")
    paths = {name: os.path.join(data_dir, name) for name in ("meta.json", "stats.json", "train.bin", "val.bin")}
    for path in paths.values():
        if not os.path.isfile(path):
            fail(f"{path} not found; {data_dir} is not a complete prepare.py dataset")
    with open(paths["meta.json"]) as f:
        meta = json.load(f)
    with open(paths["stats.json"]) as f:
        stats = json.load(f)
    if meta.get("dtype") not in ("uint16", "uint32"):
        fail(f"{paths['meta.json']}: dtype must be uint16 or uint32, got {meta.get('dtype')!r}")
    splits = {name: np.memmap(paths[f"{name}.bin"], dtype=meta["dtype"], mode="r") for name in ("train", "val")}
    return meta, stats, splits


def num_windows(n_tokens, block_size):
    """Windows of block_size+1 tokens at stride block_size: each token but the first is a target once."""
    return max(0, (n_tokens - 1) // block_size)


def window_starts(first, count, n_windows, block_size, data_seed):
    """Token offsets of windows first .. first+count-1 of the global order. Epoch e of the order
    is a permutation of all windows seeded by (data_seed, e); epoch 0 is the same for every model."""
    out = np.empty(count, dtype=np.int64)
    done = 0
    while done < count:
        epoch, offset = divmod(first + done, n_windows)
        take = min(count - done, n_windows - offset)
        perm = np.random.default_rng([data_seed, epoch]).permutation(n_windows)
        out[done:done + take] = perm[offset:offset + take] * block_size
        done += take
    return out


def eval_windows(n_tokens, block_size, limit=None):
    """(starts, lengths) of windows whose targets cover tokens 1..n_tokens-1 exactly once (the last
    window may be shorter); with limit, that many full windows evenly spread over the split."""
    starts = np.arange(0, n_tokens - 1, block_size, dtype=np.int64)
    lengths = np.minimum(block_size, n_tokens - 1 - starts)
    if limit is not None:
        full = starts[lengths == block_size]
        pick = np.unique(np.linspace(0, len(full) - 1, min(limit, len(full))).round().astype(np.int64))
        starts, lengths = full[pick], np.full(len(pick), block_size, dtype=np.int64)
    return starts, lengths


def make_batch(data, starts, block_size, device, lengths=None, rows=None):
    """x, y (rows, block_size) int64 on device; targets past a window's length and padding rows are -1."""
    rows = rows or len(starts)
    x = np.zeros((rows, block_size), dtype=np.int64)
    y = np.full((rows, block_size), -1, dtype=np.int64)
    for i, s in enumerate(starts):
        n = block_size if lengths is None else int(lengths[i])
        window = data[s:s + n + 1].astype(np.int64)
        x[i, :n] = window[:-1]
        y[i, :n] = window[1:]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if device.startswith("cuda"):
        # pinned host memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# system

def setup_device(device, dtype):
    """(device, device_type, dtype name, autocast context) with 'auto' resolved."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device_type = device.split(":")[0]
    if device_type not in ("cpu", "cuda", "mps"):
        fail(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        fail("device cuda requested but CUDA is not available")
    if device_type == "mps" and not torch.backends.mps.is_available():
        fail("device mps requested but MPS is not available")
    if dtype == "auto":
        if device_type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        fail(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls (and the fp32 parts) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


def device_name(device_type):
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def lookup_peak_flops(device_type, override=0.0):
    """bf16 dense peak FLOP/s of the current GPU, or None where unknown (MFU is then null)."""
    if override > 0:
        return override
    if device_type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


def peak_memory_bytes(device_type):
    """Peak GPU memory allocated by tensors on CUDA; on CPU the process's peak resident set."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated()
    if device_type == "mps":
        return torch.mps.driver_allocated_memory()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def rng_state(device_type):
    state = {"torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state, device_type):
    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def save_atomic(obj, path):
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old file intact."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def lr_at(it, total_iters, learning_rate, min_lr, warmup_iters):
    """Linear warmup over warmup_iters, then cosine decay reaching min_lr at the last iteration."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    decay_iters = max(1, total_iters - 1 - warmup_iters)
    ratio = min(1.0, (it - warmup_iters) / decay_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def accumulate_gradients(model, scaler, ctx, micro_batches, accum):
    """Forward and backward over accum (x, y) micro-batches, gradients summed as for one batch.
    Returns the mean loss as a 0-d tensor (no GPU sync). Under DDP the gradients are all-reduced
    on the last micro-step only."""
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    loss_sum = None
    for micro, (x, y) in enumerate(micro_batches):
        if ddp:
            model.require_backward_grad_sync = micro == accum - 1
        with ctx:
            _, loss = model(x, y)
            loss = loss / accum
        scaler.scale(loss).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    return loss_sum


def apply_gradients(model, optimizer, scaler, grad_clip):
    """Clip the gradient norm (after unscaling fp16 gradients), step, and clear the gradients."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model, data, starts, lengths, batch_size, block_size, device, ctx, rank=0, world_size=1):
    """Mean cross-entropy (nats/token) over every target of the given windows, and the target count.
    Batches are padded to full size so a compiled model sees one shape; ranks split the batches."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, target count
    for b in range(rank * batch_size, len(starts), batch_size * world_size):
        x, y = make_batch(data, starts[b:b + batch_size], block_size, device, lengths[b:b + batch_size], batch_size)
        with ctx:
            logits, _ = model(x)
        total[0] += torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                                      ignore_index=-1, reduction="sum")
        total[1] += (y != -1).sum()
    if world_size > 1:
        torch.distributed.all_reduce(total)
    model.train()
    loss_sum, count = total.tolist()
    return loss_sum / count, int(count)


def bits_per_char(loss, split_stats):
    """nats/token -> bits/character using the split's token and character counts."""
    return loss / math.log(2) * split_stats["tokens"] / split_stats["chars"]


# -----------------------------------------------------------------------------

def main(argv=None, **defaults):
    """Train with the module defaults, updated by defaults (train_rnn.py's LSTM ones), config files
    and --key=value in argv. Returns the results dict (on rank 0; None on other DDP ranks)."""
    t_start = time.time()
    base = config_keys(globals())
    for key in defaults:
        if key not in base:
            raise KeyError(f"unknown default {key!r}")
    base.update(defaults)
    argv = sys.argv[1:] if argv is None else argv
    cfg = configure(base, argv)
    if cfg["init_from"] not in ("scratch", "resume"):
        fail(f"init_from must be 'scratch' or 'resume', got {cfg['init_from']!r}")
    if cfg["model_type"] not in MODEL_CLASSES:
        fail(f"model_type must be one of {sorted(MODEL_CLASSES)}, got {cfg['model_type']!r}")
    ckpt_path = os.path.join(cfg["out_dir"], "ckpt.pt")
    ckpt = None
    if cfg["init_from"] == "resume":
        if not os.path.isfile(ckpt_path):
            fail(f"init_from=resume but {ckpt_path} does not exist")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        # the checkpoint's config becomes the default, so `--out_dir=X --init_from=resume` is enough;
        # whatever the command line sets again must agree with it where it matters
        saved = {k: v for k, v in ckpt["config"].items() if k in base}
        cfg = configure({**base, **saved, "init_from": "resume"}, argv)
        changed = [f"{k}: {ckpt['config'][k]!r} -> {cfg[k]!r}" for k in RESUME_MUST_MATCH
                   if k in ckpt["config"] and ckpt["config"][k] != cfg[k]]
        if changed:
            fail(f"resume must keep the run's settings, but these changed: {'; '.join(changed)}")
    c = SimpleNamespace(**cfg)  # c.batch_size reads better than cfg["batch_size"] below

    # distributed: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world_size = 0, 0, 1
    device_arg = c.device
    if ddp:
        rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        use_cuda = c.device != "cpu" and (c.device.startswith("cuda") or torch.cuda.is_available())
        if use_cuda:
            device_arg = f"cuda:{local_rank}"
            torch.cuda.set_device(device_arg)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    master = rank == 0
    dev, device_type, dtype_name, ctx = setup_device(device_arg, c.dtype)
    if c.gradient_accumulation_steps % world_size:
        fail(f"gradient_accumulation_steps={c.gradient_accumulation_steps} must be a multiple of the "
             f"{world_size} DDP ranks (it counts micro-steps over all ranks)")
    accum = c.gradient_accumulation_steps // world_size  # micro-steps on this rank

    meta, stats, splits = load_dataset(c.data_dir)
    vocab_size = int(meta["vocab_size"])
    for split, data in splits.items():
        if len(data) < c.block_size + 1:
            fail(f"block_size {c.block_size} is larger than the {split} split of {c.data_dir} "
                 f"({len(data)} tokens)")
    n_windows = num_windows(len(splits["train"]), c.block_size)
    windows_per_iter = c.batch_size * c.gradient_accumulation_steps
    tokens_per_iter = windows_per_iter * c.block_size
    if n_windows < windows_per_iter:
        fail(f"the train split of {c.data_dir} holds {n_windows} windows of block_size+1 tokens, fewer "
             f"than one optimizer step needs (batch_size x gradient_accumulation_steps = {windows_per_iter})")
    if c.max_iters > 0:
        total_iters = c.max_iters
    elif c.max_tokens > 0:
        total_iters = c.max_tokens // tokens_per_iter
        if total_iters == 0:
            fail(f"max_tokens={c.max_tokens} is less than one optimizer step ({tokens_per_iter} tokens)")
    else:
        total_iters = n_windows // windows_per_iter  # one epoch; the last partial step is dropped
    epochs = total_iters * windows_per_iter / n_windows

    # model
    if ckpt is not None:
        if ckpt["model_args"]["vocab_size"] != vocab_size:
            fail(f"checkpoint vocabulary ({ckpt['model_args']['vocab_size']} tokens) differs from the "
                 f"dataset's ({vocab_size} tokens in {c.data_dir}/meta.json)")
        model_args = ckpt["model_args"]
    else:
        model_args = model_args_from_config(cfg, vocab_size)
        if c.model_type == "gpt" and c.n_embd % c.n_head:
            fail(f"n_embd={c.n_embd} must be a multiple of n_head={c.n_head}")
    torch.manual_seed(c.seed)  # the same initial weights on every rank
    raw_model = build_model(c.model_type, **model_args)
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
    raw_model.to(dev)
    optimizer = configure_optimizer(raw_model, c.learning_rate, c.weight_decay, (c.beta1, c.beta2), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype_name == "float16"))
    iter_num, train_time_s, elapsed_before = 0, 0.0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        iter_num = ckpt["iter_num"]
        train_time_s, elapsed_before = ckpt["train_time_s"], ckpt["wall_time_s"]
        if ckpt["total_iters"] != total_iters:
            fail(f"the run was planned for {ckpt['total_iters']} iterations but the dataset now gives "
                 f"{total_iters}; resume with the same dataset")
        if len(ckpt["rng"]) == world_size:
            set_rng_state(ckpt["rng"][rank], device_type)
        elif master:
            print(f"warning: checkpoint from {len(ckpt['rng'])} ranks resumed on {world_size}: "
                  f"dropout randomness will differ from an uninterrupted run")
    else:
        torch.manual_seed(c.seed + rank)  # dropout differs across ranks, reproducibly
    del ckpt  # free the checkpoint's copy of the weights

    fast_model = raw_model
    if c.compile and device_type == "cuda":
        fast_model = torch.compile(raw_model)
    train_model = fast_model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(fast_model, device_ids=[local_rank] if device_type == "cuda" else None)
    flops_per_token = raw_model.flops_per_token()
    peak = lookup_peak_flops(device_type, c.peak_flops)
    eval_starts = eval_windows(len(splits["val"]), c.block_size, limit=c.eval_iters * c.batch_size)

    if master:
        os.makedirs(c.out_dir, exist_ok=True)
        print(f"{c.model_type}: {raw_model.num_params():,} parameters "
              f"({raw_model.num_params(non_embedding=True):,} non-embedding), vocab {vocab_size}, "
              f"{device_type} {dtype_name}{' compiled' if fast_model is not raw_model else ''}, "
              f"{world_size} rank(s)")
        print(f"{total_iters} iterations x {tokens_per_iter:,} tokens = {total_iters * tokens_per_iter:,} tokens, "
              f"{epochs:.4f} epochs of {n_windows * c.block_size:,}")
        if epochs > 1:
            print(f"note: the budget is more than one epoch ({epochs:.3f}); later epochs reuse the "
                  f"windows in new orders")
    log_path = os.path.join(c.out_dir, "log.jsonl")
    if master:
        # a resumed run replaces whatever the killed run logged after its checkpoint (the evaluation
        # at the checkpoint's own iteration included: it runs again)
        kept = []
        if c.init_from == "resume" and os.path.exists(log_path):
            with open(log_path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
            kept = [json.dumps(e) + "\n" for e in entries
                    if e["iter"] < iter_num or (e["iter"] == iter_num and "val_loss" not in e)]
        with open(log_path, "w") as f:
            f.writelines(kept)
    wandb = None
    if c.wandb_log and master:
        import wandb  # optional dependency, imported only when asked for
        wandb.init(project=c.wandb_project, name=c.wandb_run_name or os.path.basename(os.path.abspath(c.out_dir)),
                   config=cfg, dir=c.out_dir)

    def log(entry):
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if wandb is not None:
            wandb.log({k: v for k, v in entry.items() if v is not None}, step=entry["iter"])

    def checkpoint():
        # a diverged model is never written over the last good checkpoint
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            fail(f"non-finite weights at iteration {iter_num}; {ckpt_path} keeps the last good state")
        rngs = [rng_state(device_type)]
        if ddp:
            rngs = [None] * world_size
            torch.distributed.all_gather_object(rngs, rng_state(device_type))
        if master:
            save_atomic({
                "model_type": c.model_type,
                "model_args": model_args,
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "config": cfg,
                "iter_num": iter_num,
                "total_iters": total_iters,
                "tokens_seen": iter_num * tokens_per_iter,
                "data_position": iter_num * windows_per_iter,  # windows of the global order consumed
                "rng": rngs,
                "train_time_s": train_time_s,
                "wall_time_s": elapsed_before + time.time() - t_start,
                "dataset": {"tokenizer": meta.get("tokenizer"), "vocab_size": vocab_size,
                            "eot_id": meta.get("eot_id")},
            }, ckpt_path)

    def batch(it, micro):
        # micro-step m of rank r reads slot m * world_size + r of the step's W windows
        slot = micro * world_size + rank
        first = it * windows_per_iter + slot * c.batch_size
        starts = window_starts(first, c.batch_size, n_windows, c.block_size, c.data_seed)
        return make_batch(splits["train"], starts, c.block_size, dev)

    # training loop
    pbar = tqdm(total=total_iters, initial=iter_num, disable=not master, desc="train", unit="it",
                dynamic_ncols=True)
    try:
        start_iter = iter_num
        interval_tokens, interval_time, last_loss = 0, 0.0, None
        while iter_num < total_iters:
            if iter_num > start_iter and c.ckpt_interval > 0 and iter_num % c.ckpt_interval == 0:
                checkpoint()
            if c.eval_interval > 0 and iter_num % c.eval_interval == 0:
                val_loss, _ = evaluate(fast_model, splits["val"], *eval_starts, c.batch_size, c.block_size, dev, ctx,
                                       rank, world_size)
                if master:
                    pbar.write(f"iter {iter_num}: val loss {val_loss:.4f}")
                    log({"iter": iter_num, "tokens": iter_num * tokens_per_iter,
                         "lr": lr_at(iter_num, total_iters, c.learning_rate, c.min_lr, c.warmup_iters),
                         "train_loss": last_loss, "val_loss": val_loss, "tokens_per_s": None, "mfu": None,
                         "peak_mem_bytes": peak_memory_bytes(device_type)})

            t0 = time.time()
            lr = lr_at(iter_num, total_iters, c.learning_rate, c.min_lr, c.warmup_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = accumulate_gradients(train_model, scaler, ctx, (batch(iter_num, m) for m in range(accum)), accum)
            if ddp:
                torch.distributed.all_reduce(loss, op=torch.distributed.ReduceOp.AVG)
            last_loss = loss.item()  # also waits for the GPU, so the timing below is honest
            if not math.isfinite(last_loss):
                fail(f"loss became {last_loss} at iteration {iter_num}; stopped, {ckpt_path} keeps the last "
                     f"good checkpoint (try a lower learning_rate)")
            apply_gradients(raw_model, optimizer, scaler, c.grad_clip)
            iter_num += 1
            dt = time.time() - t0
            train_time_s += dt
            interval_tokens += tokens_per_iter
            interval_time += dt
            pbar.update(1)
            if iter_num % c.log_interval == 0 or iter_num == total_iters:
                tokens_per_s = interval_tokens / interval_time
                mfu = flops_per_token * tokens_per_s / (peak * world_size) if peak else None
                if master:
                    pbar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
                    log({"iter": iter_num, "tokens": iter_num * tokens_per_iter, "lr": lr, "train_loss": last_loss,
                         "tokens_per_s": tokens_per_s, "mfu": mfu, "peak_mem_bytes": peak_memory_bytes(device_type)})
                interval_tokens, interval_time = 0, 0.0
    finally:
        pbar.close()  # also when a divergence stops the run

    # the end: checkpoint, an exact pass over the whole validation split, a train-loss estimate
    checkpoint()
    # the split's first tune follows an end-of-tune token like every other tune: put it in front, so every
    # token of val.bin is scored once, as calc_perplexity.py scores a split and stats.json counts it
    val_seq = np.concatenate([np.array([meta["eot_id"]], dtype=np.int64), splits["val"].astype(np.int64)])
    val_loss, val_targets = evaluate(fast_model, val_seq, *eval_windows(len(val_seq), c.block_size),
                                     c.batch_size, c.block_size, dev, ctx, rank, world_size)
    train_loss, _ = evaluate(fast_model, splits["train"],
                             *eval_windows(len(splits["train"]), c.block_size, limit=c.eval_iters * c.batch_size),
                             c.batch_size, c.block_size, dev, ctx, rank, world_size)
    results = None
    if master:
        tokens_trained = total_iters * tokens_per_iter
        tokens_per_s = tokens_trained / train_time_s if train_time_s > 0 else None
        val_bpc = bits_per_char(val_loss, stats["splits"]["val"])
        results = {
            "model_type": c.model_type,
            "n_params": raw_model.num_params(),
            "n_params_non_embedding": raw_model.num_params(non_embedding=True),
            "n_layer": c.n_layer,
            "n_embd": c.n_embd,
            "n_head": c.n_head if c.model_type == "gpt" else None,
            "vocab_size": vocab_size,
            "tokenizer": meta.get("tokenizer"),
            "iters": total_iters,
            "tokens_per_iter": tokens_per_iter,
            "tokens_trained": tokens_trained,
            "epochs": epochs,
            "flops_per_token": flops_per_token,
            "train_flops": flops_per_token * tokens_trained,
            "train_loss": train_loss,
            "train_bpc": bits_per_char(train_loss, stats["splits"]["train"]),
            "val_loss": val_loss,
            "val_bpc": val_bpc,
            "val_targets": val_targets,
            "wall_time_s": elapsed_before + time.time() - t_start,
            "train_time_s": train_time_s,
            "tokens_per_s": tokens_per_s,
            "mfu": flops_per_token * tokens_per_s / (peak * world_size) if peak and tokens_per_s else None,
            "peak_mem_bytes": peak_memory_bytes(device_type),
            "device": device_type,
            "device_name": device_name(device_type),
            "dtype": dtype_name,
            "world_size": world_size,
            "torch_version": torch.__version__,
            "config": cfg,
        }
        log({"iter": total_iters, "tokens": tokens_trained, "lr": None, "train_loss": last_loss,
             "val_loss": val_loss, "tokens_per_s": None, "mfu": None,
             "peak_mem_bytes": results["peak_mem_bytes"], "final": True})
        write_json_atomic(results, os.path.join(c.out_dir, "results.json"))
        print(f"done: val loss {val_loss:.4f} ({val_bpc:.4f} bpc), train loss {train_loss:.4f}, "
              f"{tokens_trained:,} tokens in {results['wall_time_s']:.1f}s -> {c.out_dir}")
        if wandb is not None:
            wandb.summary.update({k: v for k, v in results.items() if k != "config"})
            wandb.finish()
    if ddp:
        torch.distributed.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
