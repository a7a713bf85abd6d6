"""train.py / train_rnn.py: the fairness guarantees of the study (determinism, exact resume, gradient accumulation,
DDP) and the one-line errors for bad input. Tiny models on the small real char_dataset, CPU only. The data order and
the one-epoch budget: test_data_order.py; the configurator: test_configurator.py; wsd branches: test_wsd.py."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import calc_perplexity
import train
from music_scaling_laws.errors import UserError
from music_scaling_laws.training import step
from model import load_checkpoint
from helpers import ONE_THREAD, exit_message, read_log, run, tiny_args, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.fixture(scope="module")
def gpt_run(char_dataset, tmp_path_factory):
    """A finished 30-iteration GPT run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("gpt_run")
    # stride order: every step scores the same number of tokens, which the throughput check below counts on
    return out, run(char_dataset, out, "--max_iters=30", "--dropout=0.1", "--data_order=stride")


# ---------------------------------------------------------------------------------------------
# outputs, learning, determinism

def test_run_writes_the_contract_files_and_learns(gpt_run, char_dataset):
    out, res = gpt_run
    for key in ("model_type", "n_params", "n_params_non_embedding", "n_layer", "n_embd", "n_head", "tokens_trained",
                "epochs", "train_loss", "val_loss", "val_bpc", "wall_time_s", "tokens_per_s", "peak_mem_bytes",
                "device", "config", "compile_time_s", "train_time_s"):
        assert key in res, key
    # throughput leaves the first step (compilation, warm-up) out; it is reported apart, inside the wall time
    assert 0 < res["compile_time_s"] < res["train_time_s"] < res["wall_time_s"]
    steady_tokens = res["tokens_trained"] - res["tokens_per_iter"]
    assert res["tokens_per_s"] == pytest.approx(steady_tokens / (res["train_time_s"] - res["compile_time_s"]))
    assert res["model_type"] == "gpt" and res["n_head"] == 2 and res["device"] == "cpu"
    assert res["cuda_graph_skips"] == 0  # CUDA graphs torch.compile ran op by op (only 'reduce-overhead' has any)
    assert res["config"]["data_dir"] == str(char_dataset) and res["config"]["block_size"] == 32
    stats = json.loads((char_dataset / "stats.json").read_text())["splits"]["val"]
    assert res["val_bpc"] == pytest.approx(res["val_loss"] / math.log(2) * stats["tokens"] / stats["chars"])
    # the final pass scores every val token once, exactly as calc_perplexity.py does: one number, not two
    assert res["val_targets"] == stats["tokens"]
    ppl = calc_perplexity.main([str(out), "--split", "val"])  # (tests/test_perplexity.py runs its command line)
    assert ppl["tokens"] == stats["tokens"] and ppl["loss"] == pytest.approx(res["val_loss"], rel=1e-5)

    log = read_log(out)
    for entry in log:
        for key in ("iter", "tokens", "lr", "train_loss", "tokens_per_s", "mfu", "peak_mem_bytes"):
            assert key in entry
    first_val = log[0]["val_loss"]
    assert log[0]["iter"] == 0 and first_val == pytest.approx(math.log(res["vocab_size"]), abs=0.5)
    assert res["val_loss"] < first_val - 0.5, "the loss did not fall"
    assert [e["iter"] for e in log if "val_loss" in e] == [0, 10, 20, 30]

    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == 30 and ckpt["tokens_seen"] == res["tokens_trained"]
    assert ckpt["config"]["block_size"] == 32 and ckpt["model_args"]["vocab_size"] == res["vocab_size"]
    model, _ = load_checkpoint(str(out))
    assert model.num_params() == res["n_params"] and not model.training


