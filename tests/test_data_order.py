"""The data order and the one-epoch budget train.py trains on: windows of a seeded order, gathered on the device
exactly as listed, tune-aligned windows that score every token once, and a default budget of exactly one epoch."""
import json

import numpy as np
import pytest
import torch

from helpers import read_log, run
from music_scaling_laws.data.dataset import TrainOrder, iteration_plan, tune_windows, window_starts
from music_scaling_laws.training.windows import Tokens, TrainBatches, exact_windows, spread_windows


def test_window_order_is_a_seeded_permutation_of_disjoint_windows():
    n, T = 50, 8
    epoch = window_starts(0, n, n, T, data_seed=7)
    assert sorted(epoch) == list(range(0, n * T, T))  # every window once: targets disjoint, all covered
    np.testing.assert_array_equal(epoch, window_starts(0, n, n, T, data_seed=7))
    assert not np.array_equal(epoch, window_starts(0, n, n, T, data_seed=8))
    # consumed in order: any slice of the order is the same slice, however it is requested
    np.testing.assert_array_equal(window_starts(13, 9, n, T, 7), epoch[13:22])
    # past one epoch the windows come again, in a new order
    second = window_starts(n, n, n, T, 7)
    assert sorted(second) == sorted(epoch) and not np.array_equal(second, epoch)
    np.testing.assert_array_equal(window_starts(45, 10, n, T, 7), np.concatenate([epoch[45:], second[:5]]))


def reference_batch(data, starts, block_size):
    """x, y of windows built row by row on the host: how train.py assembled batches before they were gathered
    on the device."""
    rows = [np.asarray(data[s:s + block_size + 1], dtype=np.int64) for s in starts]
    return torch.tensor(np.stack([r[:-1] for r in rows])), torch.tensor(np.stack([r[1:] for r in rows]))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_device_batches_are_exactly_the_windows_of_the_order(dtype):
    """TrainBatches (one gather from the split held as one tensor; what runs on the GPU) reads the same windows,
    in the same order, as the host-side reference, across epochs, micro-steps and DDP ranks, including token
    ids that do not fit a signed 16-bit view."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65535 if dtype == np.uint16 else 2 ** 32 - 1, 1000, dtype=np.int64).astype(dtype)
    block, batch, accum, world, seed = 16, 4, 2, 2, 3
    n_windows = (len(data) - 1) // block
    windows_per_iter = batch * accum
    tokens = Tokens(data)
    for rank in range(world):
        batches = TrainBatches(tokens, TrainOrder(data, block, seed), batch, windows_per_iter, rank, world)
        for it in range(12):  # 12 steps x 8 windows > 62 windows: crosses into the second epoch
            for micro in range(accum // world):
                x, y = batches.micro_batch(it, micro)
                first = it * windows_per_iter + (micro * world + rank) * batch
                rx, ry = reference_batch(data, window_starts(first, batch, n_windows, block, seed), block)
                assert torch.equal(x, rx) and torch.equal(y, ry)


def test_tune_aligned_windows_start_at_tunes_and_score_every_token_once():
    """data_order='tunes': every window but the split's first starts at an end-of-tune token, holds whole tunes
    where they fit, and over an epoch every token but the first is a target exactly once; the device batches
    mask exactly the positions after a window's targets."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 60, 80)  # tunes shorter and longer than the block
    ids = np.concatenate([np.append(rng.integers(2, 90, n), 0) for n in lengths]).astype(np.uint16)  # EOT = 0
    block = 32
    starts, targets = tune_windows(ids, 0, block)
    assert starts[0] == 0 and all((ids[starts[1:]] == 0) | (np.diff(starts) == block))  # or a long tune goes on
    assert all(ids[s + t] == 0 or t == block for s, t in zip(starts, targets))  # ends at a tune's end if it can
    covered = np.concatenate([np.arange(s + 1, s + t + 1) for s, t in zip(starts, targets)])
    assert covered.tolist() == list(range(1, len(ids)))  # every target once, in order
    order = TrainOrder(ids, block, 5, "tunes", 0)
    plan = iteration_plan(4, 1, 0, 0, order)  # one epoch
    assert plan["total_iters"] == len(starts) // 4
    assert plan["tokens"] == order.targets_before(plan["total_iters"] * 4) <= len(ids) - 1
    assert order.targets_before(len(starts)) == len(ids) - 1
    batches = TrainBatches(Tokens(ids), order, 4, 4)
    x, y = batches.micro_batch(2, 0)
    for row, w in enumerate(order.indices(8, 4)):
        s, t = starts[w], targets[w]
        assert x[row, :t].tolist() == ids[s:s + t].tolist() and y[row, :t].tolist() == ids[s + 1:s + t + 1].tolist()
        assert (y[row, t:] == -1).all()


