"""
The trainings of a study as jobs (the study's `launcher`): 'slurm' makes each training one SLURM job through
submitit (https://github.com/facebookincubator/submitit), with the resources of the study's slurm_* knobs;
'submitit_local' runs the very same jobs as local processes through submitit's LocalExecutor (no SLURM: how the
tests check the job path). A job runs run_job, which runs train.py as the local launcher would
(script_runs.run_script), its output in the same logs/train_<run>.log; submitit's own files (its pickles of the
call and its answer, written and read only by this study, and the job's stdout/stderr) go to logs/submitit/. The
study process stays the conductor: it submits the runs, waits for them, and does everything after training itself.

A stopped study (Ctrl-C, SIGTERM) cancels its jobs with SIGTERM and waits for them to end (script_runs passes the
stop to every Jobs in flight), and train.py writes its checkpoint; a job near its time limit gets SLURM's SIGUSR2
(90 s ahead, submitit's setting) and stops the same way. If the study process itself is killed, its SLURM jobs go
on: wait for them (squeue --me) or scancel them before starting the study again, or its new jobs for the same runs
stop at train.py's lock with one line.
"""
import os
import shlex
import signal
import threading

from music_scaling_laws import REPO
from music_scaling_laws.errors import UserError
from music_scaling_laws.study import script_runs
from music_scaling_laws.study.script_runs import pass_stop_signals_on, run_script, say

LAUNCHERS = ("local", "slurm", "submitit_local")


def run_job(args, log_path, what, env, python_args=(), stop_file=None):
    """A training inside a submitit job: run_script as the local launcher runs it, with the signals the job gets
    (SLURM's warning before its time limit, pre-emption, scancel) passed on to train.py, which then writes its
    checkpoint, so the next study resumes the run. Returns (seconds, None) or (None, the one-line failure): an
    exception would reach the study as a traceback. stop_file: written by a stopped study before it cancels its jobs;
    a job that finds it does not start (a SIGTERM that came before the handlers below was ignored by submitit's own,
    which bypasses SIGTERM, and the job would have trained on after the study had gone)."""
    script_runs._in_job = True  # a stop ends run_script with its one line as the job's answer, not os._exit
    pass_stop_signals_on()
    # submitit has SLURM send SIGUSR2 90 s before the job's time limit: taken as a stop, so train.py checkpoints
    # then rather than at the limit's SIGTERM
    signal.signal(signal.SIGUSR2, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
    if stop_file and os.path.exists(stop_file):
        return None, f"{what} not started: the study was stopped"
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
        # reentrant: a stop signal's handler (script_runs) asks in_flight and cancels in the main thread, which may
        # be inside cancel already
        self.cfg, self.kind, self.lock = cfg, cfg["launcher"], threading.RLock()
        self.jobs, self.cancelled = set(), False  # the jobs in flight; whether a stop cancelled them
        folder = os.path.join(logs, "submitit", "%j")
        self.stop_file = os.path.join(logs, "submitit", "stopped")  # see run_job; this study's jobs start afresh
        if os.path.exists(self.stop_file):
            os.remove(self.stop_file)
        if self.kind == "slurm":
            self.executor = submitit.SlurmExecutor(folder=folder)
        else:  # the repository on the jobs' module path by their environment (a setup line would put a shell
            # between submitit and the job, and the shell would not pass a cancel on)
            python_path = os.environ.get("PYTHONPATH", "")
            if REPO not in python_path.split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, python_path) if p)
            self.executor = submitit.LocalExecutor(folder=folder)
            self.executor.update_parameters(timeout_min=cfg["slurm_time"])
        script_runs._job_sets.append(self)  # a stop signal to the study cancels the jobs in flight

    def in_flight(self):
        """Whether any job of this study is running (or queued) now."""
        with self.lock:
            return bool(self.jobs)

    def run(self, name, args, log_path, what, env, device):
        """Train one run as a job (on device with submitit_local); its seconds, or a UserError with the run's
        one-line failure, as run_script."""
        gpus = 1
        with self.lock:  # the executor's parameters are shared by the threads
            if self.cancelled:  # the study was stopped while this run was being set up: no new job
                raise UserError(f"{what} not started: the study was stopped")
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
            job = self.executor.submit(run_job, args, log_path, what, env, torchrun_args(gpus), self.stop_file)
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
            if jobs:
                try:  # before the signals: a job that has not installed its handlers yet reads it (run_job)
                    os.makedirs(os.path.dirname(self.stop_file), exist_ok=True)
                    open(self.stop_file, "w").close()
                except OSError:
                    pass
            for job in jobs:
                try:
                    if self.kind == "slurm":
                        job.cancel(check=False)
                    else:
                        job._process.send_signal(signal.SIGTERM)
                except Exception as e:  # noqa: BLE001 -- a job that just ended, a scheduler that refuses
                    print(f"note: could not cancel submitit job {job.job_id}: {e}", flush=True)
