"""
Is a folder of generated ABC tunes music? Per file: does it parse, does it convert to MIDI, is it
degenerate, and what does it look like musically -- side by side with the same numbers on the dataset's
real test tunes, so "80% valid" can be read against what real music scores.

    python eval_syntax.py samples --reference data/music21 --out report.json
    python eval_syntax.py 'out/*/samples/*.abc' other_dir/tune.abc

Why each check is what it is (measured, see the issue):
- parse_ok: the tune has X: and K: headers AND music21 parses it without error into >= 1 note. music21
  alone is too lenient (it accepts a missing K:, and turns "@@@ ### qqq" into notes), hence the headers.
- midi_ok: abc2midi exits 0 even for garbage, so it is judged by what it does: a MIDI file was written,
  pretty_midi finds >= 1 note in it, and abc2midi printed no `Error` line.
- degenerate: no notes at all, only rests, or one bar repeated for most of the tune (a low-loss model can
  happily write `z8|z8|z8|...` or loop one bar; a peer project counted ten all-rest tunes as valid).
- music21's ABC import time grows with the square of the tune length (640 bars: 13 s), so every file is
  evaluated in a worker process under a per-file timeout and a length cap. An empty, binary, huge or
  hanging file is a counted failure with a reason, never a crash; a worker that dies or does not answer
  is killed and replaced.
"""
import argparse
import collections
import glob
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from abc_text import parse_header, split_header_body, split_tunes, music_text, FIELD_LINE

# -----------------------------------------------------------------------------
workers = os.cpu_count() or 1
parse_timeout = 10.0   # seconds for music21 on one tune (a normal folk tune takes ~0.02 s)
midi_timeout = 10.0    # seconds for abc2midi on one tune
max_chars = 20000      # longer files are a counted failure ("too long"); prepare.py's --max_chars default,
                       # so no tune a dataset may hold is refused (music21 without beaming: ~2000 bars, < 10 s)
reference_tunes = 300  # real test tunes scored for the reference column (a seeded random subset)
repeated_bar_share = 0.5  # degenerate when one bar makes up more than this share of the bars ...
repeated_bar_min_bars = 4  # ... of a tune with at least this many bars
hang_slack = 10.0      # a worker silent for parse_timeout + midi_timeout + this is killed and replaced
# music21 ends its ABC import by computing beams (which flags are drawn joined): notation only, ~80% of
# the parse time, and music21 already ignores the errors it raises. Skipping it makes the check 5x faster
# without changing the notes, durations or bars it sees.
skip_beaming = True
# -----------------------------------------------------------------------------

STATISTICS = ("notes", "bars", "pitch_range", "pitch_class_entropy", "distinct_pitch_classes",
              "notes_per_bar", "rest_ratio", "bars_matching_meter")


class ParseTimeout(BaseException):
    """Raised by the alarm inside music21; a BaseException so no `except Exception` in music21 eats it."""


def _on_alarm(signum, frame):
    raise ParseTimeout()


# ----------------------------------------------------------------------------- one file

_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 12, 13}) + b"\x7f"


def read_abc_bytes(raw):
    """(text, None) or (None, reason) for the raw bytes of a file. Text is UTF-8, or Latin-1 as many
    older ABC files are; bytes with NULs or many control characters are binary."""
    if not raw.strip():
        return None, "empty"
    if len(raw) > max_chars:
        return None, f"too long (more than {max_chars} characters)"
    if b"\x00" in raw or len(raw) - len(raw.translate(None, _CONTROL_BYTES)) > 0.05 * len(raw):
        return None, "binary"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("latin-1"), None


def run_abc2midi(tune, tmp_dir):
    """Convert a tune's text with abc2midi in tmp_dir (see run_abc2midi_file)."""
    abc_path = os.path.join(tmp_dir, "tune.abc")
    with open(abc_path, "w") as f:
        f.write(tune)
    return run_abc2midi_file(abc_path, os.path.join(tmp_dir, "tune.mid"), midi_timeout)


