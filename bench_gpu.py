"""
Issue #30's GPU figures in one command (`make bench-gpu`; sized for about 8 minutes on one H100/H200): per
training config, train.py against bench.py (tokens/s, MFU, compile time on a cold and on a warm compile cache,
and for the configs where compile_mode='auto' takes CUDA graphs, bench.py in torch.compile's default mode too);
sampling tokens/s of the last config's trained run, with and without the captured CUDA-graph step; the process
overhead of whole studies (their training processes' wall-clock against their optimizer steps, run_timings.json).
Prints Markdown rows for BENCHMARKS.md, each with the date, the commit, the device and the torch version, and
writes everything as JSON; each process's output goes to out_dir/logs (torch's warning of a CUDA graph it skipped is
there; the rows say when train.py skipped one or sample.py's capture failed). The quiet trainings (diagnostics) run
after the sampling, so a run stopped at a time limit has the issue's figures first.

    python bench_gpu.py                                   # on the GPU: gpt_small, gpt_xl, sampling, study_quick
    python study.py config/study_gpu.py && python bench_gpu.py --configs= --studies=  # the GPU study's overhead
    python bench_gpu.py --studies= --configs=config/gpt_xl.py:0
    python bench_gpu.py --device=cpu --data_dir=data/music21  # a tiny version in seconds (tests/test_bench_gpu.py)

Every script runs as a user runs it, in a fresh process (compilation included), except on the CPU (tiny models,
nothing compiled), where they run inside this process. compile_cache='fresh' gives the processes a new, empty
torch.compile cache under out_dir, so the first process of a shape compiles cold (bench.py's warm-up) and the
next loads its kernels (train.py's compile_time_s): the warm-cache figure of issue #30.
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import torch

from music_scaling_laws.configurator import configure
from music_scaling_laws.data.dataset import write_json_atomic
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.training.hardware import choose_compile_mode, device_name, resolve_device

# -----------------------------------------------------------------------------
device = "auto"      # 'cpu' runs the tiny version: tiny shapes, a few steps, in this process
configs = "config/gpt_small.py:16e6,config/gpt_xl.py:0"  # training configs, each CONFIG[:max_tokens of its train.py]
                     # (0 = one epoch, as train.py's default); the last one's run is the one sampled
data_dir = "data/music21"
out_dir = "out/bench_gpu"  # the runs, the samples, the studies, the compile cache and bench_gpu.json
compile_cache = "fresh"  # 'fresh': an empty torch.compile cache under out_dir (cold, then warm); 'shared': the usual
extra_modes = ""     # more torch.compile modes to time bench.py in, e.g. 'max-autotune-no-cudagraphs' (gpt_xl's MFU)
quiet_train = "gpt_xl"  # configs (names, comma-separated; 'all') also trained with no periodic evaluation and one
                     # log line: what those cost per step, where train.py lagged bench.py most
sample_tunes = 64    # tunes decoded together, each up to sample_tokens new tokens (stopping at its end of tune)
sample_tokens = 1024
studies = "config/study_quick.py"  # study configs to run whole (each into out_dir/study_NAME), a missing one
                     # skipped with a note; '' = none. study_gpu is left out: its ~10 minutes alone pass this script's 8
study_dirs = "auto"  # finished study folders (comma-separated) whose run_timings.json to report too; 'auto' = the
                     # GPU study's own (out/study_gpu, README's GPU quick start) where it has finished
json_out = ""        # '' = out_dir/bench_gpu.json
# -----------------------------------------------------------------------------

# the tiny version (--device=cpu): shapes and budgets that take seconds, for the smoke test of this script
TINY_MODEL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--dtype=float32"]
TINY_TRAIN = ["--max_iters=12", "--eval_interval=5", "--eval_iters=2", "--log_interval=4"]
TINY_BENCH = ["--bench_warmup=1", "--bench_iters=3"]
TINY_DEFAULTS = {"sample_tunes": 4, "sample_tokens": 24, "studies": "", "quiet_train": "all"}  # where the command line does not set them
AUTO_STUDY_DIR = "out/study_gpu"  # config/study_gpu.py's out_dir
TRAIN_FIELDS = ("tokens_per_s", "mfu", "compile_time_s", "wall_time_s", "train_time_s", "iters", "tokens_trained",
                "n_params", "device_name", "torch_version", "cuda_graph_skips")
BENCH_FIELDS = ("tokens_per_s", "mfu", "warmup_s", "seconds_per_iter", "compiled", "compile_mode", "n_params")


def commit_id():
    """The checked-out commit (short), '+dirty' where tracked files differ from it; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


