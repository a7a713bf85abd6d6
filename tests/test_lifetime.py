"""lifetime.py and the locks: a pool worker dies with its parent whatever ends it (the kernel's parent-death
signal, and the polling fallback used where there is none), holds none of its parent's locks, and a file system
without locks is told apart from a second writer."""
import errno
import fcntl
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from music_scaling_laws.errors import UserError
from music_scaling_laws.lifetime import hold_lock
from helpers import REPO, left_running, tagged, wait_for

POOL = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from music_scaling_laws.lifetime import hold_lock, worker_init
    lock = hold_lock(sys.argv[1], "busy")
    pool = ProcessPoolExecutor(2, initializer=worker_init, initargs=(os.getpid(), sys.argv[2] == "fallback"))
    futures = [pool.submit(time.sleep, 300) for _ in range(2)]
    print("running", flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("how", ["prctl", "fallback"])
def test_pool_workers_die_with_a_killed_parent_and_release_its_lock(tmp_path, how):
    tag, lock = tagged(), tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", POOL, str(lock), how], cwd=REPO, env={**os.environ, **tag},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "running\n"
    wait_for(lambda: len(left_running(tag, wait=0)) == 3, proc, timeout=30)  # the parent and two workers
    proc.kill()
    proc.wait()
    assert left_running(tag) == []
    with open(lock, "a+") as f:  # free: no orphan shares the parent's locked file
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("code, message", [
    (errno.EWOULDBLOCK, "another writer"),
    (errno.ENOLCK, "does not support locking"),
    (errno.EOPNOTSUPP, "does not support locking"),
])
def test_a_held_lock_and_a_file_system_without_locks_are_different_lines(tmp_path, monkeypatch, code, message):
    def flock(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(UserError) as e:
        hold_lock(tmp_path / "x.lock", "another writer")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        hold_lock(tmp_path / "missing" / "x.lock", "another writer")
    assert str(e.value).startswith("cannot create the lock")


TOOL = textwrap.dedent("""
    import sys, types
    from music_scaling_laws import external_tools, lifetime
    if sys.argv[1] == "preexec":  # a system without util-linux's setpriv and prlimit
        lifetime.shutil = types.SimpleNamespace(which=lambda name: None)
    argv, preexec = lifetime.tool_command(["abc2midi"], {"cpu": (60, 61)})
    print("forks" if preexec else "spawns", flush=True)
    external_tools.run_tool(["abc2midi", "x.abc", "-o", "x.mid"], 300, {"cpu": (60, 61)})
""")


@pytest.mark.parametrize("how", ["wrapper", "preexec"])
def test_a_tool_dies_with_a_killed_caller_and_keeps_its_limits(tmp_path, how):
    """An external tool (abc2midi in an eval_syntax.py worker) never outlives the process that runs it, and runs
    under its resource limits, both through setpriv/prlimit (spawned without forking the caller: a fork of a worker
    with music21 loaded made eval_syntax.py 3-5x slower) and, where they are missing, through a preexec_fn."""
    from helpers import slow_tool
    tag, calls = tagged(), tmp_path / "calls"
    env = {**os.environ, **tag, **slow_tool(tmp_path / "bin", "abc2midi", calls)}
    proc = subprocess.Popen([sys.executable, "-c", TOOL, how], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    way = proc.stdout.readline().strip()
    assert way == ("forks" if how == "preexec" or not shutil.which("setpriv") else "spawns")
    # the caller and the tool (its marker written, so the stand-in's mktemp is done)
    wait_for(lambda: any(calls.iterdir()) and len(left_running(tag, wait=0)) == 2, proc, timeout=30)
    (tool,) = [pid for pid in left_running(tag, wait=0) if pid != proc.pid]
    with open(f"/proc/{tool}/limits") as f:
        assert [line.split()[3:5] for line in f if line.startswith("Max cpu time")] == [["60", "61"]]
    proc.kill()
    proc.wait()
    assert left_running(tag) == [], "the tool outlived the process that ran it"


def test_a_missing_tool_is_still_file_not_found():
    """Through setpriv a missing program would only be exit status 127, counted as a failed conversion: run_tool
    raises FileNotFoundError as subprocess does, so a missing abc2midi is not taken for a broken tune."""
    from music_scaling_laws.external_tools import run_tool
    with pytest.raises(FileNotFoundError):
        run_tool(["no-such-tool-msl"], 10)