def run_abc2midi_file(abc_path, midi_path, timeout):
    """abc2midi exits 0 even on garbage, so it is judged by what it does: midi_ok when the MIDI file it
    wrote holds >= 1 note (pretty_midi) and it printed no `Error` line. Converts the first tune only."""
    if os.path.exists(midi_path):
        os.remove(midi_path)
    out = {"midi_ok": False, "midi_notes": 0, "midi_errors": []}
    try:
        proc = subprocess.run(["abc2midi", abc_path, "-o", midi_path, "-silent"], capture_output=True,
                              text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        out["midi_errors"] = [f"abc2midi timed out after {timeout:g} s"]
        return out
    out["midi_errors"] = [l.strip() for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("Error")][:5]
    out["midi_notes"] = midi_note_count(midi_path)
    out["midi_ok"] = out["midi_notes"] > 0 and not out["midi_errors"]
    return out


def midi_note_count(midi_path):
    """Notes pretty_midi finds in a MIDI file; 0 when the file is missing, empty or unreadable."""
    import pretty_midi
    if not os.path.exists(midi_path) or os.path.getsize(midi_path) == 0:
        return 0
    try:
        return sum(len(inst.notes) for inst in pretty_midi.PrettyMIDI(midi_path).instruments)
    except Exception:
        return 0


def parse_music21(tune):
    """(score, None) or (None, error) with music21 under the per-file alarm."""
    from music21 import converter
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, parse_timeout)
    try:
        return converter.parseData(tune, format="abc"), None
    except ParseTimeout:
        return None, f"timeout: music21 took more than {parse_timeout:g} s"
    except Exception as e:  # music21 raises many exception types on bad input; all mean "does not parse"
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def score_statistics(score):
    """Musical statistics of a parsed tune (all voices together) plus what degeneracy needs."""
    from music21 import harmony, note, stream
    parts = list(score.parts) if isinstance(score, stream.Score) and score.parts else [score]
    events = [n for n in score.recurse().notes if not isinstance(n, harmony.Harmony)]  # chord symbols are text
    rests = list(score.recurse().getElementsByClass(note.Rest))
    pitches = [p.midi for n in events for p in n.pitches]
    note_length = sum(float(n.quarterLength) for n in events)
    rest_length = sum(float(r.quarterLength) for r in rests)
    pitch_classes = collections.Counter(p % 12 for p in pitches)
    entropy = -sum(c / len(pitches) * math.log2(c / len(pitches)) for c in pitch_classes.values()) if pitches else None

    bar_lengths, bar_contents = [], []
    for part in parts:
        measures = list(part.getElementsByClass(stream.Measure))
        time_signature = None
        for i, m in enumerate(measures):
            time_signature = m.timeSignature or time_signature
            content = tuple((type(e).__name__, tuple(p.midi for p in getattr(e, "pitches", ())), float(e.quarterLength))
                            for e in m.notesAndRests if not isinstance(e, harmony.Harmony))
            bar_contents.append(content)
            # a pickup first bar and the closing bar are short by design: not counted against the meter
            if (i == 0 and (m.number == 0 or m.paddingLeft)) or i == len(measures) - 1:
                continue
            expected = time_signature.barDuration.quarterLength if time_signature else m.barDuration.quarterLength
            bar_lengths.append(abs(float(m.duration.quarterLength) - float(expected)) < 1e-6)
    n_bars = max((len(part.getElementsByClass(stream.Measure)) for part in parts), default=0)
    stats = {
        "notes": len(events),
        "rests": len(rests),
        "bars": n_bars,
        "pitch_range": (max(pitches) - min(pitches)) if pitches else None,
        "pitch_class_entropy": entropy,
        "distinct_pitch_classes": len(pitch_classes),
        "notes_per_bar": len(events) / n_bars if n_bars else None,
        "rest_ratio": rest_length / (note_length + rest_length) if note_length + rest_length > 0 else None,
        "bars_matching_meter": sum(bar_lengths) / len(bar_lengths) if bar_lengths else None,
    }
    return stats, bar_contents


def text_bars(tune):
    """Bars of a tune as written (whitespace removed), for the repeated-bar check when music21 fails."""
    _, body = split_header_body(tune)
    music = "".join(music_text(l) for l in body if not FIELD_LINE.match(l))
    return ["".join(b.split()) for b in music.replace(":", "|").replace("[", "|").split("|") if b.strip()]


