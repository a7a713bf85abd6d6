"""
The training loop's state from step to step besides the model and optimizer (LoopState: where it is, the clock of
its steps, when it checkpoints or stops next, the counters every checkpoint keeps), and the stop signals it obeys.
"""
import os
import signal
import time
import uuid
from dataclasses import dataclass, field

import torch

from music_scaling_laws.training.checkpoint import restore_progress
from music_scaling_laws.training.hardware import synchronize


class StepClock:
    """Wall-clock seconds of training steps only. The clock is read where the host waits for the device anyway
    (a log line, an evaluation, a checkpoint), so timing adds no synchronisation between them."""

    def __init__(self, device_type):
        self.device_type, self.t0, self.seconds = device_type, time.perf_counter(), 0.0

    def stop(self):
        synchronize(self.device_type)
        self.seconds += time.perf_counter() - self.t0

    def start(self):
        self.t0 = time.perf_counter()

    def take(self):
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class StopSignals:
    """SIGTERM and SIGINT ask the run to stop at the next step boundary (with a checkpoint) instead of dying
    mid-step; a second Ctrl-C (SIGINT) acts as usual, for a user in a hurry. A repeated SIGTERM asks the same again:
    they come in bursts (scancel signals every process of the job, and the launchers in between pass it on too), and
    the second of them must not end the run before its checkpoint. SIGHUP (the terminal closed, or the study.py that
    ran this died: its parent-death signal) stops the run the same way, with the output sent to /dev/null first:
    whoever read it is gone, and a write to the broken pipe would end the run before its checkpoint. The previous
    handlers come back on restore()."""

    def __init__(self):
        self.received = None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def handle(self, signum, frame):
        if signum == signal.SIGHUP:
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
        self.received = self.received or signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous[signum])

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def start_progress(ckpt, c, optimizer, scaler, total_iters, rank, world_size, device_type):
    """The counters a checkpoint keeps (checkpoint.save_checkpoint): new from scratch (and dropout seeded per rank),
    else restored with the optimizer, scaler and RNG state; a branch restores its trunk's under a new run id and
    records the trunk (kept on its own resumes)."""
    if not ckpt:
        torch.manual_seed(c.seed + rank)  # dropout differs across ranks, reproducibly
        return {"iter_num": 0, "train_time_s": 0.0, "compile_time_s": 0.0, "steady_time_s": 0.0,
                "steady_tokens": 0, "wall_time_s": 0.0, "run_id": uuid.uuid4().hex}  # run_id: kept on resume
    branching = c.init_from == "branch"
    progress = restore_progress(ckpt, optimizer, scaler, None if branching else total_iters, rank, world_size,
                                device_type)
    if branching:
        progress["trunk"] = {"out_dir": os.path.abspath(c.branch_from), "run_id": progress["run_id"],
                             "iter": progress["iter_num"], "tokens": progress["tokens_seen"],
                             "wall_time_s": progress["wall_time_s"]}
        progress["run_id"] = uuid.uuid4().hex
    return progress


@dataclass
class LoopState:
    """The training loop's state from step to step, besides the model and optimizer: where it is, the clock of its
    steps, when it checkpoints or stops next, and progress, the counters every checkpoint keeps."""
    progress: dict              # start_progress's counters, run_id (and trunk); save_checkpoint writes them
    clock: StepClock            # seconds of training steps only
    t_start: float              # time.time() when this process started
    iter_num: int               # optimizer steps done
    start_iter: int             # where this process began: its first warmup_steps (compilation, ...) are timed apart
    wall_before: float          # wall-clock seconds of the run before this process (a resume's)
    bad: torch.Tensor           # note_divergence's [first non-finite iteration, its loss], on the device
    steps_before: float = 0.0   # train_time_s of the run before this process (a resume's, a branch's trunk)
    loss: torch.Tensor = None   # the last step's mean loss, on the device; None before this process's first step
    interval_tokens: int = 0    # tokens of the steady steps since the last log line
    last_ckpt: float = field(default_factory=time.time)  # when the last checkpoint was written (or the loop began)
    ckpt_due: bool = False      # ckpt_interval_s has passed on rank 0's clock: checkpoint before the next step
    stop_now: bool = False      # a stop signal (to any rank): checkpoint and stop before the next step
    warmup_steps: int = 1       # this process's first steps, timed apart (hardware.warmup_steps)

    @classmethod
    def start(cls, progress, t_start, device, device_type, warmup_steps=1):
        """The state at the start of this process's loop: at progress's iteration, the clock running; its first
        warmup_steps steps are timed apart from the steady ones."""
        bad = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=device)
        return cls(progress, StepClock(device_type), t_start, progress["iter_num"], progress["iter_num"],
                   progress["wall_time_s"], bad, progress["compile_time_s"] + progress["steady_time_s"],
                   warmup_steps=warmup_steps)

    def train_loss(self):
        """The last step's loss (the host waits for it), or the checkpoint's when this process has made no step."""
        return self.progress.get("train_loss") if self.loss is None else self.loss.item()

    def wall_time_s(self):
        return self.wall_before + time.time() - self.t_start

    def snapshot(self, tokens_seen):
        """progress as a checkpoint at iter_num keeps it; train_loss: the last step's, for a resume's first log."""
        self.progress.update(iter_num=self.iter_num, tokens_seen=tokens_seen, wall_time_s=self.wall_time_s(),
                             train_loss=self.train_loss())
        return self.progress

    def at_checkpoint(self, ckpt_interval):
        """Checkpoint before this step: a stop (also before this process's first step: "ckpt.pt holds the run" stays
        true), ckpt_interval_s passed (ckpt_due) or every ckpt_interval iterations; never at the step resumed from."""
        return self.stop_now or (self.iter_num > self.start_iter and (self.ckpt_due or bool(
            ckpt_interval and self.iter_num % ckpt_interval == 0)))

    def stepped(self, tokens_per_iter):
        """Count an optimizer step; the first warmup_steps of a process (compilation, warm-up, recording CUDA
        graphs) go to compile_time_s."""
        self.iter_num += 1
        if self.iter_num <= self.start_iter + self.warmup_steps:
            self.clock.stop()
            self.progress["compile_time_s"] += self.clock.take()
            self.clock.start()
        else:
            self.interval_tokens += tokens_per_iter

    def interval(self):
        """At a log line: stop the clock; tokens/s of the steady steps since the last one (None if none ran), their
        time and tokens added to progress."""
        self.clock.stop()
        seconds = self.clock.take()
        self.progress["steady_time_s"] += seconds
        self.progress["steady_tokens"] += self.interval_tokens
        tokens_per_s = self.interval_tokens / seconds if self.interval_tokens and seconds > 0 else None
        self.interval_tokens = 0
        return tokens_per_s

    def finish(self):
        """After the last step: stop the clock; train_time_s is the first steps' and the steady steps' time,
        process_steps_s the part of it this process spent (study.py sets it against the process's wall-clock)."""
        self.clock.stop()
        self.progress["train_time_s"] = self.progress["compile_time_s"] + self.progress["steady_time_s"]
        self.progress["process_steps_s"] = self.progress["train_time_s"] - self.steps_before
