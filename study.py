"""
Run a whole scaling-law study with one command and write its report.

    python study.py config/study_quick.py                      # GPT + LSTM, 4 sizes each, ~30 min on 2 CPU cores
    python study.py config/study_quick.py --out_dir=out/mine    # same study, another folder
    python study.py config/study_lakh.py --dataset_input=/data/lmd_full   # the full study, one GPU
    python study.py config/study_quick.py --dry_run=True        # print the plan (sizes, tokens, FLOPs) only

The steps, each a repository script run as a subprocess (its output is shown and kept in out_dir/logs/):
  1. prepare.py        the dataset, when data_dir holds none yet
  2. train.py          every model; a finished run (results.json) is skipped, an interrupted one (ckpt.pt)
                       resumes, so a study that is stopped and started again continues where it stopped
  3. calc_perplexity   the exact test loss of every model
  4. scaling.py        power-law fits with intervals and warnings, and the plots
  5. sample.py         unconditional and prompted tunes from the best model (MIDI, WAV, SVG), and a few
                       tunes from every model
  6. eval_syntax.py    validity and musical statistics of those tunes, next to the real test tunes
  7. out_dir/report.md every table and plot
Everything a study writes goes under out_dir: runs/, samples/, plots/, logs/, fit.json, fit.md, report.md.
"""
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

import eval_syntax
import scaling
from configurator import configure

# -----------------------------------------------------------------------------
# default study; config/study_*.py files and --key=value override these
out_dir = 'out/study'
# dataset
data_dir = ''             # prepared dataset folder; '' = out_dir/data. prepare.py runs when it has no meta.json
dataset_input = ''        # prepare.py --input (a MIDI/ABC file, folder or glob); '' = the music21 corpus
dataset_input_required = False  # True: refuse to fall back to the music21 corpus (a study of a user's collection)
prepare_args = ''         # more prepare.py options, e.g. '--tokenizer bpe --max_train_tokens 5e6'
# models: one line per run -- a name, a train config file, then --key=value overrides of that config
runs = """
gpt_tiny   config/gpt_tiny.py
lstm_tiny  config/lstm_tiny.py
"""
max_tokens = 0            # training tokens of every model (0 = one epoch): one budget, so size is the variable
train_args = ''           # train.py --key=value options for every run, applied before each run's own overrides
device = 'auto'           # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
# evaluation and fit
perplexity_split = 'test'
n_bootstrap = 1000        # scaling.py bootstrap resamples
ci_level = 0.95
# samples
num_samples = 10          # unconditional tunes from the best model, with MIDI/WAV/SVG
prompts = r"""
X:1\nM:6/8\nL:1/8\nK:D\n
X:1\nM:3/4\nL:1/8\nK:G\n
"""                       # one prompt per line, \n = line break (sample.py --prompt)
samples_per_prompt = 3    # tunes per prompt from the best model
samples_per_size = 5      # unconditional tunes from every model: which capabilities appear at which size
max_new_tokens = 1024
temperature = 1.0
top_k = 0
top_p = 1.0
sample_seed = 1337
render = True             # MIDI, WAV and SVG of the best model's tunes (needs abc2midi, fluidsynth, abcm2ps)
reference_tunes = 100     # real test tunes eval_syntax scores as the reference
eval_workers = 0          # eval_syntax worker processes; 0 = one per CPU core
capability_share = 0.5    # a capability "appears" at the first size where at least this share of tunes show it
dry_run = False           # print the plan and stop
# -----------------------------------------------------------------------------

RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def fail(message):
    sys.exit(f"error: {message}")


def rel(path, start):
    return os.path.relpath(path, start).replace(os.sep, "/")


# -----------------------------------------------------------------------------
# the plan

def parse_runs(text):
    """[{name, config, overrides}] from the `runs` table."""
    specs = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            words = shlex.split(line)
        except ValueError as e:
            fail(f"runs line {line_no} ({line!r}): {e}")
        if len(words) < 2:
            fail(f"runs line {line_no} ({line!r}): expected a name and a config file")
        name, config, overrides = words[0], words[1], words[2:]
        if not RUN_NAME.match(name):
            fail(f"run name {name!r} may hold only letters, digits, '_', '-' and '.'")
        if any(s["name"] == name for s in specs):
            fail(f"run name {name!r} appears twice in runs")
        if not os.path.isfile(config):
            fail(f"run {name}: config file {config} not found")
        bad = [w for w in overrides if not w.startswith("--") or "=" not in w]
        if bad:
            fail(f"run {name}: overrides must look like --key=value, got {' '.join(bad)}")
        specs.append({"name": name, "config": config, "overrides": overrides})
    if not specs:
        fail("the study has no runs")
    return specs


