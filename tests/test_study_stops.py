"""study.py stopped (SIGTERM: docker stop, SLURM pre-emption; Ctrl-C sends SIGINT the same way) during each kind
of step exits within seconds with one line and nothing left running, and the same command continues; a study
never reuses runs trained on other data than its data_dir holds."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from music_scaling_laws.study import train_runs
from helpers import ONE_THREAD, REPO, left_running, many_tunes, slow_tool, tagged, wait_for, write_midi

pytestmark = pytest.mark.slow  # end-to-end: each test runs real studies (make test-fast leaves them out)

SMOKE = "config/study_smoke.py"
RUNS = "\n".join(f"g{w} config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd={w}" for w in (16, 24, 32))


def stop_when(args, ready, env, calls=None):
    """Start study.py, send SIGTERM once ready() holds, and return (seconds it took to exit, exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(ready, proc, timeout=600)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    return time.time() - t0, proc.returncode, stderr


def test_a_study_stopped_while_it_prepares_exits_at_once_with_nothing_left(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_midi(src / f"m{i}.mid", [60 + i, 62, 64, 65, 67])
    (src / "tunes.abc").write_text("\n".join(many_tunes(8)))
    tag, calls = tagged(), tmp_path / "calls"
    env = {**os.environ, **tag, **slow_tool(tmp_path / "bin", "midi2abc", calls)}
    seconds, code, stderr = stop_when(["study.py", SMOKE, f"--out_dir={tmp_path / 's'}", f"--dataset_input={src}"],
                                      lambda: any(calls.iterdir()), env)
    assert seconds < 10 and code == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM during prepare.py; the same command "
                                                      "continues the study")
    assert left_running(tag) == []
    assert not (tmp_path / "s" / "data").exists()


def test_a_stopped_study_continues_and_never_reuses_runs_of_other_data(tmp_path, char_dataset, bpe_dataset):
    out = tmp_path / "s"
    args = ["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", f"--runs={RUNS}",
            "--max_tokens=4096", "--render=False", "--num_samples=2", "--samples_per_prompt=1",
            "--samples_per_size=0", "--reference_tunes=4", "--n_bootstrap=20", "--eval_workers=1"]
    tag, calls = tagged(), tmp_path / "calls"
    env = {**os.environ, **ONE_THREAD, **tag, **slow_tool(tmp_path / "bin", "abc2midi", calls)}

    # stopped while training: train.py checkpoints, the study says how to go on
    seconds, code, stderr = stop_when(args, lambda: (out / "runs" / "g16" / "log.jsonl").exists(), env)
    assert seconds < 10 and code == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM during training g16; the same "
                                                      "command continues the study")
    assert left_running(tag) == [] and (out / "runs" / "g16" / "ckpt.pt").exists()

    # the same command continues (training, test losses, fits, samples) and is stopped in the evaluation, where
    # abc2midi (a stand-in that waits) runs in eval_syntax.py's workers
    seconds, code, stderr = stop_when(args, lambda: any(calls.iterdir()), env)
    assert seconds < 10 and code == 1, stderr
    assert "stopped by SIGTERM during eval_syntax" in stderr.strip().splitlines()[-1]
    assert left_running(tag) == []
    trained = {r: json.loads((out / "runs" / r / "results.json").read_text()) for r in ("g16", "g24", "g32")}

    # the finished runs over other data: another tokenizer, or the same tokenizer with one token changed
    other = tmp_path / "other"
    shutil.copytree(char_dataset, other)
    train_bin = bytearray((other / "train.bin").read_bytes())
    train_bin[100] = train_bin[101]  # another character of the same vocabulary
    (other / "train.bin").write_bytes(bytes(train_bin))
    for data, why in ((bpe_dataset, "a char tokenizer of"), (other, "the same tokenizer, other tokens")):
        proc = subprocess.run([sys.executable, *map(str, args), f"--data_dir={data}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "3 run(s)" in last and "g16, g24, g32" in last and why in last and "--overwrite=True" in last, last
    assert trained == {r: json.loads((out / "runs" / r / "results.json").read_text()) for r in trained}

    # overwrite=True trains them again on the data_dir's data
    proc = subprocess.run([sys.executable, *map(str, args), f"--data_dir={other}", "--overwrite=True",
                           "--stop_after=train"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("trained on other data") == 3
    fingerprint = json.loads((other / "meta.json").read_text())["fingerprint"]
    for r in trained:
        again = json.loads((out / "runs" / r / "results.json").read_text())
        assert again["run_id"] != trained[r]["run_id"] and again["data_fingerprint"] != fingerprint  # meta: old
        assert again["data_fingerprint"] == train_runs.load_dataset(str(other)).fingerprints()["fingerprint"]
    assert not list(out.glob("runs/*/test_perplexity.json"))  # the old test losses went with the old runs


def test_a_killed_study_stops_its_training_which_checkpoints(tmp_path, char_dataset):
    """SIGKILL leaves the study no chance to pass anything on: the kernel sends its training SIGTERM (the
    parent-death signal), so train.py still writes its checkpoint, stops, and nothing is left running."""
    out, tag = tmp_path / "s", tagged()
    args = ["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", "--max_tokens=1e7",
            "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16"]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, **ONE_THREAD, **tag},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "runs" / "g" / "log.jsonl"
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 2, proc, timeout=300)
    proc.kill()
    proc.wait()
    assert left_running(tag, wait=20) == []
    assert (out / "runs" / "g" / "ckpt.pt").exists() and not (out / "runs" / "g" / "results.json").exists()


@pytest.mark.parametrize("parallel", [1, 2])
def test_every_run_gets_the_same_threads_whatever_parallel_runs(parallel):
    """On the CPU the thread count orders a run's float sums: it is the same with any parallel_runs."""
    import torch
    cfg = {"train_threads": 0, "device": "cpu"}
    assert train_runs.training_threads(cfg, parallel) == torch.get_num_threads()
    assert train_runs.training_threads({**cfg, "train_threads": 3}, parallel) == 3


@pytest.mark.parametrize("override, message", [
    ("--eval_workers=-1", "eval_workers must not be negative"),
    ("--top_p=0", "top_p must be in (0, 1]"),
    ("--temperature=-0.5", "temperature must not be negative"),
    ("--capability_share=2", "capability_share must be in (0, 1]"),
    ("--perplexity_split=dev", "perplexity_split must be train, val or test"),
    ("--device=gpu", "device must be auto, cpu"),
])
def test_every_study_knob_is_checked_before_any_work(tmp_path, run_script, override, message):
    proc = run_script(["study.py", SMOKE, f"--out_dir={tmp_path / 's'}", override], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "s").exists()  # before any work: nothing prepared, nothing written


def test_an_out_dir_that_cannot_be_written_is_one_line(tmp_path, run_script):
    (tmp_path / "file").write_text("")  # a file on the way stands for a read-only folder (the tests may run as root)
    proc = run_script(["study.py", SMOKE, f"--out_dir={tmp_path / 'file' / 's'}"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot write out_dir")


@pytest.mark.parametrize("launcher", ["submitit_local", "slurm"])
def test_a_stopped_study_cancels_its_jobs_which_checkpoint_and_the_same_command_resumes(tmp_path, char_dataset,
                                                                                         launcher):
    """SIGTERM to a study whose trainings are submitit jobs (issue #31): no process of the study is training then,
    yet the study cancels its jobs and waits for them, so within 10 s nothing trains any more, no run's lock is held
    and the run has its checkpoint; the same command resumes it. launcher=slurm through tests/fake_slurm."""
    pytest.importorskip("submitit")
    import fcntl
    out, tag = tmp_path / "s", tagged()
    env = {**os.environ, **ONE_THREAD, **tag}
    if launcher == "slurm":
        state = tmp_path / "slurm_state"
        state.mkdir()
        env.update(PATH=f"{REPO / 'tests' / 'fake_slurm'}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM_STATE=str(state))
    args = ["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", "--max_tokens=60000",
            "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16", f"--launcher={launcher}",
            "--stop_after=train"]
    log = out / "runs" / "g" / "log.jsonl"
    seconds, code, stderr = stop_when(args, lambda: log.exists() and log.read_text().count("\n") >= 2, env)
    assert seconds < 10 and code == 1, stderr
    assert "stopped by SIGTERM during training" in stderr.strip().splitlines()[-1], stderr
    assert left_running(tag, wait=10 - seconds) == []
    with open(out / "runs" / "g" / "train.lock", "a+") as lock:  # nobody holds the run any more
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert (out / "runs" / "g" / "ckpt.pt").exists() and not (out / "runs" / "g" / "results.json").exists()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" in proc.stdout and (out / "runs" / "g" / "results.json").exists()