def test_same_seeds_give_identical_losses_and_a_new_seed_does_not(gpt_run, char_dataset, tmp_path):
    out, res = gpt_run
    again = run(char_dataset, tmp_path / "again", "--max_iters=30", "--dropout=0.1", "--data_order=stride")
    assert again["val_loss"] == res["val_loss"]
    losses = lambda log: [(e["iter"], e["train_loss"], e.get("val_loss")) for e in log]
    assert losses(read_log(tmp_path / "again")) == losses(read_log(out))
    other = run(char_dataset, tmp_path / "other", "--max_iters=30", "--dropout=0.1", "--seed=7", "--data_order=stride")
    assert other["val_loss"] != res["val_loss"]


def test_train_rnn_trains_an_lstm_with_the_same_loop(run_script, char_dataset, tmp_path):
    proc = run_script(["train_rnn.py", *tiny_args(char_dataset, tmp_path), "--max_iters=30", "--learning_rate=1e-2",
                       "--min_lr=1e-3"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model_type"] == "lstm" and res["n_head"] is None and res["n_layer"] == 2
    log = read_log(tmp_path)
    assert res["val_loss"] < log[0]["val_loss"] - 0.5, "the LSTM's loss did not fall"
    assert "lstm:" in proc.stdout


@pytest.mark.parametrize("order", ["tunes", "stride"])
def test_gradient_accumulation_matches_a_larger_batch(char_dataset, tmp_path, order):
    """In tunes order micro-batches score different numbers of tokens: each is weighted by its share, so 4
    micro-batches of 2 windows are still one batch of 8 (not a mean of 4 means)."""
    big = run(char_dataset, tmp_path / "1x8", "--max_iters=8", "--eval_interval=0", f"--data_order={order}")
    small = run(char_dataset, tmp_path / "4x2", "--max_iters=8", "--eval_interval=0", "--batch_size=2",
                "--gradient_accumulation_steps=4", f"--data_order={order}")
    assert small["tokens_trained"] == big["tokens_trained"]
    assert small["val_loss"] == pytest.approx(big["val_loss"], rel=1e-4)
    assert [e["train_loss"] for e in read_log(tmp_path / "4x2")] == pytest.approx(
        [e["train_loss"] for e in read_log(tmp_path / "1x8")], rel=1e-4)


@pytest.mark.slow
def test_compile_is_auto_on_cuda_only_and_true_compiles_on_cpu(char_dataset, tmp_path):
    """--compile=True compiles on CPU too (inductor's C++ backend: what the Docker smoke test checks the image's
    compiler with); the default 'auto' does not compile on CPU. The compiled run learns what the eager one does."""
    model = torch.nn.Linear(2, 2)
    from music_scaling_laws.training.hardware import compile_model
    assert compile_model(model, "auto", "default", "cpu") == (model, None)
    assert compile_model(model, "False", "default", "cuda") == (model, None)
    args = [*tiny_args(char_dataset, tmp_path / "compiled", "--max_iters=3", "--eval_interval=0", "--eval_iters=2",
                       "--n_layer=1", "--batch_size=4"), "--compile=True"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu float32 compiled" in proc.stdout
    assert list((tmp_path / "inductor").rglob("*.so")), "inductor built no C++ kernel"
    compiled = json.loads((tmp_path / "compiled" / "results.json").read_text())
    eager = run(char_dataset, tmp_path / "eager", "--max_iters=3", "--eval_interval=0", "--eval_iters=2",
                "--n_layer=1", "--batch_size=4", "--compile=auto")
    assert compiled["config"]["compile"] == "True" and eager["config"]["compile"] == "auto"
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)


# ---------------------------------------------------------------------------------------------
# resume

# the signal comes at iteration 10 at the latest (its first checkpoint or second log line): 160 iterations
# leave the run seconds of work after it, however busy the machine (at 80 a run could end unseen: ~1 s)
STOPPED_RUN = ["--max_iters=160", "--dropout=0.1", "--eval_interval=20"]


@pytest.fixture(scope="module")
def uninterrupted(char_dataset, tmp_path_factory):
    """uninterrupted() -> (folder, results) of STOPPED_RUN trained without a stop, in this process: what every
    stopped and resumed run below must end exactly like, whichever way it was checkpointed. Trained once for the
    four of them, per number of CPU threads (another count orders float sums differently)."""
    trained = {}

    def get():
        threads = torch.get_num_threads()
        if threads not in trained:
            out = tmp_path_factory.mktemp("whole")
            trained[threads] = out, run(char_dataset, out, *STOPPED_RUN)
        return trained[threads]
    return get


@pytest.mark.parametrize("every, stop, during", [("--ckpt_interval=10", signal.SIGKILL, "training"),
                                                 ("--ckpt_interval_s=1e-6", signal.SIGKILL, "training"),
                                                 ("--ckpt_interval=0", signal.SIGTERM, "training"),
                                                 ("--ckpt_interval=0", signal.SIGTERM, "setup")])
def test_stopped_and_resumed_run_ends_exactly_like_an_uninterrupted_one(char_dataset, uninterrupted, tmp_path, every,
                                                                        stop, during):
    """Killed (SIGKILL: the last periodic checkpoint, every 10 iterations or by the clock) or stopped (SIGTERM, as
    docker stop and pre-emption do: a checkpoint at the next step and a one-line message; also when the signal
    comes while the run still sets up, before its first step), a resumed run ends exactly like one that was never
    interrupted (and checkpoints at any interval leave the numbers as they are)."""
    max_iters = 160
    args = [*STOPPED_RUN, every]
    killed = tmp_path / "killed"
    # the resume below runs in this process: the killed run must use the same number of CPU threads, or
    # float sums are ordered differently (another test may have called torch.set_num_threads earlier)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "train.py", *tiny_args(char_dataset, killed), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    ready = (lambda: (killed / "ckpt.pt").exists()) if stop == signal.SIGKILL else \
        (lambda: killed.exists()) if during == "setup" else \
        (lambda: (killed / "log.jsonl").exists() and len((killed / "log.jsonl").read_text().splitlines()) >= 2)
    wait_for(ready, proc, timeout=300, poll=0.01)  # AssertionError if the run ends before the signal
    proc.send_signal(stop)
    _, stderr = proc.communicate()
    ckpt = torch.load(killed / "ckpt.pt", weights_only=True)
    if stop == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    else:
        last = stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith("error: stopped by SIGTERM at iteration "), stderr[-500:]
        assert f"iteration {ckpt['iter_num']}:" in last and "--init_from=resume" in last
    assert (ckpt["iter_num"] == 0 if during == "setup" else 0 < ckpt["iter_num"] < max_iters)
    assert not (killed / "results.json").exists()

    # the checkpoint's settings are the defaults of a resume: out_dir and init_from are enough
    resumed = train.main([f"--out_dir={killed}", "--init_from=resume"])
    whole, whole_results = uninterrupted()
    assert resumed["val_loss"] == whole_results["val_loss"]
    assert resumed["tokens_trained"] == whole_results["tokens_trained"]
    strip = lambda log: [(e["iter"], e["train_loss"], e.get("val_loss")) for e in log]
    assert strip(read_log(killed)) == strip(read_log(whole))


def test_resume_refuses_changed_settings_and_a_different_vocabulary(gpt_run, char_dataset, tmp_path):
    out, _ = gpt_run
    with pytest.raises(SystemExit) as excinfo:
        train.main([f"--out_dir={out}", "--init_from=resume", "--learning_rate=1e-2"])
    assert "learning_rate" in exit_message(excinfo)
    other = tmp_path / "other_vocab"
    shutil.copytree(char_dataset, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["vocab_size"] += 1
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit) as excinfo:
        train.main([f"--out_dir={out}", "--init_from=resume", f"--data_dir={other}"])
    assert "vocabulary" in exit_message(excinfo)
    with pytest.raises(SystemExit) as excinfo:
        train.main([f"--out_dir={tmp_path / 'nothing'}", "--init_from=resume"])
    assert "does not exist" in exit_message(excinfo)


def test_a_checkpoint_from_before_data_order_resumes_in_stride_order(gpt_run, tmp_path):
    """Checkpoints written before data_order existed were trained in stride order: resuming one must go on in
    that order, not in today's default (tunes), or the rest of the epoch would visit other windows."""
    out, _ = gpt_run
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["data_order"] == "stride"
    del ckpt["config"]["data_order"]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(ckpt, old / "ckpt.pt")
    cfg, _ = train.read_config([f"--out_dir={old}", "--init_from=resume"], {})
    assert cfg["data_order"] == "stride" and train.data_order == "tunes"
    with pytest.raises(UserError) as excinfo:  # and asking for the other order is a changed setting
        train.read_config([f"--out_dir={old}", "--init_from=resume", "--data_order=tunes"], {})
    assert "data_order" in exit_message(excinfo)


# ---------------------------------------------------------------------------------------------
# bad input

def test_missing_dataset_and_oversized_block_are_one_line_errors(char_dataset, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        train.main(tiny_args(tmp_path / "no_data", tmp_path / "out"))
    assert "not found" in exit_message(excinfo)
    val_tokens = json.loads((char_dataset / "stats.json").read_text())["splits"]["val"]["tokens"]
    with pytest.raises(SystemExit) as excinfo:
        train.main(tiny_args(char_dataset, tmp_path / "out") + [f"--block_size={val_tokens + 10}"])
    assert "larger than the val split" in exit_message(excinfo)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(char_dataset, tmp_path, monkeypatch):
    real = train.accumulate_gradients
    calls = []

    def nan_at_iteration_8(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 9 else loss

    monkeypatch.setattr(train, "accumulate_gradients", nan_at_iteration_8)
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, tmp_path, "--max_iters=20", "--ckpt_interval=5")
    assert "loss became nan at iteration 8" in exit_message(excinfo)
    model, ckpt = load_checkpoint(str(tmp_path))
    assert ckpt["iter_num"] == 5 and all(torch.isfinite(p).all() for p in model.parameters())
    assert not (tmp_path / "results.json").exists()
    # the marker a study reads to tell a diverged run from a failed one (not the message's words)
    assert json.loads((tmp_path / "diverged.json").read_text()) == {"iteration": 8, "loss": "nan"}


def test_an_infinite_learning_rate_is_caught_as_divergence(char_dataset, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, tmp_path, "--max_iters=5", "--learning_rate=1e400", "--eval_interval=0")
    assert "loss became" in exit_message(excinfo)


# ---------------------------------------------------------------------------------------------
# DDP (gloo on CPU)

def test_rank_split_keeps_the_step_and_bounds_the_micro_batch():
    # accumulation split across ranks where it divides (as before), else the micro-batch
    assert step.rank_split(32, 1, 1) == (32, 1)
    assert step.rank_split(4, 2, 2) == (4, 1)
    assert step.rank_split(32, 1, 8) == (4, 1)
    assert step.rank_split(32, 3, 2) == (24, 2)
    for batch, accum, world in [(32, 1, 8), (8, 6, 4), (5, 3, 15), (32, 3, 2), (7, 4, 2)]:
        micro, steps = step.rank_split(batch, accum, world)
        assert micro * steps * world == batch * accum and micro <= batch
    with pytest.raises(ValueError, match="32 windows per optimizer step cannot be shared evenly by 3 DDP ranks"):
        step.rank_split(32, 1, 3)


@pytest.mark.parametrize("ranks, args", [
    (2, ["--batch_size=4", "--gradient_accumulation_steps=2"]),  # the accumulation split over the ranks
    (4, ["--batch_size=8", "--gradient_accumulation_steps=1"]),  # the configs' own: the micro-batch split
])
@pytest.mark.slow
def test_torchrun_on_k_ranks_trains_exactly_like_one_process(char_dataset, tmp_path, ranks, args):
    """`torchrun --standalone --nproc_per_node=K train.py ...` (gloo on CPU) trains the same windows per step as
    one process, so its losses are the same up to float rounding."""
    args = ["--max_iters=6", "--eval_interval=0", "--log_interval=2", *args]
    single = run(char_dataset, tmp_path / "single", *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                           "train.py", *tiny_args(char_dataset, tmp_path / "ddp"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == ranks and ddp["tokens_trained"] == single["tokens_trained"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert [e["train_loss"] for e in read_log(tmp_path / "ddp")] == pytest.approx(
        [e["train_loss"] for e in read_log(tmp_path / "single")], rel=1e-4)
    ckpt = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    assert len(ckpt["rng"]) == ranks  # each rank's RNG state, for an exact resume


@pytest.mark.slow
def test_a_stopped_torchrun_job_checkpoints_once_and_resumes_like_one_process(char_dataset, tmp_path):
    """scancel and docker stop signal every process of a torchrun job (the launcher passes SIGTERM on too): the ranks
    stop together at one step with one checkpoint, every rank exits with the one-line message (no abort as Python
    shuts down), and the job resumed under torchrun ends like one process trained without a stop."""
    args = ["--max_iters=160", "--eval_interval=0", "--log_interval=2", "--batch_size=4",
            "--gradient_accumulation_steps=2"]
    single = run(char_dataset, tmp_path / "single", *args)
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*torchrun, *tiny_args(char_dataset, out, *args)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    wait_for(lambda: (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 3, proc,
             timeout=300, poll=0.01)
    os.killpg(proc.pid, signal.SIGTERM)  # as scancel does: the launcher and both ranks
    _, stderr = proc.communicate(timeout=120)
    stopped_at = torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]
    assert proc.returncode != 0 and 0 < stopped_at < 160 and not (out / "results.json").exists()
    assert stderr.count(f"error: stopped by SIGTERM at iteration {stopped_at}:") == 2, stderr[-2000:]
    assert "terminate called" not in stderr, stderr[-2000:]
    resumed = subprocess.run([*torchrun, f"--out_dir={out}", "--init_from=resume"], cwd=REPO, capture_output=True,
                             text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ddp = json.loads((out / "results.json").read_text())
    assert ddp["tokens_trained"] == single["tokens_trained"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_torchrun_trains_a_config_as_written_on_4_ranks(char_dataset, tmp_path):
    """The documented `torchrun --standalone --nproc_per_node=K train.py config/X.py` with a config's own batch and
    accumulation (32 windows, accumulation 1: each of 4 ranks takes 8), on gloo; a budget of 2 steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train.py", "config/gpt_tiny.py", f"--data_dir={char_dataset}", "--max_iters=2", "--eval_interval=0",
            "--eval_iters=1"]
    results = {}
    for ranks in (1, 4):
        launch = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                                     if ranks > 1 else [])
        proc = subprocess.run([*launch, *args, f"--out_dir={tmp_path / str(ranks)}"], cwd=REPO, capture_output=True,
                              text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[ranks] = json.loads((tmp_path / str(ranks) / "results.json").read_text())
    assert "4 rank(s) x 1 micro-step(s) of 8" in proc.stdout
    assert results[4]["world_size"] == 4 and results[4]["tokens_trained"] == results[1]["tokens_trained"]
    assert results[4]["val_loss"] == pytest.approx(results[1]["val_loss"], rel=1e-4)


# ---------------------------------------------------------------------------------------------
# output folders, a second writer, damaged files, values out of range, fingerprints

def test_a_finished_run_foreign_files_or_a_file_are_never_overwritten(gpt_run, char_dataset, tmp_path):
    out, res = gpt_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "train.lock"}
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, out, "--max_iters=2")
    assert "already holds a run" in exit_message(excinfo) and "--overwrite=True" in exit_message(excinfo)
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "train.lock"}

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, foreign, "--max_iters=2")
    assert "not a train.py run" in exit_message(excinfo) and (foreign / "holiday.jpg").read_bytes() == b"not ours"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, tmp_path / "a_file", "--max_iters=2")
    assert "is a file" in exit_message(excinfo) and (tmp_path / "a_file").read_text() == "x"

    # asked to, it replaces the run, and the test loss computed from the old model goes with it
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "test_perplexity.json").write_text("{}")
    (copy / "notes.txt").write_text("mine")
    again = run(char_dataset, copy, "--max_iters=2", "--overwrite=True")
    assert again["iters"] == 2 and again["run_id"] != res["run_id"]
    assert not (copy / "test_perplexity.json").exists() and (copy / "notes.txt").read_text() == "mine"


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_stale_lock(char_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
                               str(out / "train.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, out, "--max_iters=2")
    assert "another train.py is writing" in exit_message(excinfo)
    holder.kill()
    holder.wait()
    assert run(char_dataset, out, "--max_iters=2")["iters"] == 2  # the kernel released the dead holder's lock


def test_damaged_files_are_one_line_errors_naming_the_file(gpt_run, char_dataset, tmp_path):
    out, _ = gpt_run
    for name, damage in (("truncated", lambda b: b[:len(b) // 2]), ("random", lambda b: os.urandom(4096))):
        run_dir = tmp_path / name
        shutil.copytree(out, run_dir)
        (run_dir / "ckpt.pt").write_bytes(damage((out / "ckpt.pt").read_bytes()))
        with pytest.raises(SystemExit) as excinfo:
            train.main([f"--out_dir={run_dir}", "--init_from=resume"])
        assert f"{run_dir / 'ckpt.pt'} is damaged" in exit_message(excinfo)
    data = tmp_path / "data"
    shutil.copytree(char_dataset, data)
    with open(data / "val.bin", "ab") as f:
        f.write(b"\x01")  # half a uint16 token
    with pytest.raises(SystemExit) as excinfo:
        run(data, tmp_path / "odd", "--max_iters=2")
    assert "val.bin is damaged" in exit_message(excinfo)
    meta = json.loads((char_dataset / "meta.json").read_text())
    meta["vocab_size"] += 3
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit) as excinfo:
        run(data, tmp_path / "vocab", "--max_iters=2")
    assert "meta.json is damaged" in exit_message(excinfo)


@pytest.mark.parametrize("bad", ["--batch_size=0", "--block_size=0", "--eval_iters=0", "--n_layer=0",
                                 "--gradient_accumulation_steps=0", "--dropout=2", "--max_tokens=-5",
                                 "--max_iters=-1", "--learning_rate=nan", "--log_interval=0"])
def test_values_out_of_range_are_one_line_errors(char_dataset, tmp_path, bad):
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, tmp_path, bad)
    assert bad.split("=")[0][2:] in exit_message(excinfo)
    assert not (tmp_path / "ckpt.pt").exists()


def test_runs_record_the_fingerprint_of_their_data_and_resume_refuses_other_data(gpt_run, char_dataset, tmp_path):
    out, res = gpt_run
    meta = json.loads((char_dataset / "meta.json").read_text())
    stats = json.loads((char_dataset / "stats.json").read_text())
    assert res["data_fingerprint"] == meta["fingerprint"] == stats["fingerprint"] and len(meta["fingerprint"]) == 64
    # the same tokens, one changed: the fingerprint sees it, and a resume on it is refused
    other = tmp_path / "other"
    shutil.copytree(char_dataset, other)
    train_bin = bytearray((other / "train.bin").read_bytes())
    train_bin[10] ^= 1
    (other / "train.bin").write_bytes(bytes(train_bin))
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(SystemExit) as excinfo:
        train.main([f"--out_dir={copy}", "--init_from=resume", f"--data_dir={other}"])
    assert "not the dataset this run was trained on" in exit_message(excinfo)


def test_a_run_killed_after_its_last_checkpoint_resumes_and_writes_its_results(char_dataset, tmp_path):
    """A kill between the final checkpoint and results.json leaves a checkpoint at the last iteration: the resume
    runs no step, writes results.json with the losses of the uninterrupted run and ends normally."""
    out = tmp_path / "run"
    whole = run(char_dataset, out, "--max_iters=10")
    (out / "results.json").unlink()
    resumed = train.main([f"--out_dir={out}", "--init_from=resume"])
    assert json.loads((out / "results.json").read_text())["val_loss"] == resumed["val_loss"] == whole["val_loss"]
    assert resumed["iters"] == 10 and resumed["tokens_trained"] == whole["tokens_trained"]
    assert read_log(out)[-1]["final"] and read_log(out)[-1]["iter"] == 10


@pytest.mark.parametrize("bad, message", [("--compile_mode=bogus", "compile_mode must be one of"),
                                          ("--run_role=trunk", "run_role must be one of run, sweep, seed_repeat"),
                                          ("--max_iters=1", "cannot create out_dir")])
def test_a_bogus_compile_mode_and_an_out_dir_that_cannot_be_made_are_one_line(char_dataset, tmp_path, bad, message):
    """compile_mode is checked on the CPU too, where compile is not used; an out_dir whose parent cannot hold it
    (read-only for a user, or a file, as here: the tests may run as root, who writes anywhere) is one line."""
    out = tmp_path / "run"
    if bad == "--max_iters=1":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    with pytest.raises(SystemExit) as excinfo:
        run(char_dataset, out, bad)
    assert message in exit_message(excinfo)


def test_a_stop_while_the_final_checkpoint_is_written_still_stops_there_and_a_resume_only_evaluates(char_dataset,
                                                                                                    tmp_path):
    """SIGTERM while the last step's checkpoint is being written (the run's own, here the only one: ckpt_interval=0)
    ends the run as a stop does, once that checkpoint is on disk, instead of killing it mid-write (the default
    handler, which came back at the end of the loop, did: the run lost everything since its last checkpoint). The
    resume trains no step and writes the results."""
    out = tmp_path / "run"
    code = ("import os, signal, sys, train\n"
            "real = train.save_checkpoint\n"
            "def save_and_be_stopped(*args, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    real(*args, **kwargs)\n"
            "train.save_checkpoint = save_and_be_stopped\n"
            "train.main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", code, *tiny_args(char_dataset, out, "--max_iters=12",
                                                                  "--ckpt_interval=0")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **ONE_THREAD})
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-500:])  # not -SIGTERM: killed mid-write
    assert proc.stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM at iteration 12:")
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 12 and not (out / "results.json").exists()
    logged = len(read_log(out))
    resumed = train.main([f"--out_dir={out}", "--init_from=resume"])
    assert json.loads((out / "results.json").read_text())["val_loss"] == resumed["val_loss"]
    assert resumed["tokens_trained"] > 0 and all(e["iter"] == 12 for e in read_log(out)[logged:])


@pytest.mark.parametrize("sig, survives", [("SIGTERM", True), ("SIGHUP", True), ("SIGINT", False)])
def test_a_burst_of_stop_signals_still_stops_at_a_checkpoint_but_ctrl_c_twice_does_not_wait(sig, survives):
    """scancel signals every process of a job and the launchers in between pass the signal on, so train.py gets
    SIGTERM two or three times: a repeat must not end the run before its checkpoint (it did, now and then, in the
    fake-SLURM stop test). Ctrl-C twice still ends it at once."""
    code = ("import os, signal, sys\n"
            "from music_scaling_laws.training.loop_state import StopSignals\n"
            "stop = StopSignals()\n"
            f"for _ in range(3):\n    os.kill(os.getpid(), signal.{sig})\n"
            f"sys.exit(0 if stop.received == '{sig}' else 3)\n")  # SIGHUP sends stderr to /dev/null
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    if survives:
        assert proc.returncode == 0, (proc.returncode, proc.stderr)
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
