"""
How the suite's processes end together, whatever ends them: a worker process dies with the process that started
it (SIGKILL included) and never keeps that process's locks; SIGTERM stops a script the way Ctrl-C does, so the
same cleanup runs (workers ended, temporary folders removed, one line saying how to go on).

Why: a pool worker waiting for its next task outlives a killed parent forever. prepare.py's orphans kept its
dataset lock (every rerun was refused) and study.py's output pipe open (the study never exited); `docker stop`,
SLURM pre-emption and Ctrl-C all send these signals. Every pool of the suite (prepare.py, eval_syntax.py through
tune_checks.py, bench_data.py) starts its workers with worker_init, and the external tools they run
(midi2abc, abc2midi, ...) get the same parent-death signal (external_tools.run_tool, through setpriv: tool_command),
and the scripts study.py runs get SIGHUP when it dies (script_runs.run_script: a killed study's train.py
checkpoints and stops):
  - on Linux the kernel sends the worker SIGKILL the moment its parent dies (prctl PR_SET_PDEATHSIG);
  - elsewhere, or where prctl is refused, a thread in the worker polls its parent twice a second;
  - the locks the parent holds (hold_lock) are closed in the worker: a forked child shares the parent's
    open file, and an flock lives until its last holder closes it, so an orphan used to keep the lock forever.
The locks themselves live here too: hold_lock is how prepare.py, train.py and study.py keep a second writer out of
their output folders for exactly as long as the process lives.
"""
import contextlib
import ctypes
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref

from music_scaling_laws.errors import UserError

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.5          # the fallback's check of the parent, in seconds
# looked up once here: the parent-death signal is also set between fork and exec, where nothing should be loaded
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _PRCTL = None


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that one `except KeyboardInterrupt` cleans up after both."""


def usable_cpus():
    """The CPUs this process may run on: a SLURM job's or a container's share of the node, not all of its cores
    (os.cpu_count); the default size of every worker pool and of the cores a study shares among its runs."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def sigterm_stops():
    """Inside, SIGTERM raises Stopped in the main thread (the default would end the process on the spot, leaving
    its workers, temporary folders and half-written files behind); the previous handler comes back after."""
    def raise_stopped(signum, frame):
        raise Stopped(signal.Signals(signum).name)
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_name(stop):
    """'SIGTERM' or 'SIGINT' for the exception a stop raised (Stopped or Ctrl-C's KeyboardInterrupt)."""
    return stop.args[0] if isinstance(stop, Stopped) and stop.args else "SIGINT"


def set_parent_death_signal(sig=signal.SIGKILL):
    """Ask the kernel to send sig to this process when its parent dies (Linux prctl); False where it cannot.
    Safe between fork and exec (subprocess's preexec_fn): it only calls into the already loaded C library."""
    if _PRCTL is None:
        return False
    try:
        return _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def _works(*cmd):
    """Whether the wrapper cmd runs a program (`true`) at all: looked up once per process."""
    try:
        return subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def tool_command(cmd, limits=None):
    """(argv, preexec_fn) that run the external program cmd so that it dies with this process (SIGKILL when it
    dies) and under limits, {resource: (soft, hard)} with resource one of "cpu", "fsize", "core" (setrlimit's
    RLIMIT_CPU ...). Through util-linux's setpriv --pdeathsig and prlimit, which set them and exec the program,
    preexec_fn is None: subprocess then starts the program with vfork, not by forking this process (a preexec_fn
    forces a full fork: with music21 loaded that made eval_syntax.py's workers 3-5x slower, in system time).
    Where those are missing, the same is done by a preexec_fn."""
    argv, preexec_limits = list(cmd), dict(limits or {})
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if preexec_limits and prlimit and _works(prlimit, "--core=0:0", "--"):
        argv = [prlimit, *(f"--{name}={soft}:{hard}" for name, (soft, hard) in preexec_limits.items()), "--", *argv]
        preexec_limits = {}
    wrapped = _PRCTL is not None and setpriv is not None and _works(setpriv, "--pdeathsig", "KILL", "--")
    if wrapped:  # outermost: the parent-death signal is set before prlimit runs, so it covers the whole chain
        argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    death = _PRCTL is not None and not wrapped  # still to be set, by the preexec_fn
    if not preexec_limits and not death:
        return argv, None
    import resource
    rlimits = [(getattr(resource, f"RLIMIT_{name.upper()}"), soft_hard) for name, soft_hard in preexec_limits.items()]

    def preexec():  # between fork and exec: only calls into what is loaded already
        for which, soft_hard in rlimits:
            resource.setrlimit(which, soft_hard)
        if death:
            set_parent_death_signal()
    return argv, preexec


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has taken the number: ours is gone
        return False
    return True


def _watch_parent(parent_pid, ppid):
    """The fallback: end this process once its parent is gone (it is then re-parented, or no longer exists)."""
    while True:
        if os.getppid() != ppid or not _alive(parent_pid):
            os._exit(1)
        time.sleep(_POLL_S)


def die_with_parent(parent_pid, fallback_only=False):
    """End this process (SIGKILL) as soon as parent_pid, the process that started it, dies. fallback_only: use
    the polling thread even where prctl works (to test it)."""
    if not fallback_only and set_parent_death_signal():
        if not _alive(parent_pid):  # it died before the signal was set: nobody will send it now
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid, os.getppid()), daemon=True,
                     name="watch-parent").start()


def worker_init(parent_pid, fallback_only=False):
    """Initializer of every worker pool of the suite (ProcessPoolExecutor(initializer=worker_init,
    initargs=(os.getpid(),))): the worker dies with its parent, holds none of its locks, and leaves Ctrl-C to it
    (a terminal sends SIGINT to the whole process group; the parent stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not run the parent's stop handler
    release_inherited_locks()
    die_with_parent(parent_pid, fallback_only)


def end_pool(pool):
    """Stop a ProcessPoolExecutor now: pending tasks cancelled, running ones killed with their workers (shutdown
    alone would wait for every task already started: minutes on a slow conversion)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=5)


# ----------------------------------------------------------------------------- locks a process holds

_held_locks = weakref.WeakSet()  # the locks this process holds (hold_lock), for release_inherited_locks


def hold_lock(path, busy_message, what="the lock"):
    """The open file at path under an exclusive kernel lock, held while it stays open: a second writer gets
    UserError(busy_message); the kernel lets go when the process ends, however it ends, so no lock is left stuck.
    A file system without locks (some network and FUSE mounts) is one line of its own, not taken for a second
    writer; so is a folder where the lock file cannot be created."""
    import fcntl  # POSIX only: imported where it is used
    try:
        lock = open(path, "a+")
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {e.strerror}")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        lock.close()
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UserError(busy_message)
        raise UserError(f"the file system of {os.path.dirname(os.path.abspath(path))} does not support locking ({what} "
                        f"{path}: {e.strerror}); use a folder on a local disk")
    _held_locks.add(lock)
    return lock


def release_inherited_locks():
    """Close, in a forked child, the locks its parent holds: the child shares the parent's open file, and an
    flock lasts until its last holder closes it, so a child that outlived the parent would keep the lock.
    Closing the child's copy leaves the parent's lock in place (worker_init calls this)."""
    for lock in list(_held_locks):
        lock.close()
    _held_locks.clear()