def most_repeated_bar_share(bars):
    if len(bars) < repeated_bar_min_bars:
        return 0.0
    return collections.Counter(bars).most_common(1)[0][1] / len(bars)


def evaluate_text(text, tmp_dir):
    """Every check on the text of one file. Never raises for bad input: failures are fields of the result."""
    result = failed_result(None)
    tunes = split_tunes(text)
    result["tunes_in_file"] = len(tunes)
    # a file is one tune: the first one (abc2midi -o converts only the first too); a text with neither
    # X: nor K: is still tried as written, so garbage is judged by the parsers, not only by us
    tune = tunes[0] if tunes else text
    header = parse_header(tune)
    result["headers_missing"] = [f for f in ("X", "K") if f not in header]

    result.update(run_abc2midi(tune, tmp_dir))
    score, result["parse_error"] = parse_music21(tune)
    bars = text_bars(tune)
    if score is not None:
        stats, bar_contents = score_statistics(score)
        result.update({k: stats[k] for k in STATISTICS})
        bars = bar_contents
        if stats["notes"] == 0:
            result["parse_error"] = "no notes" if stats["rests"] == 0 else "only rests"
    result["parse_ok"] = score is not None and not result["headers_missing"] and result["notes"] > 0
    if result["headers_missing"] and result["parse_error"] is None:
        result["parse_error"] = "missing header " + ", ".join(f + ":" for f in result["headers_missing"])

    notes = result["notes"] if score is not None else result["midi_notes"]
    repeated = most_repeated_bar_share(bars)
    if notes == 0:
        result["reason"] = "only rests" if score is not None and result["parse_error"] == "only rests" else "no notes"
    elif repeated > repeated_bar_share:
        result["reason"] = f"one bar is {100 * repeated:.0f}% of the bars"
    result["degenerate"] = result["reason"] is not None
    result["repeated_bar_share"] = repeated
    return result


def failed_result(reason):
    """The record of a file that could not be evaluated (and the starting point of one that can)."""
    result = {"parse_ok": False, "midi_ok": False, "degenerate": True, "reason": reason, "parse_error": reason,
              "headers_missing": [], "tunes_in_file": 0, "midi_notes": 0, "midi_errors": []}
    result.update({k: None for k in STATISTICS})
    return result


def evaluate_item(item, tmp_dir):
    """item: {"path": ...} for a file, or {"path": label, "text": ...} for a reference tune."""
    if "text" in item:
        raw = item["text"].encode("utf-8")
    elif not os.path.isfile(item["path"]):  # a FIFO or device would block the reader forever
        return {"path": item["path"], **failed_result("not a regular file")}
    else:
        try:
            with open(item["path"], "rb") as f:
                raw = f.read(max_chars + 1)
        except OSError as e:
            return {"path": item["path"], **failed_result(f"unreadable: {e.strerror}")}
    text, reason = read_abc_bytes(raw)
    if text is None:
        return {"path": item["path"], **failed_result(reason)}
    try:
        return {"path": item["path"], **evaluate_text(text, tmp_dir)}
    except ParseTimeout:
        return {"path": item["path"], **failed_result(f"timeout after {parse_timeout:g} s")}
    except Exception as e:  # a bug in a statistic must not take the whole evaluation down
        return {"path": item["path"], **failed_result(f"evaluation error: {type(e).__name__}: {e}")}


# ----------------------------------------------------------------------------- process pool

