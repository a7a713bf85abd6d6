"""
How a study runs the repository's scripts: each as a process whose output is kept in a log (run_script), and how
a stop signal to the study reaches them. Which trainings run when and where is train_runs.py's; the trainings as
submitit/SLURM jobs are jobs.py's; the projected time of a plan (--estimate) is estimate.py's.

A script runs in one of three ways (the study's fork_runs and worker_runs knobs; study.py chooses):
  fresh python   subprocess.Popen of `python SCRIPT ARGS` (fork_runs=False: the plain mode, to debug a study in)
  forked         a fork of the fork server, which imported torch and the training code once (fork_server.py; the
                 default on CPU and MPS: 1.5-3 s less a run)
  in a worker    one long-lived process per device slot runs the scripts one after another in itself (worker.py;
                 the default on CUDA: one CUDA context and one compilation cache for all of a slot's runs)
Each is the run a fresh python would train, bit for bit on CPU (tests/test_fork_server.py, tests/test_worker.py).

Stops: SIGTERM or SIGINT to the study is passed on to the script running (pass_stop_signals_on), or to the
study's submitit jobs (jobs.py); the study then exits with one line saying that the same command continues. A
fresh or forked script runs in a session of its own, and whatever it leaves running there when it ends is killed (a
process that outlived it would hold the study's output pipe open, and the study would wait for it forever).
"""
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from music_scaling_laws import REPO
from music_scaling_laws.errors import UserError
from music_scaling_laws.training.compile_cache import compile_cache_dir
from music_scaling_laws.data.dataset import read_json, write_json_atomic
from music_scaling_laws.lifetime import set_parent_death_signal
from music_scaling_laws.run_files import is_finished, read_results

# the scripts start_fork_server's server starts, and those a worker runs (bench.py's timing wants a fresh process)
FORKED_SCRIPTS = ("train.py", "train_rnn.py", "calc_perplexity.py", "sample.py", "bench.py")
WORKER_SCRIPTS = ("train.py", "train_rnn.py", "calc_perplexity.py", "sample.py")
WORKER_RUNS = ("auto", "True", "False")  # the study's worker_runs knob
_fork_server = None  # fork_server.ForkServer once started
_workers = None      # [worker.Worker] once start_runs chose workers; a worker serves the runs of one device
_workers_lock = threading.Lock()



class Timings:
    """Seconds spent in each step, kept in out_dir/timings.json across invocations (a resumed study adds up), and
    per training process its wall-clock against its steps' seconds (run_timings.json): what a run costs besides
    its steps (start-up, evaluations, the final exact pass, checkpoints)."""

    def __init__(self, path, runs_path=None):
        self.path, self.runs_path = path, runs_path
        self.data = read_json(path) if os.path.isfile(path) else {}
        self.runs = read_json(runs_path) if runs_path and os.path.isfile(runs_path) else {}

    def add(self, step, seconds):
        """Count seconds to step (saved at once: a killed study keeps what it spent); returns seconds."""
        self.data[step] = self.data.get(step, 0.0) + seconds
        write_json_atomic(self.data, self.path, indent=1)
        return seconds

    def add_run(self, r, seconds):
        """Count a finished training process of run r: its wall-clock seconds and its steps' (results.json)."""
        if self.runs_path and is_finished(r["run_dir"]):
            before = self.runs.get(r["name"], {"wall_s": 0.0, "steps_s": 0.0})
            steps = read_results(r["run_dir"]).get("process_steps_s") or 0.0
            self.runs[r["name"]] = {"wall_s": before["wall_s"] + seconds, "steps_s": before["steps_s"] + steps}
            write_json_atomic(self.runs, self.runs_path, indent=1)
        return seconds


_running = set()   # the scripts running now (Popen or fork_server.ForkedProcess), to pass a stop signal on
_stop_signals = []  # the names of the stop signals the study received
_job_sets = []      # the study's jobs.Jobs: a stop cancels their jobs in flight, and the study waits for them
_in_job = False     # this process is a submitit job (jobs.run_job), not the study


