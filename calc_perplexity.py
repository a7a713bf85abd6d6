"""
Exact loss, perplexity and bits per character of a trained run on a whole split (default: test).

    python calc_perplexity.py out/gpt_tiny                       # test split, JSON on stdout
    python calc_perplexity.py out/lstm_tiny --split val --stride 128 --out val.json

Every token of the split is scored exactly once. The split is read as the model saw its training data:
an end-of-tune token precedes it (as one precedes every tune in train.bin), so its first token is
scored too and the count equals stats.json's `tokens` for the split. The sequence is cut into windows of
block_size tokens, each evaluated with a fresh context: non-overlapping by default, or with --stride S
(< block_size) windows start every S tokens and only their last S targets are scored, so each token
sees at least block_size - S tokens of context (the first window scores all of its targets).

Perplexity is per token, so it depends on the tokenizer: a BPE token holds ~3 characters and a char
token one. Bits per character (nats/token / ln 2 x tokens / chars, from stats.json) is the number that
compares across tokenizers.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

# -----------------------------------------------------------------------------
split = "test"
batch_size = 32
# -----------------------------------------------------------------------------


def window_batches(data, eot_id, block_size, stride, batch_size):
    """Yield (inputs, targets) LongTensor batches of shape (B, <=block_size); targets -1 are not scored.

    The scored targets of all batches together are every token of `data` exactly once, in order.
    """
    seq = np.concatenate([[eot_id], np.asarray(data, dtype=np.int64)])
    n_targets = len(seq) - 1
    windows, prev_end, begin = [], 0, 0
    while prev_end < n_targets:
        end = min(begin + block_size, n_targets)
        windows.append((begin, end, prev_end))  # inputs seq[begin:end], score targets for positions >= prev_end
        prev_end = end
        begin += stride
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        width = max(end - begin for begin, end, _ in chunk)
        inputs = np.zeros((len(chunk), width), dtype=np.int64)
        targets = np.full((len(chunk), width), -1, dtype=np.int64)
        for row, (begin, end, first_scored) in enumerate(chunk):
            inputs[row, :end - begin] = seq[begin:end]
            targets[row, first_scored - begin:end - begin] = seq[first_scored + 1:end + 1]
        yield torch.from_numpy(inputs), torch.from_numpy(targets)


def count_windows(n_tokens, block_size, stride):
    if n_tokens <= block_size:
        return 1
    return math.ceil((n_tokens - block_size) / stride) + 1


@torch.no_grad()
def split_loss(model, data, eot_id, block_size, stride, batch_size, device="cpu", progress=True):
    """(sum of cross-entropy in nats, number of scored tokens) over the whole split."""
    total, count = 0.0, 0
    n_batches = math.ceil(count_windows(len(data), block_size, stride) / batch_size)
    for inputs, targets in tqdm(window_batches(data, eot_id, block_size, stride, batch_size), total=n_batches,
                                desc="windows", unit="batch", disable=not progress):
        logits, _ = model(inputs.to(device))
        targets = targets.to(device)
        total += F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                 reduction="sum").item()
        count += int((targets != -1).sum())
    return total, count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder (with ckpt.pt) or a ckpt.pt file")
    parser.add_argument("--split", default=split, choices=["train", "val", "test"])
    parser.add_argument("--stride", type=int, default=None, help="window stride (default block_size: no overlap)")
    parser.add_argument("--block_size", type=int, default=None,
                        help="window length (default and maximum for GPT: the model's block_size)")
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--data_dir", default=None, help="dataset folder, if not the one the run recorded")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the JSON here (it is printed either way)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        sys.exit("error: --batch_size must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")

    from sample import load_run  # same checks: checkpoint exists, tokenizer matches the model
    from tokenizer import read_meta
    model, ckpt, tokenizer = load_run(args.run, args.device, args.data_dir)
    data_dir = args.data_dir or ckpt["config"]["data_dir"]
    meta = read_meta(data_dir)
    block_size = args.block_size if args.block_size is not None else model.config.block_size
    if block_size < 1 or (model.model_type == "gpt" and block_size > model.config.block_size):
        sys.exit(f"error: --block_size must be between 1 and the model's block_size {model.config.block_size}")
    stride = args.stride if args.stride is not None else block_size
    if not 1 <= stride <= block_size:
        sys.exit(f"error: --stride must be between 1 and the window length {block_size}")
    path = os.path.join(data_dir, f"{args.split}.bin")
    if not os.path.exists(path):
        sys.exit(f"error: {path} does not exist")
    data = np.memmap(path, dtype=meta["dtype"], mode="r")
    if len(data) == 0:
        sys.exit(f"error: {path} is empty")

    t0 = time.time()
    total, tokens = split_loss(model, data, tokenizer.eot_id, block_size, stride, args.batch_size, args.device)
    seconds = time.time() - t0
    loss = total / tokens

    stats_path = os.path.join(data_dir, "stats.json")
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            counts = json.load(f)["splits"][args.split]
        if counts["tokens"] != tokens:
            sys.exit(f"error: scored {tokens} tokens but stats.json says the {args.split} split has "
                     f"{counts['tokens']}: the dataset changed after it was prepared?")
        chars = counts["chars"]
    else:  # decoding renders EOT as one character, the convention stats.json counts with
        chars = len(tokenizer.decode(np.asarray(data).tolist()))
    result = {
        "run": args.run, "split": args.split, "data_dir": data_dir, "model_type": model.model_type,
        "n_params": model.num_params(), "tokenizer": tokenizer.name,
        "loss": loss, "perplexity": math.exp(loss), "bpc": loss / math.log(2) * tokens / chars,
        "tokens": tokens, "chars": chars, "block_size": block_size, "stride": stride,
        "windows": count_windows(len(data), block_size, stride), "seconds": seconds,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