def _worker_loop(conn, tmp_dir, settings):
    globals().update(settings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sys.stderr = io.StringIO()  # music21 prints warnings for odd tunes; the result records what matters
    if skip_beaming:
        from music21 import stream
        stream.Stream.makeBeams = lambda self, *args, **kwargs: None if kwargs.get("inPlace") else self
    while True:
        item = conn.recv()
        if item is None:
            return
        conn.send(evaluate_item(item, tmp_dir))
        sys.stderr.seek(0)
        sys.stderr.truncate()


class _Worker:
    """One worker process fed one file at a time, so a hung file can be killed without losing the rest."""

    def __init__(self, ctx, tmp_root, settings):
        self.conn, child = ctx.Pipe()
        tmp_dir = tempfile.mkdtemp(dir=tmp_root)
        self.process = ctx.Process(target=_worker_loop, args=(child, tmp_dir, settings), daemon=True)
        self.process.start()
        child.close()
        self.index, self.started = None, None

    def submit(self, index, item):
        self.index, self.started = index, time.monotonic()
        self.conn.send(item)

    def stop(self, kill=False):
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def evaluate_all(items, n_workers=None, desc="eval"):
    """Evaluate items in worker processes; results in the order of items."""
    n_workers = max(1, min(n_workers or workers, len(items)))
    settings = {k: globals()[k] for k in ("parse_timeout", "midi_timeout", "max_chars", "repeated_bar_share",
                                          "repeated_bar_min_bars", "skip_beaming")}
    # the hard limit only catches a worker stuck where the alarm cannot reach (C code, a crash)
    hard_limit = parse_timeout + midi_timeout + hang_slack
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    results = [None] * len(items)
    todo = collections.deque(range(len(items)))
    with tempfile.TemporaryDirectory(prefix="eval_syntax_") as tmp_root, \
            tqdm(total=len(items), desc=desc, unit="tune", disable=len(items) < 50) as bar:
        pool = [_Worker(ctx, tmp_root, settings) for _ in range(n_workers)]
        try:
            while todo or any(w.index is not None for w in pool):
                for w in pool:
                    if w.index is None and todo:
                        i = todo.popleft()
                        w.submit(i, items[i])
                busy = [w for w in pool if w.index is not None]
                ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=1.0)
                for k, w in enumerate(pool):
                    if w.index is None:
                        continue
                    if w.conn in ready:
                        try:
                            results[w.index] = w.conn.recv()
                        except (EOFError, OSError):
                            results[w.index] = {"path": items[w.index]["path"], **failed_result("evaluator crashed")}
                            w.stop(kill=True)
                            pool[k] = w = _Worker(ctx, tmp_root, settings)
                    elif time.monotonic() - w.started > hard_limit:
                        results[w.index] = {"path": items[w.index]["path"],
                                            **failed_result(f"timeout after {hard_limit:g} s (worker killed)")}
                        w.stop(kill=True)
                        pool[k] = w = _Worker(ctx, tmp_root, settings)
                    else:
                        continue
                    w.index = None
                    bar.update(1)
        finally:
            for w in pool:
                w.stop(kill=w.index is not None)
    return results


# ----------------------------------------------------------------------------- inputs and summary