def pass_stop_signals_on():
    """SIGTERM or SIGINT to the study (docker stop, pre-emption, Ctrl-C) is passed on to every script it runs:
    train.py then writes a checkpoint and exits, the others stop their workers and exit, and the study stops with
    one line; run again, it resumes. A second signal is passed on too (train.py then ends at once). The study's
    submitit/SLURM jobs in flight are cancelled (jobs.Jobs.cancel: train.py checkpoints) and waited for, so a stopped
    study leaves no job training. Between scripts the study itself stops at once. The scripts run in their own session, so a terminal's Ctrl-C reaches
    them only through here."""
    def forward(signum, frame):
        _stop_signals.append(signal.Signals(signum).name)
        busy = [jobs for jobs in _job_sets if jobs.in_flight()]
        if not _running and not busy:  # the study's own work (planning, fits, report): nothing to wait for
            stopped("")
        for proc in list(_running):
            proc.send_signal(signum)
        for jobs in busy:  # submitit/SLURM jobs are no processes of the study: cancelled, then waited for
            jobs.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def stopped(what):
    """The study's one line after a stop signal, and its exit: at once from the main thread (everything is saved
    by then, and the interpreter's teardown of torch took 1.6-3 s on a loaded 2-core machine, a good part of the
    seconds a stop may take); from a training's thread (parallel runs) as the failure of that training."""
    message = (f"stopped by {_stop_signals[0]}{' during ' + what if what else ''}; the same command continues "
               f"the study (finished runs are kept, an interrupted one resumes from its checkpoint)")
    # a training's thread (train_runs.train_all counts it as that run's failure and stops the study after the round)
    # or a submitit job (jobs.run_job: its answer is this line, which the study waits for)
    if _in_job or threading.current_thread() is not threading.main_thread():
        raise UserError(message)
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def end_session(proc):
    """Wait for a script, then kill whatever it left running in its session (pool workers or tools that did not
    die with it): they would keep its output pipe open and run_script would wait for them forever."""
    proc.wait()
    if not getattr(proc, "own_session", True):  # a worker's run: the worker is no session of the run's
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left: the usual case
        pass


def run_mode(cfg):
    """How the study starts its scripts: 'fresh' (fork_runs=False: a fresh python each, the mode to debug a study
    in), 'worker' (worker_runs True, or 'auto' where the trainings run on CUDA) or 'fork' (the fork server)."""
    if not cfg["fork_runs"]:
        return "fresh"
    if str(cfg.get("worker_runs", "auto")) != "auto":
        return "worker" if str(cfg["worker_runs"]) == "True" else "fork"
    devices = [d for d in cfg.get("devices", "").split(",") if d.strip()] or [cfg["device"]]
    if any(d.strip().startswith("cuda") for d in devices):
        return "worker"
    if cfg["device"] == "auto":
        import torch  # here: torch takes seconds to import, and a study on a named device never needs it here
        return "worker" if torch.cuda.is_available() else "fork"
    return "fork"


def compile_cache_env():
    """The environment that gives every process of every study one persistent torch.compile cache
    (compile_cache.compile_cache_dir, with inductor's FX graph and autograd caches on), so a shape compiled once,
    by any run of any study, is read from disk rather than compiled again. Settings already in the environment are
    kept."""
    env = {flag: "1" for flag in ("TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE") if flag not in os.environ}
    cache = compile_cache_dir(dict(os.environ))  # the user's folder where set, else ours (not torch's /tmp default)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    return env


def start_runs(cfg):
    """Choose how this study starts its scripts (run_mode) and start what that needs; call it from the main
    thread. Every process the study starts from now on shares the persistent compile cache (compile_cache_env)."""
    global _workers
    os.environ.update(compile_cache_env())
    mode = run_mode(cfg)
    if mode == "fork":
        start_fork_server()
    elif mode == "worker" and _workers is None:
        _workers = []
        print("[runs] trainings, test losses and samples run in one long-lived worker process per device slot "
              "(worker_runs; fork_runs=False runs each in a fresh python, the mode to debug a study in)", flush=True)
    return mode


def device_key(args):
    """The device a script's arguments name (its last --device), which decides the worker that runs it."""
    key = ""
    for k, a in enumerate(args):
        if a.startswith("--device="):
            key = a.split("=", 1)[1]
        elif a == "--device" and k + 1 < len(args):
            key = str(args[k + 1])
    return "cuda:0" if key == "cuda" else key or "auto"  # 'cuda' is the first visible GPU


def start_workers(devices):
    """Workers for runs at once on these devices (one entry per slot), started now from the main thread (the
    kernel's parent-death signal follows the thread that starts a process; run_script may be called from threads
    that end). Nothing outside worker mode."""
    if _workers is None or threading.current_thread() is not threading.main_thread():
        return
    from music_scaling_laws.study.worker import Worker
    with _workers_lock:
        _workers[:] = [w for w in _workers if w.alive()]
        for device in set(devices):
            have = sum(1 for w in _workers if w.device == device)
            for _ in range(devices.count(device) - have):
                w = Worker()
                w.device = device
                _workers.append(w)


