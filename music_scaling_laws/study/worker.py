"""
GPU time goes to steps: one long-lived process per device slot runs a study's trainings, test-loss passes and
sample sets one after another in itself, instead of a process per run. Measured on one H200 with a process per run
(issue #30): study_quick's 121 trainings took 5 min 22 s of wall-clock for 3 min 08 s of steps, the GPU idle while
each run started python, imported torch, created its CUDA context and compiled its model. A worker pays these once:
its CUDA context, its caching allocator, the modules it imported and the graphs torch.compile made stay for the next
run; a run of a shape the worker has compiled before reuses the graph (dynamo's cache in this process), and any other
compilation is read from inductor's cache on disk (script_runs.compile_cache_env: TORCHINDUCTOR_CACHE_DIR, one
folder for every process of every study, so it survives the worker and the study).

A run in a worker is the run `python SCRIPT ARGS` trains: the script runs as __main__ (runpy) with the run's
environment, working directory, arguments and CPU thread count, its stdout and stderr the study's pipe, and the
default signal handlers; train.py seeds everything it draws from and configures from its own defaults (the
configurator never changes a module's globals), so on CPU the numbers are bit for bit those of a fresh python
(tests/test_worker.py). What stays from an earlier run is what a run must not depend on: imported modules, torch's
compiled graphs and allocator caches; torch's process-wide settings (TF32, cuDNN's, the default dtype) are restored
after each run. Two settings of dynamo are the worker's own: shapes stay static (no automatic
dynamic-shape recompilation, which would change a later run's kernels from those a fresh process compiles) and a
graph cache per function large enough for every shape of a study.

Stops: the study sends its stop signal to the worker, where the running train.py catches it, checkpoints and ends
its run with its one line; a worker idle between runs ends on SIGTERM/SIGHUP. The worker gets SIGHUP when the study
dies (Linux prctl, set from the study's main thread): a training running then checkpoints (train.py's SIGHUP
handling), and the worker ends with its run or at once, so a killed study leaves no worker.

Protocol (a SOCK_SEQPACKET socket pair, one JSON message per packet, as fork_server.py's): the study sends
{"script", "args", "env", "cwd"} with the write end of the run's output pipe attached (SCM_RIGHTS); the worker
answers {"started": its pid} and, when the script has ended, {"exited": its pid, "returncode"}.

    worker = Worker(); run = worker.start(["train.py", "config/gpt_tiny.py"], env)   # run acts as a Popen
"""
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from music_scaling_laws import REPO
from music_scaling_laws.lifetime import set_parent_death_signal
from music_scaling_laws.study.as_python import MAX_MESSAGE, PRELOAD, ScriptRun, request, run_as_python

GRAPHS_PER_FUNCTION = 256  # dynamo's compiled graphs kept per function (its default, 8, is fewer than a study's shapes)


def configure_torch():
    """The worker's own settings of torch, once: static shapes, room for every shape's graph, and inductor's compile
    processes (started by the first compilation, then kept) writing to /dev/null, not to the output of the run that
    happened to start them."""
    import torch._dynamo.config as dynamo
    import torch._inductor.config as inductor
    if hasattr(inductor, "worker_suppress_logging"):
        inductor.worker_suppress_logging = True
    dynamo.automatic_dynamic_shapes = False
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, GRAPHS_PER_FUNCTION)
    for name in ("accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), 4 * GRAPHS_PER_FUNCTION))


def global_settings():
    """torch's process-wide settings a script may change (train.py turns TF32 on for CUDA): restored after every
    run, so that a test-loss pass after a training computes as in a fresh process."""
    import torch
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "matmul_precision": torch.get_float32_matmul_precision(), "dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(), "grad": torch.is_grad_enabled()}


def restore_global_settings(saved):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
    torch.set_float32_matmul_precision(saved["matmul_precision"])
    torch.set_default_dtype(saved["dtype"])
    torch.use_deterministic_algorithms(saved["deterministic"])
    torch.set_grad_enabled(saved["grad"])


def run_script_here(request, out_fd):
    """Run one script in this process as `python SCRIPT ARGS` would, its output on out_fd; returns its exit status
    as a process would have it (0, 1, 128 + SIGINT after Ctrl-C)."""
    import torch
    saved_path, saved_settings = list(sys.path), global_settings()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    code = 1
    try:
        threads = request["env"].get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else DEFAULT_THREADS)
        code = run_as_python(request)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 -- the reader is gone; nothing left to tell it
                pass
        null = os.open(os.devnull, os.O_WRONLY)  # the pipe closed: the study reads the end of the run's output
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        sys.path[:] = saved_path
        restore_global_settings(saved_settings)
        sys.argv = [sys.argv[0]]
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the next run's memory is its own, as in a fresh process
            for index in range(torch.cuda.device_count()):  # and so is its peak_mem_bytes (a peak since the reset)
                torch.cuda.reset_peak_memory_stats(index)
    return code


