"""
How a study runs the repository's scripts: each as a subprocess whose output is kept in a log, the trainings
one at a time with live output or several at once on one device, and the projected time of a plan.

Several trainings on one GPU: small models are launch-bound (a step of gpt_tiny..gpt_large took 8-23 ms on
an H100 whatever the size), so while one process waits on the CPU another's kernels run; 4 gpt_small
processes together reached 2.4x one alone (issue #9, measured 2026-11-22). Each run is its own process with
its own seed, data order and checkpoints, so it is exactly the run it would be alone; on CPU its float sums
also depend on its thread count, which is the same for every run whatever parallel_runs (training_threads).

Stops: SIGTERM or SIGINT to the study is passed on to the script running (pass_stop_signals_on); the study then
exits with one line saying that the same command continues. Each script runs in a session of its own, and
whatever it leaves running there when it ends is killed (a process that outlived it would hold the study's
output pipe open, and the study would wait for it forever).

Several GPUs: the runs are spread over the study's `devices` (every visible GPU by default), each run pinned to
one (device_slots: one run on every device before a second on any; parallel_runs is then the runs per device).

Jobs (the study's `launcher`): 'local' runs the trainings as processes of the study, as above; 'slurm' makes each
training one SLURM job through submitit (https://github.com/facebookincubator/submitit), with the resources of the
study's slurm_* knobs; 'submitit_local' runs the very same jobs as local processes through submitit's
LocalExecutor (no SLURM: how the tests check the job path). A job runs run_job, which runs train.py as the local
launcher would, its output in the same logs/train_<run>.log; submitit's own files (its pickles of the call and
its answer, written and read only by this study, and the job's stdout/stderr) go to logs/submitit/. The study
process stays the conductor: it submits the runs, waits for them, and does everything after training itself.
A stopped study (Ctrl-C, SIGTERM) cancels its jobs with SIGTERM, and train.py writes its checkpoint; a job near
its time limit gets SLURM's SIGUSR2 (90 s ahead, submitit's setting) and stops the same way. If the study process
itself is killed, its SLURM jobs go on: wait for them (squeue --me) or scancel them before starting the study
again, or its new jobs for the same runs stop at train.py's lock with one line.
"""
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from music_scaling_laws import REPO
from music_scaling_laws.errors import UserError
from music_scaling_laws.data.dataset import load_dataset, read_json, write_json_atomic
from music_scaling_laws.lifetime import set_parent_death_signal, usable_cpus
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.study.report import fmt_duration
from music_scaling_laws.training import settings
from music_scaling_laws.run_files import ckpt_path, estimate_path, is_finished, log_path, read_results

MAX_AUTO_PARALLEL = 4   # more processes than this gained nothing further in the measurements above
GPU_MEMORY_SHARE = 0.8  # of the free GPU memory the concurrent runs may plan to use together
LAUNCHERS = ("local", "slurm", "submitit_local")
# the scripts start_fork_server's server starts
FORKED_SCRIPTS = ("train.py", "train_rnn.py", "calc_perplexity.py", "sample.py", "bench.py")
_fork_server = None  # fork_server.ForkServer once started


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


def pass_stop_signals_on():
    """SIGTERM or SIGINT to the study (docker stop, pre-emption, Ctrl-C) is passed on to every script it runs:
    train.py then writes a checkpoint and exits, the others stop their workers and exit, and the study stops with
    one line; run again, it resumes. A second signal is passed on too (train.py then ends at once). Between
    scripts the study itself stops at once. The scripts run in their own session, so a terminal's Ctrl-C reaches
    them only through here."""
    def forward(signum, frame):
        _stop_signals.append(signal.Signals(signum).name)
        if not _running:  # the study's own work (planning, fits, report): nothing to wait for
            stopped("")
        for proc in list(_running):
            proc.send_signal(signum)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def stopped(what):
    """The study's one line after a stop signal, and its exit: at once from the main thread (everything is saved
    by then, and the interpreter's teardown of torch took 1.6-3 s on a loaded 2-core machine, a good part of the
    seconds a stop may take); from a training's thread (parallel runs) as the failure of that training."""
    message = (f"error: stopped by {_stop_signals[0]}{' during ' + what if what else ''}; the same command continues "
               f"the study (finished runs are kept, an interrupted one resumes from its checkpoint)")
    if threading.current_thread() is not threading.main_thread():
        sys.exit(message)
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(1)


