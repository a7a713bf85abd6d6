"""The study's worker mode (music_scaling_laws/study/worker.py): one long-lived process runs train.py and the other
scripts one after another in itself, each the run a fresh python trains, bit for bit on CPU; stops checkpoint; a
worker never outlives its study. The GPU figures of issue #30 need a GPU; these are the CPU checks CI runs."""
import json
import os
import signal
import subprocess
import sys

import pytest

from music_scaling_laws.errors import UserError
from music_scaling_laws.study import script_runs
from music_scaling_laws.study.worker import Worker
from helpers import ONE_THREAD, REPO, wait_for
from test_fork_server import tiny_args, wait_until_gone


@pytest.fixture
def workers(monkeypatch):
    """Worker mode as study.py's start_runs sets it; every worker ended after the test."""
    started = []
    monkeypatch.setattr(script_runs, "_workers", started)
    monkeypatch.setattr(script_runs, "_fork_server", None)
    yield started
    for w in list(started):
        w.close()


def losses(run_dir):
    return [(e.get("train_loss"), e.get("val_loss")) for e in map(json.loads, open(run_dir / "log.jsonl"))]


def test_runs_in_one_worker_are_the_runs_fresh_pythons_train_bit_for_bit(tmp_path, char_dataset, workers):
    """Two runs of other shapes, then the run compared, all in one worker: nothing an earlier run leaves in the
    process (modules, torch state, thread count) changes a later run's numbers."""
    for name, extra in (("a", ["--n_embd=24", "--max_iters=10"]), ("b", ["--model_type=lstm", "--max_iters=10"]),
                        ("in_worker", ["--max_iters=30"])):
        script_runs.run_script(tiny_args(char_dataset, tmp_path / name, *extra), tmp_path / f"{name}.log", name,
                               echo=False, env=ONE_THREAD)
    assert len(workers) == 1 and workers[0].alive()  # one process ran all three
    script_runs._workers = None  # the reference: a fresh python
    script_runs.run_script(tiny_args(char_dataset, tmp_path / "fresh", "--max_iters=30"), tmp_path / "fresh.log",
                           "fresh", echo=False, env=ONE_THREAD)
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("in_worker", "fresh"))
    assert (a["val_loss"], a["train_loss"]) == (b["val_loss"], b["train_loss"])
    assert losses(tmp_path / "in_worker") == losses(tmp_path / "fresh")
    log = (tmp_path / "in_worker.log").read_text()  # the script's stdout and stderr reach the study's log
    assert "iter 10: val loss" in log and "done: val loss" in log


def test_a_run_failing_in_a_worker_is_its_one_line_and_the_worker_goes_on(tmp_path, char_dataset, workers):
    with pytest.raises(UserError) as stop:
        script_runs.run_script(tiny_args(char_dataset, tmp_path / "r", "--n_embd=15"), tmp_path / "bad.log",
                               "training r", echo=False, env=ONE_THREAD)
    assert str(stop.value).startswith("training r failed (exit 1): error: n_embd=15 must be a multiple")
    assert "Traceback" not in (tmp_path / "bad.log").read_text()
    script_runs.run_script(tiny_args(char_dataset, tmp_path / "ok", "--max_iters=5"), tmp_path / "ok.log", "ok",
                           echo=False, env=ONE_THREAD)
    assert len(workers) == 1 and (tmp_path / "ok" / "results.json").exists()


def test_a_stopped_run_in_a_worker_checkpoints_and_the_worker_takes_the_next(tmp_path, char_dataset):
    """SIGTERM (a study passing its stop on) reaches train.py in the worker: it checkpoints and ends its run with
    its one line, and the worker runs the next script."""
    worker = Worker()
    try:
        out = tmp_path / "r"
        args = [os.path.join(REPO, a) if a == "train.py" else a
                for a in tiny_args(char_dataset, out, "--max_iters=100000")]
        run = worker.start(args, {**os.environ, **ONE_THREAD})
        wait_for(lambda: (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 2,
                 worker.proc)
        run.send_signal(signal.SIGTERM)
        output = run.stdout.read().decode()
        assert run.wait() == 1
        assert "ckpt.pt holds the run" in output.strip().splitlines()[-1], output[-2000:]
        assert (out / "ckpt.pt").exists() and not (out / "results.json").exists()
        after = tmp_path / "after"
        nxt = worker.start([a.replace("--max_iters=100000", "--max_iters=5").replace(str(out), str(after))
                            for a in args], {**os.environ, **ONE_THREAD})
        output = nxt.stdout.read().decode()
        assert nxt.wait() == 0, output[-2000:]
        assert (after / "results.json").exists()
    finally:
        worker.close()


def test_a_worker_ends_with_its_study(tmp_path):
    """A killed study (SIGKILL) leaves no worker: the worker gets SIGHUP (Linux prctl) and ends."""
    probe = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);\n"
                              "from music_scaling_laws.study.worker import Worker; w = Worker(); print(w.proc.pid, "
                              "flush=True);\ntime.sleep(60)", str(REPO)], stdout=subprocess.PIPE, text=True)
    pid = int(probe.stdout.readline())
    probe.kill()
    probe.wait()
    wait_until_gone(pid, timeout=10)