def test_tune_aligned_training_runs_and_plans_its_exact_token_count(char_dataset, tmp_path):
    res = run(char_dataset, tmp_path, "--data_order=tunes", "--max_iters=6", "--eval_interval=0")
    order = TrainOrder(np.memmap(char_dataset / "train.bin", dtype=np.uint16, mode="r"), 32, 1337, "tunes",
                       json.loads((char_dataset / "meta.json").read_text())["eot_id"])
    assert res["tokens_trained"] == order.targets_before(6 * 8) < 6 * 8 * 32  # the unscored tails are not counted
    assert read_log(tmp_path)[-1]["tokens"] == res["tokens_trained"]


def test_exact_windows_score_each_target_once_and_spread_windows_are_full():
    for n, block, stride in [(2, 4, 4), (33, 8, 8), (33, 8, 3), (100, 7, 1)]:
        starts, lengths, skips = exact_windows(n, block, stride)
        scored = [s + i for s, l, k in zip(starts, lengths, skips) for i in range(k, l)]
        assert scored == list(range(n - 1))  # input positions whose targets are tokens 1 .. n-1, in order
    starts = spread_windows(1000, 32, 5)
    assert len(starts) == 5 and starts[0] == 0 and starts[-1] + 32 <= 999 and all(starts % 32 == 0)


def test_default_budget_is_exactly_one_epoch(char_dataset, tmp_path):
    # 64 x 32 tokens per step keeps the epoch to a few dozen steps
    res = run(char_dataset, tmp_path, "--batch_size=64", "--eval_interval=0", "--data_order=stride")
    dtype = json.loads((char_dataset / "meta.json").read_text())["dtype"]
    n_tokens = len(np.memmap(char_dataset / "train.bin", dtype=dtype))
    n_windows = (n_tokens - 1) // 32
    windows_per_step = 64
    assert res["iters"] == n_windows // windows_per_step  # only the last partial step is dropped
    assert res["tokens_trained"] == res["iters"] * windows_per_step * 32 == res["tokens_per_iter"] * res["iters"]
    assert res["epochs"] == res["iters"] * windows_per_step / n_windows
    assert 1 - windows_per_step / n_windows < res["epochs"] <= 1
    assert read_log(tmp_path)[-1]["tokens"] == res["tokens_trained"]
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["tokens_seen"] == res["tokens_trained"] and ckpt["data_position"] == res["iters"] * windows_per_step


def test_max_tokens_sets_the_budget_and_more_than_one_epoch_is_recorded(char_dataset, tmp_path):
    res = run(char_dataset, tmp_path / "a", "--max_tokens=2600", "--eval_interval=0", "--data_order=stride")
    assert res["iters"] == 10 and res["tokens_trained"] == 2560
    n_windows = res["iters"] * 8 / res["epochs"]
    res = run(char_dataset, tmp_path / "b", f"--max_tokens={int(n_windows * 32 * 1.2)}", "--eval_interval=0",
              "--batch_size=64", "--data_order=stride")
    assert 1.1 < res["epochs"] < 1.25
