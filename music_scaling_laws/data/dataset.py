"""
The on-disk contract of a prepared dataset -- what prepare.py writes and every other script reads -- and the
order in which training reads it.

    data_dir/meta.json                 the tokenizer: tokenizer, vocab_size, eot_id, dtype (uint16/uint32), ...
    data_dir/stats.json                counts of every pipeline step; splits.{train,val,test}.{tunes,tokens,chars}
    data_dir/{train,val,test}.bin      token ids, every tune followed by eot_id
    fingerprint (in meta.json and stats.json): SHA-256 over the splits and the tokenizer, so a run, a sample
    or a test loss can say which data it belongs to; runs record it as data_fingerprint.

Training windows (TrainOrder): train.bin is cut into windows so that every token but the first is a
prediction target exactly once per epoch -- at stride block_size ('stride'), or each starting at an
end-of-tune token ('tunes'). Epoch e of the window order is a permutation of all windows seeded by
(data_seed, e) alone, and optimizer step i reads windows [i*W, (i+1)*W) of that order
(W = batch_size * gradient_accumulation_steps), whatever the model, the number of DDP ranks or a resume.
"""
import functools
import hashlib
import json
import math
import os

import numpy as np

from music_scaling_laws.errors import UserError
from music_scaling_laws.data.tokenizer import META, load_tokenizer

SPLITS = ("train", "val", "test")
STATS = "stats.json"  # a dataset folder's statistics, beside <split>.bin and META (tokenizer.py)


# ----------------------------------------------------------------------------- JSON files

