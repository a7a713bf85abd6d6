"""
Turn a MIDI or ABC collection into a tokenized, split dataset for train.py, with the statistics of
every step. Here: the settings (globals below; config files, --key=value or --key value), pipeline steps
1-6 in order, and main, which checks the settings and swaps the finished dataset into place. Step 1's file
collection is data/inputs.py, steps 2-3 (run in worker processes) data/conversion.py; the layout written is
described in dataset.py; midi2abc and the time limits it runs under live in external_tools.py.

    python prepare.py                                   # the corpus inside music21, offline
    python prepare.py --input ~/lmd_full --out_dir data/lakh --tokenizer bpe --vocab_size 4096
    python prepare.py --input tunes/ --input 'more/*.abc' --max_train_tokens 1000000

Pipeline (each step counted in stats.json):
  1. collect files: .mid/.midi/.kar (MIDI), .abc, and without --input the music21 corpus: its ABC
     collections as ABC, plus a capped, evenly spaced selection of its other scores (MusicXML,
     Humdrum) written to MIDI by music21, so the default run exercises the MIDI path Lakh users need.
  2. convert MIDI -> ABC with Debian's `midi2abc -s` (external_tools.midi_to_abc). Every call has a
     limit of CPU seconds and an output-size cap (midi2abc loops forever, crashes with SIGFPE or writes
     50-191 MB on some corrupt files), runs in a process pool, and its result is cached by the file's
     content hash, so a re-run or an interrupted run over 178k files converts nothing twice. A conversion
     that runs out of time is retried once with 4x the limit before it counts as failed.
  3. split into tunes and clean them (abc_text.clean_tune: music headers only, X: renumbered, titles,
     comments and lyrics dropped, leading silence trimmed, tunes without K: or notes rejected).
  4. deduplicate identical cleaned texts, then filter by length and gzip compression ratio
     (a ratio below --min_gzip_ratio means degenerate repetition).
  5. split at the tune level (seeded, deterministic; no tune in two splits), train the tokenizer on the
     training split only, encode each split as tunes followed by an end-of-tune token.
  6. write train/val/test.bin, meta.json, stats.json, stats.md and a length histogram into a temporary
     folder that is renamed to --out_dir only when complete (dataset_output.py: the reports, and the checks
     that keep --out_dir safe).
Memory does not grow with the corpus (Lakh MIDI: 178k files, gigabytes of ABC): every converted file's
tunes go to an unnamed temporary file beside --out_dir as they arrive, and the steps after it read them back
one tune at a time, writing each split's tokens straight into its .bin. What stays in memory is a few
numbers per file and per tune (~150 bytes: a tune's hash for the deduplication, its length and split),
plus the BPE trainer's counts with --tokenizer bpe. The temporary files take about twice the ABC text on
disk while prepare.py runs (docs/lakh.md: measured memory and speed).
Same input and seed give byte-identical outputs on any machine, whatever its load or --workers: the time
limits count CPU seconds (not wall-clock), are fixed before conversion, and a cached result is used only
where this run's limits would give the same. Corrupt inputs are skipped, counted and listed with a reason.
--out_dir is written only when it is missing, empty, or (with --overwrite=True) holds a prepare.py dataset and
nothing else: prepare.py never deletes files it did not write. Stopped (Ctrl-C, SIGTERM) it ends its workers,
removes its temporary folder and says so in one line; killed (SIGKILL) its workers and midi2abc calls die with it
(lifetime.py) and the next run removes the temporary folder it left. Either way --out_dir is as it was.
"""
import array
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter

import numpy as np

from music_scaling_laws.configurator import configure, lines_of
from music_scaling_laws.errors import DISK_FULL, exit_on_user_error, fail
from music_scaling_laws.data.conversion import Spool, convert_all
from music_scaling_laws.data.dataset import META, SPLITS, STATS, fingerprints, write_json_atomic
from music_scaling_laws.data.dataset_output import (check_out, lock_output, percentiles, plot_lengths, replace_folder,
                                                    stats_markdown)
from music_scaling_laws.data.inputs import collect_inputs, default_corpus_inputs, evenly_spaced
from music_scaling_laws.lifetime import sigterm_stops, signal_name, usable_cpus
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.data.tokenizer import BPETokenizer, CharTokenizer

