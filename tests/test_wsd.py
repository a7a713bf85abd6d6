"""Warmup-stable-decay in train.py: the schedule, a trunk that writes a checkpoint where each budget's cooldown starts,
and branches that are bit for bit the budget trained alone, also across kills and resumes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from helpers import REPO, exit_message, read_log, run, tiny_args
from music_scaling_laws.training import schedule


WSD = ["--lr_schedule=wsd", "--cooldown_frac=0.5", "--eval_interval=10", "--dropout=0.1"]  # dropout: RNG state too
BUDGETS = (10240, 20480)  # 40 and 80 steps of 256 tokens in stride order; cooldowns from iterations 20 and 40


def test_wsd_schedule_warms_up_holds_the_rate_and_decays_to_min_lr():
    lr = lambda it, total: schedule.lr_at(it, total, 1.0, 0.1, 5, "wsd", 0.2)  # noqa: E731
    for total in (50, 100, 400):
        start = schedule.wsd_decay_start(total, 5, 0.2)
        assert start == total - round(0.2 * total)
        # the warm-up is cosine's, and nothing before the decay depends on the run's length
        assert [lr(i, total) for i in range(start)] == [lr(i, 400) for i in range(start)]
        assert [lr(i, total) for i in range(5)] == [schedule.lr_at(i, total, 1.0, 0.1, 5) for i in range(5)]
        assert all(lr(i, total) == 1.0 for i in range(5, start + 1))
        decay = [lr(i, total) for i in range(start, total)]
        assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] == pytest.approx(0.1)
    assert schedule.wsd_decay_start(10, 8, 0.5) == 8  # a cooldown never starts inside the warm-up


def strip_log(out):
    return [(e["iter"], e["tokens"], e["lr"], e["train_loss"], e.get("val_loss")) for e in read_log(out)]


def same_run(branch, alone, trunk):
    """A branch is the budget trained alone: the same log and losses, bit for bit, the whole budget's tokens and
    FLOPs, and it records its trunk."""
    assert strip_log(branch["config"]["out_dir"]) == strip_log(alone["config"]["out_dir"])
    for key in ("val_loss", "train_loss", "tokens_trained", "train_flops", "iters", "lr_schedule"):
        assert branch[key] == alone[key], key
    assert branch["trunk"]["out_dir"] == os.path.abspath(trunk) and alone["trunk"] is None
    assert (branch["role"], alone["role"]) == ("branch", "run")  # what a study's fits read (run_files.run_role)
    assert branch["trunk"]["iter"] == schedule.wsd_decay_start(alone["iters"], 5, 0.5)


@pytest.mark.parametrize("order", ["tunes", "stride"])
def test_a_wsd_branch_is_exactly_the_budget_trained_alone(char_dataset, tmp_path, order):
    """Why this holds: step i reads windows [i*W, (i+1)*W) of an order seeded by (data_seed, epoch) alone, and the
    warm-up depends on warmup_iters alone, so before a budget's cooldown the trunk is that budget's run."""
    budgets = ",".join(map(str, BUDGETS))
    trunk = tmp_path / "trunk"
    trunk_res = run(char_dataset, trunk, *WSD, f"--data_order={order}", f"--branch_budgets={budgets}")
    assert sorted(os.listdir(trunk)) == ["branch_10240.pt", "branch_20480.pt", "ckpt.pt", "log.jsonl",
                                         "results.json", "train.lock"]
    assert trunk_res["branch_budgets"] == list(BUDGETS) and trunk_res["role"] == "trunk"
    assert {e["lr"] for e in read_log(trunk) if e["iter"] > 5 and e["lr"] is not None} == {3e-3}  # after warm-up
    for budget in BUDGETS:
        branch = train.main([f"--out_dir={tmp_path / f'branch_{budget}'}", "--init_from=branch",
                             f"--branch_from={trunk}", f"--max_tokens={budget}"])
        alone = run(char_dataset, tmp_path / f"alone_{budget}", *WSD, f"--data_order={order}",
                    f"--max_tokens={budget}")
        same_run(branch, alone, trunk)
    # a budget the trunk did not branch, a branch into its trunk, and a changed setting are one-line errors
    for bad, says in (["--max_tokens=5e3", "branch_10240.pt, branch_20480.pt"],
                      [f"--max_tokens={BUDGETS[0]}", "own out_dir"],
                      [f"--max_tokens={BUDGETS[0]}", "learning_rate"]):
        out = trunk if says == "own out_dir" else tmp_path / "bad"
        extra = ["--learning_rate=1e-2"] if says == "learning_rate" else []
        with pytest.raises(SystemExit) as excinfo:
            train.main([f"--out_dir={out}", "--init_from=branch", f"--branch_from={trunk}", bad, *extra])
        assert says in exit_message(excinfo)


def kill_when_checkpointed(args, out):
    """Start train.py with args, SIGKILL it once out/ckpt.pt exists; the checkpoint's iteration."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same float sums as this process
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (out / "ckpt.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "results.json").exists()
    return torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]


def test_a_killed_trunk_and_a_killed_branch_resume_exactly(char_dataset, tmp_path):
    trunk, branch = tmp_path / "trunk", tmp_path / "branch"
    budgets = ",".join(map(str, BUDGETS))
    stopped = kill_when_checkpointed(tiny_args(char_dataset, trunk, *WSD, "--data_order=stride", "--ckpt_interval=4",
                                               f"--branch_budgets={budgets}"), trunk)
    assert 0 < stopped < 40
    train.main([f"--out_dir={trunk}", "--init_from=resume"])
    stopped = kill_when_checkpointed([f"--out_dir={branch}", "--init_from=branch", f"--branch_from={trunk}",
                                      f"--max_tokens={BUDGETS[1]}", "--ckpt_interval=4"], branch)
    assert 40 < stopped < 80
    resumed = train.main([f"--out_dir={branch}", "--init_from=resume"])
    alone = run(char_dataset, tmp_path / "alone", *WSD, "--data_order=stride", f"--max_tokens={BUDGETS[1]}")
    same_run(resumed, alone, trunk)