def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json_atomic(obj, path, indent=2):
    """Write to a temporary file, then rename: a reader never sees half a file, a kill leaves the old one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- a dataset folder

class Dataset:
    """A prepare.py folder: meta, stats and the splits as read-only memory maps (opened on first use)."""

    def __init__(self, data_dir, meta, stats):
        self.data_dir, self.meta, self.stats = data_dir, meta, stats
        self.vocab_size = int(meta["vocab_size"])
        self.eot_id = int(meta["eot_id"])
        self.dtype = meta["dtype"]
        self._splits, self._fingerprints = {}, None

    def path(self, split):
        return os.path.join(self.data_dir, f"{split}.bin")

    def split(self, name):
        """The token ids of a split as a memory map (copy-on-write, so torch can wrap it without a copy)."""
        if name not in self._splits:
            path = self.path(name)
            if not os.path.isfile(path):
                raise UserError(f"{path} not found; {self.data_dir} is not a complete prepare.py dataset")
            size, width = os.path.getsize(path), np.dtype(self.dtype).itemsize
            if size == 0:
                raise UserError(f"{path} is empty")
            if size % width:
                raise UserError(f"{path} is damaged: {size} bytes is not a whole number of {self.dtype} tokens")
            tokens = np.memmap(path, dtype=self.dtype, mode="c")
            if self.stats and self.stats.get("splits", {}).get(name, {}).get("tokens", len(tokens)) != len(tokens):
                raise UserError(f"{path} holds {len(tokens)} tokens but stats.json says {self.stats['splits'][name]['tokens']}: "
                     f"the dataset changed after prepare.py wrote it; prepare it again")
            self._splits[name] = tokens
        return self._splits[name]

    def fingerprints(self):
        """{tokenizer_fingerprint, fingerprint} of the files as they are now (prepare.py records the same values
        in meta.json and stats.json; a hand-edited or damaged folder must not pass for the original)."""
        if self._fingerprints is None:
            self._fingerprints = fingerprints(self.data_dir, self.meta)
        return self._fingerprints

    def tokenizer(self):
        """The tokenizer prepare.py trained (char table in meta.json, or bpe.tiktoken), or a one-line error."""
        try:
            return load_tokenizer(self.data_dir)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot load the tokenizer of the dataset at {self.data_dir}: {e}")

    def split_stats(self, name):
        """{tunes, tokens, chars, ...} of a split as stats.json counts them."""
        return self.stats["splits"][name]


def load_dataset(data_dir, need_stats=True):
    """The Dataset of a prepare.py folder, or a one-line error saying what is missing."""
    if not os.path.isdir(data_dir):
        raise UserError(f"dataset folder {data_dir} not found (run prepare.py first or set --data_dir)")
    meta_path, stats_path = os.path.join(data_dir, META), os.path.join(data_dir, STATS)
    for path in (meta_path, stats_path) if need_stats else (meta_path,):
        if not os.path.isfile(path):
            raise UserError(f"{path} not found; {data_dir} is not a complete prepare.py dataset")
    try:
        meta = read_json(meta_path)
        stats = read_json(stats_path) if os.path.isfile(stats_path) else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{data_dir}: meta.json or stats.json is not valid JSON ({e})")
    if not isinstance(meta, dict) or meta.get("dtype") not in ("uint16", "uint32"):
        raise UserError(f"{meta_path}: dtype must be uint16 or uint32, got {meta.get('dtype') if isinstance(meta, dict) else meta!r}")
    for key in ("vocab_size", "eot_id"):
        if not isinstance(meta.get(key), int) or not 0 <= meta[key] < 2 ** 32:
            raise UserError(f"{meta_path}: {key} missing or not a token id")
    if meta.get("tokenizer") == "char" and len(meta.get("chars", [])) + 2 != meta["vocab_size"]:  # + EOT, UNK
        raise UserError(f"{meta_path} is damaged: {len(meta.get('chars', []))} characters for a vocabulary of {meta['vocab_size']}")
    return Dataset(data_dir, meta, stats)


def fingerprints(data_dir, meta):
    """{tokenizer_fingerprint, fingerprint}: SHA-256 over what gives a token id its meaning (tokenizer kind,
    vocabulary, special ids, the BPE ranks file), and over that plus the bytes of train/val/test.bin. Equal
    tokenizer fingerprints: ids decode to the same text; equal fingerprints: the same data, token for token."""
    h = hashlib.sha256()
    tokenizer = {k: meta.get(k) for k in ("tokenizer", "vocab_size", "eot_id", "unk_id", "chars", "pat_str", "dtype")}
    h.update(json.dumps(tokenizer, sort_keys=True).encode())
    _hash_files(h, data_dir, ["bpe.tiktoken"])
    out = {"tokenizer_fingerprint": h.hexdigest()}
    _hash_files(h, data_dir, [f"{split}.bin" for split in SPLITS])
    out["fingerprint"] = h.hexdigest()
    return out


def _hash_files(h, data_dir, names):
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            h.update(name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)


def bits_per_char(loss, split_stats):
    """nats/token -> bits/character using the split's token and character counts (stats.json)."""
    return loss / math.log(2) * split_stats["tokens"] / split_stats["chars"]


# ----------------------------------------------------------------------------- the training order

