"""
Turn a MIDI or ABC collection into a tokenized, split dataset for train.py, with the statistics of
every step.

    python prepare.py                                   # the corpus inside music21, offline
    python prepare.py --input ~/lmd_full --out data/lakh --tokenizer bpe --vocab_size 4096
    python prepare.py --input tunes/ --input 'more/*.abc' --max_train_tokens 1000000

Pipeline (each step counted in stats.json):
  1. collect files: .mid/.midi/.kar (MIDI), .abc, and without --input the music21 corpus: its ABC
     collections as ABC, plus a capped, evenly spaced selection of its other scores (MusicXML,
     Humdrum) written to MIDI by music21, so the default run exercises the MIDI path Lakh users need.
  2. convert MIDI -> ABC with Debian's `midi2abc -s` (-s keeps short notes: without it a round trip kept
     the note count within 2% on only 37 of 60 real files, with it on 58 of 60). Every call has a
     timeout and an output-size cap (midi2abc hangs, crashes with SIGFPE or writes 50-191 MB on some
     corrupt files), runs in a process pool, and its result is cached by the file's content hash, so a
     re-run or an interrupted run over 178k files converts nothing twice.
  3. split into tunes and clean them (abc_text.clean_tune: music headers only, X: renumbered, titles,
     comments and lyrics dropped, leading silence trimmed, tunes without K: or notes rejected).
  4. deduplicate by SHA-256 of the cleaned text, then filter by length and gzip compression ratio
     (a ratio below --min_gzip_ratio means degenerate repetition).
  5. split at the tune level (seeded, deterministic; no tune in two splits), train the tokenizer on the
     training split only, encode each split as tunes followed by an end-of-tune token.
  6. write train/val/test.bin, meta.json, stats.json, stats.md and a length histogram into a temporary
     folder that is renamed to --out only when complete.
Same input and seed give byte-identical outputs. Corrupt inputs are skipped and counted with a reason.
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm import tqdm

import abc_text
from tokenizer import BPETokenizer, CharTokenizer

MIDI_EXTENSIONS = (".mid", ".midi", ".kar")
ABC_EXTENSIONS = (".abc",)
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn")  # music21 corpus scores, converted via MIDI
MIDI2ABC_ARGS = ["-s"]  # keep short notes (see docstring)
# bump when the conversion changes, so cached results from an older conversion are not reused
CONVERTER_VERSION = "midi2abc-s-1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", action="append", default=[],
                   help="file, folder (searched recursively) or glob; repeatable. Default: the music21 corpus")
    p.add_argument("--out", default="data/music21", help="dataset folder to write")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char")
    p.add_argument("--vocab_size", type=int, default=4096, help="BPE vocabulary size, EOT included")
    p.add_argument("--split", default="0.98,0.01,0.01", help="train,val,test fractions of the tunes")
    p.add_argument("--seed", type=int, default=1337, help="seed of the train/val/test split")
    p.add_argument("--min_chars", type=int, default=64, help="drop tunes shorter than this (cleaned text)")
    p.add_argument("--max_chars", type=int, default=20000, help="drop tunes longer than this (cleaned text)")
    p.add_argument("--min_gzip_ratio", type=float, default=0.24,
                   help="drop tunes whose gzip_bytes/raw_bytes is below this (degenerate repetition)")
    p.add_argument("--max_train_tokens", type=int, default=0,
                   help="cut the training split to this many tokens (0: no cut); val/test unchanged")
    p.add_argument("--max_files", type=int, default=0,
                   help="use at most this many input files, evenly spaced over the sorted list (0: all)")
    p.add_argument("--max_scores", type=int, default=200,
                   help="default corpus only: how many non-ABC music21 scores go through the MIDI path")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per midi2abc call")
    p.add_argument("--score_timeout", type=float, default=60.0, help="seconds per music21 score -> MIDI")
    p.add_argument("--max_abc_bytes", type=int, default=4_000_000,
                   help="midi2abc output above this is a runaway conversion and is discarded")
    p.add_argument("--cache_dir", default="data/.cache/convert",
                   help="converted ABC, keyed by input content hash ('' disables the cache)")
    return p.parse_args(argv)


def fail(message):
    """A user mistake: one line on stderr, non-zero exit, no traceback."""
    sys.exit(f"prepare.py: error: {message}")


# ----------------------------------------------------------------------------------------------------
# 1. collecting input files

def kind_of(path):
    ext = os.path.splitext(path)[1].lower()
    if ext in MIDI_EXTENSIONS:
        return "midi"
    if ext in ABC_EXTENSIONS:
        return "abc"
    if ext in SCORE_EXTENSIONS:
        return "score"
    return None


def evenly_spaced(items, n):
    """n items spread over the whole (sorted) list, so a cap samples every part of a collection."""
    if n <= 0 or n >= len(items):
        return items
    return [items[int(i * len(items) / n)] for i in range(n)]


def collect_inputs(patterns):
    found = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            fail(f"--input {pattern!r} matches nothing")
        for path in matches:
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    found += [os.path.join(root, f) for f in sorted(files) if kind_of(f) in ("midi", "abc")]
            elif os.path.isfile(path):
                if kind_of(path) not in ("midi", "abc"):
                    fail(f"{path}: not a MIDI (.mid/.midi/.kar) or ABC (.abc) file")
                found.append(path)
            else:
                fail(f"--input {path!r} does not exist")
    files = sorted(set(found))
    if not files:
        fail(f"no .mid/.midi/.kar/.abc files found in {', '.join(patterns)}")
    return [(path, kind_of(path)) for path in files]


def default_corpus_inputs(max_scores):
    from music21 import corpus
    paths = sorted(str(p) for p in corpus.getPaths())
    abc = [(p, "abc") for p in paths if kind_of(p) == "abc"]
    scores = [(p, "score") for p in paths if kind_of(p) == "score"]
    return abc + evenly_spaced(scores, max_scores) if max_scores > 0 else abc


# ----------------------------------------------------------------------------------------------------
# 2. conversion (runs in worker processes)

class ConversionFailed(Exception):
    """A file that cannot become ABC text; its message is the reason counted in the statistics."""


def _limit_output_size(max_bytes):
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def midi_to_abc(midi_path, timeout, max_bytes):
    with open(midi_path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionFailed("empty_file")
    if head not in (b"MThd", b"RIFF"):
        raise ConversionFailed("not_midi")
    with tempfile.TemporaryFile() as out:
        try:
            # stdout goes to a file so RLIMIT_FSIZE can stop a runaway conversion (it gets SIGXFSZ)
            proc = subprocess.run(["midi2abc", *MIDI2ABC_ARGS, "-f", midi_path], stdout=out,
                                  stderr=subprocess.PIPE, timeout=timeout,
                                  preexec_fn=_limit_output_size(max_bytes))
        except subprocess.TimeoutExpired:
            raise ConversionFailed("midi2abc_timeout")
        if proc.returncode == -signal.SIGXFSZ:
            raise ConversionFailed("midi2abc_output_too_large")
        if proc.returncode < 0:
            raise ConversionFailed(f"midi2abc_crashed_{signal.Signals(-proc.returncode).name}")
        if proc.returncode != 0:
            raise ConversionFailed("midi2abc_error")
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    if "K:" not in text:
        raise ConversionFailed("midi2abc_no_output")
    return text


class _Alarm(Exception):
    pass


def _raise_alarm(signum, frame):
    raise _Alarm()


def score_to_abc(score_path, timeout, midi_timeout, max_bytes):
    """music21 score (MusicXML, Humdrum) -> MIDI -> midi2abc: the same path a Lakh MIDI file takes."""
    from music21 import converter
    old = signal.signal(signal.SIGALRM, _raise_alarm)
    signal.alarm(max(1, int(timeout)))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            midi_path = os.path.join(tmp, "score.mid")
            try:
                converter.parse(score_path).write("midi", fp=midi_path)
            except _Alarm:
                raise ConversionFailed("music21_timeout")
            except Exception:  # music21 raises many types on malformed scores
                raise ConversionFailed("music21_error")
            signal.alarm(0)
            return midi_to_abc(midi_path, midi_timeout, max_bytes)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cache_path(cache_dir, digest):
    return os.path.join(cache_dir, digest[:2], digest + ".json")


def convert_to_abc(path, kind, settings):
    """Raw ABC text of one input file, from the cache when this content was converted before."""
    if kind == "abc":
        with open(path, "rb") as f:
            data = f.read()
        if not data.strip():
            raise ConversionFailed("empty_file")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionFailed("not_utf8")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read() + CONVERTER_VERSION.encode()).hexdigest()
    cache_file = _cache_path(settings["cache_dir"], digest) if settings["cache_dir"] else None
    time_limit = settings["timeout"] if kind == "midi" else settings["score_timeout"]
    if cache_file and os.path.exists(cache_file):
        with open(cache_file) as f:
            cached = json.load(f)
        # a timeout is retried only when this run allows more time than the one that timed out
        retry = cached["reason"] and cached["reason"].endswith("timeout") and cached["timeout"] < time_limit
        if not retry:
            if cached["abc"] is None:
                raise ConversionFailed(cached["reason"])
            return cached["abc"]
    try:
        if kind == "midi":
            text = midi_to_abc(path, settings["timeout"], settings["max_abc_bytes"])
        else:
            text = score_to_abc(path, settings["score_timeout"], settings["timeout"], settings["max_abc_bytes"])
        result = {"abc": text, "reason": None}
    except ConversionFailed as e:
        result = {"abc": None, "reason": str(e), "timeout": time_limit}
    if cache_file:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, cache_file)
    if result["abc"] is None:
        raise ConversionFailed(result["reason"])
    return result["abc"]


def process_file(item, settings):
    """Worker: one input file -> its cleaned tunes and the reasons for everything dropped."""
    path, kind = item
    try:
        text = convert_to_abc(path, kind, settings)
    except ConversionFailed as e:
        return {"path": path, "kind": kind, "failure": str(e)}
    except OSError:
        return {"path": path, "kind": kind, "failure": "read_error"}
    tunes, rejected = [], Counter()
    raw_tunes = abc_text.split_tunes(text)
    for raw in raw_tunes:
        tune, reason = abc_text.clean_tune(raw)
        if tune is None:
            rejected[reason] += 1
        else:
            tunes.append(tune)
    if not raw_tunes:
        return {"path": path, "kind": kind, "failure": "no_tunes"}
    return {"path": path, "kind": kind, "failure": None, "tunes": tunes, "tunes_found": len(raw_tunes),
            "rejected": dict(rejected)}


def convert_all(items, settings, workers):
    results = [None] * len(items)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(process_file, item, settings): i for i, item in enumerate(items)}
        for future in tqdm(as_completed(futures), total=len(items), desc="converting", unit="file",
                           disable=None):
            results[futures[future]] = future.result()
    return results


# ----------------------------------------------------------------------------------------------------
# 3-5. dedup, filters, split, tokenize

def gzip_ratio(text):
    raw = text.encode("utf-8")
    return len(gzip.compress(raw, compresslevel=9, mtime=0)) / max(1, len(raw))


def split_tunes_into_sets(tunes, fractions, seed):
    n = len(tunes)
    if n < 3:
        fail(f"only {n} tune(s) left after cleaning and filtering: need at least 3 for train/val/test")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        fail(f"{n} tunes are too few for --split {','.join(map(str, fractions))}: the training split is empty")
    pick = lambda idx: [tunes[i] for i in sorted(idx)]  # keep corpus order inside each split
    return {"train": pick(order[:n_train]), "val": pick(order[n_train:n_train + n_val]),
            "test": pick(order[n_train + n_val:])}


def encode_split(tokenizer, tunes):
    """Token ids of a split (each tune followed by EOT) and each tune's length in tokens."""
    pieces, lengths = [], []
    for tune in tunes:
        ids = tokenizer.encode_array(tune)
        pieces += [ids, np.array([tokenizer.eot_id])]
        lengths.append(len(ids) + 1)
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return ids, np.array(lengths)


