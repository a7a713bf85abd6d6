"""
Run a whole scaling-law study with one command: prepare the data, train every model, fit the scaling laws,
sample and score tunes, and write the report.

    python study.py config/study_quick.py                      # GPT + LSTM, 6 sizes x 3 budgets each, ~8 min on 2 CPU cores
    python study.py config/study_quick.py --out_dir=out/mine    # same study, another folder
    python study.py config/study_gpu.py                        # GPT + LSTM over 3+ decades of N, one GPU, ~10-13 min
    python study.py config/study_lakh.py --dataset_input=/data/lmd_full   # the full study, one GPU
    python study.py config/study_quick.py --dry_run=True        # the plan only (sizes, tokens, FLOPs): printed,
                                                                # and in out_dir/plan.json for programs
    python study.py config/study_gpu.py --forecast=out/study_quick/fit.json  # its intervals' widths, forecast
    python study.py config/study_lakh.py --launcher=slurm --slurm_partition=gpu   # every run a SLURM job

The steps; the scripts run as subprocesses (their output is shown and kept in out_dir/logs/):
  1. prepare.py        the dataset, when data_dir holds none yet
  2. train.py          every model; a finished run (results.json) is skipped, an interrupted one (ckpt.pt)
                       resumes, so a study that is stopped and started again continues where it stopped
  3. calc_perplexity   the exact test loss of every model
  4. the fits          power-law fits with intervals and warnings, and the plots: in this process, with
                       power_law.py and plots.py (what scaling.py does from the command line)
  5. sample.py         unconditional and prompted tunes from the best model, and a few tunes from every
                       model, the same seeds for each (MIDI, WAV, SVG)
  6. eval_syntax.py    validity and musical statistics of those tunes, next to the real test tunes
  7. out_dir/report.md every table and plot (report.py), and report.html: the same with the plots inline, the
                       sheet music and audio of every tune, and the same seeds across sizes side by side
Everything a study writes goes under out_dir: runs/, samples/, plots/, logs/, fit.json, fit.md, report.md,
report.html (docs/report.md says how to read it).
SIGTERM or Ctrl-C (docker stop, pre-emption) is passed on to the step running; the study exits within seconds
with one line, and the same command continues (music_scaling_laws/study/script_runs.py). Runs found in out_dir that were trained on other
data than data_dir holds now (another dataset, another tokenizer, a changed train.bin) are refused in one line
naming them, or with overwrite=True trained again: report.md never mixes two datasets.
One study.py at a time per out_dir: a second one stops with one line (out_dir/study.lock).

Where the trainings run (train_runs.py and jobs.py in music_scaling_laws/study/ have the details):
  launcher=local           processes of this study: one at a time, or parallel_runs at once on each of `devices`
                           (by default every visible GPU: on an 8-GPU node, 8 runs at once, one per GPU)
  launcher=slurm           each training is one SLURM job submitted through submitit (pip install submitit), with
                           slurm_partition, slurm_gpus_per_run, slurm_cpus_per_run, slurm_mem_gb, slurm_time and
                           slurm_args (any other sbatch option); run study.py on the login node (in tmux or
                           screen) or in a small CPU job: it submits the runs, waits for them (the learning-rate
                           sweep before the runs that take its choice), then does steps 3-7 itself. Run it again
                           after an interruption: finished runs are skipped, stopped ones resume.
  launcher=submitit_local  the same jobs as local processes through submitit (no SLURM): a check of the job path
How a local study starts each training, test-loss pass and sample set (script_runs.py, each the run a fresh python
would train): on CUDA in one long-lived worker process per device slot (worker.py: one CUDA context, compiled graphs
kept; worker_runs), elsewhere as a fork of one process that imported torch once (fork_server.py); fork_runs=False
starts a fresh python for each, the plain mode to debug a study in.

Two knobs add runs to every line of `runs` (study_plan.py names them and says how):
  lr_sweep        each size is trained at every rate of the list ('x0.5,x1,x2': multiples of its config's rate;
                  '3e-4,1e-3': absolute rates), on the fraction lr_sweep_tokens of its budget, each with its own
                  schedule; sizes in order of N, each later grid centred on the rates the smaller sizes found,
                  and a grid whose best rate is at its edge extended by a step (study_plan.py). Per family the
                  sweeps are fitted together as a learning-rate law, ln lr*(N) = a + b ln N (lr_law.py), and every
                  size is trained on the full budget at the law's rate (lr_choice = 'argmin': at its own sweep's
                  best). Only those runs go into the fits, the best model, the samples and the report's run tables;
                  the sweep has its own table, law and plot (lr_sweep.json).
  token_budgets   each size is trained at every budget of the list ('5e5,1e6,2e6'), each its own run with its own
                  schedule, and the fits add the joint L(N, D) = E + A/N^alpha + B/D^beta (power_law.fit_all); the
                  L(N) fits use the largest budget's runs only, so their exponent is not mixed with D.
                  With the warmup-stable-decay schedule (train_args '--lr_schedule=wsd', wsd_branches = True) a
                  size's budgets cost about one run plus the cooldowns: one trunk per size, rate and seed
                  (SIZE[.lrRATE][.seedK].trunk) trains the constant rate up to the largest budget's cooldown, and
                  each budget's run trains its cooldown from the trunk's checkpoint -- bit for bit the run that
                  budget would be alone (train.py --init_from=branch; measured in docs/wsd.md).
  Both together: the sweep runs at the largest budget (times lr_sweep_tokens) and the chosen rate is reused for
  the smaller budgets. The best rate drifts a little with D, but a sweep at every budget would multiply the cost
  of the whole grid by the number of rates.
One knob repeats runs, to measure the run-to-run noise the fits' intervals need:
  seeds           every run for the fits trained this many times (2: twice), each repeat differing only in
                  train.py's seed (initialisation; the data order is data_seed's), in its own folder SIZE.seed2, ...
                  seed_sizes limits the repeats to some sizes: 'gpt_64,lstm_96' (each `seeds` times) or
                  'gpt_64:3,lstm_96:2' (its own count). The repeats enter the fits and the run tables; the best
                  model and the samples come from the first seed's runs.

--wandb_log=True puts every run into one wandb group and logs the study's test losses, fits, plots, sample audio
and report (tracking.py). Where stdout is a log, every step prints a plain progress line every
PROGRESS_INTERVAL_S seconds (progress.py).
"""
import datetime
import os
import shlex
import sys
import time