def expand_inputs(patterns):
    """Folders (their *.abc files), files and glob patterns -> sorted unique file list."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(glob.glob(os.path.join(glob.escape(pattern), "*.abc")))
            if not found:
                sys.exit(f"error: no .abc files in folder {pattern}")
        elif os.path.exists(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not found:
                sys.exit(f"error: {pattern} is not a file, a folder or a glob that matches files")
        paths.extend(found)
    return list(dict.fromkeys(paths))


def reference_items(data_dir, limit, split="test", seed=0):
    """The dataset's real tunes of a split (decoded from split.bin, cut at EOT), a seeded random subset."""
    from tokenizer import load_tokenizer, read_meta
    try:
        meta = read_meta(data_dir)
        tokenizer = load_tokenizer(data_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(f"error: cannot read the dataset at {data_dir}: {e}")
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.exists(path):
        sys.exit(f"error: {path} does not exist: run prepare.py for {data_dir}")
    ids = np.fromfile(path, dtype=meta["dtype"])
    ends = np.flatnonzero(ids == meta["eot_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    picked = sorted(random.Random(seed).sample(range(len(ends)), min(limit, len(ends))))
    return [{"path": f"{path}#{i}", "text": tokenizer.decode(ids[starts[i]:ends[i]].tolist())} for i in picked]


def summarize(results):
    n = len(results)
    summary = {
        "n_files": n,
        "parse_valid_rate": sum(r["parse_ok"] for r in results) / n if n else None,
        "midi_rate": sum(r["midi_ok"] for r in results) / n if n else None,
        # lenient: a MIDI file with notes was written even though abc2midi printed errors on the way
        "midi_with_errors_rate": sum(r["midi_notes"] > 0 for r in results) / n if n else None,
        "degenerate_rate": sum(r["degenerate"] for r in results) / n if n else None,
        "means": {},
        "failures": dict(collections.Counter(_failure_kind(r) for r in results if not r["parse_ok"]).most_common()),
    }
    for key in STATISTICS:  # over the files where the statistic exists (parsed tunes)
        values = [r[key] for r in results if r[key] is not None]
        summary["means"][key] = sum(values) / len(values) if values else None
    return summary


def _failure_kind(result):
    error = result["parse_error"] or "unknown"
    return error.split(":")[0] if not error.startswith("missing header") else error


def format_table(summary, reference=None):
    columns = ["files"] + (["reference"] if reference else [])
    rows = [("tunes", "n_files", "{:d}"), ("parse-valid %", "parse_valid_rate", "pct"),
            ("MIDI %", "midi_rate", "pct"), ("MIDI incl. errors %", "midi_with_errors_rate", "pct"),
            ("degenerate %", "degenerate_rate", "pct")]
    rows += [(k.replace("_", " "), k, "{:.2f}") for k in STATISTICS]

    def cell(block, key, fmt):
        value = block.get(key, block["means"].get(key))
        if value is None:
            return "-"
        return f"{100 * value:.1f}" if fmt == "pct" else fmt.format(value)

    lines = [f"{'':24s}" + "".join(f"{c:>12s}" for c in columns)]
    for label, key, fmt in rows:
        blocks = [summary] + ([reference] if reference else [])
        lines.append(f"{label:24s}" + "".join(f"{cell(b, key, fmt):>12s}" for b in blocks))
    return "\n".join(lines)


def main(argv=None):
    global workers, parse_timeout, midi_timeout, max_chars, reference_tunes
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FOLDER_OR_GLOB", help="folders of .abc files, files, or globs")
    parser.add_argument("--reference", metavar="DATA_DIR", help="score the dataset's real test tunes alongside")
    parser.add_argument("--reference_tunes", type=int, default=reference_tunes, help="how many reference tunes (random subset)")
    parser.add_argument("--reference_split", default="test", choices=["train", "val", "test"],
                        help="split the reference tunes come from (train: a larger pool, e.g. for benchmarks)")
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--timeout", type=float, default=parse_timeout, help="seconds per tune for music21")
    parser.add_argument("--max_chars", type=int, default=max_chars, help="longer files are counted failures")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0 or args.max_chars < 1 or args.reference_tunes < 1:
        sys.exit("error: --workers, --timeout, --max_chars and --reference_tunes must be positive")
    workers, parse_timeout, max_chars, reference_tunes = args.workers, args.timeout, args.max_chars, args.reference_tunes

    paths = expand_inputs(args.inputs)
    ref_items = reference_items(args.reference, reference_tunes, args.reference_split) if args.reference else None
    t0 = time.time()
    results = evaluate_all([{"path": p} for p in paths], desc="files")
    seconds = time.time() - t0
    report = summarize(results)
    report["seconds"] = seconds
    report["tunes_per_s"] = len(results) / seconds if seconds > 0 else None
    if ref_items is not None:
        t0 = time.time()
        ref_results = evaluate_all(ref_items, desc="reference")
        ref_seconds = time.time() - t0
        report["reference"] = {"data_dir": args.reference, "split": args.reference_split, **summarize(ref_results),
                               "seconds": ref_seconds, "tunes_per_s": len(ref_results) / ref_seconds,
                               "failed": [r for r in ref_results if not r["parse_ok"] or not r["midi_ok"]][:20]}
    report["settings"] = {"parse_timeout": parse_timeout, "midi_timeout": midi_timeout, "max_chars": max_chars,
                          "repeated_bar_share": repeated_bar_share, "skip_beaming": skip_beaming, "workers": workers}
    report["files"] = results

    print(format_table(report, report.get("reference")))
    if report["failures"]:
        print("parse failures: " + ", ".join(f"{k} x{v}" for k, v in report["failures"].items()))
    print(f"{len(results)} files in {seconds:.1f} s ({report['tunes_per_s']:.1f} tunes/s, {workers} workers)")
    if ref_items is not None:
        ref = report["reference"]
        print(f"reference: {ref['n_files']} {args.reference_split} tunes of {args.reference} in {ref['seconds']:.1f} s "
              f"({ref['tunes_per_s']:.1f} tunes/s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
