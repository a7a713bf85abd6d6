"""
Shared fixtures: small real datasets made by the real prepare.py from two collections of the music21
corpus (~300 tunes), tiny models trained on them by the real train.py, and a helper that runs a repository
script the way a user does.
"""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def corpus_file(relative):
    """A file of the ABC corpus shipped inside music21 (the project's offline default data)."""
    import music21
    return Path(music21.__file__).parent / "corpus" / relative


# tiny models train and decode fastest on one thread; two threads on two busy cores are 5x slower
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY_BLOCK_SIZE = 32

# ~300 tunes of two different collections: enough for every split to hold real tunes
FIXTURE_INPUTS = ["airdsAirs/book1.abc", "essenFolksong/ballad10.abc"]


def _run(args, cwd=REPO, timeout=600, check=True, env=None):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tagged():
    """An environment tag: every process started with it, and all their descendants, carry it (see left_running)."""
    return {"MSL_TEST_TAG": uuid.uuid4().hex}


def left_running(tag, wait=5.0):
    """The pids of live processes (zombies aside) whose environment holds tag, after waiting up to `wait` seconds
    for them to end: what a stopped script left behind."""
    needle = f"MSL_TEST_TAG={tag['MSL_TEST_TAG']}".encode()
    deadline = time.time() + wait
    while True:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:  # gone meanwhile, or not ours
                pass
        if not pids or time.time() > deadline:
            return pids
        time.sleep(0.1)


def wait_for(condition, proc, timeout=120):
    """Poll condition() until it holds; AssertionError if proc ends first or the time runs out."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def slow_tool(folder, name, marker):
    """A stand-in for the external program `name` in folder (put first on PATH) that records each call in the
    folder `marker` and then waits, as a conversion of a large file does: the moment to stop a script mid-work."""
    folder.mkdir(exist_ok=True)
    marker.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nmktemp -p {marker} >/dev/null\nexec sleep 300\n")
    tool.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def run_script():
    """run_script('prepare.py', '--out', d, check=True) -> CompletedProcess (stdout/stderr as text)."""
    return _run


def _prepare(out, *extra):
    args = ["prepare.py", "--out", out, "--split", "0.8,0.1,0.1", "--cache_dir", "", "--workers", "2"]
    for rel in FIXTURE_INPUTS:
        args += ["--input", corpus_file(rel)]
    _run(args + list(extra))
    return Path(out)


@pytest.fixture(scope="session")
def char_dataset(tmp_path_factory):
    """A char-level dataset folder (train ~70k tokens, val/test ~30 tunes each)."""
    return _prepare(tmp_path_factory.mktemp("data") / "char")


@pytest.fixture(scope="session")
def bpe_dataset(tmp_path_factory):
    """A BPE dataset folder (vocabulary 512) of the same tunes as char_dataset."""
    return _prepare(tmp_path_factory.mktemp("data") / "bpe", "--tokenizer", "bpe", "--vocab_size", "512")


def tiny_run(run_script, tmp_path_factory, data_dir, model_type, iters=100):
    """A tiny model trained by the real train.py, once per test session and model type (its run folder)."""
    out = tmp_path_factory.getbasetemp() / f"eval_run_{model_type}"
    if not (out / "ckpt.pt").exists():
        args = ["train.py", f"--data_dir={data_dir}", f"--out_dir={out}", f"--model_type={model_type}",
                f"--max_iters={iters}", "--batch_size=16", f"--block_size={TINY_BLOCK_SIZE}", "--n_layer=1",
                "--n_embd=64", "--learning_rate=3e-3", "--warmup_iters=10", "--device=cpu",
                "--eval_interval=0", "--compile=False", "--dtype=float32"]
        if model_type == "gpt":
            args.append("--n_head=2")
        run_script(args, env=ONE_THREAD)
    return out