def end_session(proc):
    """Wait for a script, then kill whatever it left running in its session (pool workers or tools that did not
    die with it): they would keep its output pipe open and run_script would wait for them forever."""
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left: the usual case
        pass


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
        if _fork_server and not python_args and args[0] in FORKED_SCRIPTS:
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
        _running.discard(proc)
        if pending.strip():
            log.write(pending.rsplit("\r", 1)[-1] + "\n")
            last_lines.append(pending.strip())
    if _stop_signals:  # also when the script finished just as the signal came: the study stops here
        stopped(what)
    if proc.returncode != 0:
        reason = next((l for l in reversed(last_lines) if l.startswith("error")), last_lines[-1] if last_lines else "")
        raise UserError(f"{what} failed (exit {proc.returncode}): {reason} -- full output in {log_path}")
    return time.time() - t0


def say(line):
    """Print a line in one write: lines printed by the threads that wait for parallel runs do not run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def train_all(plan, cfg, timings, logs):
    """Train every run not finished yet (an interrupted one resumes from its ckpt.pt): one at a time with live
    output and a study ETA, or parallel_runs at once with their output in the logs. A run trained on other data
    than its data_dir holds now is refused (refuse_other_data), or with overwrite trained again from scratch."""
    todo = []
    again = refuse_other_data(plan, cfg)
    for i, r in enumerate(plan, start=1):
        if r["name"] in again:
            print(f"{run_head(r, i, len(plan))}: trained on other data ({again[r['name']]}); trained again "
                  f"(overwrite=True)")
            todo.append((i, {**r, "fresh": True}))
        elif is_finished(r["run_dir"]):
            changed = changed_settings(r)
            print(f"{run_head(r, i, len(plan))}: finished earlier, skipped"
                  + (f" -- WARNING: trained with other settings than the config now gives ({changed}); delete "
                     f"{r['run_dir']} to train it again" if changed else ""))
        else:
            todo.append((i, r))
    if not todo:
        return
    launcher = cfg.get("launcher", "local")
    if launcher == "slurm":  # the scheduler decides what runs when: every run is submitted at once
        slots, jobs = [cfg["device"]] * len(todo), Jobs(cfg, logs)
    else:
        devices = study_devices(cfg)
        slots = device_slots(devices, parallel_runs(cfg, [r for _, r in todo], devices))
        jobs = Jobs(cfg, logs) if launcher == "submitit_local" else None
    n = min(len(slots), len(todo))
    env = training_env(cfg, n)
    if n == 1 and jobs is None:
        train_one_by_one(todo, len(plan), timings, logs, env, child_device_args(cfg["device"], slots[0]))
    else:
        train_in_parallel(todo, len(plan), slots[:n], timings, logs, env, jobs, cfg["device"])


def training_env(cfg, n):
    """The environment every training gets, n of them at once: OMP_NUM_THREADS of training_threads (torch reads it at
    start; on CPU the thread count also decides the order of float sums). A SLURM job's cores are its own node's:
    only an explicit train_threads is passed on there."""
    threads = training_threads(cfg, n) if cfg.get("launcher", "local") != "slurm" else cfg["train_threads"]
    return {"OMP_NUM_THREADS": str(threads)} if threads else {}


def on_cpu(device):
    """Whether trainings on this study's device setting compute on the CPU."""
    if device == "auto":
        import torch
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return device == "cpu"


