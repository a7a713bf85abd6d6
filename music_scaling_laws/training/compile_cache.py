"""
One persistent torch.compile cache for every process of every run and study (without importing torch, so a study's
own process can set it for the scripts it starts).

Inductor's FX graph cache, AOTAutograd's cache and the compiled Triton and C++ kernels live in
TORCHINDUCTOR_CACHE_DIR: where the user set it, there; else $XDG_CACHE_HOME (~/.cache)/music-scaling-laws/torchinductor,
outside /tmp, which containers, SLURM jobs and reboots empty, so that a second process of the same shapes loads the
compiled kernels instead of compiling them (the cold gpt_xl compile was 42 s on an H100). Importing torch._dynamo
(which creating an optimizer does) already sets TORCHINDUCTOR_CACHE_DIR to torch's default, /tmp/torchinductor_USER:
that value counts as unset.
"""
import os
import tempfile


def is_torch_default(path):
    """Whether path is torch's own default cache folder (tempdir/torchinductor_<user>), not a choice of the user's."""
    return (os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir())
            and os.path.basename(path).startswith("torchinductor_"))


def compile_cache_dir(environ=os.environ):
    """The compile cache folder; sets TORCHINDUCTOR_CACHE_DIR in environ (which compile workers and child processes
    inherit) and returns it."""
    current = environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    if not current or is_torch_default(current):
        base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, "music-scaling-laws", "torchinductor")
    return environ["TORCHINDUCTOR_CACHE_DIR"]
