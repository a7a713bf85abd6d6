"""
The device a script runs on: 'auto' resolved the same way everywhere (cuda > mps > cpu), the autocast
dtype, peak FLOP/s and MFU, peak memory, and the random-number state a checkpoint carries.
"""
import platform
import resource
import sys
from contextlib import nullcontext

import torch

from music_scaling_laws.errors import UserError

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
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls (and the fp32 parts) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


COMPILE_CHOICES = {"auto": None, "True": True, "true": True, "False": False, "false": False}


def check_compile(compile):
    if compile not in COMPILE_CHOICES:
        raise UserError(f"compile must be auto, True or False, got {compile!r}")


def compile_model(model, compile, compile_mode, device_type):
    """model under torch.compile where the compile knob asks for it: 'auto' on CUDA only, where faster steps
    pay for the compile time; 'True' on any device (on CPU through inductor's C++ backend, which needs a C/C++
    compiler, as Triton on CUDA does: the Docker image has one); 'False' never. Returns the model to train."""
    check_compile(compile)
    if not (device_type == "cuda" if compile == "auto" else COMPILE_CHOICES[compile]):
        return model
    return torch.compile(model, mode=None if compile_mode == "default" else compile_mode)


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