def percentiles(values):
    if len(values) == 0:
        return {}
    qs = [5, 25, 50, 75, 95, 99]
    out = {f"p{q}": int(np.percentile(values, q)) for q in qs}
    out.update(min=int(np.min(values)), max=int(np.max(values)), mean=round(float(np.mean(values)), 1))
    return out


def plot_lengths(lengths_by_split, path, tokenizer_name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    all_lengths = np.concatenate(list(lengths_by_split.values()))
    bins = np.logspace(np.log10(max(1, all_lengths.min())), np.log10(all_lengths.max() + 1), 50)
    for split, lengths in lengths_by_split.items():
        ax.hist(lengths, bins=bins, alpha=0.6, label=f"{split} ({len(lengths)} tunes)", density=True)
    ax.set_xscale("log")
    ax.set_xlabel(f"tune length in tokens ({tokenizer_name} tokenizer, EOT included)")
    ax.set_ylabel("density")
    ax.set_title("Sequence-length distribution per split")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def stats_markdown(stats):
    s = stats
    lines = ["# Dataset statistics", "",
             f"- source: {s['source']}",
             f"- tokenizer: {s['tokenizer']} (vocabulary {s['vocab_size']})",
             f"- files found: {s['files_found']} ({', '.join(f'{k}: {v}' for k, v in s['files_by_kind'].items())})",
             f"- files converted: {s['files_converted']} (success rate {100 * s['conversion_success_rate']:.1f}%)",
             "", "## Conversion failures", ""]
    lines += [f"- {k}: {v}" for k, v in s["conversion_failures"].items()] or ["- none"]
    lines += ["", "## Tunes", "",
              f"- tunes found: {s['tunes_found']}",
              f"- duplicates removed: {s['duplicates_removed']}"]
    lines += [f"- removed ({k}): {v}" for k, v in s["filtered"].items()]
    lines += [f"- tunes kept: {s['tunes_kept']}", "",
              "## Splits", "", "| split | tunes | tokens | chars | chars/token | unknown chars |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, sp in s["splits"].items():
        lines.append(f"| {name} | {sp['tunes']} | {sp['tokens']} | {sp['chars']} | "
                     f"{sp['chars_per_token']:.2f} | {sp.get('unknown_chars', 0)} |")
    if s.get("max_train_tokens"):
        lines += ["", f"Training split cut to {s['max_train_tokens']} tokens "
                      f"(from {s['train_tokens_before_cut']})."]
    lines += ["", "## Tune length (tokens, EOT included)", "", "| split | " +
              " | ".join(s["length_tokens"]["train"].keys()) + " |",
              "|---|" + "---:|" * len(s["length_tokens"]["train"])]
    for name, pct in s["length_tokens"].items():
        lines.append(f"| {name} | " + " | ".join(str(v) for v in pct.values()) + " |")
    lines += ["", "![length histogram](length_histogram.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    try:
        fractions = [float(x) for x in args.split.split(",")]
    except ValueError:
        fail(f"--split must be three numbers like 0.98,0.01,0.01, got {args.split!r}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        fail(f"--split must be three non-negative fractions summing to 1, got {args.split!r}")
    if shutil.which("midi2abc") is None:
        fail("midi2abc not found: install Debian/Ubuntu's abcmidi package (sudo apt-get install abcmidi)")
    if args.tokenizer == "bpe" and args.vocab_size < 258:
        fail(f"--vocab_size must be at least 258 for BPE, got {args.vocab_size}")

    if args.input:
        items = collect_inputs(args.input)
        source = ", ".join(args.input)
    else:
        items = default_corpus_inputs(args.max_scores)
        source = f"music21 corpus (ABC collections + {args.max_scores} scores via MIDI)"
    items = evenly_spaced(items, args.max_files)

    out_dir = os.path.abspath(args.out)
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".incomplete-", dir=parent)
    except OSError as e:
        fail(f"cannot write the output folder {args.out}: {e.strerror}")
    try:
        stats = build_dataset(args, items, source, fractions, tmp_dir)
        if os.path.exists(out_dir):  # replace an older dataset only once the new one is complete
            old = tmp_dir + ".old"
            os.rename(out_dir, old)
            os.rename(tmp_dir, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp_dir, out_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    sp = stats["splits"]
    print(f"wrote {args.out}: {stats['tunes_kept']} tunes, vocab {stats['vocab_size']}, tokens "
          f"train {sp['train']['tokens']:,} / val {sp['val']['tokens']:,} / test {sp['test']['tokens']:,}; "
          f"{stats['files_converted']}/{stats['files_found']} files converted "
          f"({100 * stats['conversion_success_rate']:.1f}%)")


def build_dataset(args, items, source, fractions, out):
    settings = {"timeout": args.timeout, "score_timeout": args.score_timeout,
                "max_abc_bytes": args.max_abc_bytes, "cache_dir": os.path.abspath(args.cache_dir) if args.cache_dir else ""}
    results = convert_all(items, settings, args.workers)

    failures = Counter(r["failure"] for r in results if r["failure"])
    converted = [r for r in results if not r["failure"]]
    filtered = Counter()
    for r in converted:
        filtered.update(r["rejected"])
    tunes_found = sum(r["tunes_found"] for r in converted)

    seen, unique = set(), []
    for r in converted:
        for tune in r["tunes"]:
            digest = hashlib.sha256(tune.encode("utf-8")).digest()
            if digest not in seen:
                seen.add(digest)
                unique.append(tune)
    n_duplicates = sum(len(r["tunes"]) for r in converted) - len(unique)

    kept = []
    for tune in unique:
        if len(tune) < args.min_chars:
            filtered["too_short"] += 1
        elif len(tune) > args.max_chars:
            filtered["too_long"] += 1
        elif gzip_ratio(tune) < args.min_gzip_ratio:
            filtered["low_gzip_ratio"] += 1
        else:
            kept.append(tune)

    splits = split_tunes_into_sets(kept, fractions, args.seed)
    if args.tokenizer == "char":
        tokenizer = CharTokenizer.train(splits["train"])
    else:
        print(f"training a {args.vocab_size}-token BPE on {len(splits['train'])} training tunes ...")
        tokenizer = BPETokenizer.train(splits["train"], args.vocab_size)
        tokenizer.save(out)
    dtype = np.uint16 if tokenizer.vocab_size <= 2 ** 16 else np.uint32

    split_stats, lengths = {}, {}
    train_tokens_before_cut = None
    for name, tunes in splits.items():
        ids, lengths[name] = encode_split(tokenizer, tqdm(tunes, desc=f"encoding {name}", unit="tune",
                                                          disable=None, leave=False))
        n_tunes = len(tunes)
        if name == "train" and args.max_train_tokens:
            train_tokens_before_cut = len(ids)
            if args.max_train_tokens > len(ids):
                print(f"note: --max_train_tokens {args.max_train_tokens} exceeds the training split "
                      f"({len(ids)} tokens): nothing cut")
            ids = ids[:args.max_train_tokens]
            n_tunes = int(np.searchsorted(np.cumsum(lengths[name]), len(ids), side="right"))
        ids.astype(dtype).tofile(os.path.join(out, f"{name}.bin"))
        chars = sum(len(t) + 1 for t in tunes) if name != "train" or not args.max_train_tokens \
            else len(tokenizer.decode(ids.tolist()))
        split_stats[name] = {"tunes": n_tunes, "tokens": int(len(ids)), "chars": int(chars),
                             "chars_per_token": round(chars / max(1, len(ids)), 4)}
        if tokenizer.unk_id is not None:
            split_stats[name]["unknown_chars"] = int(np.sum(ids == tokenizer.unk_id))

    meta = {**tokenizer.meta(), "dtype": np.dtype(dtype).name, "eot_text": "\n",
            "note": "each tune is followed by eot_id; decoding renders EOT as a newline (tune separator)"}
    stats = {
        "source": source,
        "files_found": len(items),
        "files_by_kind": dict(sorted(Counter(kind for _, kind in items).items())),
        "files_converted": len(converted),
        "conversion_failures": dict(sorted(failures.items())),
        "conversion_success_rate": round(len(converted) / max(1, len(items)), 4),
        "tunes_found": tunes_found,
        "duplicates_removed": n_duplicates,
        "filtered": {k: filtered.get(k, 0) for k in
                     sorted(set(filtered) | {"no_key", "no_notes", "too_short", "too_long", "low_gzip_ratio"})},
        "tunes_kept": len(kept),
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "splits": split_stats,
        "length_tokens": {k: percentiles(v) for k, v in lengths.items()},
        "length_chars": {k: percentiles([len(t) + 1 for t in splits[k]]) for k in splits},
        "settings": {k: v for k, v in vars(args).items() if k not in ("workers", "cache_dir", "out")},
    }
    if args.max_train_tokens:
        stats["max_train_tokens"] = args.max_train_tokens
        stats["train_tokens_before_cut"] = train_tokens_before_cut
    for name, data in (("meta.json", meta), ("stats.json", stats)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    with open(os.path.join(out, "stats.md"), "w") as f:
        f.write(stats_markdown(stats))
    plot_lengths(lengths, os.path.join(out, "length_histogram.png"), tokenizer.name)
    return stats


if __name__ == "__main__":
    main()