def resolve_run(spec, cfg, data_path, vocab_size, train_tokens):
    """The run's full training config (as train.py will see it), its size, budget and command line."""
    import torch
    import train
    import train_rnn
    from configurator import config_keys
    from model import build_model, model_args_from_config
    run_dir = os.path.join(cfg["out_dir"], "runs", spec["name"])
    argv = ([spec["config"], f"--max_tokens={cfg['max_tokens']}", f"--device={cfg['device']}"]
            + shlex.split(cfg["train_args"]) + spec["overrides"]
            + [f"--data_dir={data_path}", f"--out_dir={run_dir}"])  # last: the study owns the layout
    base = config_keys(vars(train))
    try:
        tcfg = configure(base, argv)
        script = "train.py"
        if tcfg["model_type"] == "lstm":  # train_rnn.py: the same loop with the LSTM defaults
            tcfg = configure({**base, **train_rnn.LSTM_DEFAULTS}, argv)
            script = "train_rnn.py"
        with torch.device("meta"):  # the shapes without allocating the weights
            model = build_model(tcfg["model_type"], **model_args_from_config(tcfg, vocab_size))
    except SystemExit as e:
        fail(f"run {spec['name']}: {str(e.code).removeprefix('error: ')}")
    except (ValueError, TypeError, AssertionError) as e:
        fail(f"run {spec['name']}: cannot build the model: {e}")
    windows_per_iter = tcfg["batch_size"] * tcfg["gradient_accumulation_steps"]
    tokens_per_iter = windows_per_iter * tcfg["block_size"]
    if tcfg["max_iters"] > 0:
        iters = tcfg["max_iters"]
    elif tcfg["max_tokens"] > 0:
        iters = tcfg["max_tokens"] // tokens_per_iter
    else:
        iters = train.num_windows(train_tokens, tcfg["block_size"]) // windows_per_iter if train_tokens else 0
    return {**spec, "run_dir": run_dir, "script": script, "argv": argv, "train_config": tcfg,
            "model_type": tcfg["model_type"], "n_params": model.num_params(),
            "n_params_non_embedding": model.num_params(non_embedding=True),
            "flops_per_token": model.flops_per_token(), "tokens": iters * tokens_per_iter}


def print_plan(plan, vocab_known):
    print(f"{'run':14s} {'family':6s} {'params':>12s} {'non-emb':>12s} {'tokens':>13s} {'train FLOPs':>11s}")
    for r in plan:
        print(f"{r['name']:14s} {r['model_type']:6s} {r['n_params']:12,d} {r['n_params_non_embedding']:12,d} "
              f"{r['tokens']:13,d} {r['flops_per_token'] * r['tokens']:11.2e}")
    total = sum(r["flops_per_token"] * r["tokens"] for r in plan)
    print(f"total training compute {total:.2e} FLOPs"
          + ("" if vocab_known else " (dataset not prepared yet: vocabulary of 128 assumed, one epoch unknown)"))


# -----------------------------------------------------------------------------
# running the scripts

class Timings:
    """Seconds spent in each step, kept in out_dir/timings.json across invocations (a resumed study adds up)."""

    def __init__(self, path):
        self.path = path
        self.data = {}
        if os.path.isfile(path):
            with open(path) as f:
                self.data = json.load(f)

    def add(self, step, seconds):
        self.data[step] = self.data.get(step, 0.0) + seconds
        with open(self.path, "w") as f:
            json.dump(self.data, f, indent=1)


def run_script(args, log_path, what, echo=True):
    """Run a repository script with this interpreter; its output is shown live and kept in log_path (progress
    bars reduced to their last state). A failure stops the study with one line naming the log."""
    repo = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, os.path.join(repo, args[0]), *map(str, args[1:])]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
        if pending.strip():
            log.write(pending.rsplit("\r", 1)[-1] + "\n")
            last_lines.append(pending.strip())
    if proc.returncode != 0:
        reason = next((l for l in reversed(last_lines) if l.startswith("error")), last_lines[-1] if last_lines else "")
        fail(f"{what} failed (exit {proc.returncode}): {reason} -- full output in {log_path}")