# ----------------------------------------------------------------------------------------------------
# settings; stats.json records them all but workers, cache_dir, out_dir and overwrite (they do not change the dataset)
input = ''                          # file, folder (searched recursively) or glob; repeatable. '': music21 corpus
out_dir = 'data/music21'            # dataset folder to write: missing, empty, or a dataset to replace
overwrite = False                   # replace the dataset already in --out_dir (never anything else)
tokenizer = 'char'                  # char or bpe
vocab_size = 4096                   # BPE vocabulary size, EOT included
split_fractions = '0.98,0.01,0.01'  # train,val,test fractions of the tunes
seed = 1337                         # seed of the train/val/test split
min_chars = 64                      # drop tunes shorter than this (cleaned text)
max_chars = 20000                   # drop tunes longer than this (cleaned text)
min_gzip_ratio = 0.24               # drop tunes whose gzip_bytes/raw_bytes is below this (degenerate repetition)
max_train_tokens = 0                # cut the training split to this many tokens (0: no cut); val/test unchanged
max_files = 0                       # use at most this many input files, evenly spaced over the sorted list (0: all)
max_scores = 200                    # default corpus only: how many non-ABC music21 scores take the MIDI path
# conversion processes: the CPUs this process may use (a SLURM job's or a container's share, not the whole node)
workers = usable_cpus()
midi2abc_timeout = 30.0             # CPU seconds per midi2abc call (a timed-out call is retried at 4x)
music21_timeout = 120.0             # CPU seconds per music21 score -> MIDI (one try: see _RETRIED_STAGES)
max_abc_bytes = 4_000_000           # midi2abc output above this is a runaway conversion and is discarded
cache_dir = 'data/.cache/convert'   # converted ABC, keyed by input content hash ('' disables the cache)

# the names these knobs had before 2026-11-30: accepted, with a note, until the next release
RENAMED = {"out": "out_dir", "split": "split_fractions", "timeout": "midi2abc_timeout",
           "score_timeout": "music21_timeout"}

FILTERS = ("no_key", "no_notes", "too_short", "too_long", "low_gzip_ratio")  # always listed in stats.json


# ----------------------------------------------------------------------------------------------------
# 1. collecting input files: data/inputs.py; 2-3. conversion and cleaning in worker processes: data/conversion.py
# ----------------------------------------------------------------------------------------------------
# 4. dedup and filters

def dedup_and_filter(results, cfg, kept):
    """Read the conversion results (spool) in the order of items and put the tunes kept into the spool kept, in
    corpus order: the first copy of each tune, if it passes the filters. Returns the counts for stats.json:
    {converted, failures: {reason: files}, failed: [(path, reason)], tunes_found, duplicates, filtered: {reason:
    tunes dropped by the cleaning of step 3 and the filters here}, chars: every kept tune's length}."""
    seen = set()  # SHA-256 of every distinct tune so far (32 bytes, not the tune: Lakh's tunes fill gigabytes)
    out = {"converted": 0, "failures": Counter(), "failed": [], "tunes_found": 0, "duplicates": 0,
           "filtered": Counter(), "chars": array.array("q")}
    for i in range(len(results)):
        r = json.loads(results.get(i))
        if r["failure"]:
            out["failures"][r["failure"]] += 1
            out["failed"].append((r["path"], r["failure"]))
            continue
        out["converted"] += 1
        out["tunes_found"] += r["tunes_found"]
        out["filtered"].update(r["rejected"])
        for tune, ratio in zip(r["tunes"], r["gzip_ratios"]):
            digest = hashlib.sha256(tune.encode("utf-8")).digest()
            if digest in seen:
                out["duplicates"] += 1
                continue
            seen.add(digest)
            if len(tune) < cfg["min_chars"]:
                out["filtered"]["too_short"] += 1
            elif len(tune) > cfg["max_chars"]:
                out["filtered"]["too_long"] += 1
            elif ratio < cfg["min_gzip_ratio"]:
                out["filtered"]["low_gzip_ratio"] += 1
            else:
                kept.put(len(kept), tune.encode("utf-8"))
                out["chars"].append(len(tune))
    return out