from music_scaling_laws.configurator import config_keys, configure
from music_scaling_laws.data.dataset import (META, STATS, TrainOrder, iteration_plan, load_dataset, read_json,
                                             write_json_atomic)
from music_scaling_laws.errors import UserError, exit_on_user_error, fail
from music_scaling_laws.lifetime import hold_lock
from music_scaling_laws.run_files import (LOGS, perplexity_path, report_paths, run_timings_path, study_config_path,
                                          study_lock_path, study_run_dir, timings_path)
from music_scaling_laws.fits.forecast import forecast_fits, forecast_text, parse_noise
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.study import study_plan
from music_scaling_laws.study.estimate import estimate_plan
from music_scaling_laws.study.options import check_config, parse_runs
from music_scaling_laws.study.report import fmt_duration, write_report
from music_scaling_laws.study.script_runs import (Timings, compile_cache_env, pass_stop_signals_on, run_script,
                                                  start_fork_server, start_runs)
from music_scaling_laws.study.steps import (eval_all, fit_and_plot, perplexity_all, plan_table, print_plan, sample_all,
                                            sample_jobs, write_plan)
from music_scaling_laws.study.train_runs import refuse_other_data, train_all
from music_scaling_laws.training.schedule import branch_points, wsd_decay_start
from music_scaling_laws.training import tracking

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
token_budgets = ''        # '' = max_tokens alone; '5e5,1e6,2e6': every size at every budget, for the L(N, D) fit
wsd_branches = True       # runs with --lr_schedule=wsd and several token_budgets: one trunk per size, budgets branch
lr_sweep = ''             # '' = off; 'x0.5,x1,x2' (multiples of each config's rate) or '3e-4,1e-3': rates per size
lr_sweep_tokens = 1.0     # share of the (largest) budget a sweep run trains on; < 1: the chosen rate is retrained
lr_choice = 'law'         # 'law': every size at the learning-rate law's rate (3+ swept sizes per family, else the
                          # argmin with a warning); 'argmin': each size at its own sweep's best rate
