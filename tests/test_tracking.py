"""tracking.py, through train.py and study.py with WANDB_MODE=offline: a resumed run continues its wandb run,
the x-axis is tokens (and FLOPs), a study's runs share a group and the study logs its test losses, fits, plots,
sample audio and report; wandb missing or not logged in is one line and the run goes on. What wandb recorded
is read back from its offline run files."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from helpers import ONE_THREAD, REPO

pytestmark = pytest.mark.slow  # end-to-end: each test runs real studies (make test-fast leaves them out)

OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **ONE_THREAD}
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
        "--dtype=float32", "--eval_iters=2", "--compile=False"]


def wandb_records(run_dir):
    """[(run record, [history rows as dicts], [artifact records])] of every offline wandb run under run_dir,
    oldest first. An offline run's .wandb file is a LevelDB-style log of protobuf records (wandb's datastore):
    a 7-byte header, then 32 KiB blocks of chunks (crc 4 bytes, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb
    out = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, chunks, run, history, artifacts = path.read_bytes(), 7, b"", None, [], []
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            length, kind = struct.unpack("<HB", data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
            if kind == 0:  # the rest of a block is padding
                pos += left
                continue
            chunks = (b"" if kind in (1, 2) else chunks) + data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                rec = pb.Record()
                rec.ParseFromString(chunks)
                what = rec.WhichOneof("record_type")
                if what == "run":
                    run = rec.run
                elif what == "history":
                    history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                    for i in rec.history.item})
                elif what == "artifact":
                    artifacts.append(rec.artifact)
        out.append((run, history, artifacts))
    return out


def test_a_resumed_run_continues_its_wandb_run_against_tokens_and_flops(char_dataset, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "train.py", f"--data_dir={char_dataset}", f"--out_dir={out}", *TINY, "--max_iters=200",
            "--log_interval=2", "--eval_interval=0", "--wandb_log=True", "--wandb_group=my_study"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **OFFLINE})
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (
            (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # stops at the next step with a checkpoint
    _, stderr = proc.communicate()
    assert proc.returncode == 1 and "--init_from=resume" in stderr.strip().splitlines()[-1], stderr[-2000:]
    resumed = subprocess.run([sys.executable, "train.py", f"--out_dir={out}", "--init_from=resume"], cwd=REPO,
                             capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())

    (first, first_rows, _), (second, second_rows, _) = wandb_records(out)
    assert first.run_id == second.run_id == results["run_id"]  # one wandb run, continued
    assert first.run_group == second.run_group == "my_study" and first.job_type == "train"
    rows = first_rows + second_rows
    assert rows[-1]["final"] is True and rows[-1]["tokens"] == results["tokens_trained"]
    for row in rows:
        assert row["flops"] == row["tokens"] * results["flops_per_token"]
    logged = {(e["iter"], e["tokens"]) for e in map(json.loads, (out / "log.jsonl").read_text().splitlines())}
    assert logged <= {(row["iter"], row["tokens"]) for row in rows}  # every log.jsonl line reached wandb


def test_without_wandb_or_a_login_the_run_goes_on_after_one_line(char_dataset, tmp_path, monkeypatch, capsys):
    args = [f"--data_dir={char_dataset}", *TINY, "--max_iters=2", "--eval_interval=0", "--wandb_log=True"]
    # not logged in: no API key anywhere, wandb not told to stay offline
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "train.py", *args, f"--out_dir={tmp_path / 'no_login'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**env, "HOME": str(tmp_path), **ONE_THREAD})
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith("wandb_log:")]
    assert len(said) == 1 and "did not start" in said[0] and "going on without it" in said[0], proc.stdout
    assert (tmp_path / "no_login" / "results.json").exists()

    monkeypatch.setitem(sys.modules, "wandb", None)  # wandb not installed: `import wandb` raises ImportError
    results = train.main([*args, f"--out_dir={tmp_path / 'no_wandb'}"])
    assert results["tokens_trained"] > 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wandb_log:")]
    assert said == ["wandb_log: wandb is not installed (pip install wandb); going on without it"]


STUDY = """exec(open('config/study_smoke.py').read())
runs = '''
gpt_16    config/gpt_tiny.py   --n_layer=1 --n_head=2 --n_embd=16
gpt_32    config/gpt_tiny.py   --n_layer=1 --n_head=2 --n_embd=32
gpt_48    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=48
'''
num_samples = 2
prompts = r"X:1\\nM:6/8\\nL:1/8\\nK:D\\n"
samples_per_prompt = 1
samples_per_size = 0
max_new_tokens = 100
reference_tunes = 10
n_bootstrap = 50
"""


def test_a_study_groups_its_runs_and_logs_losses_fits_plots_audio_and_report(run_script, tmp_path):
    config = tmp_path / "study_wandb.py"
    config.write_text(STUDY)
    out = tmp_path / "study"
    run_script(["study.py", config, f"--out_dir={out}", "--wandb_log=True", "--wandb_group=g7"], env=OFFLINE)
    for name in ("gpt_16", "gpt_32", "gpt_48"):
        (run, rows, _), = wandb_records(out / "runs" / name)
        results = json.loads((out / "runs" / name / "results.json").read_text())
        assert run.run_group == "g7" and run.run_id == results["run_id"] and run.display_name == f"g7/{name}"
        assert rows[-1]["final"] is True
    (run, rows, artifacts), = wandb_records(out)
    assert run.run_group == "g7" and run.job_type == "study"
    logged = {k.split("/_type")[0]: v for row in rows for k, v in row.items() if k.endswith("/_type")}
    assert logged["runs"] == logged["fits"] == "table-file"
    assert {"plots/scaling", "plots/training_curves"} <= set(logged) and logged["plots/scaling"] == "image-file"
    audio = [k for k, v in logged.items() if v == "audio-file"]
    assert len(audio) == 3 and all(k.startswith("samples/best/") for k in audio)  # 2 unconditional + 1 prompted
    table = json.loads(next((out / "wandb").glob("offline-run-*/files/media/table/runs_*.table.json")).read_text())
    test_loss = {row[0]: row[-1] for row in table["data"]}
    for name in ("gpt_16", "gpt_32", "gpt_48"):
        perplexity = json.loads((out / "runs" / name / "test_perplexity.json").read_text())
        assert test_loss[name] == pytest.approx(perplexity["loss"])
    report, = [a for a in artifacts if a.type == "report"]
    assert "report.md" in {entry.path for entry in report.manifest.contents}