# ----------------------------------------------------------------------------------------------------
# 5. split, tokenizer, encoding

def assign_splits(n, fractions, seed):
    """The split of each of the n kept tunes (0 train, 1 val, 2 test): a seeded permutation of the tunes, so
    deterministic; each split keeps corpus order, as its tunes are read in corpus order."""
    if n < 3:
        fail(f"only {n} tune(s) left after cleaning and filtering: need at least 3 for train/val/test")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        fail(f"{n} tunes are too few for --split_fractions {','.join(map(str, fractions))}: the training split is empty")
    which = np.empty(n, dtype=np.uint8)
    which[order[:n_train]], which[order[n_train:n_train + n_val]], which[order[n_train + n_val:]] = 0, 1, 2
    return which


def tunes_of(kept, which, split):
    """The tunes of one split (0, 1, 2), read one at a time from the spool, in corpus order."""
    for i in np.flatnonzero(which == split):
        yield kept.get(int(i)).decode("utf-8")


def write_splits(tok, kept, which, chars, max_train_tokens, out):
    """Encode every tune, in corpus order, and append its tokens (EOT after each tune) to its split's .bin;
    returns per-split stats, tune lengths in tokens, and the training split's length before the
    --max_train_tokens cut (None without a cut). One tune's tokens are in memory at a time."""
    dtype = np.uint16 if tok.vocab_size <= 2 ** 16 else np.uint32
    lengths = {name: array.array("q") for name in SPLITS}
    tokens, unknown, whole_chars = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    cut_chars = 0  # characters of a tune the cut ends inside, as far as the cut keeps it
    files = {name: open(os.path.join(out, f"{name}.bin"), "wb") for name in SPLITS}
    try:
        for i in progress_bar(range(len(which)), desc="encoding", unit="tune", leave=False):
            name = SPLITS[which[i]]
            ids = np.append(tok.encode_array(kept.get(i).decode("utf-8")), tok.eot_id)
            lengths[name].append(len(ids))
            if name == "train" and max_train_tokens:
                room = max_train_tokens - tokens[name]
                if room <= 0:
                    continue  # past the cut: its length still counts in the training split's statistics
                if room < len(ids):  # the cut ends inside this tune: count the characters it really holds
                    ids = ids[:room]
                    cut_chars = len(tok.decode(ids.tolist()))
            if len(ids) == lengths[name][-1]:
                whole_chars[name] += chars[i] + 1  # a whole tune decodes to itself and EOT's line break
            files[name].write(ids.astype(dtype).tobytes())
            tokens[name] += len(ids)
            if tok.unk_id is not None:
                unknown[name] += int(np.count_nonzero(ids == tok.unk_id))
    finally:
        for f in files.values():
            f.close()
    split_stats, before_cut = {}, None
    for name in SPLITS:
        n_tunes, n_chars = len(lengths[name]), whole_chars[name]
        if name == "train" and max_train_tokens:
            before_cut = int(sum(lengths[name]))
            if max_train_tokens > before_cut:
                print(f"note: --max_train_tokens {max_train_tokens} exceeds the training split "
                      f"({before_cut} tokens): nothing cut")
            n_tunes = int(np.searchsorted(np.cumsum(lengths[name]), tokens[name], side="right"))
            n_chars += cut_chars
        split_stats[name] = {"tunes": n_tunes, "tokens": tokens[name], "chars": n_chars,
                             "chars_per_token": round(n_chars / max(1, tokens[name]), 4)}
        if tok.unk_id is not None:
            split_stats[name]["unknown_chars"] = unknown[name]
    return split_stats, {k: np.array(v, dtype=np.int64) for k, v in lengths.items()}, before_cut, \
        np.dtype(dtype).name


