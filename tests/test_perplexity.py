"""calc_perplexity.py: every token of a split scored exactly once, and the numbers equal a hand computation."""
import json
import math

import numpy as np
import pytest
import torch

import calc_perplexity
from model import load_checkpoint
from helpers import ONE_THREAD
from music_scaling_laws.training.windows import Tokens, exact_windows, window_batches


def hand_loss(model, tokens, eot_id, window, stride):
    """Mean -log p(token) over the split, one window at a time, each token scored once after the
    window's context: written out directly, without the script's batching and padding."""
    seq = [eot_id] + list(tokens)
    nll, scored, begin = 0.0, 0, 0
    while scored < len(tokens):
        inputs = seq[begin:begin + window]
        with torch.no_grad():
            logits, _ = model(torch.tensor([inputs]))
        log_probs = torch.log_softmax(logits[0].double(), dim=-1)
        for i in range(len(inputs)):
            position = begin + i  # predicts seq[position + 1], i.e. tokens[position]
            if position >= scored and position < len(tokens):
                nll -= log_probs[i, seq[position + 1]].item()
                scored += 1
        begin += stride
    return nll / scored, scored


@pytest.mark.parametrize("model_type,stride", [("gpt", None), ("gpt", 8), ("lstm", None)])
def test_perplexity_equals_hand_computation(tmp_path, tiny_run, run_script, char_dataset, model_type, stride):
    dataset = char_dataset
    run = tiny_run(dataset, model_type)
    out = tmp_path / "ppl.json"
    args = [str(run), "--split", "val", "--out_file", str(out), "--batch_size", "7"] + (["--stride", str(stride)] if stride else [])
    if model_type == "gpt" and stride is None:  # once through the real command line: JSON on stdout and in --out_file
        proc = run_script(["calc_perplexity.py", *args], env=ONE_THREAD)
        assert json.loads(proc.stdout) == json.loads(out.read_text())
    else:
        calc_perplexity.main(args)
    result = json.loads(out.read_text())

    meta = json.loads((dataset / "meta.json").read_text())
    stats = json.loads((dataset / "stats.json").read_text())["splits"]["val"]
    tokens = np.fromfile(dataset / "val.bin", dtype=meta["dtype"]).tolist()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(str(run))
    window = model.config.block_size
    loss, scored = hand_loss(model, tokens, meta["eot_id"], window, stride or window)

    assert result["tokens"] == scored == len(tokens) == stats["tokens"]
    assert result["split"] == "val" and result["stride"] == (stride or window)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert result["bpc"] == pytest.approx(loss / math.log(2) * stats["tokens"] / stats["chars"], rel=1e-5)


@pytest.mark.parametrize("n,block_size,stride,batch_size", [(1, 4, 4, 2), (10, 4, 4, 3), (10, 4, 1, 2),
                                                            (11, 5, 3, 64), (3, 8, 2, 1)])
def test_windows_score_every_token_once_in_order(n, block_size, stride, batch_size):
    data = np.arange(100, 100 + n)
    scored, contexts = [], []
    seq = np.concatenate([[0], data])  # the split as scored: an end-of-tune token (0 here) in front
    starts, lengths, skips = exact_windows(len(seq), block_size, stride)
    for inputs, targets in window_batches(Tokens(seq), starts, block_size, batch_size, lengths, skips):
        assert inputs.shape[1] <= block_size and inputs.shape == targets.shape
        for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
            for i, t in enumerate(row_t):
                if t != -1:
                    # the input right before a target is its predecessor in the EOT-prefixed sequence
                    assert row_in[i] == (0 if t == 100 else t - 1)
                    scored.append(t)
                    contexts.append(i + 1)
    assert scored == data.tolist()
    if n > block_size:  # after the first window every token sees at least block_size - stride tokens
        assert min(contexts[block_size:]) >= block_size - stride + 1


def test_bad_input_is_a_one_line_error(tmp_path, tiny_run, char_dataset):
    run = tiny_run(char_dataset, "gpt")
    for args in ([str(tmp_path / "missing")], [str(run), "--stride", "-2"], [str(run), "--stride", "9999"],
                 [str(run), "--block_size", "9999"]):
        with pytest.raises(SystemExit) as exit_info:  # sys.exit("error: ...") prints the line and exits 1
            calc_perplexity.main(args)
        assert str(exit_info.value.code).startswith("error:") and "\n" not in str(exit_info.value.code)


def test_stride_0_is_the_window_length_and_the_old_minus_1_still_works(tiny_run, char_dataset, capsys):
    """0 means "the default" for every knob of the project; --stride -1 meant the window length before 2026-11-30
    and still does, with a one-line note, for one release."""
    run = tiny_run(char_dataset, "gpt")
    results = {}
    for stride in (None, "0", "-1"):
        results[stride] = calc_perplexity.main([str(run), "--split", "val"] + (["--stride", stride] if stride else []))
        results[stride]["notes"] = [line for line in capsys.readouterr().err.splitlines() if "stride" in line]
    window = results[None]["block_size"]
    for stride, result in results.items():
        assert result["stride"] == window and result["loss"] == results[None]["loss"], stride
    assert results[None]["notes"] == results["0"]["notes"] == []
    assert results["-1"]["notes"] == ["note: --stride -1 is now --stride 0 (the window length); -1 works until the "
                                      "next release"]


def test_a_window_longer_than_the_split_is_one_window_of_the_split(tiny_run, char_dataset):
    """An LSTM takes a window of any length: --block_size 60000 on a split of a few thousand tokens scores the
    split in one window of its own length (it padded 60,000 x batch positions before: minutes instead of a second)."""
    run = tiny_run(char_dataset, "lstm")
    n = json.loads((char_dataset / "stats.json").read_text())["splits"]["val"]["tokens"]
    huge = calc_perplexity.main([str(run), "--split", "val", "--block_size", "60000"])
    whole = calc_perplexity.main([str(run), "--split", "val", "--block_size", str(n), "--batch_size", "1"])
    assert huge["block_size"] == n and huge["windows"] == 1 and huge["tokens"] == n
    assert huge["loss"] == whole["loss"]


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, tiny_run, char_dataset):
    run = tiny_run(char_dataset, "gpt")
    (tmp_path / "file").write_text("")  # a file on the way stands for a read-only folder (root writes anywhere)
    with pytest.raises(SystemExit) as e:
        calc_perplexity.main([str(run), "--split", "val", "--out_file", str(tmp_path / "file" / "ppl.json")])
    assert str(e.value.code).startswith("error: cannot write --out_file")