DEFAULT_THREADS = 1  # set in serve: torch's thread count in this process before any run changed it


def serve(sock):
    """The worker's loop: run each request's script, answer when it has ended; exit when the study has gone."""
    global DEFAULT_THREADS
    for name in PRELOAD:
        __import__(name)
    import torch
    DEFAULT_THREADS = torch.get_num_threads()
    configure_torch()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        except OSError:
            return
        if not message:
            return
        try:
            sock.send(json.dumps({"started": os.getpid()}).encode())
            code = run_script_here(json.loads(message), fds[0])
            sock.send(json.dumps({"exited": os.getpid(), "returncode": code}).encode())
        except OSError:  # the study has gone
            return


class RunOutput:
    """The read end of a run's output pipe, read until the run has ended and the pipe is drained, rather than until
    every holder of its write end has closed it: a process a script leaves running in the worker (inductor's compile
    workers, wandb's service) may hold it open for the worker's life, and the study would wait for it forever."""

    def __init__(self, fd, ended):
        self.fd, self.ended = fd, ended

    def read1(self, n=65536):
        while self.fd is not None:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                return os.read(self.fd, n)  # b"" at the end of the pipe
            if self.ended():  # what the run wrote came before its end: drained, nothing more is its
                ready, _, _ = select.select([self.fd], [], [], 0)
                return os.read(self.fd, n) if ready else b""
        return b""

    def read(self):
        return b"".join(iter(self.read1, b""))

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()


class WorkerRun(ScriptRun):
    """A script running in a worker, as script_runs uses a subprocess.Popen: pid (the worker's), stdout, wait(),
    poll(), returncode, send_signal(). own_session False: the worker is no session of the run's to clean up after."""
    own_session = False

    def __init__(self, worker, stdout):
        self.worker, self.pid, self.stdout, self.returncode = worker, worker.proc.pid, stdout, None

    def wait(self):
        self.returncode = self.worker.wait()
        return self.returncode

    def poll(self):
        self.returncode = self.worker.wait(block=False)
        return self.returncode

    @property
    def worker_gone(self):
        """Whether the worker itself ended (was killed) during this run, rather than the script failing in it."""
        return self.worker.gone


class Worker:
    """The study's side of one worker: start it from the main thread (the kernel's parent-death signal follows the
    thread that started a process), then start() one script at a time in it."""

    def __init__(self, env=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", __name__, str(theirs.fileno())], cwd=REPO,
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **(env or {})},
                                     preexec_fn=lambda: set_parent_death_signal(signal.SIGHUP))
        theirs.close()
        self.sock, self.changed = ours, threading.Condition()
        self.busy, self.returncode, self.gone, self.started = False, None, False, False
        threading.Thread(target=self._read, daemon=True).start()

    def alive(self):
        return not self.gone and self.proc.poll() is None

    def _read(self):
        while True:
            try:
                message = self.sock.recv(MAX_MESSAGE)
            except OSError:
                message = b""
            with self.changed:
                if not message:  # the worker has ended (killed): its run with it
                    self.gone = True
                    self.changed.notify_all()
                    return
                reply = json.loads(message)
                if "exited" in reply:
                    self.returncode = reply["returncode"]
                else:
                    self.started = True
                self.changed.notify_all()

    def start(self, args, env):
        """Run `python args[0] args[1:]` in the worker with env (the whole environment) and this process's working
        directory; returns its WorkerRun, whose stdout carries the script's stdout and stderr together. OSError
        when the worker has ended."""
        read_end, write_end = os.pipe()
        message = request(args, env)
        with self.changed:
            if not self.alive():
                os.close(read_end)
                os.close(write_end)
                raise OSError("the worker has ended")
            self.busy, self.returncode, self.started = True, None, False
        try:
            socket.send_fds(self.sock, [message], [write_end])
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with self.changed:
            self.changed.wait_for(lambda: self.started or self.gone)
        return WorkerRun(self, RunOutput(read_end, lambda: self.returncode is not None or self.gone))

    def wait(self, block=True):
        """The running script's exit status (the worker's own, as subprocess reports it, where the worker died
        with it); block=False: None while it runs."""
        with self.changed:
            ended = lambda: self.returncode is not None or self.gone  # noqa: E731
            if not (self.changed.wait_for(ended) if block else ended()):
                return None
            if self.returncode is not None:
                self.busy = False
                return self.returncode
        code = self.proc.wait()
        return code if code != 0 else 1

    def close(self):
        """End the worker (a run in it gets SIGHUP, as when the study dies) and wait for it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
        self.proc.wait()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
