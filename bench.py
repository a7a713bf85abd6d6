"""
Training throughput of a config on this machine: tokens/s, MFU and peak memory of full optimizer
steps (forward, backward, clip, AdamW) exactly as train.py runs them, warm-up (and compilation)
excluded.

    python bench.py config/gpt_large.py                    # real batches from data_dir if present
    python bench.py config/lstm_tiny.py --synthetic=True --bench_iters=5 --device=cpu

Prints one JSON line and a Markdown table row for BENCHMARKS.md.
"""

import datetime
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

import train
from configurator import config_keys, configure
from model import build_model, configure_optimizer, model_args_from_config

# bench's own knobs; every train.py knob (model shape, batch, device, dtype, compile...) applies too
bench_warmup = 3       # optimizer steps run before timing: compilation, allocator and cache warm-up
bench_iters = 10       # timed optimizer steps
synthetic = False      # random tokens instead of data_dir's train.bin (needs no dataset)
vocab_size = 100       # vocabulary of synthetic data (real data uses meta.json's)
json_out = ''          # also write the result to this file


def main(argv):
    cfg = configure({**config_keys(vars(train)), **config_keys(globals())}, argv)
    c = SimpleNamespace(**cfg)
    dev, device_type, dtype_name, ctx = train.setup_device(c.device, c.dtype)
    if synthetic_data := c.synthetic or not os.path.isfile(os.path.join(c.data_dir, "train.bin")):
        vocab = c.vocab_size
        data = None
    else:
        meta, _, splits = train.load_dataset(c.data_dir)
        vocab, data = int(meta["vocab_size"]), splits["train"]
        n_windows = train.num_windows(len(data), c.block_size)

    torch.manual_seed(c.seed)
    model = build_model(c.model_type, **model_args_from_config(cfg, vocab)).to(dev)
    fast_model = torch.compile(model) if c.compile and device_type == "cuda" else model
    optimizer = configure_optimizer(model, c.learning_rate, c.weight_decay, (c.beta1, c.beta2), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype_name == "float16"))
    accum = c.gradient_accumulation_steps
    tokens_per_iter = c.batch_size * c.block_size * accum

    def micro_batches(it):
        for micro in range(accum):
            if synthetic_data:
                xy = torch.randint(vocab, (c.batch_size, c.block_size + 1), device=dev)
                yield xy[:, :-1], xy[:, 1:]
            else:
                first = (it * accum + micro) * c.batch_size
                starts = train.window_starts(first, c.batch_size, n_windows, c.block_size, c.data_seed)
                yield train.make_batch(data, starts, c.block_size, dev)

    def sync():
        if device_type == "cuda":
            torch.cuda.synchronize()
        elif device_type == "mps":
            torch.mps.synchronize()

    for it in range(c.bench_warmup + c.bench_iters):
        if it == c.bench_warmup:
            sync()
            if device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
        train.accumulate_gradients(fast_model, scaler, ctx, micro_batches(it), accum)
        train.apply_gradients(model, optimizer, scaler, c.grad_clip)
    sync()
    elapsed = time.time() - t0

    tokens_per_s = c.bench_iters * tokens_per_iter / elapsed
    peak = train.lookup_peak_flops(device_type, c.peak_flops)
    result = {
        "model_type": c.model_type,
        "n_params": model.num_params(),
        "n_params_non_embedding": model.num_params(non_embedding=True),
        "flops_per_token": model.flops_per_token(),
        "tokens_per_iter": tokens_per_iter,
        "batch_size": c.batch_size,
        "block_size": c.block_size,
        "gradient_accumulation_steps": accum,
        "data": "synthetic" if synthetic_data else c.data_dir,
        "timed_iters": c.bench_iters,
        "seconds_per_iter": elapsed / c.bench_iters,
        "tokens_per_s": tokens_per_s,
        "mfu": model.flops_per_token() * tokens_per_s / peak if peak else None,
        "peak_flops": peak,
        "peak_mem_bytes": train.peak_memory_bytes(device_type),
        "device": device_type,
        "device_name": train.device_name(device_type),
        "threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "compiled": fast_model is not model,
        "torch_version": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "argv": argv,
    }
    print(json.dumps(result))
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
    mem_kind = "GPU peak allocated" if device_type == "cuda" else "process peak RSS"
    print(f"| {' '.join(argv)} | {result['n_params'] / 1e6:.2f}M | {device_type} ({result['device_name']}, "
          f"{dtype_name}{', compiled' if result['compiled'] else ''}) | {tokens_per_s:,.0f} | {mfu} | "
          f"{result['peak_mem_bytes'] / 2**20:,.0f} MiB ({mem_kind}) |")
    if c.json_out:
        with open(c.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
