"""hardware.py's speed choices, which decide what runs on a GPU but are checked here on the CPU: compile_mode='auto'
(CUDA graphs for launch-bound GPT steps on CUDA only, by hardware.CUDA_GRAPH_MAX_FLOPS), the persistent compile
cache's folder, and StepGraph's contract (static buffers, outputs overwritten by each replay)."""
import functools
import runpy

import pytest
import torch

from helpers import REPO
from model import build_model
from music_scaling_laws.training import hardware
from music_scaling_laws.training.compile_cache import compile_cache_dir
from music_scaling_laws.training.hardware import choose_compile_mode, compile_model, warmup_steps
from music_scaling_laws.training.loop_state import LoopState


@functools.lru_cache(maxsize=None)
def config_model(name):
    """(model, tokens per micro-batch, micro-steps) of config/NAME.py, with a char vocabulary; on the meta device,
    which gives its shapes and FLOPs without allocating gpt_xxl's 738M weights."""
    c = runpy.run_path(str(REPO / "config" / f"{name}.py"))
    keys = ("n_layer", "n_embd", "block_size") + (("n_head",) if c["model_type"] == "gpt" else ())
    with torch.device("meta"):
        model = build_model(c["model_type"], vocab_size=100, **{k: c[k] for k in keys})
    return model, c["batch_size"] * c["block_size"], c.get("gradient_accumulation_steps", 1)


def auto_mode(name, device_type="cuda", distributed=False):
    model, tokens, micro_steps = config_model(name)
    return choose_compile_mode("auto", device_type, model.model_type, model.flops_per_token() * tokens, micro_steps,
                               distributed)


def test_auto_chooses_cuda_graphs_for_the_launch_bound_gpt_configs_on_cuda_only():
    for name in ("gpt_tiny", "gpt_small", "gpt_medium", "gpt_large"):
        assert auto_mode(name) == "reduce-overhead", name
        assert auto_mode(name, "cpu") == auto_mode(name, "mps") == "default"  # never off CUDA
        assert auto_mode(name, distributed=True) == "default"
    for name in ("gpt_xl", "gpt_xxl", "lstm_tiny", "lstm_small", "lstm_xl"):  # math-bound, accumulating, or cuDNN
        assert auto_mode(name) == "default", name
    # the rule itself: FLOPs of one micro-batch's forward + backward against the threshold
    limit = hardware.CUDA_GRAPH_MAX_FLOPS
    assert choose_compile_mode("auto", "cuda", "gpt", limit * 0.99) == "reduce-overhead"
    assert choose_compile_mode("auto", "cuda", "gpt", limit) == "default"
    assert choose_compile_mode("auto", "cuda", "gpt", limit / 2, micro_steps=2) == "default"
    assert choose_compile_mode("auto", "cuda", "gpt", 0) == "default"  # size unknown
    for mode in ("default", "reduce-overhead", "max-autotune"):  # a mode asked for is taken as it is
        assert choose_compile_mode(mode, "cpu", "lstm", 1e15) == mode


@pytest.mark.parametrize("resumed_at", [0, 40])
def test_the_step_that_records_the_cuda_graphs_is_not_counted_as_a_steady_one(resumed_at):
    """Under 'reduce-overhead' (and 'max-autotune') on CUDA the first step compiles and warms up and the second
    records the CUDA graphs: both go to compile_time_s, so tokens_per_s is the replayed steps' (as bench.py's after
    its warm-up); without CUDA graphs only the first step is set apart. The count starts where this process starts,
    a resume included."""
    modes = ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "default", None)
    assert [warmup_steps(m, "cuda") for m in modes] == [2, 2, 1, 1, 1]
    assert [warmup_steps(m, "cpu") for m in modes] == [1] * 5  # no CUDA graphs off CUDA
    for mode, steady_from in (("reduce-overhead", 3), ("default", 2)):
        progress = {"iter_num": resumed_at, "compile_time_s": 0.0, "steady_time_s": 0.0, "steady_tokens": 0,
                    "wall_time_s": 0.0}
        state = LoopState.start(progress, 0.0, "cpu", "cpu", warmup_steps(mode, "cuda"))
        counted = []
        for _ in range(4):
            state.stepped(100)
            counted.append(state.interval_tokens)
        assert counted == [100 * max(0, i - steady_from + 1) for i in range(1, 5)], mode
        assert progress["compile_time_s"] > 0


def test_compiling_on_cpu_is_unchanged_by_the_auto_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: calls.append(mode) or model)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/kept")
    model, tokens, _ = config_model("gpt_small")
    assert compile_model(model, "auto", "auto", "cpu", tokens) == (model, None) and calls == []  # auto: CUDA only
    assert compile_model(model, "True", "auto", "cpu", tokens) == (model, "default")
    compile_model(model, "True", "default", "cpu", tokens)
    assert calls == [None, None]  # torch.compile's default mode, as before 'auto' existed


def test_the_compile_cache_lives_outside_tmp_unless_the_user_set_one(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert compile_cache_dir(env) == str(tmp_path / "xdg" / "music-scaling-laws" / "torchinductor")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == compile_cache_dir(env)  # what the compile workers inherit
    assert compile_cache_dir({"TORCHINDUCTOR_CACHE_DIR": "/data/cache", "XDG_CACHE_HOME": "x"}) == "/data/cache"
    # torch's own default (set as soon as torch._dynamo is imported, e.g. by the optimizer) is not a choice
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    env = {"TORCHINDUCTOR_CACHE_DIR": default_cache_dir(), "XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache_dir(env) == str(tmp_path / "music-scaling-laws" / "torchinductor")


def test_step_graph_replays_into_its_output_buffer_off_cuda():
    source = torch.zeros(3)
    graph = hardware.StepGraph(lambda: source * 2, lambda: pytest.fail("no warm-up off CUDA"), "cpu")
    first = graph.replay()
    source += 1
    assert graph.replay() is first and first.tolist() == [2.0, 2.0, 2.0]  # overwritten in place, as a graph's


COMPILE_ONE_STEP = """
import json, torch
from torch._dynamo.utils import counters
from model import build_model
from music_scaling_laws.training.hardware import compile_model
model = build_model("gpt", n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20)
idx = torch.zeros(2, 8, dtype=torch.long)
compile_model(model, "True", "auto", "cpu", 16)[0](idx, idx)[1].backward()
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_graphs_from_the_persistent_cache(tmp_path):
    """The scripts' compile cache (compile_cache_dir, set by compile_model) outlives the process: the second process
    of the same shapes hits inductor's FX graph cache under $XDG_CACHE_HOME instead of compiling again."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path), OMP_NUM_THREADS="1")
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", COMPILE_ONE_STEP], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.splitlines()[-1]))
    assert runs[0].get("fxgraph_cache_miss", 0) >= 1 and not runs[0].get("fxgraph_cache_hit")
    assert runs[1].get("fxgraph_cache_hit", 0) >= 1 and not runs[1].get("fxgraph_cache_miss")
    assert any((tmp_path / "music-scaling-laws" / "torchinductor").rglob("*.so"))
