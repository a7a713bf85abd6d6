"""
The device a script runs on: 'auto' resolved the same way everywhere (cuda > mps > cpu), the autocast
dtype, torch.compile (its mode, CUDA graphs chosen automatically for launch-bound steps, and a compile cache
that outlives the process), peak FLOP/s and MFU, peak memory, and the random-number state a checkpoint carries.
"""
import platform
import resource
import sys
from contextlib import nullcontext

import torch

from music_scaling_laws.errors import UserError
from music_scaling_laws.training.compile_cache import compile_cache_dir

# bf16 dense tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name(); first hit wins
PEAK_FLOPS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
]


def resolve_device(device):
    """'auto' -> the best available device; a device that is not available is a one-line error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device_type = device.split(":")[0]
    if device_type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but CUDA is not available")
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device mps requested but MPS is not available")
    return device


def setup_device(device, dtype):
    """(device, device_type, dtype name, autocast context) with 'auto' resolved."""
    device = resolve_device(device)
    device_type = device.split(":")[0]
    if dtype == "auto":
        if device_type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    if device_type == "cuda":
        # the fp32 parts of bf16/fp16 training on tensor cores (TF32); float32 asked for by name stays exact float32
        # (calc_perplexity.py's test losses, which the fits use)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = dtype != "float32"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


COMPILE_CHOICES = {"auto": None, "True": True, "true": True, "False": False, "false": False}


def check_compile(compile):
    if compile not in COMPILE_CHOICES:
        raise UserError(f"compile must be auto, True or False, got {compile!r}")


# compile_mode='auto' (choose_compile_mode): CUDA graphs ('reduce-overhead') for a GPT whose forward + backward of one
# micro-batch is less than this many FLOPs. At the bf16 peak of an H100/H200 (989e12 FLOP/s) that is 3 ms of math,
# while the steps measured on an H100 took 8-23 ms (issue #9: gpt_tiny 8.4 ms for 0.07e12 FLOPs, gpt_small 7.7 ms
# for 0.27e12, gpt_medium 14.5 ms for 1.2e12, gpt_large 23 ms for 2.7e12; gpt_xl 22 ms for 6.6e12 at 30% MFU): below
# it the step is bound by launching its kernels one by one, which one graph replay replaces. So gpt_tiny .. gpt_large
# (8,192 tokens per micro-batch) get CUDA graphs and gpt_xl, gpt_xxl do not (they are bound by their math, where
# CUDA graphs save little and cost a static memory pool). Not measured yet: bench_gpu.py compares both modes.
CUDA_GRAPH_MAX_FLOPS = 3e12


def choose_compile_mode(compile_mode, device_type, model_type="gpt", flops_per_call=0.0, micro_steps=1,
                        distributed=False):
    """The torch.compile mode to use: compile_mode itself unless it is 'auto'. 'auto' is 'reduce-overhead' (CUDA
    graphs) on CUDA for a GPT step that is launch-bound -- its forward + backward of one micro-batch, flops_per_call
    (model.flops_per_token() x batch_size x block_size), below CUDA_GRAPH_MAX_FLOPS -- trained in one micro-step by
    one process, and 'default' everywhere else: never on CPU or MPS (no CUDA graphs there), not for the LSTM (its
    step is a few cuDNN calls whose recurrence, not launching, sets the time), not with gradient accumulation or
    DDP (CUDA graphs around accumulated gradients and DDP's all-reduce hooks are not measured here)."""
    if compile_mode != "auto":
        return compile_mode
    launch_bound = 0 < flops_per_call < CUDA_GRAPH_MAX_FLOPS
    if device_type == "cuda" and model_type == "gpt" and launch_bound and micro_steps == 1 and not distributed:
        return "reduce-overhead"
    return "default"


def warmup_steps(compile_mode, device_type):
    """The optimizer steps of a process that come before its steady state: the first (compilation, warm-up) and,
    where the model was compiled in a mode that takes CUDA graphs on CUDA (inductor's 'triton.cudagraphs' option:
    'reduce-overhead', 'max-autotune'), the second too, in which CUDA graph trees record the graphs that the third
    and later steps replay (the first call of a compiled function runs as a warm-up, the next one records)."""
    if compile_mode is None or device_type != "cuda":
        return 1
    from torch._inductor import list_mode_options
    return 2 if list_mode_options().get(compile_mode, {}).get("triton.cudagraphs") else 1


def compile_model(model, compile, compile_mode, device_type, batch_tokens=0, micro_steps=1):
    """model under torch.compile where the compile knob asks for it: 'auto' on CUDA only, where faster steps
    pay for the compile time; 'True' on any device (on CPU through inductor's C++ backend, which needs a C/C++
    compiler, as Triton on CUDA does: the Docker image has one); 'False' never. compile_mode 'auto' is resolved by
    choose_compile_mode from the model's FLOPs per micro-batch of batch_tokens tokens. The compile cache lives in
    compile_cache.compile_cache_dir(). Returns (the model to train, the mode it was compiled in or None)."""
    check_compile(compile)
    if not (device_type == "cuda" if compile == "auto" else COMPILE_CHOICES[compile]):
        return model, None
    compile_cache_dir()  # before compiling: where the kernels are read from and written to
    flops = model.flops_per_token() * batch_tokens if hasattr(model, "flops_per_token") else 0.0
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    mode = choose_compile_mode(compile_mode, device_type, getattr(model, "model_type", ""), flops, micro_steps,
                               distributed)
    return torch.compile(model, mode=None if mode == "default" else mode), mode


def cuda_graph_skips():
    """How many of torch.compile's CUDA graphs (mode 'reduce-overhead') this process has run op by op instead so far:
    torch only logs a warning with its reason, so a run records the count (results.json cuda_graph_skips)."""
    dynamo_utils = sys.modules.get("torch._dynamo.utils")  # nothing compiled yet: none skipped, nothing to import
    return dynamo_utils.counters["inductor"]["cudagraph_skips"] if dynamo_utils else 0


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


def mfu(flops_per_token, tokens_per_s, peak, world_size=1):
    """Model FLOPs utilisation: the share of world_size devices' peak FLOP/s (lookup_peak_flops) that training at
    tokens_per_s does (model.flops_per_token: forward + backward, PaLM's convention); None where either is unknown."""
    if not peak or not tokens_per_s:
        return None
    return flops_per_token * tokens_per_s / (peak * world_size)


def peak_memory_bytes(device_type):
    """Peak GPU memory allocated by tensors on CUDA; on CPU the process's peak resident set."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated()
    if device_type == "mps":
        return torch.mps.driver_allocated_memory()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def synchronize(device_type):
    """Wait for the device, so a wall-clock reading covers the work queued before it."""
    if device_type == "cuda":
        torch.cuda.synchronize()
    elif device_type == "mps":
        torch.mps.synchronize()


def rng_state(device_type):
    state = {"torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state, device_type):
    torch.set_rng_state(state["torch"])
    if device_type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


class StepGraph:
    """fn() -- work that reads and writes only tensors which outlive it (static inputs, caches, buffers) and returns
    a tensor -- captured once as a CUDA graph, so that each replay() launches all of its kernels at once instead of
    one by one from Python. warm_up() runs the same work on throwaway tensors of the same shapes first, on a side
    stream, so that lazy initialisations (cuBLAS handles, workspaces, the allocator) stay out of the capture.
    outputs is the tensor fn returned, which every replay() overwrites: read it before the next replay.
    Off CUDA (tests of the GPU path on CPU) replay() runs fn() and copies its result into outputs: the same
    contract, without the graph."""

    def __init__(self, fn, warm_up, device_type):
        self.fn, self.graph = fn, None
        if device_type != "cuda":
            self.outputs = None
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            warm_up()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        before = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(self.graph):  # recorded, not run: the state is not touched until replay()
                self.outputs = fn()
        except Exception:
            # torch.cuda.graph ends the capture before it leaves its capture stream, so a capture that fails (the
            # usual way: capture_end raises) would leave that side stream current for all later work
            torch.cuda.set_stream(before)
            raise

    def replay(self):
        if self.graph is not None:
            self.graph.replay()
        elif self.outputs is None:
            self.outputs = self.fn()
        else:
            self.outputs.copy_(self.fn())
        return self.outputs