def training_threads(cfg, n):
    """CPU threads of every training (OMP_NUM_THREADS; 0: leave it alone). train_threads when set. Otherwise on
    the CPU the number torch takes by default in this environment (OMP_NUM_THREADS if set, else one per core),
    for every run whatever parallel_runs: the thread count decides the order of the float sums, so a run's numbers
    would otherwise depend on how many ran beside it (with parallel_runs > 1 the runs then share the cores, which
    is slower than train_threads = cores / parallel_runs, but gives each run its numbers of a run alone). On a
    GPU, where the sums run on the device, the cores are shared among the parallel runs."""
    if cfg["train_threads"]:
        return cfg["train_threads"]
    if on_cpu(cfg["device"]):
        import torch
        return torch.get_num_threads()
    return max(1, usable_cpus() // n) if n > 1 else 0


@functools.lru_cache(maxsize=4)
def _dataset(data_dir):
    """The dataset at data_dir (its fingerprint, hashed from the files once, is kept with it)."""
    return load_dataset(data_dir)


def trained_data(run_dir):
    """{fingerprint, tokenizer, vocab_size} of the data a run was trained on, from results.json (finished) or
    ckpt.pt (interrupted); None when the folder holds neither."""
    ckpt = ckpt_path(run_dir)
    if is_finished(run_dir):
        r = read_results(run_dir)
        return {"fingerprint": r.get("data_fingerprint"), "tokenizer": r.get("tokenizer"),
                "vocab_size": r.get("vocab_size")}
    if os.path.isfile(ckpt):
        import torch
        try:  # mmap: the weights are not read, only the small dict that names the data
            data = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("dataset") or {}
        except Exception:  # a damaged checkpoint: train.py says so in one line when it resumes
            return None
        return {k: data.get(k) for k in ("fingerprint", "tokenizer", "vocab_size")}
    return None


def other_data(run):
    """Why a run's folder holds a training on other data than its data_dir holds now ('' when it does not)."""
    trained = trained_data(run["run_dir"])
    if trained is None:
        return ""
    data = _dataset(run["train_config"]["data_dir"])
    if trained["fingerprint"] == data.fingerprints()["fingerprint"]:
        return ""
    if trained["fingerprint"] is None:
        return "it records no data fingerprint"
    if (trained["tokenizer"], trained["vocab_size"]) != (data.meta.get("tokenizer"), data.vocab_size):
        return (f"a {trained['tokenizer']} tokenizer of {trained['vocab_size']} tokens, the data's is "
                f"{data.meta.get('tokenizer')} of {data.vocab_size}")
    return "the same tokenizer, other tokens"


def refuse_other_data(runs, cfg):
    """{name: why} of the runs (finished or interrupted) trained on other data than their data_dir holds now,
    the study's overwrite being set; without it a one-line refusal naming them, so that a study over another
    dataset never reuses them and report.md never mixes two datasets."""
    other = {r["name"]: why for r in runs if (why := other_data(r))}
    if other and not cfg["overwrite"]:
        names = list(other)
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise UserError(f"{len(names)} run(s) in {cfg['out_dir']} were trained on other data than "
             f"{runs[0]['train_config']['data_dir']} ({shown}; {names[0]}: {other[names[0]]}): --overwrite=True "
             f"trains them again on it, or choose another out_dir")
    return other


def run_head(r, i, n_runs):
    return f"[run {i}/{n_runs}] {r['name']} ({r['model_type']}, {r['n_params']:,} parameters, {r['tokens']:,} tokens)"


def train_args(r):
    """train.py's arguments for an unfinished run: resume from its checkpoint, or start it; a run of this study
    stopped before its first checkpoint left only its log (nothing to resume), so it starts again over it."""
    if r.get("fresh"):  # trained on other data (refuse_other_data): replaced, from scratch
        return [r["script"], *r["argv"], "--overwrite=True"], False
    resume = os.path.isfile(ckpt_path(r["run_dir"]))
    started = os.path.isfile(log_path(r["run_dir"]))
    extra = ["--init_from=resume"] if resume else ["--overwrite=True"] if started else []
    return [r["script"], *r["argv"], *extra], resume


def study_devices(cfg):
    """The devices a study's trainings run on: the `devices` knob ('cuda:0,cuda:1'); by default every visible GPU
    when `device` is 'auto' or 'cuda' and CUDA is there, else `device` itself (on CPU: cpu)."""
    if cfg.get("devices"):
        return [d.strip() for d in cfg["devices"].split(",") if d.strip()]
    if cfg["device"] in ("auto", "cuda"):
        import torch  # here: torch takes seconds to import, and most of a study never needs it in this process
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [cfg["device"]]


def device_slots(devices, per_device):
    """The places of the runs that train at once, in the order they are taken: one run on every device before a
    second on any, so 4 runs on 4 GPUs are one per GPU. A run takes the first free place (free_slot)."""
    return [device for _ in range(max(1, per_device)) for device in devices]


def free_slot(slots, busy):
    """The first place of slots that no running run holds (busy: the indices held)."""
    return next(k for k in range(len(slots)) if k not in busy)


def child_device_args(study_device, device):
    """train.py's extra arguments to pin a run on device ('--device=cuda:1'); none where it is the study's device,
    which every run's command line has already."""
    return [] if device == study_device else [f"--device={device}"]


def train_one_by_one(todo, n_runs, timings, logs, env, device_args=()):
    """Live output; the ETA comes from the seconds per FLOP of this session's finished runs, per family."""
    done_flops, done_seconds = {}, {}
    for k, (i, r) in enumerate(todo):
        remaining = [x for _, x in todo[k:]]
        eta = None
        if done_seconds:
            rate = {fam: done_seconds[fam] / done_flops[fam] for fam in done_seconds}
            overall = sum(done_seconds.values()) / sum(done_flops.values())
            eta = sum(rate.get(x["model_type"], overall) * x["flops_per_token"] * trains(x) for x in remaining)
        args, resume = train_args(r)
        args += device_args
        print(f"{run_head(r, i, n_runs)}: {'resuming from ckpt.pt' if resume else 'training'}; "
              f"{len(remaining)} run(s) to go, ETA {fmt_duration(eta) if eta is not None else 'after this run'}",
              flush=True)
        seconds = run_script(args, os.path.join(logs, f"train_{r['name']}.log"), f"training {r['name']}", env=env)
        timings.add("train", timings.add_run(r, seconds))
        fam = r["model_type"]
        done_seconds[fam] = done_seconds.get(fam, 0.0) + seconds
        done_flops[fam] = done_flops.get(fam, 0.0) + r["flops_per_token"] * trains(r)


def trains(r):
    """The tokens a run's own process trains (a wsd branch: its cooldown; study.branch_tokens)."""
    return r.get("trains", r["tokens"])


def train_in_parallel(todo, n_runs, slots, timings, logs, env, jobs=None, study_device=None):
    """As many trainings at once as slots, each pinned to its slot's device, started in plan order as others
    finish; as processes of the study, or as submitit jobs (jobs). A failed run stops new starts; the ones
    running finish (their checkpoints stay usable), then the study stops with the first failure's line."""
    t0, failure = time.time(), None
    n, spread = len(slots), len(set(slots)) > 1
    say(f"[train] {len(todo)} run(s), {n} at a time" + (f" on {', '.join(dict.fromkeys(slots))}" if spread else "")
        + (f" as {jobs.kind} jobs" if jobs else "") + f"; their output goes to {logs}/train_<run>.log")
    # where stdout is a log, a plain line of runs done every PROGRESS_INTERVAL_S (their output is in their logs)
    bar = progress_bar(total=len(todo), desc="[train] runs", unit="run", disable=sys.stdout.isatty())
    with ThreadPoolExecutor(n) as pool:
        # the costliest runs first (by FLOPs): the last ones to finish are short, so no slot idles long at the end
        running, queue = {}, sorted(todo, key=lambda item: -item[1]["flops_per_token"] * trains(item[1]))
        while running or (queue and failure is None and not _stop_signals):
            while queue and failure is None and not _stop_signals and len(running) < n:
                i, r = queue.pop(0)
                slot = free_slot(slots, {k for _, _, k in running.values()})
                args, resume = train_args(r)
                log, what = os.path.join(logs, f"train_{r['name']}.log"), f"training {r['name']}"
                say(f"{run_head(r, i, n_runs)}: {'resuming' if resume else 'started'}"
                    + (f" on {slots[slot]}" if spread else ""))
                if jobs:
                    future = pool.submit(jobs.run, r["name"], args, log, what, env, slots[slot])
                else:
                    future = pool.submit(run_script, args + child_device_args(study_device, slots[slot]), log, what,
                                         False, env)
                running[future] = (i, r, slot)
            finished, _ = wait(running, timeout=5, return_when=FIRST_COMPLETED)
            bar.set_postfix(running=", ".join(r["name"] for _, r, _ in running.values()))
            bar.refresh()
            if _stop_signals and jobs:
                jobs.cancel()  # SLURM jobs outlive the study: stopped with it (train.py checkpoints on the signal)
            for future in finished:
                i, r, _ = running.pop(future)
                bar.update()
                try:
                    seconds = timings.add_run(r, future.result())
                    say(f"[run {i}/{n_runs}] {r['name']}: done in {fmt_duration(seconds)}")
                except UserError as e:  # run_script's one-line failure, raised in the worker thread
                    failure = failure or str(e)
                    say(f"[run {i}/{n_runs}] {r['name']}: FAILED")
    bar.close()
    timings.add("train", time.time() - t0)  # wall-clock, not the sum of the runs' times
    if _stop_signals and (failure or queue):  # the runs it stopped failed for that reason, or none had started
        raise UserError(f"stopped by {_stop_signals[0]} during training; the same command continues the study (finished runs "
             f"are kept, an interrupted one resumes from its checkpoint)")
    if failure:
        raise UserError(failure)


def run_job(args, log_path, what, env, python_args=()):
    """A training inside a submitit job: run_script as the local launcher runs it, with the signals the job gets
    (SLURM's warning before its time limit, pre-emption, scancel) passed on to train.py, which then writes its
    checkpoint, so the next study resumes the run. Returns (seconds, None) or (None, the one-line failure): an
    exception would reach the study as a traceback."""
    pass_stop_signals_on()
    # submitit has SLURM send SIGUSR2 90 s before the job's time limit: taken as a stop, so train.py checkpoints
    # then rather than at the limit's SIGTERM
    signal.signal(signal.SIGUSR2, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
    try:
        return run_script(args, log_path, what, echo=False, env=env, python_args=python_args), None
    except UserError as e:
        return None, str(e)


def slurm_parameters(cfg, name):
    """submitit SlurmExecutor parameters of one run's job, from the study's slurm_* knobs."""
    extra = {}
    for word in shlex.split(cfg["slurm_args"]):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UserError(f"slurm_args entries must look like key=value (sbatch's --key=value), got {word!r}")
        extra[key.lstrip("-").replace("-", "_")] = value
    params = {"job_name": name, "time": cfg["slurm_time"], "nodes": 1, "ntasks_per_node": 1,
              "gpus_per_node": cfg["slurm_gpus_per_run"], "cpus_per_task": cfg["slurm_cpus_per_run"],
              "setup": [job_setup()], "additional_parameters": extra}
    if cfg["slurm_partition"]:
        params["partition"] = cfg["slurm_partition"]
    if cfg["slurm_mem_gb"]:
        params["mem"] = f"{cfg['slurm_mem_gb']}GB"
    return params


def job_setup():
    """The shell line a job runs first: the repository on the job's module path, so that it can load run_job."""
    return f"export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}"


def torchrun_args(gpus):
    """python arguments that start train.py on gpus processes of one node (torchrun), or none for one GPU."""
    return [] if gpus <= 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]


class Jobs:
    """The trainings of a study as submitit jobs: launcher 'slurm' (one SLURM job per run) or 'submitit_local'
    (the same jobs as local processes). run() submits one and waits for it; called from train_in_parallel's
    threads, one per run in flight."""

    def __init__(self, cfg, logs):
        import submitit  # here: only a study with a submitit launcher needs it
        self.cfg, self.kind, self.lock = cfg, cfg["launcher"], threading.Lock()
        self.jobs, self.cancelled = set(), False  # the jobs in flight; whether a stop cancelled them
        folder = os.path.join(logs, "submitit", "%j")
        if self.kind == "slurm":
            self.executor = submitit.SlurmExecutor(folder=folder)
        else:  # the repository on the jobs' module path by their environment (a setup line would put a shell
            # between submitit and the job, and the shell would not pass a cancel on)
            python_path = os.environ.get("PYTHONPATH", "")
            if REPO not in python_path.split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, python_path) if p)
            self.executor = submitit.LocalExecutor(folder=folder)
            self.executor.update_parameters(timeout_min=cfg["slurm_time"])

    def run(self, name, args, log_path, what, env, device):
        """Train one run as a job (on device with submitit_local); its seconds, or SystemExit with the run's
        one-line failure, as run_script."""
        gpus = 1
        with self.lock:  # the executor's parameters are shared by the threads
            if self.kind == "slurm":
                gpus = self.cfg["slurm_gpus_per_run"]
                self.executor.update_parameters(**slurm_parameters(self.cfg, name))
            else:  # pinned as submitit pins: CUDA_VISIBLE_DEVICES holds the device alone, the run sees it as cuda
                cuda = device.startswith("cuda")
                index = int(device.partition(":")[2] or 0) if cuda else None
                self.executor.update_parameters(gpus_per_node=1 if cuda else 0,
                                                visible_gpus=(index,) if cuda else ())
                if cuda:
                    args = args + ["--device=cuda"]
            job = self.executor.submit(run_job, args, log_path, what, env, torchrun_args(gpus))
            self.jobs.add(job)
        say(f"[job] {name}: submitit job {job.job_id}")
        try:
            seconds, failure = job.result()
        except Exception:  # the job ended without an answer: cancelled, killed, out of time or memory, a node lost
            raise UserError(f"{what} failed: submitit job {job.job_id} ended ({job.state}) without an answer -- the job's "
                 f"output in {job.paths.stdout.parent}")
        finally:
            with self.lock:
                self.jobs.discard(job)
        if failure:
            raise UserError(failure)
        return seconds

    def cancel(self):
        """Stop every job in flight, once (a stopped study) with SIGTERM, which run_job passes on to train.py: SLURM
        sends it on scancel; a local job gets it through its submitit controller (whose own cancel would SIGINT,
        then SIGKILL the job a second later, before train.py could write its checkpoint)."""
        with self.lock:
            jobs, self.jobs, self.cancelled = ([] if self.cancelled else list(self.jobs)), set(), True
            for job in jobs:
                try:
                    if self.kind == "slurm":
                        job.cancel(check=False)
                    else:
                        job._process.send_signal(signal.SIGTERM)
                except Exception as e:  # noqa: BLE001 -- a job that just ended, a scheduler that refuses
                    print(f"note: could not cancel submitit job {job.job_id}: {e}", flush=True)