seeds = 1                 # runs of every size for the fits: 2 = each trained twice (seeds differ, data order not)
seed_sizes = ''           # '' = every size `seeds` times; 'gpt_64:3,lstm_96' = only these (count, or `seeds`)
train_args = ''           # train.py --key=value options for every run, applied before each run's own overrides
device = 'auto'           # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
# evaluation and fit
perplexity_split = 'test'
n_bootstrap = 1000        # bootstrap resamples of the fits' intervals
ci_level = 0.95           # confidence level of every interval
fit_params = 'all'        # N of the fits: 'all' parameters or 'non_embedding' ones (Kaplan et al.'s choice)
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
top_p = 0.9               # nucleus sampling: on 448 tunes of the quick study's best model, 95% convert to MIDI
                          # without errors against 79% at 1.0 (docs/results.md, "Sampling settings")
sample_seed = 1337
render = True             # MIDI, WAV and SVG of every tune sampled (needs abc2midi, fluidsynth, abcm2ps)
reference_tunes = 100     # real test tunes eval_syntax scores as the reference
eval_workers = 0          # eval_syntax worker processes; 0 = one per CPU core
capability_share = 0.5    # a capability "appears" at the first size where at least this share of tunes show it
dry_run = False           # print the plan, write it to out_dir/plan.json, and stop
stop_after = ''           # '' = every step; 'prepare' or 'train' stops the study after that step
estimate = False          # time a few steps of every planned run on this device, print the projected time, stop
                          # (a study without its dataset prepares it first)
estimate_steps = 5        # timed optimizer steps per run for estimate (after 2 warm-up steps)
forecast = ''             # a finished study's fit.json: print what this plan's fits should give, drawn from that
                          # study's laws and noise (interval widths against the exponents: will it conclude?), stop
forecast_studies = 40     # simulated studies per family (forecast_bootstrap resamples each: ~2 s a study)
forecast_noise = ''       # '' = the finished study's; 'SIZE,TRAINING,RUN,RUN_BELOW': errors in ln loss (fits/forecast.py)
forecast_bootstrap = 200
# several trainings at once on one device; each is the same run it would be alone (see train_runs.py)
parallel_runs = 0         # runs at once per device; 0 = automatic: 1 on CPU/MPS, on CUDA as many as the free
                          # memory holds (at most 4)
train_threads = 0         # CPU threads per training; 0 = on CPU torch's default here (OMP_NUM_THREADS, else one per
                          # core) for every run whatever parallel_runs, so the numbers do not depend on it; on a GPU
                          # the cores shared among parallel runs (train_runs.training_threads)
fork_runs = True          # start each training and test-loss pass as a fork of one process that imported torch and
                          # train.py once (fork_server.py: 1.5-3 s less a run), or in a worker (worker_runs);
                          # False: a fresh python for each, the plain mode to debug a study in (pdb, prints, py-spy)
worker_runs = 'auto'      # one long-lived process per device slot runs the slot's trainings, test losses and samples
                          # in itself: one CUDA context and compiled graphs reused (worker.py). 'auto': on CUDA;
                          # True: on any device; False: never (the fork server). All share one persistent
                          # torch.compile cache (TORCHINDUCTOR_CACHE_DIR, ~/.cache/music-scaling-laws/torchinductor)
overwrite = False         # True: runs trained on other data than data_dir holds now are trained again on it (else
                          # the study refuses them in one line: report.md never mixes two datasets)
# Weights & Biases (tracking.py): every run in one group, and the study's test losses, fits, plots, sample audio
# and report in a run of its own; needs `wandb login` or WANDB_MODE=offline, else one line and no wandb
wandb_log = False
wandb_project = 'music-scaling-laws'
wandb_group = ''          # '' = the name of out_dir
# where the trainings run (see the docstring above)
launcher = 'local'        # 'local', 'slurm' (one SLURM job per run, through submitit) or 'submitit_local'
devices = ''              # local, submitit_local: '' = every visible GPU (on CPU: `device`), or 'cuda:0,cuda:2'
slurm_partition = ''      # '' = the cluster's default partition
slurm_gpus_per_run = 1    # GPUs of each run's job; more than 1 trains the run on all of them (torchrun, DDP)
slurm_cpus_per_run = 8    # CPU cores of each run's job
slurm_mem_gb = 0          # memory of each run's job in GB; 0 = the partition's default
slurm_time = 240          # time limit of each job in minutes (submitit_local's too); a run stopped by it resumes
                          # from its checkpoint when the study is run again
