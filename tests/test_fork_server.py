"""A run started by study.py's fork server (fork_server.py) is the run a fresh python would make: the same numbers bit
for bit, the same environment, thread count, arguments and output, the same one-line failures and the same
checkpoint on a stop, whether the stop is a signal to the run or the end of the server (the study killed)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from music_scaling_laws.errors import UserError
from music_scaling_laws.study import script_runs
from music_scaling_laws.study.fork_server import ForkServer
from helpers import ONE_THREAD, REPO, wait_for


@pytest.fixture
def server(monkeypatch):
    """A fork server that run_script uses for train.py, as study.py starts it; ended after the test."""
    forks = ForkServer()
    monkeypatch.setattr(script_runs, "_fork_server", forks)
    yield forks
    forks.close()


def tiny_args(data_dir, out_dir, *extra):
    return ["train.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--n_layer=1", "--n_head=2", "--n_embd=16",
            "--batch_size=8", "--block_size=32", "--eval_interval=10", "--device=cpu", "--compile=False", *extra]


def test_a_forked_run_is_the_run_a_fresh_python_trains_bit_for_bit(tmp_path, char_dataset, server):
    forked, fresh = tmp_path / "forked", tmp_path / "fresh"
    script_runs.run_script(tiny_args(char_dataset, forked, "--max_iters=30"), tmp_path / "forked.log", "forked",
                           echo=False, env=ONE_THREAD)
    server.close()  # a study whose server has ended starts a fresh python (run_script's fallback): the reference
    script_runs.run_script(tiny_args(char_dataset, fresh, "--max_iters=30"), tmp_path / "fresh.log", "fresh",
                           echo=False, env=ONE_THREAD)
    assert "done: val loss" in (tmp_path / "fresh.log").read_text()
    a, b = (json.loads((d / "results.json").read_text()) for d in (forked, fresh))
    assert (a["val_loss"], a["train_loss"]) == (b["val_loss"], b["train_loss"])
    losses = lambda d: [(e.get("train_loss"), e.get("val_loss")) for e in map(json.loads, open(d / "log.jsonl"))]  # noqa: E731
    assert losses(forked) == losses(fresh)
    log = (tmp_path / "forked.log").read_text()  # the child's stdout and stderr reach the study's log
    assert "iter 10: val loss" in log and "done: val loss" in log


def test_a_forked_child_has_the_environment_threads_arguments_and_stdio_of_a_fresh_python(tmp_path, server):
    script = tmp_path / "show.py"
    script.write_text("import json, os, sys, torch\n"
                      "print(json.dumps({'argv': sys.argv, 'threads': torch.get_num_threads(), 'cwd': os.getcwd(),\n"
                      "    'tag': os.environ.get('MSL_FORK_TAG'), 'tty': sys.stdout.isatty(), 'name': __name__,\n"
                      "    'session': os.getsid(0) == os.getpid()}))\n"
                      "print('to stderr', file=sys.stderr)\n"
                      "sys.exit('error: the end')\n")
    proc = server.start([str(script), "--a=1", "b"], {**os.environ, "OMP_NUM_THREADS": "1", "MSL_FORK_TAG": "x"})
    out = proc.stdout.read().decode()
    assert proc.wait() == 1 and proc.returncode == 1
    shown = json.loads(out.splitlines()[0])
    assert shown == {"argv": [str(script), "--a=1", "b"], "threads": 1, "cwd": os.getcwd(), "tag": "x",
                     "tty": False, "name": "__main__", "session": True}
    assert out.splitlines()[1:] == ["to stderr", "error: the end"]


def test_a_forked_run_fails_with_its_one_line_error(tmp_path, char_dataset, server):
    with pytest.raises(UserError) as stop:
        script_runs.run_script(tiny_args(char_dataset, tmp_path / "r", "--n_embd=15"), tmp_path / "bad.log",
                               "training r", echo=False, env=ONE_THREAD)
    assert str(stop.value).startswith("training r failed (exit 1): error: n_embd=15 must be a multiple")
    assert "Traceback" not in (tmp_path / "bad.log").read_text()


@pytest.mark.parametrize("stop", ["signal", "server_ends"])
def test_a_stopped_forked_run_checkpoints(tmp_path, char_dataset, server, stop):
    """SIGTERM to the run (the study passes a stop on), or the server's end (the study killed: the children get
    SIGHUP): train.py writes its checkpoint and says how to continue."""
    out = tmp_path / "r"
    args = [os.path.join(REPO, a) if a == "train.py" else a for a in tiny_args(char_dataset, out, "--max_iters=100000")]
    proc = server.start(args, {**os.environ, **ONE_THREAD})
    wait_for(lambda: (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 2, proc)
    if stop == "signal":
        proc.send_signal(signal.SIGTERM)
        output = proc.stdout.read().decode()
        assert proc.wait() == 1
        assert "ckpt.pt holds the run" in output.strip().splitlines()[-1], output[-2000:]
    else:  # the child, the server's no more, is waited for by its pid; its output goes to /dev/null on SIGHUP
        server.close()
        wait_until_gone(proc.pid)
    assert (out / "ckpt.pt").exists() and not (out / "results.json").exists()


def wait_until_gone(pid, timeout=60):
    deadline = time.time() + timeout
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.time() < deadline, f"process {pid} still running"
        time.sleep(0.05)


def test_the_server_ends_with_the_study(tmp_path):
    """The server gets SIGKILL when the study process dies (Linux prctl), so it never outlives a killed study."""
    probe = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);\n"
                              "from music_scaling_laws.study.fork_server import ForkServer; s = ForkServer();\n"
                              "print(s.proc.pid, flush=True);\n"
                              "time.sleep(60)", str(REPO)], stdout=subprocess.PIPE, text=True)
    pid = int(probe.stdout.readline())
    probe.kill()
    probe.wait()
    wait_until_gone(pid, timeout=10)



def test_a_killed_fork_server_is_said_in_one_line_and_its_running_training_checkpoints(tmp_path, char_dataset, server):
    """The fork server killed under a training (issue #31): the training gets SIGHUP, not the study's SIGKILL, so it
    writes its checkpoint; the study waits for it and says what died."""
    import threading
    out, failure = tmp_path / "r", []

    def train():
        try:
            script_runs.run_script(tiny_args(char_dataset, out, "--max_iters=100000"), tmp_path / "r.log",
                                   "training r", echo=False, env=ONE_THREAD)
        except UserError as e:
            failure.append(str(e))
    thread = threading.Thread(target=train)
    thread.start()
    wait_for(lambda: (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 2, server.proc)
    os.kill(server.proc.pid, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive() and len(failure) == 1
    assert failure[0].startswith(f"training r stopped: the fork server (pid {server.proc.pid}) was killed"), failure
    assert (out / "ckpt.pt").exists() and not (out / "results.json").exists()