def build_dataset(cfg, items, names, source, fractions, out):
    """Steps 2-6 for the collected items, written into the folder out; returns the statistics."""
    settings = {"midi2abc_timeout": cfg["midi2abc_timeout"], "music21_timeout": cfg["music21_timeout"],
                "max_abc_bytes": cfg["max_abc_bytes"],
                "cache_dir": os.path.abspath(cfg["cache_dir"]) if cfg["cache_dir"] else ""}
    results, kept = Spool(out), Spool(out)  # on disk, nameless: nothing of them is left in out
    try:
        convert_all(items, settings, cfg["workers"], results)
        counts = dedup_and_filter(results, cfg, kept)
        results.close()  # its disk space back before the splits are written
        which = assign_splits(len(kept), fractions, cfg["seed"])
        if cfg["tokenizer"] == "char":
            tok = CharTokenizer.train(tunes_of(kept, which, 0))
        else:
            print(f"training a {cfg['vocab_size']}-token BPE on {int(np.sum(which == 0))} training tunes ...")
            tok = BPETokenizer.train(tunes_of(kept, which, 0), cfg["vocab_size"])
            tok.save(out)
        split_stats, lengths, before_cut, dtype = write_splits(tok, kept, which, counts["chars"],
                                                               cfg["max_train_tokens"], out)
    finally:
        results.close()
        kept.close()
    tune_chars = np.asarray(counts["chars"], dtype=np.int64) + 1  # EOT's line break included

    meta = {**tok.meta(), "dtype": dtype, "eot_text": "\n",
            "note": "each tune is followed by eot_id; decoding renders EOT as a newline (tune separator)"}
    stats = {
        "source": source,
        "files_found": len(items),
        "files_by_kind": dict(sorted(Counter(kind for _, kind in items).items())),
        "files_converted": counts["converted"],
        "conversion_failures": dict(sorted(counts["failures"].items())),
        "conversion_success_rate": round(counts["converted"] / max(1, len(items)), 4),
        "failed_files": sorted(({"file": names[path], "reason": reason} for path, reason in counts["failed"]),
                               key=lambda f: (f["file"], f["reason"])),
        "tunes_found": counts["tunes_found"],
        "duplicates_removed": counts["duplicates"],
        "filtered": {k: counts["filtered"].get(k, 0) for k in sorted(set(counts["filtered"]) | set(FILTERS))},
        "tunes_kept": len(which),
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "splits": split_stats,
        "length_tokens": {k: percentiles(v) for k, v in lengths.items()},
        "length_chars": {k: percentiles(tune_chars[which == i]) for i, k in enumerate(SPLITS)},
        # input as the list of --input values, the form stats.json has always had
        "settings": {k: lines_of(v) if k == "input" else v for k, v in cfg.items()
                     if k not in ("workers", "cache_dir", "out_dir", "overwrite")},
    }
    if cfg["max_train_tokens"]:
        stats["max_train_tokens"] = cfg["max_train_tokens"]
        stats["train_tokens_before_cut"] = before_cut
    prints = fingerprints(out, meta)  # the splits and the BPE ranks are written by now
    meta.update(prints)
    stats.update(prints)
    write_json_atomic(meta, os.path.join(out, META))
    write_json_atomic(stats, os.path.join(out, STATS))
    with open(os.path.join(out, "stats.md"), "w") as f:
        f.write(stats_markdown(stats))
    plot_lengths(lengths, os.path.join(out, "length_histogram.png"), tok.name)
    return stats


# ----------------------------------------------------------------------------------------------------

def check_settings(cfg):
    """The split fractions, or a one-line error for a setting no run could use."""
    if cfg["tokenizer"] not in ("char", "bpe"):
        fail(f"--tokenizer must be char or bpe, got {cfg['tokenizer']!r}")
    try:
        fractions = [float(x) for x in cfg["split_fractions"].split(",")]
    except ValueError:
        fail(f"--split_fractions must be three numbers like 0.98,0.01,0.01, got {cfg['split_fractions']!r}")
    # written so that nan fails every comparison (nan,0.5,0.5 used to pass the sum check)
    if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or not abs(sum(fractions) - 1) <= 1e-6:
        fail(f"--split_fractions must be three non-negative fractions summing to 1, got {cfg['split_fractions']!r}")
    if cfg["tokenizer"] == "bpe" and cfg["vocab_size"] < 258:
        fail(f"--vocab_size must be at least 258 for BPE, got {cfg['vocab_size']}")
    for key in ("workers", "midi2abc_timeout", "music21_timeout", "max_abc_bytes"):
        if cfg[key] <= 0:
            fail(f"--{key} must be positive, got {cfg[key]}")
    for key in ("max_train_tokens", "max_files", "max_scores"):
        if cfg[key] < 0:
            fail(f"--{key} must not be negative (0: no limit), got {cfg[key]}")
    if shutil.which("midi2abc") is None:
        fail("midi2abc not found: install Debian/Ubuntu's abcmidi package (sudo apt-get install abcmidi)")
    return fractions