slurm_args = ''           # more sbatch options for every job, e.g. 'account=myproj qos=high constraint=h100'
# -----------------------------------------------------------------------------

# the plan

def resolve_run(spec, cfg, data_path, vocab_size, dataset):
    """The run's full training config (as train.py will see it), its size, budget and command line."""
    # imported here, not at the top: torch takes seconds, and --help or a bad study config should not wait for it
    import torch
    import train  # for its knobs' defaults only; train.py itself runs as a subprocess
    import train_rnn
    from model import build_model, model_args_from_config
    run_dir = study_run_dir(cfg["out_dir"], spec["name"])
    argv = ([spec["config"], f"--max_tokens={cfg['max_tokens']}", f"--device={cfg['device']}"]
            + shlex.split(cfg["train_args"]) + spec["overrides"] + tracking.training_args(cfg, spec["name"])
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
    except UserError as e:
        fail(f"run {spec['name']}: {e}")
    except (ValueError, TypeError, AssertionError) as e:
        fail(f"run {spec['name']}: cannot build the model: {e}")
    try:
        tokens = planned_tokens(tcfg, dataset)
        trains = branch_tokens(tcfg, dataset, tokens)
    except ValueError as e:  # a budget or a split that cannot work, said in a sentence
        fail(f"run {spec['name']}: {e}")
    return {**spec, "run_dir": run_dir, "script": script, "argv": argv, "train_config": tcfg,
            "model_type": tcfg["model_type"], "n_params": model.num_params(),
            "n_params_non_embedding": model.num_params(non_embedding=True),
            "flops_per_token": model.flops_per_token(), "tokens": tokens, "trains": trains}


def planned_tokens(tcfg, dataset):
    """The tokens a run will train on, by train.py's own rule (dataset.iteration_plan on its TrainOrder). Before
    the dataset exists (a dry run, dataset None) a budget in steps or tokens is planned on the smallest split one
    step accepts, in stride order; one epoch is unknown and shown as 0."""
    if dataset is None and tcfg["max_iters"] <= 0 and tcfg["max_tokens"] <= 0 and not tcfg["branch_budgets"]:
        return 0
    order = train_order(tcfg, dataset)
    if tcfg["branch_budgets"]:  # a wsd trunk: up to its largest budget's cooldown (train.py's own rule)
        return iteration_plan(tcfg["batch_size"], tcfg["gradient_accumulation_steps"], 0,
                              max(branch_points(tcfg, order)[0]), order)["tokens"]
    return iteration_plan(tcfg["batch_size"], tcfg["gradient_accumulation_steps"], tcfg["max_tokens"],
                          tcfg["max_iters"], order)["tokens"]


def train_order(tcfg, dataset):
    """The run's dataset.TrainOrder; before the dataset exists, the smallest split one step accepts (stride order)."""
    if dataset is None:
        n_windows = tcfg["batch_size"] * tcfg["gradient_accumulation_steps"]
        return TrainOrder(None, tcfg["block_size"], tcfg["data_seed"], n_windows=n_windows)
    return TrainOrder(dataset.split("train"), tcfg["block_size"], tcfg["data_seed"], tcfg["data_order"],
                      dataset.eot_id)


def branch_tokens(tcfg, dataset, tokens):
    """The tokens a run's own process trains: all of them, or a wsd branch's cooldown only (its trunk trained the
    rest); what the ETA, --estimate and the plan's total compute count."""
    if tcfg["init_from"] != "branch" or not tokens:
        return tokens
    order = train_order(tcfg, dataset)
    windows = tcfg["batch_size"] * tcfg["gradient_accumulation_steps"]
    total = iteration_plan(tcfg["batch_size"], tcfg["gradient_accumulation_steps"], tcfg["max_tokens"], 0,
                           order)["total_iters"]
    return tokens - order.targets_before(windows * wsd_decay_start(total, tcfg["warmup_iters"],
                                                                         tcfg["cooldown_frac"]))


def forecast_inputs(cfg):
    """--forecast's fit.json and errors, checked before the plan's seconds: (fit, noise or None for fit.json's)."""
    source = cfg["forecast"]
    if not os.path.isfile(source):
        fail(f"forecast: no file {source} (give a finished study's fit.json)")
    try:
        fit = read_json(source)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        fail(f"forecast: cannot read {source} as JSON ({e})")
    if not isinstance(fit, dict) or not all(isinstance(v, dict) for v in fit.values()):
        fail(f"forecast: {source} is not a study's fit.json")
    return fit, parse_noise(cfg["forecast_noise"])


def print_forecast(plan, fit, noise, cfg, have_data):
    """--forecast: this plan's fits on studies drawn from a finished study's laws and noise (fits/forecast.py)."""
    if not have_data:
        print(f"note: {cfg['data_dir'] or 'the dataset'} is not prepared yet: the plan assumes a vocabulary of 128, so "
              f"the smallest sizes' N is a few percent off")
    families = {r["model_type"] for r in plan}
    with progress_bar(total=cfg["forecast_studies"] * len(families), desc="forecast", unit="study") as bar:
        result = forecast_fits(plan, fit, cfg["forecast_studies"], cfg["forecast_bootstrap"], cfg["ci_level"],
                               cfg["fit_params"], noise, progress=bar.update)
    print(forecast_text(result, cfg["forecast"], cfg["forecast_bootstrap"], cfg["ci_level"]))


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.time()
    cfg = configure(globals(), argv)
    config_files = [a for a in argv if a.endswith(".py") and os.path.isfile(a)]  # not the value of a --key value
    cfg["_config_file"] = config_files[-1] if config_files else None  # for the report's title and command line
    cfg["_argv"] = argv
    check_config(cfg)
    specs = parse_runs(cfg["runs"])
    out = cfg["out_dir"]
    data_path = cfg["data_dir"] or os.path.join(out, "data")
    logs = os.path.join(out, LOGS)
    have_data = os.path.isfile(os.path.join(data_path, META)) and os.path.isfile(os.path.join(data_path, STATS))

    def resolver():
        """resolve_run on this study's dataset; before prepare.py (a dry run), a vocabulary of 128 and an unknown
        epoch."""
        ds = load_dataset(data_path) if have_data else None
        return lambda spec: resolve_run(spec, cfg, data_path, ds.vocab_size if ds else 128, ds)

    def plan_study():
        """(sweep sizes, their choice so far, runs for the fits, every run once) as the study stands now."""
        resolve = resolver()
        sizes = study_plan.sweep_plan(specs, cfg, resolve)
        choice = study_plan.choose_rates(sizes, cfg, strict=False)
        plan = study_plan.final_plan(specs, cfg, resolve, sizes, choice)
        return sizes, choice, plan, study_plan.all_runs(sizes, plan)

    def prepare_data():
        """Step 1, prepare.py into data_path (which holds no dataset yet); returns the seconds it took."""
        print(f"[prepare] {data_path} from {cfg['dataset_input'] or 'the music21 corpus'}", flush=True)
        return run_script(["prepare.py", "--out_dir", data_path,
                           *(["--input", cfg["dataset_input"]] if cfg["dataset_input"] else []),
                           *shlex.split(cfg["prepare_args"])], os.path.join(logs, "prepare.log"), "prepare.py")

    if cfg["forecast"]:  # the plan on the dataset if prepared (else a vocabulary of 128), nothing trained
        fit, noise = forecast_inputs(cfg)
        _, _, plan, _ = plan_study()
        print_forecast(plan, fit, noise, cfg, have_data)
        return None
    if not (have_data or cfg["dry_run"]):  # a study (or --estimate) about to prepare its data: one line before any work
        if cfg["dataset_input_required"] and not cfg["dataset_input"]:
            fail(f"this study prepares its data from your collection: add --dataset_input=/path/to/it "
                 f"(no dataset at {data_path} yet)")
        if cfg["dataset_input"] and not any(c in cfg["dataset_input"] for c in "*?[") \
                and not os.path.exists(cfg["dataset_input"]):
            fail(f"dataset_input {cfg['dataset_input']} does not exist")
    if cfg["estimate"] and not have_data:  # time every run on its real vocabulary and epoch, not 128 tokens and 0
        try:
            os.makedirs(logs, exist_ok=True)
        except OSError as e:
            fail(f"cannot write out_dir {out}: {e.strerror}")
        prepare_data()
        have_data = True
    if cfg["dry_run"] or cfg["estimate"]:
        sizes, choice, plan, every = plan_study()
        table = plan_table(every, have_data)
        print_plan(table)
        write_plan(table, out)
        study_plan.print_choice(choice)
        if cfg["estimate"]:
            os.environ.update(compile_cache_env())  # bench.py's compilations shared with the study's runs
            if cfg["fork_runs"]:
                start_fork_server()
            estimate_plan(every, cfg, have_data, logs, cfg["estimate_steps"])
        return None
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"out_dir {out} is a file, not a folder")
    try:  # a folder that cannot be written (read-only, full) is one line before any work
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        fail(f"cannot write out_dir {out}: {e.strerror}")
    lock_path = study_lock_path(out)
    # one study.py per out_dir (two would train the same runs): held until this process ends, however it ends
    lock = hold_lock(lock_path, f"another study.py is running in {out} (it holds {lock_path}); wait for it or "
                                f"choose another out_dir")  # noqa: F841
    try:
        write_json_atomic({k: v for k, v in cfg.items() if not k.startswith("_")},
                          study_config_path(out), indent=1)
    except OSError as e:
        fail(f"cannot write out_dir {out}: {e.strerror}")
    pass_stop_signals_on()
    timings = Timings(timings_path(out), run_timings_path(out))

    # 1. data
    if not have_data:
        timings.add("prepare", prepare_data())
        have_data = True
    else:
        print(f"[prepare] {data_path} exists, used as it is (delete it to prepare again)")
    if cfg["stop_after"] == "prepare":
        return None
    sizes, choice, plan, every = plan_study()
    print_plan(plan_table(every, True))
    refuse_other_data(every, cfg)  # before any training (train_all checks again the runs the sweep's choice adds)

    # 2-3. train (the learning-rate sweep first: the other runs take its choice), test loss
    start_runs(cfg)  # fresh pythons, forks of the fork server, or long-lived workers (fork_runs, worker_runs)
    if sizes:
        sizes = study_plan.train_sweep(lambda: study_plan.sweep_plan(specs, cfg, resolver()), cfg, timings, logs,
                                       train_all)
        choice = study_plan.choose_rates(sizes, cfg)
        study_plan.write_choice(choice, out)
        study_plan.print_choice(choice)
        plan = study_plan.final_plan(specs, cfg, resolver(), sizes, choice)
    train_all(study_plan.trunks(plan), cfg, timings, logs)  # wsd trunks first: their branches start from them
    train_all(plan, cfg, timings, logs)
    if cfg["stop_after"] == "train":
        print(f"trained every run of the plan in {fmt_duration(time.time() - t_start)}; stopped (stop_after=train)")
        return None
    perplexity_all(plan, cfg, timings, logs)

    # 4. fits and plots
    fits, loss_name, plots = fit_and_plot(plan, cfg, data_path, timings, choice)

    # 5-6. samples (from every size at the largest budget) and their evaluation
    losses = {r["name"]: read_json(perplexity_path(r["run_dir"], cfg["perplexity_split"]))["loss"] for r in plan}
    best = min((r for r in plan if not r.get("repeat")), key=lambda r: losses[r["name"]])  # seed 1's runs
    jobs = sample_jobs([r for r in plan if r.get("top_budget", True) and not r.get("repeat")], best, cfg)
    sample_all(jobs, timings, logs)
    eval_all(jobs, data_path, cfg, timings, logs)

    # 7. report
    path = write_report(plan, best, jobs, cfg, data_path, timings.data, fits, loss_name, plots, started,
                        time.time() - t_start, sweep=choice)
    tracking.log_study(cfg, plan, losses, fits, plots, [(name, folder) for name, folder, *_ in jobs], path)
    print(f"done in {fmt_duration(time.time() - t_start)}: {path}, {report_paths(out)[1]}")
    return path


if __name__ == "__main__":
    main()
