"""
The two tokenizers of a dataset, trained by prepare.py and loaded by every other script from the
dataset folder's meta.json (and bpe.tiktoken for BPE), so a model is always read with the tokenizer it
was trained on.

- char: one token per character. The vocabulary is the set of characters of the *training* split;
  a character that appears only in val/test maps to UNK (decoded as U+FFFD) and prepare.py counts such
  characters per split in stats.json, so the loss on val/test never scores a token the model could not
  have learned and the count says how often that happened (ABC is nearly pure ASCII: it is rare).
- bpe: byte-level BPE trained with HF `tokenizers` on the training split only, then encoded and decoded
  with tiktoken from the trained ranks (fast, and no download: the built-in GPT-2 encodings are not
  used). Byte-level means every text round-trips exactly. Pre-tokenization splits at line breaks only,
  because ABC is not English: GPT-2's pattern cuts `c2` into `c`,`2`, while whole lines let merges learn
  bar-sized patterns (BPE-4096 on data/music21: 3.41 / 3.33 chars/token on val / test, measured 2026-11-22).

Both reserve one end-of-tune token (EOT). Decoding renders EOT as "\\n": a blank line after a tune,
which is how ABC separates tunes, so a decoded split is itself a valid multi-tune ABC file.
"""
import base64
import json
import os

import numpy as np

EOT_TEXT = "<|endoftune|>"
EOT_DECODED = "\n"
UNK_DECODED = "\ufffd"
# Pre-tokenization pattern for BPE: a line with its newline, or a trailing line without one.
ABC_SPLIT_PATTERN = r"[^\n]*\n|[^\n]+"
BPE_FILE = "bpe.tiktoken"
META = "meta.json"  # a dataset folder's description: its tokenizer, vocabulary, dtype, fingerprint


class CharTokenizer:
    name = "char"

    def __init__(self, chars):
        self.chars = list(chars)  # id -> char for ids >= 2
        self.eot_id, self.unk_id = 0, 1
        self.vocab_size = len(self.chars) + 2
        self.stoi = {c: i + 2 for i, c in enumerate(self.chars)}
        self._table = np.full(max(map(ord, self.chars), default=0) + 1, self.unk_id, dtype=np.int64)
        for c, i in self.stoi.items():
            self._table[ord(c)] = i
        self._itos = [EOT_DECODED, UNK_DECODED] + self.chars

    @classmethod
    def train(cls, texts):
        """The characters of texts (any iterable: prepare.py streams the training tunes from disk)."""
        chars = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    def encode(self, text):
        return self.encode_array(text).tolist()

    def encode_array(self, text):
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(codes), self.unk_id, dtype=np.int64)
        known = codes < len(self._table)
        ids[known] = self._table[codes[known]]
        return ids

    def decode(self, ids):
        return "".join(self._itos[i] for i in ids)

    def meta(self):
        return {"tokenizer": "char", "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "unk_id": self.unk_id, "chars": self.chars}


class BPETokenizer:
    name = "bpe"

    def __init__(self, ranks):
        import tiktoken
        self.ranks = ranks  # bytes -> rank
        self.eot_id = len(ranks)
        self.unk_id = None
        self.vocab_size = len(ranks) + 1
        self.encoding = tiktoken.Encoding(name="abc_bpe", pat_str=ABC_SPLIT_PATTERN,
                                          mergeable_ranks=ranks, special_tokens={EOT_TEXT: self.eot_id})

    @classmethod
    def train(cls, texts, vocab_size):
        """Train a byte-level BPE with HF tokenizers (fast, Rust) and keep its merges as tiktoken ranks."""
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
        if vocab_size < 258:
            raise ValueError(f"BPE vocab_size must be at least 258 (256 bytes + a merge + EOT), got {vocab_size}")
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(ABC_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer)
        byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        # HF ids: the 256 byte symbols first, then each merge in the order it was learned, which is
        # exactly the merge priority tiktoken reads from the ranks.
        vocab = sorted(hf.get_vocab().items(), key=lambda kv: kv[1])
        ranks = {bytes(byte_of[ch] for ch in token): rank for rank, (token, _) in enumerate(vocab)}
        return cls(ranks)

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text):
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids):
        # EOT is rendered here (not by tiktoken) so both tokenizers decode it the same way
        out, run = [], []
        for i in ids:
            if i == self.eot_id:
                out.append(self.encoding.decode(run, errors="replace") + EOT_DECODED)
                run = []
            else:
                run.append(i)
        out.append(self.encoding.decode(run, errors="replace"))
        return "".join(out)

    def save(self, data_dir):
        """tiktoken's own file format: one `base64(token) rank` line per token."""
        with open(os.path.join(data_dir, BPE_FILE), "w") as f:
            for token, rank in sorted(self.ranks.items(), key=lambda kv: kv[1]):
                f.write(f"{base64.b64encode(token).decode()} {rank}\n")

    @classmethod
    def load(cls, data_dir):
        ranks = {}
        with open(os.path.join(data_dir, BPE_FILE)) as f:
            for line in f:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return cls(ranks)

    def meta(self):
        return {"tokenizer": "bpe", "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "bpe_file": BPE_FILE, "pat_str": ABC_SPLIT_PATTERN}


def _bytes_to_unicode():
    """GPT-2's printable stand-in characters for the 256 bytes, as HF's ByteLevel uses them."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def read_meta(data_dir):
    path = os.path.join(data_dir, META)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no dataset at {data_dir} (missing meta.json): run prepare.py first")
    with open(path) as f:
        return json.load(f)


def load_tokenizer(data_dir):
    meta = read_meta(data_dir)
    if meta["tokenizer"] == "char":
        return CharTokenizer(meta["chars"])
    if meta["tokenizer"] == "bpe":
        return BPETokenizer.load(data_dir)
    raise ValueError(f"unknown tokenizer {meta['tokenizer']!r} in {data_dir}/meta.json")