def worker_start(args, env):
    """Start a script in an idle worker of its device (a new one from the main thread); None where no worker can
    take it (a fresh python then)."""
    key = device_key(args)
    with _workers_lock:
        _workers[:] = [w for w in _workers if w.alive()]
        worker = next((w for w in _workers if w.device == key and not w.busy), None)
        if worker is None:
            if threading.current_thread() is not threading.main_thread():
                return None
            from music_scaling_laws.study.worker import Worker
            worker = Worker()
            worker.device = key
            _workers.append(worker)
        worker.busy = True
    try:
        return worker.start(args, env)
    except OSError:
        return None


def start_fork_server():
    """From now on, FORKED_SCRIPTS start by a fork of one process that has imported torch and train.py once
    (fork_server.py: 1.5-3 s saved a run); call it from the main thread. Each run is still a process of its own,
    the run a fresh python would be."""
    global _fork_server
    if _fork_server is None:
        from music_scaling_laws.study.fork_server import ForkServer
        _fork_server = ForkServer()


def run_script(args, log_path, what, echo=True, env=None, python_args=()):
    """Run a repository script with this interpreter (python_args before the script: torchrun's module), as a fresh
    process or, after start_fork_server, forked from the fork server (FORKED_SCRIPTS); its output is shown live and
    kept in log_path (progress bars reduced to their last state); returns the seconds it took. A failure stops the
    study with one line naming the log."""
    if _stop_signals:  # a stop came while this run was being set up (parallel trainings)
        stopped(what)
    t0 = time.time()
    cmd = [sys.executable, *python_args, os.path.join(REPO, args[0]), *map(str, args[1:])]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        # a study killed outright (SIGKILL) still stops its script: SIGHUP, on which train.py checkpoints first
        # (and stops writing to the pipe nobody reads any more); the others end at once, their workers with them
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        proc = None
        if _workers is not None and not python_args and args[0] in WORKER_SCRIPTS:
            proc = worker_start(cmd[1:], full_env)
        elif _fork_server and not python_args and args[0] in FORKED_SCRIPTS:
            try:
                proc = _fork_server.start(cmd[1:], full_env)
            except OSError:  # the server has ended (e.g. it found CUDA initialised, which a fork cannot inherit)
                proc = None
        if proc is None:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=full_env, preexec_fn=lambda: set_parent_death_signal(signal.SIGHUP))
        _running.add(proc)
        if _stop_signals:  # the signal came between the check above and now: pass it on here
            proc.send_signal(signal.SIGTERM)
        threading.Thread(target=end_session, args=(proc,), daemon=True).start()
        pending = ""
        last_lines = []
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            text = chunk.decode(errors="replace")
            if echo:
                sys.stdout.write(text)
                sys.stdout.flush()
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                line = line.rsplit("\r", 1)[-1]
                log.write(line + "\n")
                if line.strip():
                    last_lines = (last_lines + [line.strip()])[-5:]
        proc.wait()
        proc.stdout.close()
        _running.discard(proc)
        if pending.strip():
            log.write(pending.rsplit("\r", 1)[-1] + "\n")
            last_lines.append(pending.strip())
    if _stop_signals:  # also when the script finished just as the signal came: the study stops here
        stopped(what)
    if proc.returncode != 0 and getattr(proc, "server_gone", False):
        raise UserError(f"{what} stopped: the fork server (pid {proc.server.proc.pid}) was killed; the run got SIGHUP and "
                        f"checkpointed, the same command resumes it -- its output in {log_path}")
    if proc.returncode != 0 and getattr(proc, "worker_gone", False):
        raise UserError(f"{what} failed: its worker process (pid {proc.pid}) ended (exit {proc.returncode}) -- its "
                        f"output in {log_path}")
    if proc.returncode != 0:
        reason = next((l for l in reversed(last_lines) if l.startswith("error")), last_lines[-1] if last_lines else "")
        raise UserError(f"{what} failed (exit {proc.returncode}): {reason} -- full output in {log_path}")
    return time.time() - t0


def say(line):
    """Print a line in one write: lines printed by the threads that wait for parallel runs do not run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