def fmt_duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def train_all(plan, cfg, timings, logs):
    """Train every run not finished yet; progress line with a study ETA from the speed of this session's runs."""
    todo = [r for r in plan if not os.path.isfile(os.path.join(r["run_dir"], "results.json"))]
    done_flops, done_seconds = {}, {}
    for i, r in enumerate(plan, start=1):
        head = f"[run {i}/{len(plan)}] {r['name']} ({r['model_type']}, {r['n_params']:,} parameters, " \
               f"{r['tokens']:,} tokens)"
        if r not in todo:
            changed = changed_settings(r)
            print(f"{head}: finished earlier, skipped"
                  + (f" -- WARNING: trained with other settings than the config now gives ({changed}); delete "
                     f"{r['run_dir']} to train it again" if changed else ""))
            continue
        remaining = [x for x in todo[todo.index(r):]]
        eta = None
        if done_seconds:
            rate = {fam: done_seconds[fam] / done_flops[fam] for fam in done_seconds}
            overall = sum(done_seconds.values()) / sum(done_flops.values())
            eta = sum(rate.get(x["model_type"], overall) * x["flops_per_token"] * x["tokens"] for x in remaining)
        resume = os.path.isfile(os.path.join(r["run_dir"], "ckpt.pt"))
        print(f"{head}: {'resuming from ckpt.pt' if resume else 'training'}; "
              f"{len(remaining)} run(s) to go, ETA {fmt_duration(eta) if eta is not None else 'after this run'}",
              flush=True)
        t0 = time.time()
        run_script([r["script"], *r["argv"], *(["--init_from=resume"] if resume else [])],
                   os.path.join(logs, f"train_{r['name']}.log"), f"training {r['name']}")
        seconds = time.time() - t0
        timings.add("train", seconds)
        fam = r["model_type"]
        done_seconds[fam] = done_seconds.get(fam, 0.0) + seconds
        done_flops[fam] = done_flops.get(fam, 0.0) + r["flops_per_token"] * r["tokens"]


def changed_settings(run):
    """'key: trained -> now; ...' for the settings that change a result (train.py's RESUME_MUST_MATCH) where the
    finished run's results.json differs from the run's config as the study resolves it today."""
    import train
    trained = read_json(os.path.join(run["run_dir"], "results.json")).get("config") or {}
    show = lambda v: f"{v:g}" if isinstance(v, float) else repr(v)  # noqa: E731
    return "; ".join(f"{k}: {show(trained[k])} -> {show(run['train_config'][k])}" for k in train.RESUME_MUST_MATCH
                     if k in trained and trained[k] != run["train_config"][k])


def device_flag(cfg):
    return [] if cfg["device"] == "auto" else ["--device", cfg["device"]]


def perplexity_all(plan, cfg, timings, logs):
    for i, r in enumerate(plan, start=1):
        out = os.path.join(r["run_dir"], f"{cfg['perplexity_split']}_perplexity.json")
        if os.path.isfile(out):
            continue
        print(f"[perplexity {i}/{len(plan)}] {r['name']} on the {cfg['perplexity_split']} split", flush=True)
        t0 = time.time()
        run_script(["calc_perplexity.py", r["run_dir"], "--split", cfg["perplexity_split"], "--out", out,
                    *device_flag(cfg)], os.path.join(logs, f"perplexity_{r['name']}.log"),
                   f"calc_perplexity on {r['name']}", echo=False)
        timings.add("perplexity", time.time() - t0)