def check_cache_dir(cache_dir):
    """One line for a --cache_dir that cannot be written; otherwise every conversion would fail to store its result
    and the run would end blaming the input ("only 0 tune(s) left after cleaning")."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as e:
        fail(f"--cache_dir {cache_dir} cannot be written ({e.strerror}): give a writable folder, or --cache_dir '' "
             f"to convert without a cache")


def remove_stale_incomplete(out_dir):
    """The <out>.incomplete-* folders of earlier prepare.py runs on this --out_dir that were killed (SIGKILL leaves
    no chance to clean up). Called under the lock, so no running prepare.py owns one."""
    pattern = glob.escape(out_dir) + ".incomplete-*"
    for folder in glob.glob(pattern):
        if os.path.isdir(folder) and not os.path.islink(folder) and re.fullmatch(r".*\.incomplete-[\w]{8}", folder):
            shutil.rmtree(folder, ignore_errors=True)


def user_mode(path):
    """Give a folder made by mkdtemp (always 0700) the mode the user's umask gives a new folder."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv, repeatable=("input",), renamed=RENAMED)
    fractions = check_settings(cfg)
    if cfg["input"]:
        patterns = lines_of(cfg["input"])
        items, names, inputs = collect_inputs(patterns)
        source = ", ".join(patterns)
    else:
        items, names, inputs = default_corpus_inputs(cfg["max_scores"])
        source = f"music21 corpus (ABC collections + {cfg['max_scores']} scores via MIDI)"
    items = evenly_spaced(items, cfg["max_files"])

    out_dir = os.path.abspath(cfg["out_dir"])
    check_out(cfg, out_dir, inputs)
    if cfg["cache_dir"]:
        check_cache_dir(cfg["cache_dir"])
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        lock = lock_output(out_dir)  # noqa: F841 (held until the process ends)
        remove_stale_incomplete(out_dir)
        tmp_dir = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".incomplete-", dir=parent)
        user_mode(tmp_dir)  # it becomes --out_dir
    except OSError as e:
        fail(f"cannot write the output folder {cfg['out_dir']}: {e.strerror}")
    try:
        with sigterm_stops():  # SIGTERM, like Ctrl-C, ends the workers; the finally removes the temporary folder
            stats = build_dataset(cfg, items, names, source, fractions, tmp_dir)
            check_out(cfg, out_dir, inputs)  # again: someone may have put files there during the conversion
            replace_folder(tmp_dir, out_dir)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (docker stop, pre-emption)
        fail(f"stopped by {signal_name(stop)}: {cfg['out_dir']} is unchanged; run the same command again to prepare it"
             + (" (files converted so far come from the cache)" if cfg["cache_dir"] else ""))
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        # the spool, the splits or a worker's temporary file: the finally removes the partial dataset
        fail(f"the disk is full ({e.strerror}) writing {e.filename or tmp_dir}: {cfg['out_dir']} is unchanged and "
             f"the partial dataset is removed" + (f"; files converted so far are kept in --cache_dir {cfg['cache_dir']}"
                                                  if cfg["cache_dir"] else "")
             + "; free space there (a run needs about twice its ABC text beside --out_dir) and run the same command again")
    finally:
        if os.path.exists(tmp_dir):  # ours: made by mkdtemp above
            shutil.rmtree(tmp_dir, ignore_errors=True)
    sp = stats["splits"]
    print(f"wrote {cfg['out_dir']}: {stats['tunes_kept']} tunes, vocab {stats['vocab_size']}, tokens "
          f"train {sp['train']['tokens']:,} / val {sp['val']['tokens']:,} / test {sp['test']['tokens']:,}; "
          f"{stats['files_converted']}/{stats['files_found']} files converted "
          f"({100 * stats['conversion_success_rate']:.1f}%)")


if __name__ == "__main__":
    main()
