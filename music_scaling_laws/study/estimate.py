"""
A study's --estimate: a few optimizer steps of every planned run timed on this device (bench.py), and the
projected training time of the whole plan.
"""
import os

from music_scaling_laws.data.dataset import read_json, write_json_atomic
from music_scaling_laws.lifetime import usable_cpus
from music_scaling_laws.run_files import estimate_path
from music_scaling_laws.study.report import fmt_duration
from music_scaling_laws.study.script_runs import run_script
from music_scaling_laws.study.train_runs import _dataset, on_cpu, training_env, trains

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
