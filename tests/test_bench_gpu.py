"""bench_gpu.py (`make bench-gpu`): its tiny CPU version runs every part in seconds -- train.py against bench.py per
config, sampling with and without the captured step, a study's process overhead from run_timings.json -- and prints
BENCHMARKS.md rows with the date, the commit, the device and the torch version. Not timed: it checks the rows."""
import json
import os
import subprocess

import torch

import bench_gpu
from helpers import REPO


def test_the_cpu_version_produces_every_row_with_its_fields(tmp_path, char_dataset, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "run_timings.json").write_text(json.dumps({"a": {"wall_s": 3.0, "steps_s": 2.0},
                                                        "b": {"wall_s": 1.5, "steps_s": 1.0}}))
    threads = torch.get_num_threads()
    try:
        report = bench_gpu.main(["--device=cpu", f"--data_dir={char_dataset}", f"--out_dir={tmp_path / 'out'}",
                                 "--configs=config/gpt_tiny.py,config/lstm_tiny.py:5e3", f"--study_dirs={study}",
                                 "--extra_modes=max-autotune-no-cudagraphs"])
    finally:
        torch.set_num_threads(threads)  # sample.py sets one thread in this process
    assert json.loads((tmp_path / "out" / "bench_gpu.json").read_text())["markdown"] == report["markdown"]
    assert report["device"] == "cpu" and report["torch_version"] == torch.__version__
    for r in report["training"]:
        assert r["train"]["tokens_per_s"] > 0 and r["bench"]["auto"]["tokens_per_s"] > 0
        assert r["train_over_bench"] == r["train"]["tokens_per_s"] / r["bench"]["auto"]["tokens_per_s"]
        assert r["train_quiet"]["tokens_per_s"] > 0 and r["compile_mode"] == "default"  # never CUDA graphs on CPU
        assert r["train"]["compile_time_s"] is not None and r["bench"]["auto"]["warmup_s"] > 0
        assert set(r["bench"]) == {"auto", "max-autotune-no-cudagraphs"}  # --extra_modes: bench.py in that mode too
    assert set(report["sampling"]["modes"]) == {"True", "False"}
    graphed, plain = report["sampling"]["modes"]["True"], report["sampling"]["modes"]["False"]
    assert graphed["tunes"] == 4 and graphed["tokens"] == plain["tokens"] > 0  # the same tunes either way
    assert report["studies"] == [{"study_dir": str(study), "runs": 2, "wall_s": 4.5, "steps_s": 3.0, "ratio": 1.5}]

    tables = [t.splitlines() for t in report["markdown"].split("\n\n")]
    assert [len(t) for t in tables] == [2 + 2, 2 + 2, 2 + 1]  # header, rule, a row per config / mode / study
    lead = f"| {report['date']} | {report['commit']} | {report['device_name']} | {report['torch_version']} |"
    for table in tables:
        assert table[0].startswith("| date | commit | device | torch |")
        for row in table[2:]:
            assert row.startswith(lead) and row.count("|") == table[0].count("|")
    assert "| config/lstm_tiny.py:5000 |" in tables[0][3] and "| 1.50x |" in tables[2][2]
    assert "(max-autotune-no-cudagraphs: bench.py " in tables[0][2]
    assert report["markdown"] in capsys.readouterr().out


def test_rows_say_when_a_cuda_graph_did_not_run():
    """A CUDA graph torch skipped in training, or a capture sample.py could not make, runs op by op: the rows must
    say so rather than report that speed as the graph's. Off CUDA nothing is captured and nothing is flagged."""
    train = {"tokens_per_s": 1e6, "mfu": 0.1, "compile_time_s": 5.0, "cuda_graph_skips": 2}
    bench = {"tokens_per_s": 1e6, "mfu": 0.1, "warmup_s": 9.0, "compiled": True}
    modes = {graph: {"tunes": 4, "tokens": 100, "decode_s": 1.0, "tokens_per_s": 100.0, "captured": False}
             for graph in ("True", "False")}
    report = {"date": "d", "commit": "c", "device_name": "GPU", "torch_version": "t", "device": "cuda",
              "training": [{"config": "config/gpt_small.py", "max_tokens": 0, "train": train, "train_quiet": None,
                            "bench": {"auto": bench}, "train_over_bench": 1.0, "compile_mode": "reduce-overhead"}],
              "sampling": {"run": "r", "modes": modes}, "studies": []}
    rows = bench_gpu.markdown(report).splitlines()
    assert "reduce-overhead (2 CUDA graphs skipped in train.py)" in rows[2]
    sampled = [row for row in rows if row.startswith("| d |") and "| r |" in row]
    assert sampled[0].endswith("| True (capture failed: op by op) |") and sampled[1].endswith("| False |")
    report["device"] = "cpu"
    assert "capture failed" not in bench_gpu.markdown(report)


def test_gpu_checks_refuses_an_unknown_step_or_limit_before_any_work(tmp_path):
    """.ci/gpu_checks (BENCHMARKS.md: a lent GPU's checks in one call) checks every NAME:SECONDS first, so a typo
    costs nothing of a device call: one line, exit 1, no wheel installed and no step run."""
    for args, message in ((["tests:60", "bogus"], "error: unknown step bogus"),
                          (["bench:6x"], "error: the limit of bench must be seconds, got 6x")):
        proc = subprocess.run(["bash", str(REPO / ".ci" / "gpu_checks"), *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "OUT": str(tmp_path / "out")})
        assert proc.returncode == 1 and proc.stderr.strip() == message + (
            " (tests, bench, study_quick, study_gpu)" if "unknown" in message else ""), proc.stderr
        assert not (tmp_path / "out").exists()
