"""
Which trainings of a study run when and where: one at a time with live output and an ETA, or several at once,
each pinned to a device slot; finished runs skipped, interrupted ones resumed, runs trained on other data refused.

Several trainings on one GPU: small models are launch-bound (a step of gpt_tiny..gpt_large took 8-23 ms on
an H100 whatever the size), so while one process waits on the CPU another's kernels run; 4 gpt_small
processes together reached 2.4x one alone (issue #9, measured 2026-11-22). Each run has its own seed, data order
and checkpoints, so it is exactly the run it would be alone; on CPU its float sums also depend on its thread
count, which is the same for every run whatever parallel_runs (training_threads).

Several GPUs: the runs are spread over the study's `devices` (every visible GPU by default), each run pinned to
one (device_slots: one run on every device before a second on any; parallel_runs is then the runs per device).
"""
import functools
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from music_scaling_laws.errors import UserError
from music_scaling_laws.data.dataset import load_dataset
from music_scaling_laws.lifetime import usable_cpus
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.study.report import fmt_duration
from music_scaling_laws.study.jobs import Jobs
from music_scaling_laws.study.script_runs import _stop_signals, run_script, say, start_workers
from music_scaling_laws.training import settings
from music_scaling_laws.run_files import ckpt_path, is_finished, log_path, read_results

MAX_AUTO_PARALLEL = 4   # more processes than this gained nothing further in the measurements above


GPU_MEMORY_SHARE = 0.8  # of the free GPU memory the concurrent runs may plan to use together


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
    if jobs is None:
        start_workers(slots[:n])  # worker mode: one long-lived process per slot, started from this (main) thread
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


def changed_settings(run):
    """'key: trained -> now; ...' for the settings that change a result (settings.changed_settings, train.py's own
    rule) where the finished run's results.json differs from the run's config as the study resolves it today."""
    trained = read_results(run["run_dir"]).get("config") or {}
    return "; ".join(settings.changed_settings(trained, run["train_config"]))
