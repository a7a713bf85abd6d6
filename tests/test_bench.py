"""bench.py: the throughput of train.py's own steps (train.build, accumulate_gradients, apply_gradients) on this
machine, as one JSON line, a BENCHMARKS.md row and, with --json_out, a file. CPU, synthetic tokens, in-process."""
import json

import pytest

import bench

TINY = ["--model_type=gpt", "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--synthetic=True", "--vocab_size=100", "--bench_warmup=1",
        "--bench_iters=2", "--device=cpu", "--compile=False", "--dtype=float32"]


def test_bench_reports_the_model_the_step_and_mfu_against_the_peak_it_is_given(tmp_path, capsys):
    result = bench.main([*TINY, "--peak_flops=1e12", f"--json_out={tmp_path / 'bench.json'}"])
    line, row = capsys.readouterr().out.splitlines()
    assert json.loads(line) == json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(result))
    d, L, T, V = 32, 2, 32, 100
    # by hand: per block attention 4d^2+4d, MLP 8d^2+5d, two LayerNorms 4d; final LayerNorm; tied embedding; positions
    assert result["n_params"] == L * (12 * d * d + 13 * d) + 2 * d + V * d + T * d
    assert result["tokens_per_iter"] == 4 * 32 * 2 and result["timed_iters"] == 2
    assert result["data"] == "synthetic" and result["device"] == "cpu" and not result["compiled"]
    assert result["tokens_per_s"] == pytest.approx(result["tokens_per_iter"] / result["seconds_per_iter"])
    assert result["mfu"] == pytest.approx(result["flops_per_token"] * result["tokens_per_s"] / 1e12)
    assert f"| {result['n_params'] / 1e6:.2f}M | cpu" in row and f"| {result['mfu']:.1%} |" in row


def test_bench_without_a_known_peak_reports_no_mfu_and_bad_counts_are_one_line(capsys):
    assert bench.main(TINY)["mfu"] is None
    assert "| n/a |" in capsys.readouterr().out.splitlines()[1]
    with pytest.raises(SystemExit) as excinfo:
        bench.main([*TINY, "--bench_iters=0"])
    assert excinfo.value.code == "error: bench_warmup must be >= 0 and bench_iters >= 1"
