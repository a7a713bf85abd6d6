"""progress.py: where stdout is not a terminal (a log, nohup, SLURM, study.py's pipes) every long step prints
plain lines at a steady interval -- done/total, rate, ETA, and for training the iteration, tokens, loss and
tokens/s -- and never a bar redrawn with carriage returns. The scripts run as a user runs them with output
to a pipe, with PROGRESS_INTERVAL_S=0 (a line at every update) so that the tests are short."""
import re
import sys

import pytest
from helpers import FIXTURE_INPUTS, ONE_THREAD, corpus_file

from music_scaling_laws import progress
from music_scaling_laws.progress import LogProgress, progress_bar

EVERY_UPDATE = {"PROGRESS_INTERVAL_S": "0", **ONE_THREAD}


def assert_plain(proc):
    """No bar: nothing is drawn over with a carriage return, on either stream."""
    assert "\r" not in proc.stdout and "\r" not in proc.stderr


def test_lines_say_done_total_rate_eta_and_values_at_the_interval_only(capsys, monkeypatch):
    bar = LogProgress(total=4, desc="train", unit="it", interval=0)
    for i in range(4):
        bar.set_postfix(loss=f"{2.0 - i / 10:.4f}")
        bar.update()
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # one per update; the last already says 4/4, so close adds none
    assert re.fullmatch(r"train: 1/4 it \(25%\), [\d.e+]+ it/s, 0s elapsed, ETA \d+s \| loss 2\.0000", lines[0])
    assert lines[-1].startswith("train: 4/4 it (100%)") and lines[-1].endswith("| loss 1.7000")

    quiet = LogProgress(range(5), desc="short", interval=3600)  # a step shorter than the interval
    assert list(quiet) == list(range(5))
    assert capsys.readouterr().out == ""

    monkeypatch.setenv("PROGRESS_INTERVAL_S", "7.5")
    assert progress.interval_s() == 7.5
    assert isinstance(progress_bar(range(3)), LogProgress)  # pytest's captured stdout is no terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not isinstance(progress_bar(range(3)), LogProgress)  # a terminal keeps tqdm's bar


def test_prepare_and_train_print_plain_lines_into_a_pipe(run_script, tmp_path):
    args = ["prepare.py", "--out_dir", tmp_path / "data", "--split_fractions", "0.8,0.1,0.1", "--cache_dir", "", "--workers", "2"]
    for rel in FIXTURE_INPUTS:
        args += ["--input", corpus_file(rel)]
    proc = run_script(args, env=EVERY_UPDATE)
    assert_plain(proc)
    assert re.search(r"^converting: 2/2 file \(100%\), [\d.e+]+ file/s, \d+s elapsed", proc.stdout, re.M)
    assert re.search(r"^encoding: \d+/\d+ tune", proc.stdout, re.M)  # every split in one pass, in corpus order

    proc = run_script(["train.py", f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'run'}", "--n_layer=1",
                       "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
                       "--dtype=float32", "--max_iters=6", "--log_interval=3", "--eval_interval=0", "--eval_iters=2"],
                      env=EVERY_UPDATE)
    assert_plain(proc)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("train: ")]
    assert lines[0].startswith("train: 1/6 it (17%)")
    # after the first log line: iteration, tokens, loss and tokens/s
    assert re.fullmatch(r"train: 6/6 it \(100%\), [\d.e+]+ it/s, \d+s elapsed, ETA 0s \| loss \d\.\d{4}, "
                        r"tokens [\d,]+, tok_s [\d,]+", lines[-1]), lines[-1]


def test_sample_and_eval_syntax_print_plain_lines_into_a_pipe(run_script, tmp_path, tiny_run, char_dataset):
    run = tiny_run(char_dataset, "gpt")
    proc = run_script(["sample.py", "--run", run, "--out_dir", tmp_path / "samples", "--num_samples", "2",
                       "--max_new_tokens", "32", "--seed", "1", "--device", "cpu"], env=EVERY_UPDATE)
    assert_plain(proc)
    assert re.search(r"^samples: 2/2 tune \(100%\), .* \| tok_s \d+", proc.stdout, re.M)

    # 50 one-tune files: eval_syntax shows progress from 50 tunes on
    tunes = re.split(r"(?m)^(?=X:)", corpus_file("airdsAirs/book1.abc").read_text())
    folder = tmp_path / "tunes"
    folder.mkdir()
    for i, tune in enumerate([t for t in tunes if t.startswith("X:")][:50]):
        (folder / f"t{i:02d}.abc").write_text(tune)
    proc = run_script(["eval_syntax.py", folder, "--workers", "2", "--out_file", tmp_path / "report.json"], env=EVERY_UPDATE)
    assert_plain(proc)
    assert re.search(r"^files: 50/50 tune \(100%\), [\d.e+]+ tune/s", proc.stdout, re.M)


@pytest.mark.slow
def test_a_study_training_runs_in_parallel_prints_runs_done_into_a_pipe(run_script, tmp_path):
    config = tmp_path / "study_two.py"
    config.write_text(
        "exec(open('config/study_smoke.py').read())\n"
        "runs = '''\ngpt_16 config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16\n"
        "lstm_16 config/lstm_tiny.py --n_layer=1 --n_embd=16\n'''\n"
        "parallel_runs = 2\n")
    proc = run_script(["study.py", config, f"--out_dir={tmp_path / 'study'}", "--stop_after=train"],
                      env={"PROGRESS_INTERVAL_S": "0"})
    assert_plain(proc)
    assert re.search(r"^\[train\] runs: 2/2 run \(100%\), .*elapsed", proc.stdout, re.M), proc.stdout[-2000:]


@pytest.mark.parametrize("value, expected", [("", 30.0), ("x", 30.0), ("-1", 0.0), ("45", 45.0)])
def test_interval_setting(monkeypatch, value, expected):
    monkeypatch.setenv("PROGRESS_INTERVAL_S", value)
    assert progress.interval_s() == expected
