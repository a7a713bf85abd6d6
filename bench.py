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
from music_scaling_laws.configurator import config_keys, configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.data.dataset import TrainOrder, iteration_plan, load_dataset
from music_scaling_laws.training.hardware import (device_name, lookup_peak_flops, mfu, peak_memory_bytes, setup_device,
                                                  synchronize)
from model import model_args_from_config
from music_scaling_laws.training.step import accumulate_gradients, apply_gradients
from music_scaling_laws.training.windows import Tokens, TrainBatches

# bench's own knobs; every train.py knob (model shape, batch, device, dtype, compile...) applies too
bench_warmup = 3       # optimizer steps run before timing: compilation, allocator and cache warm-up
bench_iters = 10       # timed optimizer steps
synthetic = False      # random tokens instead of data_dir's train.bin (needs no dataset)
vocab_size = 100       # vocabulary of synthetic data (real data uses meta.json's)
json_out = ''          # also write the result to this file


@exit_on_user_error
def main(argv):
    # bench.py reads train.py's knobs (model, batch, device, compile ...) as well as its own
    cfg = configure({**config_keys(vars(train)), **config_keys(globals())}, argv)
    c = SimpleNamespace(**cfg)
    if c.bench_warmup < 0 or c.bench_iters < 1:
        fail("bench_warmup must be >= 0 and bench_iters >= 1")
    dev, device_type, dtype_name, ctx = setup_device(c.device, c.dtype)
    synthetic_data = c.synthetic or not os.path.isfile(os.path.join(c.data_dir, "train.bin"))
    if synthetic_data:
        vocab = c.vocab_size
    else:  # the batches train.py would read: the same windows, gathered on the device the same way
        data = load_dataset(c.data_dir)
        vocab = data.vocab_size
        order = TrainOrder(data.split("train"), c.block_size, c.data_seed, c.data_order, data.eot_id)
        plan = iteration_plan(c.batch_size, c.gradient_accumulation_steps, 0, 1, order)
        batches = TrainBatches(Tokens(data.split("train"), dev), order, c.batch_size, plan["windows_per_iter"])

    model, fast_model, _, optimizer, scaler, compile_mode = train.build(c, model_args_from_config(cfg, vocab), dev,
                                                                        dtype_name)
    accum = c.gradient_accumulation_steps
    tokens_per_iter = c.batch_size * c.block_size * accum

    def micro_batches(it):
        for micro in range(accum):
            if synthetic_data:
                xy = torch.randint(vocab, (c.batch_size, c.block_size + 1), device=dev)
                yield xy[:, :-1], xy[:, 1:]
            else:
                yield batches.micro_batch(it, micro)

    t_warmup = time.time()
    for it in range(c.bench_warmup + c.bench_iters):
        if it == c.bench_warmup:
            synchronize(device_type)
            if device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            warmup_s = t0 - t_warmup  # compilation and the first steps: what a run pays once
        accumulate_gradients(fast_model, scaler, ctx, micro_batches(it), accum, by_targets=c.data_order == "tunes")
        apply_gradients(model, optimizer, scaler, c.grad_clip)
    synchronize(device_type)
    elapsed = time.time() - t0

    tokens_per_s = c.bench_iters * tokens_per_iter / elapsed
    peak = lookup_peak_flops(device_type, c.peak_flops)
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
        "warmup_steps": c.bench_warmup,
        "warmup_s": warmup_s,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(model.flops_per_token(), tokens_per_s, peak),
        "peak_flops": peak,
        "peak_mem_bytes": peak_memory_bytes(device_type),
        "device": device_type,
        "device_name": device_name(device_type),
        "threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "compiled": fast_model is not model,
        "compile_mode": compile_mode,  # the one compile_model chose ('auto': CUDA graphs for launch-bound GPT steps)
        "torch_version": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "argv": argv,
    }
    print(json.dumps(result))
    mfu_text = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
    mem_kind = "GPU peak allocated" if device_type == "cuda" else "process peak RSS"
    print(f"| {' '.join(argv)} | {result['n_params'] / 1e6:.2f}M | {device_type} ({result['device_name']}, "
          f"{dtype_name}{', compiled' if result['compiled'] else ''}) | {tokens_per_s:,.0f} | {mfu_text} | "
          f"{result['peak_mem_bytes'] / 2**20:,.0f} MiB ({mem_kind}) |")
    if c.json_out:
        with open(c.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