def num_windows(n_tokens, block_size):
    """Windows of block_size+1 tokens at stride block_size: each token but the first is a target once."""
    return max(0, (n_tokens - 1) // block_size)


@functools.lru_cache(maxsize=2)
def epoch_order(n_windows, data_seed, epoch):
    """Window indices of one epoch, in training order (read-only)."""
    # cached: the permutation of a large split costs milliseconds, and every step needs a slice of it
    order = np.random.default_rng([data_seed, epoch]).permutation(n_windows)
    order.flags.writeable = False
    return order


def window_starts(first, count, n_windows, block_size, data_seed):
    """Token offsets of stride windows first .. first+count-1 of the global order (epochs follow each other)."""
    return TrainOrder(None, block_size, data_seed, n_windows=n_windows).starts(first, count)


def tune_windows(ids, eot_id, block_size):
    """(starts, targets) of tune-aligned windows over a split: a window starts at an end-of-tune token (the
    split's first window at token 0) and scores the tokens after it up to and including the last end-of-tune
    token it can reach within block_size, so it holds whole tunes and the next window starts at that token; a
    tune longer than block_size goes on in the next window. Every token but the first is a target exactly once."""
    eots = np.flatnonzero(np.asarray(ids) == eot_id)
    n, start = len(ids), 0
    starts, targets = [], []
    while start < n - 1:
        limit = min(start + block_size, n - 1)
        k = np.searchsorted(eots, limit, side="right") - 1
        end = int(eots[k]) if k >= 0 and eots[k] > start else limit
        starts.append(start)
        targets.append(end - start)
        start = end
    return np.array(starts, dtype=np.int64), np.array(targets, dtype=np.int64)


class TrainOrder:
    """The training split's windows and the order they are read in, shared by every model of a study.

    data_order 'stride': windows of block_size+1 tokens at stride block_size, each scoring block_size targets.
    data_order 'tunes': tune_windows, each starting at an end-of-tune token, so the model learns how a tune
    begins (what sampling starts from) at the price of unscored positions after a window's last whole tune.
    Either way epoch e reads every window once, in a permutation seeded by (data_seed, e) alone."""

    def __init__(self, ids, block_size, data_seed, data_order="stride", eot_id=None, n_windows=None):
        if data_order not in ("stride", "tunes"):
            raise ValueError(f"data_order must be 'stride' or 'tunes', got {data_order!r}")
        self.block_size, self.data_seed, self.data_order = block_size, data_seed, data_order
        self.start_table = self.target_table = None
        if data_order == "tunes":
            self.start_table, self.target_table = tune_windows(ids, eot_id, block_size)
            self.n_windows = len(self.start_table)
        else:
            self.n_windows = num_windows(len(ids), block_size) if n_windows is None else n_windows
        self.targets_per_epoch = self.n_windows * block_size if self.target_table is None else \
            int(self.target_table.sum())

    def indices(self, first, count):
        """Indices of windows first .. first+count-1 of the global order (epochs follow each other)."""
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            epoch, offset = divmod(first + done, self.n_windows)
            take = min(count - done, self.n_windows - offset)
            out[done:done + take] = epoch_order(self.n_windows, self.data_seed, epoch)[offset:offset + take]
            done += take
        return out

    def starts(self, first, count):
        idx = self.indices(first, count)
        return idx * self.block_size if self.start_table is None else self.start_table[idx]

    def targets_before(self, first):
        """Targets scored by the first `first` windows of the order: the exact tokens trained on so far."""
        epochs, rest = divmod(first, self.n_windows)
        if self.target_table is None:
            return first * self.block_size
        return epochs * self.targets_per_epoch + int(self.target_table[self.indices(epochs * self.n_windows, rest)].sum())


def iteration_plan(batch_size, gradient_accumulation_steps, max_tokens, max_iters, order):
    """How many optimizer steps a run takes and what each reads. The budget is max_iters steps if > 0, else
    max_tokens training tokens (targets) if > 0, else one epoch of the training split (the last partial step
    dropped). Raises ValueError with a user-facing sentence when the budget or the split cannot work."""
    windows_per_iter = batch_size * gradient_accumulation_steps
    if order.n_windows < windows_per_iter:
        raise ValueError(f"the train split holds {order.n_windows} windows of block_size+1 tokens, fewer than one "
                         f"optimizer step needs (batch_size x gradient_accumulation_steps = {windows_per_iter})")
    targets_per_iter = windows_per_iter * order.targets_per_epoch / order.n_windows  # exact for 'stride'
    if max_iters > 0:
        total_iters = max_iters
    elif max_tokens > 0:
        total_iters = int(max_tokens // targets_per_iter)
        if total_iters == 0:
            raise ValueError(f"max_tokens={max_tokens} is less than one optimizer step ({targets_per_iter:.0f} tokens)")
    else:
        total_iters = order.n_windows // windows_per_iter
    return {"total_iters": total_iters, "windows_per_iter": windows_per_iter,
            "tokens_per_iter": windows_per_iter * order.block_size, "n_windows": order.n_windows,
            "tokens": order.targets_before(total_iters * windows_per_iter),
            "epochs": total_iters * windows_per_iter / order.n_windows}