class Runner:
    """Runs a repository script with argv and returns (its wall-clock seconds, what it returned or wrote): in a
    fresh python with env (GPU: what a user pays, compilation included) or, on the CPU, inside this process."""

    def __init__(self, fresh, env, log_dir):
        self.fresh, self.env, self.log_dir = fresh, env, log_dir

    def __call__(self, script, argv):
        t0 = time.time()
        if self.fresh:
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{script}.py")  # paths: from here
            os.makedirs(self.log_dir, exist_ok=True)
            log_path = os.path.join(self.log_dir, f"{len(os.listdir(self.log_dir)) + 1:02d}_{script}.log")
            with open(log_path, "w") as log:
                log.write(f"$ {script}.py {' '.join(argv)}\n")
                log.flush()
                proc = subprocess.run([sys.executable, path, *argv], env=self.env, stdout=log,
                                      stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                with open(log_path) as log:
                    tail = log.read()[-2000:].strip()
                fail(f"{script}.py {' '.join(argv)} failed ({proc.returncode}; all of it in {log_path}): {tail}")
        else:
            module = __import__(script)
            module.main(argv)
        return time.time() - t0


def pick(d, fields):
    return {k: d.get(k) for k in fields}


def config_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def train_vs_bench(run, config, max_tokens, c, model_args, out):
    """One config: bench.py (in the default mode first where 'auto' takes another), then train.py."""
    name = config_name(config)
    result = {"config": config, "max_tokens": max_tokens, "bench": {}, "train": None, "train_quiet": None}
    mode = auto_mode(config, c, model_args)
    extra = [m for m in c["extra_modes"].split(",") if m and m not in ("auto", mode)]
    for label in (["default"] if mode != "default" else []) + [m for m in extra if m != "default"] + ["auto"]:
        path = os.path.join(out, f"bench_{name}_{label}.json")
        wall = run("bench", [config, f"--data_dir={c['data_dir']}", f"--device={c['device']}",
                             f"--compile_mode={label}", f"--json_out={path}", *model_args["bench"]])
        with open(path) as f:
            result["bench"][label] = {**pick(json.load(f), BENCH_FIELDS), "process_s": wall}
    result["train"] = train(run, config, max_tokens, c, model_args, out)
    bench = result["bench"]["auto"]["tokens_per_s"]
    result["train_over_bench"] = result["train"]["tokens_per_s"] / bench if bench else None
    result["compile_mode"] = mode
    return result


def train(run, config, max_tokens, c, model_args, out, quiet=False):
    """train.py on config, as a user runs it; quiet: with no periodic evaluation and one log line."""
    run_dir = os.path.join(out, f"train_{config_name(config)}" + ("_quiet" if quiet else ""))
    budget = [f"--max_tokens={max_tokens}"] if max_tokens else []
    extra = ["--eval_interval=0", "--log_interval=1000000000"] if quiet else []
    wall = run("train", [config, f"--data_dir={c['data_dir']}", f"--device={c['device']}", f"--out_dir={run_dir}",
                         "--overwrite=True", *budget, *model_args["train"], *extra])
    with open(os.path.join(run_dir, "results.json")) as f:
        return {**pick(json.load(f), TRAIN_FIELDS), "process_s": wall, "run_dir": run_dir}


def auto_mode(config, c, model_args):
    """What compile_mode='auto' resolves to for config on this device (hardware.choose_compile_mode), from the
    config's shapes; the CPU never compiles by default."""
    from model import build_model
    from music_scaling_laws.configurator import config_keys
    import train
    cfg = configure(config_keys(vars(train)), [config, *model_args["model"]])
    if cfg["model_type"] != "gpt":
        return "default"
    device_type = resolve_device(c["device"]).split(":")[0]
    with torch.device("meta"):
        model = build_model("gpt", n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                            block_size=cfg["block_size"], vocab_size=100)
    return choose_compile_mode("auto", device_type, "gpt", model.flops_per_token() * cfg["batch_size"] *
                               cfg["block_size"], cfg["gradient_accumulation_steps"])


def sampling(run, run_dir, c, out):
    """Tokens/s of sample_tunes tunes decoded together from run_dir, with the captured step and without."""
    rows = {}
    for graph in ("True", "False"):
        folder = os.path.join(out, f"samples_graph_{graph}")
        wall = run("sample", ["--run", run_dir, "--out_dir", folder, "--overwrite=True", "--device", c["device"],
                              "--num_samples", str(c["sample_tunes"]), "--max_new_tokens", str(c["sample_tokens"]),
                              "--cuda_graph", graph])
        with open(os.path.join(folder, "samples.jsonl")) as f:
            records = [json.loads(line) for line in f]
        tokens, seconds = sum(r["tokens"] for r in records), sum(r["seconds"] for r in records)
        rows[graph] = {"tunes": len(records), "tokens": tokens, "decode_s": seconds, "process_s": wall,
                       "tokens_per_s": tokens / seconds if seconds else None,
                       "captured": records[0].get("cuda_graph") if records else None}  # False: capture failed
    return rows


def study_overhead(study_dir):
    """A finished study's training processes: their wall-clock against their optimizer steps (run_timings.json)."""
    path = os.path.join(study_dir, "run_timings.json")
    if not os.path.isfile(path):
        fail(f"{path} not found: is {study_dir} a study's out_dir?")
    with open(path) as f:
        runs = json.load(f)
    wall, steps = sum(r["wall_s"] for r in runs.values()), sum(r["steps_s"] for r in runs.values())
    return {"study_dir": study_dir, "runs": len(runs), "wall_s": wall, "steps_s": steps,
            "ratio": wall / steps if steps > 0 else None}


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def markdown(report):
    """The BENCHMARKS.md rows: one table per kind, every row with its date, commit, device and torch."""
    head = "| date | commit | device | torch "
    lead = f"| {report['date']} | {report['commit']} | {report['device_name']} | {report['torch_version']} "
    lines = [head + "| config | train.py tok/s | MFU | compile s | bench.py tok/s | MFU | bench warm-up s (cold) | "
                    "train / bench | quiet train.py tok/s | compile mode |", "|---" * 14 + "|"] if report["training"] else []
    for r in report["training"]:
        t, b, q = r["train"], r["bench"]["auto"], r["train_quiet"] or {}
        mode = r["compile_mode"] if b["compiled"] else "not compiled"
        if t.get("cuda_graph_skips"):  # torch ran graphs op by op: the row is not what the mode promises
            mode += f" ({t['cuda_graph_skips']} CUDA graphs skipped in train.py)"
        others = [f"{label}: bench.py {fmt(x['tokens_per_s'], ',.0f')} tok/s, {fmt(x['mfu'], '.1%')}"
                  for label, x in r["bench"].items() if label != "auto"]
        mode += f" ({'; '.join(others)})" if others else ""
        lines.append(lead + f"| {r['config']}{':' + format(r['max_tokens'], 'g') if r['max_tokens'] else ''} | "
                     f"{fmt(t['tokens_per_s'], ',.0f')} | {fmt(t['mfu'], '.1%')} | {fmt(t['compile_time_s'], '.1f')} | "
                     f"{fmt(b['tokens_per_s'], ',.0f')} | {fmt(b['mfu'], '.1%')} | {fmt(b['warmup_s'], '.1f')} | "
                     f"{fmt(r['train_over_bench'], '.2f')}x | {fmt(q.get('tokens_per_s'), ',.0f')} | "
                     f"{mode} |")
    if report["sampling"]:
        lines += ["" if lines else None, head + "| run | tunes | tokens | decoding s | tokens/s | CUDA-graph step |", "|---" * 10 + "|"]
        for graph, s in report["sampling"]["modes"].items():
            failed = graph == "True" and report["device"] == "cuda" and s.get("captured") is False
            lines.append(lead + f"| {report['sampling']['run']} | {s['tunes']} | {s['tokens']:,} | "
                         f"{s['decode_s']:.2f} | {fmt(s['tokens_per_s'], ',.0f')} | "
                         f"{graph + ' (capture failed: op by op)' if failed else graph} |")
    if report["studies"]:
        lines += ["" if lines else None, head + "| study | training processes | their wall-clock s | their steps s | wall / steps |",
                  "|---" * 9 + "|"]
        for s in report["studies"]:
            lines.append(lead + f"| {s['study_dir']} | {s['runs']} | {s['wall_s']:.1f} | {s['steps_s']:.1f} | "
                         f"{fmt(s['ratio'], '.2f')}x |")
    return "\n".join(line for line in lines if line is not None)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    c = configure(globals(), argv)
    c["device"] = resolve_device(c["device"])
    device_type = c["device"].split(":")[0]
    tiny = device_type == "cpu"
    if tiny:
        given = {a[2:].partition("=")[0] for a in argv if a.startswith("--")}
        c.update({k: v for k, v in TINY_DEFAULTS.items() if k not in given})
    model_args = {"model": TINY_MODEL if tiny else [], "train": TINY_MODEL + TINY_TRAIN if tiny else [],
                  "bench": TINY_MODEL + TINY_BENCH if tiny else []}
    out = c["out_dir"]
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ)
    if c["compile_cache"] == "fresh":
        cache = os.path.join(out, "compile_cache")
        shutil.rmtree(cache, ignore_errors=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    elif c["compile_cache"] != "shared":
        fail(f"compile_cache must be 'fresh' or 'shared', got {c['compile_cache']!r}")
    log_dir = os.path.join(out, "logs")  # every process's output: torch's warnings of a silent fallback too
    run = Runner(fresh=not tiny, env=env, log_dir=log_dir)
    t0 = time.time()
    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": commit_id(), "device": device_type, "device_name": device_name(device_type),
              "torch_version": torch.__version__, "training": [], "sampling": None, "studies": []}
    for item in filter(None, c["configs"].split(",")):
        config, _, tokens = item.partition(":")
        if not os.path.isfile(config):
            fail(f"no config {config}")
        print(f"[{time.time() - t0:5.0f} s] {config}: bench.py and train.py", flush=True)
        report["training"].append(train_vs_bench(run, config, float(tokens or 0), c, model_args, out))
        save(report, t0, c)
    if report["training"] and c["sample_tunes"] > 0:
        run_dir = report["training"][-1]["train"]["run_dir"]
        print(f"[{time.time() - t0:5.0f} s] sampling {c['sample_tunes']} tunes from {run_dir}", flush=True)
        report["sampling"] = {"run": run_dir, "modes": sampling(run, run_dir, c, out)}
        save(report, t0, c)
    for r in report["training"]:  # diagnostics, after the figures of the issue: what evaluations and logs cost
        if c["quiet_train"] == "all" or config_name(r["config"]) in c["quiet_train"].split(","):
            print(f"[{time.time() - t0:5.0f} s] {r['config']}: train.py quiet", flush=True)
            r["train_quiet"] = train(run, r["config"], r["max_tokens"], c, model_args, out, quiet=True)
            save(report, t0, c)
    for config in filter(None, c["studies"].split(",")):
        if not os.path.isfile(config):
            print(f"skipped: no study config {config}", flush=True)
            continue
        study_dir = os.path.join(out, f"study_{config_name(config)}")
        print(f"[{time.time() - t0:5.0f} s] {config}", flush=True)
        Runner(fresh=True, env=env, log_dir=log_dir)("study", [config, f"--out_dir={study_dir}",
                                                              f"--data_dir={c['data_dir']}", f"--device={c['device']}"])
        report["studies"].append(study_overhead(study_dir))
        save(report, t0, c)
    dirs = c["study_dirs"]
    if dirs == "auto":
        dirs = AUTO_STUDY_DIR if os.path.isfile(os.path.join(AUTO_STUDY_DIR, "run_timings.json")) and not tiny else ""
    report["studies"] += [study_overhead(d) for d in filter(None, dirs.split(","))]
    save(report, t0, c)
    print(f"bench_gpu.py: {report['total_s']:.0f} s on {report['device_name']}\n")
    print(report["markdown"])
    return report


def save(report, t0, c):
    """bench_gpu.json (and its rows as bench_gpu.md) as far as the measurements have come: a run stopped half-way
    keeps the parts it finished."""
    report["total_s"] = time.time() - t0
    report["markdown"] = markdown(report)
    path = c["json_out"] or os.path.join(c["out_dir"], "bench_gpu.json")
    write_json_atomic(report, path, indent=1)  # a run stopped mid-write keeps the last whole file
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(report["markdown"] + "\n")


if __name__ == "__main__":
    main()