def sample_jobs(plan, best, cfg):
    """(name, folder, sample.py arguments) of every sample set of the study."""
    common = ["--max_new_tokens", cfg["max_new_tokens"], "--temperature", cfg["temperature"], "--top_k",
              cfg["top_k"], "--top_p", cfg["top_p"], "--seed", cfg["sample_seed"], *device_flag(cfg)]
    render = ["--midi", "--wav", "--svg"] if cfg["render"] else []
    root = os.path.join(cfg["out_dir"], "samples")
    jobs = [("best/unconditional", os.path.join(root, "best", "unconditional"),
             ["--run", best["run_dir"], "--num_samples", cfg["num_samples"], *render, *common])]
    for j, prompt in enumerate(parse_prompts(cfg["prompts"]), start=1):
        jobs.append((f"best/prompt_{j}", os.path.join(root, "best", f"prompt_{j}"),
                     ["--run", best["run_dir"], "--num_samples", cfg["samples_per_prompt"], "--prompt", prompt,
                      *render, *common]))
    if cfg["samples_per_size"] > 0:
        for r in plan:
            jobs.append((f"by_size/{r['name']}", os.path.join(root, "by_size", r["name"]),
                         ["--run", r["run_dir"], "--num_samples", cfg["samples_per_size"], *common]))
    return jobs


def parse_prompts(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def sample_all(jobs, timings, logs):
    for i, (name, folder, args) in enumerate(jobs, start=1):
        if os.path.isfile(os.path.join(folder, "samples.jsonl")):
            continue
        print(f"[samples {i}/{len(jobs)}] {name}", flush=True)
        t0 = time.time()
        run_script(["sample.py", *args, "--out", folder], os.path.join(logs, f"sample_{name.replace('/', '_')}.log"),
                   f"sampling {name}", echo=False)
        timings.add("sample", time.time() - t0)


def eval_all(jobs, data_path, cfg, timings, logs):
    """One eval_syntax.py call over every sample folder, with the real test tunes as reference."""
    out = os.path.join(cfg["out_dir"], "eval_syntax.json")
    folders = [folder for _, folder, _ in jobs]
    wanted = {os.path.abspath(os.path.join(f, os.path.basename(r["file"])))
              for f in folders for r in read_jsonl(os.path.join(f, "samples.jsonl"))}
    if os.path.isfile(out):
        with open(out) as f:
            have = {os.path.abspath(x["path"]) for x in json.load(f)["files"]}
        if wanted <= have:
            return
    print(f"[eval_syntax] {len(wanted)} generated tunes and {cfg['reference_tunes']} real test tunes", flush=True)
    workers = cfg["eval_workers"] or os.cpu_count() or 1
    t0 = time.time()
    run_script(["eval_syntax.py", *folders, "--reference", data_path, "--reference_tunes", cfg["reference_tunes"],
                "--workers", workers, "--out", out], os.path.join(logs, "eval_syntax.log"), "eval_syntax",
               echo=False)
    timings.add("eval_syntax", time.time() - t0)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path):
    with open(path) as f:
        return json.load(f)


# -----------------------------------------------------------------------------
# the report: one function per section, each returning markdown lines