@pytest.mark.parametrize("cfg, mode", [
    ({"fork_runs": False, "worker_runs": "True", "device": "cuda"}, "fresh"),  # the plain mode wins
    ({"fork_runs": True, "worker_runs": "auto", "device": "cuda"}, "worker"),
    ({"fork_runs": True, "worker_runs": "auto", "device": "cpu", "devices": "cuda:0,cuda:1"}, "worker"),
    ({"fork_runs": True, "worker_runs": "auto", "device": "cpu"}, "fork"),
    ({"fork_runs": True, "worker_runs": "auto", "device": "mps"}, "fork"),
    ({"fork_runs": True, "worker_runs": "False", "device": "cuda"}, "fork"),
    ({"fork_runs": True, "worker_runs": "True", "device": "cpu"}, "worker"),
])
def test_workers_are_chosen_on_cuda_and_forks_elsewhere(cfg, mode):
    assert script_runs.run_mode(cfg) == mode


def test_every_process_of_a_study_shares_one_persistent_compile_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert script_runs.compile_cache_env()["TORCHINDUCTOR_CACHE_DIR"] == str(
        tmp_path / "music-scaling-laws" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # the user's own choice is kept
    assert "TORCHINDUCTOR_CACHE_DIR" not in script_runs.compile_cache_env()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_study_in_worker_mode_stops_as_any_study(tmp_path, char_dataset, how):
    """study.py --worker_runs=True stopped during training: SIGTERM, and the training in the worker checkpoints
    and the study exits with its one line within seconds; SIGKILL, and the worker (SIGHUP) checkpoints and ends.
    Either way nothing is left running, and the same command finishes the study's training."""
    from helpers import left_running, tagged
    out, tag = tmp_path / "s", tagged()
    env = {**os.environ, **ONE_THREAD, **tag}
    args = [sys.executable, "study.py", "config/study_smoke.py", f"--out_dir={out}", f"--data_dir={char_dataset}",
            "--max_tokens=60000", "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16",
            "--worker_runs=True", "--stop_after=train"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "runs" / "g" / "log.jsonl"
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 2, proc, timeout=300)
    proc.send_signal(getattr(signal, how))
    stdout, stderr = proc.communicate(timeout=60)
    if how == "SIGTERM":
        assert proc.returncode == 1 and stderr.strip().splitlines()[-1].startswith(
            "error: stopped by SIGTERM during training g; the same command continues the study"), stderr
        assert "[runs] trainings, test losses and samples run in one long-lived worker" in stdout
    assert left_running(tag, wait=20) == []
    assert (out / "runs" / "g" / "ckpt.pt").exists() and not (out / "runs" / "g" / "results.json").exists()
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming" in again.stdout, again.stderr[-2000:]


def test_what_a_script_changes_in_torch_and_the_process_is_not_the_next_script_s(tmp_path):
    """A script's process-wide changes (torch's TF32 and default dtype, the environment, the working directory,
    sys.argv) are gone for the next script in the same worker, as for a fresh python."""
    change, show = tmp_path / "change.py", tmp_path / "show.py"
    change.write_text("import os, sys, torch\ntorch.backends.cuda.matmul.allow_tf32 = True\n"
                      "torch.set_default_dtype(torch.float64)\nos.environ['MSL_LEFT'] = '1'\nos.chdir('/')\n"
                      "sys.path.append('/nowhere')\n")
    show.write_text("import json, os, sys, torch\nprint(json.dumps({'tf32': torch.backends.cuda.matmul.allow_tf32,\n"
                    "    'dtype': str(torch.get_default_dtype()), 'left': os.environ.get('MSL_LEFT'),\n"
                    "    'cwd': os.getcwd(), 'argv': sys.argv, 'path': '/nowhere' in sys.path, 'name': __name__}))\n")
    worker = Worker()
    try:
        outputs = []
        for script in (show, change, show):
            run = worker.start([str(script), "--x=1"], dict(os.environ))
            outputs.append(run.stdout.read().decode())
            assert run.wait() == 0, outputs[-1]
        first, after = json.loads(outputs[0]), json.loads(outputs[2])
        assert first == after and after["dtype"] == "torch.float32" and after["left"] is None
        assert after["argv"] == [str(show), "--x=1"] and after["cwd"] == os.getcwd() and after["name"] == "__main__"
    finally:
        worker.close()


def test_a_process_a_script_leaves_holding_its_output_does_not_hold_the_study(tmp_path, workers):
    """A script that leaves a process behind with its stdout (as inductor's compile workers or wandb's service
    would): the study reads the run's output up to its end and goes on, rather than waiting for that process."""
    import time
    script = tmp_path / "leave.py"
    script.write_text("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
                      "print('the last line')\n")
    t0 = time.time()
    script_runs.run_script([str(script)], tmp_path / "leave.log", "leave", echo=False)  # a fresh python: no worker
    fresh = time.time() - t0
    script_runs.WORKER_SCRIPTS += (str(script),)  # run it in a worker as the study runs train.py
    try:
        t0 = time.time()
        script_runs.run_script([str(script)], tmp_path / "worker.log", "leave", echo=False)
        assert time.time() - t0 < 10 and len(workers) == 1
    finally:
        script_runs.WORKER_SCRIPTS = script_runs.WORKER_SCRIPTS[:-1]
    assert fresh < 10  # (a fresh python's session is ended by end_session)
    assert "the last line" in (tmp_path / "worker.log").read_text()
