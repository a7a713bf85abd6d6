"""
Start training scripts without paying for Python and torch each time: one server process imports torch and train.py
once, then forks a child per run that runs the script (train.py or train_rnn.py) as `python SCRIPT ARGS` would run
it. A fresh python spent 1.5-3 s importing torch, train.py and torch._dynamo (imported by AdamW's first step) before
the first step, measured on the 2-core CPU sandbox 2026-11-30; the quick study starts ~127 trainings, most of them
a few seconds of steps.

The child is the run a fresh process would be: forked from a server that imported modules and ran no tensor op (no
thread pool, no CUDA context), with the study's environment, working directory and stdio (a pipe the study reads,
as with subprocess), in a session of its own, with the default signal handlers; torch's CPU thread count is set
from the environment's OMP_NUM_THREADS (libgomp read it once, when the server imported torch). The server dies with
the study (SIGKILL on the study's death, Linux prctl), and then every child gets SIGHUP, on which train.py
checkpoints, as a subprocess of a killed study does. A server killed on its own does the same to its children: the
study waits for each to end (its checkpoint written) and fails it with one line saying that the fork server was
killed (script_runs.run_script), never with a SIGKILL of its own.

Protocol (a SOCK_SEQPACKET socket pair, one JSON message per packet): the study sends {"script", "args", "env",
"cwd"} with the write end of the child's output pipe attached (SCM_RIGHTS); the server answers {"pid"} and, when
that child ends, {"exited": pid, "returncode": as subprocess reports it (-N: killed by signal N)}.

    server = ForkServer(); proc = server.start(["train.py", "config/gpt_tiny.py"], env)   # proc acts as a Popen

Where the server has ended (it found CUDA initialised after its imports, or it failed), start() raises OSError and
script_runs.run_script starts a fresh python instead.
"""
import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from music_scaling_laws import REPO
from music_scaling_laws.lifetime import set_parent_death_signal
from music_scaling_laws.study.as_python import MAX_MESSAGE, PRELOAD, ScriptRun, request, run_as_python

SERVER_GONE = -signal.SIGHUP  # the returncode of a child whose server was killed while it ran (ForkServer.wait)


def running(pid):
    """Whether process pid runs (a zombie, ended but not reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone; or no /proc (not Linux): asked the kernel instead
        if os.path.isdir("/proc/self"):
            return False
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def returncode(status):
    """subprocess's returncode of a waitpid status: the exit code, or -N for a process killed by signal N."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_child(request, out_fd):
    """In the forked child: become the process `python SCRIPT ARGS` would be, run the script, exit with its code.
    Never returns."""
    code = 1
    try:
        os.setsid()  # a session of its own: the study kills whatever it leaves there (script_runs.end_session)
        set_parent_death_signal(signal.SIGHUP)  # the server gone (the study killed): checkpoint and stop
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh python: KeyboardInterrupt
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(null)
        os.close(out_fd)
        threads = request["env"].get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            import torch
            torch.set_num_threads(int(threads))
        code = run_as_python(request)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 -- the reader is gone; nothing left to tell it
                pass
        os._exit(code)


def serve(sock):
    """The server's loop: fork a child per request, report each child's pid and, when it ends, its returncode; exit
    when the study closes its end."""
    for name in PRELOAD:
        __import__(name)
    import torch
    if torch.cuda.is_initialized():  # a forked child cannot use a CUDA context it inherits: the study starts fresh
        return                       # pythons instead (script_runs.run_script)
    children = set()
    while True:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if ready:
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
            if not message:
                break
            pid = os.fork()
            if pid == 0:
                sock.close()
                run_child(json.loads(message), fds[0])
            os.close(fds[0])
            children.add(pid)
            sock.send(json.dumps({"pid": pid}).encode())
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                sock.send(json.dumps({"exited": pid, "returncode": returncode(status)}).encode())


class ForkedProcess(ScriptRun):
    """A child of the server as script_runs uses a subprocess.Popen: pid, stdout, wait(), poll(), returncode,
    send_signal()."""

    def __init__(self, server, pid, stdout):
        self.server, self.pid, self.stdout, self.returncode = server, pid, stdout, None

    def wait(self):
        self.returncode = self.server.wait(self.pid)
        return self.returncode

    def poll(self):
        self.returncode = self.server.wait(self.pid, block=False)
        return self.returncode

    @property
    def server_gone(self):
        """Whether the server ended (was killed) before this child did: its returncode is then SERVER_GONE."""
        return self.server.closed and self.pid not in self.server.exited


class ForkServer:
    """The study's side: starts the server (from the main thread: the kernel's parent-death signal follows the
    thread that started a process), then start() forks a run from it; safe to call from several threads."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], cwd=REPO,
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL))
        theirs.close()
        self.sock, self.lock, self.changed = ours, threading.Lock(), threading.Condition()
        self.started, self.exited = [], {}  # pids in the order the server forked them; {pid: returncode}
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                message = self.sock.recv(MAX_MESSAGE)
            except OSError:
                message = b""
            with self.changed:
                if not message:  # the server is gone: every child still running is reported killed with it
                    self.closed = True
                    self.changed.notify_all()
                    return
                reply = json.loads(message)
                if "pid" in reply:
                    self.started.append(reply["pid"])
                else:
                    self.exited[reply["exited"]] = reply["returncode"]
                self.changed.notify_all()

    def start(self, args, env):
        """Fork `python args[0] args[1:]` with env (the whole environment) and this process's working directory;
        returns its ForkedProcess, whose stdout carries the child's stdout and stderr together."""
        read_end, write_end = os.pipe()
        message = request(args, env)
        with self.lock:  # one request at a time: the next "pid" reply is this request's
            with self.changed:
                if self.closed:
                    raise OSError("the fork server has ended")
                count = len(self.started)
            try:
                socket.send_fds(self.sock, [message], [write_end])
            finally:
                os.close(write_end)
            with self.changed:
                self.changed.wait_for(lambda: len(self.started) > count or self.closed)
                if self.closed:
                    os.close(read_end)
                    raise OSError("the fork server has ended")
                pid = self.started[count]
        return ForkedProcess(self, pid, os.fdopen(read_end, "rb"))

    def wait(self, pid, block=True):
        """A child's returncode; block=False: None while it runs. When the server has ended first (killed), the child
        got SIGHUP (its parent-death signal), on which train.py writes its checkpoint: it is waited for by its pid
        (a child of nobody here, so its exit status is lost) and reported as SERVER_GONE."""
        with self.changed:
            ended = lambda: pid in self.exited or self.closed  # noqa: E731
            if not (self.changed.wait_for(ended) if block else ended()):
                return None
            if pid in self.exited:
                return self.exited[pid]
        while running(pid):
            if not block:
                return None
            time.sleep(0.05)
        return SERVER_GONE

    def close(self):
        """End the server (its running children get SIGHUP) and wait for it."""
        try:  # shutdown, not only close: the reading thread's recv would keep the socket open, the server waiting
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass
        self.sock.close()
        self.proc.wait()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