def md_table(header, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join("–" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def num(x, spec=".3f"):
    return None if x is None else format(x, spec)


def pct(x):
    return None if x is None else f"{100 * x:.0f}%"


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram = ""
    return f"{cpu}, {os.cpu_count()} CPU cores{ram}, {platform.system()} {platform.release()}"


class Study:
    """Everything the report needs, read once from the files the steps wrote."""

    def __init__(self, plan, best, jobs, cfg, data_path):
        self.plan, self.best, self.jobs, self.cfg, self.data_path = plan, best, jobs, cfg, data_path
        self.out, self.split = cfg["out_dir"], cfg["perplexity_split"]
        self.results = {r["name"]: read_json(os.path.join(r["run_dir"], "results.json")) for r in plan}
        self.ppl = {r["name"]: read_json(os.path.join(r["run_dir"], f"{self.split}_perplexity.json")) for r in plan}
        self.eval = read_json(os.path.join(self.out, "eval_syntax.json"))
        self.by_path = {os.path.abspath(f["path"]): f for f in self.eval["files"]}

    def link(self, path):
        return rel(path, self.out)

    def samples(self, folder):
        """(samples.jsonl record, eval_syntax result or None) of every tune of a sample folder."""
        out = []
        for rec in read_jsonl(os.path.join(folder, "samples.jsonl")):
            path = os.path.abspath(os.path.join(folder, os.path.basename(rec["file"])))
            out.append((dict(rec, path=path), self.by_path.get(path)))
        return out


def section_header(st, timings, started, invocation_s):
    import torch
    first = st.results[st.plan[0]["name"]]
    name = os.path.splitext(os.path.basename(st.cfg["_config_file"] or "study"))[0]
    total = sum(timings.data.values())
    return [f"# Scaling study: {name}", "",
            f"Written by `{shlex.join(['python', 'study.py', *st.cfg['_argv']])}` on {started:%Y-%m-%d %H:%M} UTC.",
            f"Machine: {machine_description()}; training device {first.get('device')} ({first.get('device_name')}), "
            f"torch {torch.__version__}, Python {platform.python_version()}.", "",
            f"Time per step, summed over every invocation of this study (this invocation: "
            f"{fmt_duration(invocation_s)}):", "",
            md_table(["step", "wall-clock"], [[k, fmt_duration(v)] for k, v in timings.data.items()]
                     + [["**total**", f"**{fmt_duration(total)}**"]]), ""]


def section_dataset(st, plots):
    stats = read_json(os.path.join(st.data_path, "stats.json"))
    L = ["## Dataset", "",
         f"`{st.data_path}` — {stats.get('source', '?')}; tokenizer **{stats.get('tokenizer')}** "
         f"(vocabulary {stats.get('vocab_size')}); {stats.get('files_converted', '?')} of "
         f"{stats.get('files_found', '?')} files converted, {stats.get('tunes_found', '?')} tunes found, "
         f"{stats.get('duplicates_removed', 0)} duplicates removed, {stats.get('tunes_kept', '?')} kept. "
         f"All statistics: `{st.link(os.path.join(st.data_path, 'stats.md'))}`.", "",
         md_table(["split", "tunes", "tokens", "characters", "chars/token"],
                  [[s, v["tunes"], f"{v['tokens']:,}", f"{v['chars']:,}", num(v["chars"] / v["tokens"], ".2f")]
                   for s, v in stats["splits"].items()]), ""]
    if "length_tokens" in stats:
        keys = ["p5", "p50", "p95", "max", "mean"]
        L += ["Tune length in tokens (end-of-tune included):", "",
              md_table(["split", *keys], [[s, *[v.get(k) for k in keys]] for s, v in stats["length_tokens"].items()]),
              ""]
    if plots.get("length_histogram"):
        L += [f"![tune lengths]({st.link(plots['length_histogram'])})", ""]
    return L


def section_models(st):
    rows = []
    for r in st.plan:
        res = st.results[r["name"]]
        trained = res.get("config") or r["train_config"]  # what the run was trained with, even if the config changed
        rows.append([r["name"], r["model_type"], res["n_layer"], res["n_embd"], res["n_head"], f"{res['n_params']:,}",
                     f"{res['n_params_non_embedding']:,}", trained["block_size"],
                     f"{res.get('tokens_per_iter', 0):,}", f"{trained['learning_rate']:g}",
                     f"`{r['config']}` {' '.join(r['overrides'])}".strip()])
    return ["## Models", "",
            md_table(["run", "family", "layers", "width", "heads", "parameters", "non-embedding", "context",
                      "tokens/step", "learning rate", "config"], rows, ["---", "---"] + ["---:"] * 8 + ["---"]), ""]


def section_training(st, plots):
    rows = []
    for r in st.plan:
        res, p = st.results[r["name"]], st.ppl[r["name"]]
        rows.append([r["name"], f"{res['tokens_trained']:,}", num(res.get("epochs"), ".2f"),
                     fmt_duration(res["wall_time_s"]),
                     f"{res['tokens_per_s']:,.0f}" if res.get("tokens_per_s") else None,
                     f"{res['peak_mem_bytes'] / 2 ** 20:,.0f} MiB" if res.get("peak_mem_bytes") else None,
                     num(res.get("train_loss")), num(res["val_loss"]), num(p["loss"]), num(p["bpc"]),
                     num(p["perplexity"], ".2f")])
    L = ["## Training", "",
         f"Losses in nats/token. The {st.split} loss, bits per character and perplexity are exact, by "
         f"`calc_perplexity.py` over the whole {st.split} split. Peak memory: the process's peak resident set on CPU, "
         f"allocated tensors on GPU.", "",
         md_table(["run", "tokens", "epochs", "wall-clock", "tokens/s", "peak memory", "train loss", "val loss",
                   f"{st.split} loss", f"{st.split} bpc", f"{st.split} perplexity"], rows), ""]
    for key, title in (("training_curves", "training curves"), ("efficiency", "wall-clock and memory")):
        if plots.get(key):
            L += [f"![{title}]({st.link(plots[key])})", ""]
    return L


def section_fits(st, fits, loss_name, plots):
    L = ["## Scaling laws", "", scaling.fit_markdown(fits, loss_name), ""]
    for key in ["scaling"] + [f"scaling_{fam}" for fam in fits] + ["scaling_non_embedding", "compute"]:
        if plots.get(key):
            L += [f"![{key.replace('_', ' ')}]({st.link(plots[key])})", ""]
    return L + ["All fit numbers: [`fit.json`](fit.json), [`fit.md`](fit.md).", ""]


def section_best_samples(st):
    c = st.cfg
    L = [f"## Samples from the best model: {st.best['name']}", "",
         f"{st.best['name']} has the lowest {st.split} loss ({st.ppl[st.best['name']]['loss']:.4f} nats/token). "
         f"Sampling: temperature {c['temperature']}, top_k {c['top_k'] or 'off'}, top_p {c['top_p']}, at most "
         f"{c['max_new_tokens']} new tokens, seed {c['sample_seed']}. *Headers added*: the ABC header fields "
         f"sample.py had to add to make a complete tune; *MIDI*: abc2midi converts it without an error.", ""]
    rows, results = [], []
    for name, folder, _ in st.jobs:
        if not name.startswith("best/"):
            continue
        for rec, res in st.samples(folder):
            results.append(res)
            links = [f"[abc]({st.link(rec['path'])})"]
            for kind in ("midi", "wav", "svg"):
                if rec.get(kind) and os.path.isfile(os.path.join(folder, os.path.basename(rec[kind]))):
                    links.append(f"[{kind}]({st.link(os.path.join(folder, os.path.basename(rec[kind])))})")
            prompt = rec["prompt"].replace("\n", "⏎").replace("|", "\\|")
            rows.append([len(rows) + 1, f"`{prompt}`" if prompt else "(none)", rec["tokens"],
                         "yes" if rec["ended_with_eot"] else "no", ",".join(rec["headers_added"]) or "–",
                         None if res is None else "yes" if res["parse_ok"] else "no",
                         None if res is None else "yes" if res["midi_ok"] else "no",
                         None if res is None else res["reason"] or "no", " · ".join(links)])
    L += [md_table(["#", "prompt", "tokens", "ended", "headers added", "parses", "MIDI", "degenerate", "files"],
                   rows, ["---:", "---", "---:"] + ["---"] * 6), ""]
    ref = st.eval.get("reference")
    summary = eval_syntax.summarize([r for r in results if r is not None])
    L += [f"Validity and musical statistics of these {len(rows)} tunes (`files`) next to "
          f"{ref['n_files'] if ref else 0} real {st.split} tunes (`reference`), by `eval_syntax.py`:", "",
          "```", eval_syntax.format_table(summary, ref), "```", ""]
    return L


CAPABILITIES = [
    ("ends the tune (end-of-tune token)", lambda rec, res: rec["ended_with_eot"]),
    ("writes its own X:/M:/L:/K: headers", lambda rec, res: not rec["headers_added"]),
    ("parses (music21)", lambda rec, res: res["parse_ok"]),
    ("converts to MIDI without errors", lambda rec, res: res["midi_ok"]),
    ("not degenerate", lambda rec, res: not res["degenerate"]),
    ("bars fill the meter (≥ 90% of bars)", lambda rec, res: (res.get("bars_matching_meter") or 0) >= 0.9),
]


def section_sizes(st):
    share = st.cfg["capability_share"]
    stat_keys = ["notes", "bars", "pitch_range", "pitch_class_entropy", "notes_per_bar", "bars_matching_meter"]
    rows, caps, sized = [], {}, []
    for r in st.plan:
        folder = os.path.join(st.out, "samples", "by_size", r["name"])
        if not os.path.isfile(os.path.join(folder, "samples.jsonl")):
            continue
        pairs = [(rec, res) for rec, res in st.samples(folder) if res is not None]
        if not pairs:
            continue
        sized.append(r)
        s = eval_syntax.summarize([res for _, res in pairs])
        caps[r["name"]] = [sum(bool(test(rec, res)) for rec, res in pairs) / len(pairs) for _, test in CAPABILITIES]
        rows.append([r["name"], scaling.human(st.results[r["name"]]["n_params"]), num(st.ppl[r["name"]]["loss"]),
                     s["n_files"], pct(s["parse_valid_rate"]), pct(s["midi_rate"]), pct(1 - s["degenerate_rate"]),
                     *[num(s["means"].get(k), ".2f") for k in stat_keys]])
    if not sized:
        return []
    ref = st.eval.get("reference")
    if ref:
        rows.append([f"*real {st.split} tunes*", "", "", ref["n_files"], pct(ref["parse_valid_rate"]),
                     pct(ref["midi_rate"]), pct(1 - ref["degenerate_rate"]),
                     *[num(ref["means"].get(k), ".2f") for k in stat_keys]])
    L = ["## What each model size can do", "",
         f"{st.cfg['samples_per_size']} unconditional tunes per model (the sampling settings above), scored by "
         f"`eval_syntax.py`; the last row is the real {st.split} tunes. Musical statistics are means over the tunes "
         f"that parse.", "",
         md_table(["run", "params", f"{st.split} loss", "tunes", "parses", "MIDI", "not degenerate",
                   *[k.replace("_", " ") for k in stat_keys]], rows), "",
         f"Capabilities by size: the share of each model's tunes that show it, **bold** where at least "
         f"{share:.0%} do.", "",
         md_table(["capability", *[f"{r['name']} ({scaling.human(st.results[r['name']]['n_params'])})"
                                   for r in sized]],
                  [[name, *[f"**{pct(caps[r['name']][i])}**" if caps[r["name"]][i] >= share
                            else pct(caps[r["name"]][i]) for r in sized]]
                   for i, (name, _) in enumerate(CAPABILITIES)], ["---"] + ["---:"] * len(sized)), ""]
    for fam in dict.fromkeys(r["model_type"] for r in sized):
        fam_runs = sorted((r for r in sized if r["model_type"] == fam), key=lambda r: st.results[r["name"]]["n_params"])
        parts = []
        for i, (name, _) in enumerate(CAPABILITIES):
            first = next((r for r in fam_runs if caps[r["name"]][i] >= share), None)
            parts.append(f"{name}: " + (f"from {scaling.human(st.results[first['name']]['n_params'])} parameters"
                                        if first else "not at these sizes"))
        L.append(f"- **{fam}** — " + "; ".join(parts) + ".")
    return L + [""]


def section_files(st):
    return ["## Files", "",
            f"- `runs/<run>/`: `results.json`, `log.jsonl`, `ckpt.pt` and `{st.split}_perplexity.json` of every model",
            "- `samples/best/`, `samples/by_size/<run>/`: the tunes (`.abc`; `.mid`, `.wav`, `.svg` for the best "
            "model) and their `samples.jsonl`",
            "- `eval_syntax.json`: every tune's checks and statistics; `fit.json`, `fit.md`: the fits; `plots/`; "
            "`logs/`: the output of every script the study ran; `timings.json`; `study_config.json`", ""]


def write_report(plan, best, jobs, cfg, data_path, timings, fits, loss_name, plots, started, invocation_s):
    st = Study(plan, best, jobs, cfg, data_path)
    lines = (section_header(st, timings, started, invocation_s) + section_dataset(st, plots) + section_models(st)
             + section_training(st, plots) + section_fits(st, fits, loss_name, plots) + section_best_samples(st)
             + section_sizes(st) + section_files(st))
    path = os.path.join(cfg["out_dir"], "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# -----------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.time()
    cfg = configure(globals(), argv)
    config_files = [a for a in argv if not a.startswith("--")]
    cfg["_config_file"] = config_files[-1] if config_files else None
    cfg["_argv"] = argv
    for key in ("num_samples", "samples_per_prompt", "reference_tunes", "max_new_tokens", "n_bootstrap"):
        if cfg[key] < 1:
            fail(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["max_tokens"] < 0 or cfg["samples_per_size"] < 0:
        fail("max_tokens and samples_per_size must not be negative")
    if not 0 < cfg["ci_level"] < 1:
        fail(f"ci_level must be between 0 and 1, got {cfg['ci_level']}")
    specs = parse_runs(cfg["runs"])
    out = cfg["out_dir"]
    data_path = cfg["data_dir"] or os.path.join(out, "data")
    logs = os.path.join(out, "logs")
    have_data = os.path.isfile(os.path.join(data_path, "meta.json")) and \
        os.path.isfile(os.path.join(data_path, "stats.json"))

    def plan_runs():
        meta = read_json(os.path.join(data_path, "meta.json")) if have_data else {"vocab_size": 128}
        train_tokens = read_json(os.path.join(data_path, "stats.json"))["splits"]["train"]["tokens"] \
            if have_data else 0
        return [resolve_run(s, cfg, data_path, int(meta["vocab_size"]), train_tokens) for s in specs]

    if cfg["dry_run"]:
        print_plan(plan_runs(), have_data)
        return None
    if cfg["dataset_input_required"] and not cfg["dataset_input"] and not have_data:
        fail(f"this study prepares its data from your collection: add --dataset_input=/path/to/it "
             f"(no dataset at {data_path} yet)")
    if cfg["dataset_input"] and not have_data and not any(c in cfg["dataset_input"] for c in "*?[") \
            and not os.path.exists(cfg["dataset_input"]):
        fail(f"dataset_input {cfg['dataset_input']} does not exist")
    os.makedirs(out, exist_ok=True)
    timings = Timings(os.path.join(out, "timings.json"))
    with open(os.path.join(out, "study_config.json"), "w") as f:
        json.dump({k: v for k, v in cfg.items() if not k.startswith("_")}, f, indent=1)

    # 1. data
    if not have_data:
        print(f"[prepare] {data_path} from {cfg['dataset_input'] or 'the music21 corpus'}", flush=True)
        t0 = time.time()
        run_script(["prepare.py", "--out", data_path,
                    *(["--input", cfg["dataset_input"]] if cfg["dataset_input"] else []),
                    *shlex.split(cfg["prepare_args"])], os.path.join(logs, "prepare.log"), "prepare.py")
        timings.add("prepare", time.time() - t0)
        have_data = True
    else:
        print(f"[prepare] {data_path} exists, used as it is (delete it to prepare again)")
    plan = plan_runs()
    print_plan(plan, True)

    # 2-3. train, test loss
    train_all(plan, cfg, timings, logs)
    perplexity_all(plan, cfg, timings, logs)

    # 4. fits and plots
    scaling.n_bootstrap, scaling.ci_level = cfg["n_bootstrap"], cfg["ci_level"]
    t0 = time.time()
    try:
        rows, loss_name = scaling.load_runs([r["run_dir"] for r in plan],
                                            "test" if cfg["perplexity_split"] == "test" else "val")
        fits = scaling.fit_all(rows)
    except scaling.InputError as e:
        fail(str(e))
    plot_dir = os.path.join(out, "plots")
    plots = scaling.write_outputs(rows, fits, out, loss_name, plot_dir=plot_dir)
    hist = os.path.join(data_path, "length_histogram.png")
    if os.path.isfile(hist):
        plots["length_histogram"] = shutil.copy(hist, os.path.join(plot_dir, "length_histogram.png"))
    timings.add("fit", time.time() - t0)
    for fam, f in fits.items():
        ci = f"[{f['alpha_ci'][0]:.3g}, {f['alpha_ci'][1]:.3g}]" if f["alpha_ci"] else "(no interval)"
        print(f"[fit] {fam}: alpha = {f['alpha']:.3g} {ci}, c = {f['c']:.3g}, {len(f['warnings'])} warning(s)")

    # 5-6. samples and their evaluation
    losses = {r["name"]: read_json(os.path.join(r["run_dir"], f"{cfg['perplexity_split']}_perplexity.json"))["loss"]
              for r in plan}
    best = min(plan, key=lambda r: losses[r["name"]])
    jobs = sample_jobs(plan, best, cfg)
    sample_all(jobs, timings, logs)
    eval_all(jobs, data_path, cfg, timings, logs)

    # 7. report
    path = write_report(plan, best, jobs, cfg, data_path, timings, fits, loss_name, plots, started,
                        time.time() - t_start)
    print(f"done in {fmt_duration(time.time() - t_start)}: {path}")
    return path


if __name__ == "__main__":
    main()
