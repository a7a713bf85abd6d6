"""
Exact loss, perplexity and bits per character of a trained run on a whole split (default: test).

    python calc_perplexity.py out/gpt_tiny                       # test split, JSON on stdout
    python calc_perplexity.py out/lstm_tiny --split val --stride 128 --out_file val.json

Every token of the split is scored exactly once, by the same code as train.py's final validation pass
(windows.exact_loss): an end-of-tune token precedes the split (as one precedes every tune in train.bin), so
its first token is scored too and the count equals stats.json's `tokens` for the split. The sequence is cut
into windows of block_size tokens, each evaluated with a fresh context: non-overlapping by default (--stride 0),
or with --stride S (< block_size) windows start every S tokens and score only their last S targets, so each token
sees at least block_size - S tokens of context (the first window scores all of its targets).

Perplexity is per token, so it depends on the tokenizer: a BPE token holds ~3 characters and a char
token one. Bits per character (nats/token / ln 2 x tokens / chars, from stats.json) is the number that
compares across tokenizers.
"""
import json
import math
import os
import sys
import time

import torch

from model import load_run
from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.data.dataset import bits_per_char, load_dataset, write_json_atomic
from music_scaling_laws.training.hardware import setup_device
from music_scaling_laws.training.windows import exact_loss, exact_windows

# -----------------------------------------------------------------------------
run = ''             # run folder (with ckpt.pt) or a ckpt.pt file; also the first plain argument
split = 'test'       # train, val or test
stride = 0           # window stride; 0 = the window length (no overlap), as 0 means "the default" for every knob
block_size = 0       # window length; 0 = the model's block_size (also the maximum for GPT)
batch_size = 32
data_dir = ''        # dataset folder, if not the one the run recorded
device = 'auto'      # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', ...
dtype = 'float32'    # exact numbers by default; 'auto' uses bf16 autocast on CUDA
out_file = ''         # also write the JSON here (it is printed either way)
# -----------------------------------------------------------------------------


# the names these knobs had before 2026-11-30: accepted, with a note, until the next release
RENAMED = {"out": "out_file"}


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv, positional="run", renamed=RENAMED)
    if not cfg["run"] or "\n" in cfg["run"]:
        fail("give one run folder (with ckpt.pt) or a ckpt.pt file")
    if cfg["split"] not in ("train", "val", "test"):
        fail(f"split must be train, val or test, got {cfg['split']!r}")
    if cfg["batch_size"] < 1:
        fail("batch_size must be at least 1")
    dev, _, _, ctx = setup_device(cfg["device"], cfg["dtype"])
    model, ckpt, tokenizer, data_dir = load_run(cfg["run"], dev, cfg["data_dir"])
    data = load_dataset(data_dir, need_stats=False)
    trained_on = ckpt.get("dataset", {}).get("fingerprint")
    if trained_on and trained_on != data.fingerprints()["fingerprint"]:  # legitimate (another corpus), but say so
        print(f"note: {data_dir} is not the dataset the run was trained on (another fingerprint)", file=sys.stderr)
    window = cfg["block_size"] or model.config.block_size
    if window < 1 or (model.model_type == "gpt" and window > model.config.block_size):
        fail(f"block_size must be between 1 and the model's block_size {model.config.block_size}")
    if cfg["stride"] == -1:  # what 0 means was written -1 before 2026-11-30: the same thing, until the next release
        print("note: --stride -1 is now --stride 0 (the window length); -1 works until the next release",
              file=sys.stderr)
    step = window if cfg["stride"] in (0, -1) else cfg["stride"]
    if not 1 <= step <= window:
        fail(f"stride must be between 1 and the window length {window}")
    tokens = data.split(cfg["split"])
    # a window longer than the split (an LSTM takes any length) would be padding, batch_size times over: one
    # window of the whole split scores the same tokens (--block_size 60000 once took 4.5 min and 2.3 GB, not 2 s)
    window, step = min(window, len(tokens)), min(step, len(tokens))
    batch_size = min(cfg["batch_size"], len(exact_windows(len(tokens) + 1, window, step)[0]))

    t0 = time.time()
    loss, scored = exact_loss(model, tokens, tokenizer.eot_id, window, batch_size, dev, ctx, stride=step,
                              progress=True)
    seconds = time.time() - t0
    if data.stats:
        counts = data.split_stats(cfg["split"])
        if counts["tokens"] != scored:
            fail(f"scored {scored} tokens but stats.json says the {cfg['split']} split has {counts['tokens']}: "
                 f"the dataset changed after it was prepared?")
    else:  # decoding renders EOT as one character, the convention stats.json counts with
        counts = {"tokens": scored, "chars": len(tokenizer.decode(tokens.tolist()))}
    result = {
        "run": cfg["run"], "split": cfg["split"], "data_dir": data_dir, "model_type": model.model_type,
        "n_params": model.num_params(), "tokenizer": tokenizer.name,
        "loss": loss, "perplexity": math.exp(loss), "bpc": bits_per_char(loss, counts),
        "tokens": scored, "chars": counts["chars"], "block_size": window, "stride": step,
        "windows": len(exact_windows(len(tokens) + 1, window, step)[0]), "seconds": seconds,
        "device": str(dev), "torch_version": torch.__version__,
        # which model and which data this number belongs to: a later retraining of the run has another run_id
        "run_id": ckpt.get("progress", {}).get("run_id"), "iter_num": ckpt.get("iter_num"),
        "data_fingerprint": data.fingerprints()["fingerprint"], "trained_on_fingerprint": trained_on,
    }
    print(json.dumps(result, indent=1))
    if cfg["out_file"]:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cfg["out_file"])), exist_ok=True)
            write_json_atomic(result, cfg["out_file"], indent=1)
        except OSError as e:  # a read-only folder, a file on the way: the result above is printed all the same
            fail(f"cannot write --out_file {cfg['out_file']}: {e.strerror}")
    return result


if __name__ == "__main__":
    main()
