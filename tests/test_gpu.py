"""The CUDA paths of issue #30, for a session that has a GPU (`pytest tests/test_gpu.py`, about a minute; skipped
without CUDA, as in CI, where tests/test_hardware.py and tests/test_sample.py check the same logic on the CPU):
training under compile_mode='auto' takes CUDA graphs for a small GPT and learns what the default mode learns, with a
loss read at every step and evaluations between steps (outputs a later replay overwrites must never be read); the
sampler's captured step decodes the tunes of the op-by-op step; a second process loads the compiled kernels."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, TINY_BLOCK_SIZE
from model import load_run
from music_scaling_laws.training.hardware import StepGraph, choose_compile_mode, setup_device
from music_scaling_laws.training.settings import COMPILE_MODES
from sample import generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=16", "--device=cuda",
        "--compile=True", "--warmup_iters=5", "--learning_rate=3e-3", "--log_interval=1", "--eval_interval=7",
        "--eval_iters=2", "--max_iters=30", "--overwrite=True"]


def train_run(data, out, *extra, env=None):
    proc = subprocess.run([sys.executable, "train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY, *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_auto_trains_a_small_gpt_with_cuda_graphs_like_the_default_mode(char_dataset, tmp_path):
    flops = 6 * 100_000 * 16 * 64  # far below the threshold: the tiny model is launch-bound
    assert choose_compile_mode("auto", "cuda", "gpt", flops) == "reduce-overhead"
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    graphs = train_run(char_dataset, tmp_path / "graphs", "--compile_mode=auto", env=env)
    default = train_run(char_dataset, tmp_path / "default", "--compile_mode=default", env=env)
    assert graphs["val_loss"] == pytest.approx(default["val_loss"], rel=2e-2)  # bf16, other kernels
    assert graphs["tokens_per_s"] > 0 and graphs["compile_time_s"] > 0
    assert graphs["cuda_graph_skips"] == 0  # the graphs ran: torch did not fall back to launching op by op
    # the same shapes again: the kernels come from the cache
    again = train_run(char_dataset, tmp_path / "again", "--compile_mode=default", env=env)
    assert again["compile_time_s"] < default["compile_time_s"]


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_the_captured_decode_step_gives_the_tunes_of_the_op_by_op_step(tiny_run, char_dataset, temperature):
    model, _, tokenizer, _ = load_run(str(tiny_run(char_dataset, "gpt")), "cuda")
    prompts = [[tokenizer.eot_id], [tokenizer.eot_id] + tokenizer.encode("X:1\nM:6/8\nL:1/8\nK:D\n")] * 4
    seeds = list(range(len(prompts)))
    tunes = {}
    for graph in (False, True):
        out = generate(model, prompts, 3 * TINY_BLOCK_SIZE, eot_id=tokenizer.eot_id, temperature=temperature,
                       top_p=0.95, seeds=seeds, device="cuda", graph=graph)
        tunes[graph] = {i: (new, ended) for i, new, ended, _ in out}
    # float rounding of a wider attention could flip a near-tie: at most one tune of eight may differ
    same = sum(tunes[True][i] == tunes[False][i] for i in range(len(prompts)))
    assert same >= len(prompts) - 1, (tunes[True], tunes[False])


def test_bench_gpu_runs_its_parts_on_the_gpu_at_tiny_sizes(char_dataset, tmp_path):
    """bench_gpu.py's GPU path (fresh processes, a fresh compile cache) on the tiny model, without a study."""
    proc = subprocess.run([sys.executable, "bench_gpu.py", f"--data_dir={char_dataset}", f"--out_dir={tmp_path}",
                           "--configs=config/gpt_tiny.py:2e5", "--studies=", "--sample_tunes=8",
                           "--sample_tokens=64"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    row = report["training"][0]
    assert row["compile_mode"] == "reduce-overhead" and set(row["bench"]) == {"default", "auto"}
    assert row["train"]["tokens_per_s"] > 0 and report["sampling"]["modes"]["True"]["tokens"] > 0
    assert COMPILE_MODES[0] == "auto"
    assert report["sampling"]["modes"]["True"]["captured"] is True
    assert len(list((tmp_path / "logs").iterdir())) >= 5  # each process's output, warnings of a fallback too


def test_a_capture_that_fails_leaves_the_default_stream_current():
    """torch.cuda.graph ends a capture before it restores the stream: a failed capture must not leave later work
    (sample.py's op-by-op fallback, a worker's next runs) on its side stream."""
    x = torch.ones(4, device="cuda")
    with pytest.raises(RuntimeError):
        StepGraph(lambda: x * float(x.sum().item()), lambda: x * 2, "cuda")  # .item() syncs: not capturable
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert (x + 1).sum().item() == 8


def test_float32_is_exact_float32_and_bf16_training_uses_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        setup_device("cuda", "float32")  # calc_perplexity.py's test losses
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        setup_device("cuda", "bfloat16")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