def training_memory_bytes(r):
    """A planning estimate of a training process's GPU memory: fp32 weights, gradients and AdamW moments (16 bytes
    a parameter), activations (~40 bytes per token, layer and width in bf16; the same order for the LSTM's
    gates), the logits, and 1 GiB for the CUDA context and compiled kernels."""
    t = r["train_config"]
    tokens = t["batch_size"] * t["block_size"]
    vocab = 512  # an upper bound of the char vocabulary; BPE's larger logits are in the 10 bytes/token/entry term
    return 16 * r["n_params"] + 40 * tokens * t["n_layer"] * t["n_embd"] + 10 * tokens * vocab + 2 ** 30


def parallel_runs(cfg, runs, devices=None):
    """Runs at once on each device: the study's parallel_runs, or its automatic value: 1 on CPU and MPS (the cores
    are shared anyway); on CUDA as many as fit GPU_MEMORY_SHARE of the free memory (of the fullest of devices) by
    training_memory_bytes, at most MAX_AUTO_PARALLEL."""
    if cfg["parallel_runs"] > 0:
        return min(cfg["parallel_runs"], len(runs))
    import torch  # here: torch takes seconds to import, and most of a study never needs it in this process
    device = cfg["device"]
    if not (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())):
        return 1
    cuda = [d for d in devices or [device if device != "auto" else "cuda"] if d.startswith("cuda")] or ["cuda"]
    free = min(torch.cuda.mem_get_info(torch.device(d))[0] for d in cuda)
    need = max(training_memory_bytes(r) for r in runs)
    return max(1, min(MAX_AUTO_PARALLEL, len(runs), int(GPU_MEMORY_SHARE * free // need)))


# settings that change what a run computes, not how fast: runs that differ only in these are timed once
SPEED_NEUTRAL = ("learning_rate", "min_lr", "warmup_iters", "max_tokens", "max_iters", "out_dir", "wandb_run_name",
                 "init_from", "lr_schedule", "cooldown_frac", "branch_budgets", "branch_from")


def evaluation_tokens(r, val_tokens):
    """Tokens a run's forward-only passes read: its periodic validation estimates, the train-loss estimate at the
    end, and the exact pass over the validation split (val_tokens; 0 where the data is not prepared yet)."""
    t = r["train_config"]
    window = t["batch_size"] * t["block_size"]
    steps = trains(r) // (window * t["gradient_accumulation_steps"])
    estimates = (steps // t["eval_interval"] + 1 if t["eval_interval"] > 0 else 0) + 1
    return estimates * t["eval_iters"] * window + val_tokens


def estimate_plan(plan, cfg, have_data, logs, steps):
    """Time a few optimizer steps of every planned run on this device (bench.py: train.py's own step on the
    run's own batches) and project its training time: the warm-up (compilation), its tokens at the measured
    tokens/s, and its evaluations (evaluation_tokens, a forward pass costing a third of a training step). Runs that
    differ only in SPEED_NEUTRAL settings (a learning-rate sweep, token budgets) share one timing. Checkpoints and
    start-up are not included (~0.1 s a run forked by the fork server, on the 2-core CPU sandbox)."""
    total, rows, timed = 0.0, [], {}
    env = training_env(cfg, max(1, cfg["parallel_runs"]))  # timed on the threads each training will have
    data_dir = plan[0]["train_config"]["data_dir"] if plan else ""  # every run's: the study's dataset
    val_tokens = len(_dataset(data_dir).split("val")) if have_data and plan else 0
    width = max([14] + [len(r["name"]) for r in plan])
    print(f"{'run':{width}s} {'tokens':>13s} {'tokens/s':>11s} {'warm-up':>8s} {'projected':>11s}")
    for r in plan:
        key = tuple(sorted((k, v) for k, v in r["train_config"].items() if k not in SPEED_NEUTRAL))
        out = timed.get(key) or estimate_path(cfg["out_dir"], r["name"])
        if key not in timed:
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shape = [f"--{k}={r['train_config'][k]}" for k in ("model_type", "n_layer", "n_head", "n_embd")]
            args = ["bench.py", *r["argv"], *shape, "--bench_warmup=2", f"--bench_iters={steps}", f"--json_out={out}"]
            if not have_data:  # the dataset is prepared by the study itself: time on random tokens meanwhile
                args += ["--synthetic=True", "--vocab_size=128"]
            run_script(args, os.path.join(logs, f"estimate_{r['name']}.log"), f"estimating {r['name']}", echo=False,
                       env=env)
            timed[key] = out
        bench = read_json(out)
        seconds = (bench["warmup_s"] + trains(r) / bench["tokens_per_s"]
                   + evaluation_tokens(r, val_tokens) / (3 * bench["tokens_per_s"]))
        total += seconds
        rows.append({"run": r["name"], "tokens": r["tokens"], "tokens_per_s": bench["tokens_per_s"],
                     "warmup_s": bench["warmup_s"], "projected_s": seconds, "device": bench["device_name"]})
        print(f"{r['name']:{width}s} {r['tokens']:13,d} {bench['tokens_per_s']:11,.0f} {bench['warmup_s']:7.1f}s "
              f"{fmt_duration(seconds):>11s}" + ("  (one epoch: unknown before prepare.py)" if not r["tokens"] else ""),
              flush=True)
    write_json_atomic({"runs": rows, "projected_total_s": total}, estimate_path(cfg["out_dir"]))
    print(f"projected total, one run at a time: {total:.0f} s")
    at_once = cfg["parallel_runs"]
    if at_once > 1 and on_cpu(cfg["device"]) and at_once * max(1, cfg["train_threads"]) <= usable_cpus():
        print(f"with parallel_runs = {at_once} on {usable_cpus()} cores: about {total / at_once:.0f} s (each run on "
              f"cores of its own; the rounds of a learning-rate sweep leave some idle)")
    else:
        print("parallel_runs > 1 overlaps runs on a GPU (not projected)")
    return total


def changed_settings(run):
    """'key: trained -> now; ...' for the settings that change a result (settings.changed_settings, train.py's own
    rule) where the finished run's results.json differs from the run's config as the study resolves it today."""
    trained = read_results(run["run_dir"]).get("config") or {}
    return "; ".join(settings.changed_settings(trained, run["train_config"]))


