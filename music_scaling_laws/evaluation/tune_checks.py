"""
The checks eval_syntax.py runs on every ABC file, and the summary table report.py shows them in.

Per file (evaluate_item): does it parse, does it convert to MIDI, is it degenerate, and what does it look
like musically. Why each check is what it is (measured, see the issue):
- parse_ok: the tune has X: and K: headers AND music21 parses it without error into >= 1 note. music21
  alone is too lenient (it accepts a missing K:, and turns "@@@ ### qqq" into notes), hence the headers.
- MIDI, two rates, both reported: abc2midi exits 0 even for garbage, so it is judged by what it does
  (external_tools.abc_to_midi). "Converts to MIDI" (midi_notes > 0, what the seed projects count): it wrote
  a MIDI file in which pretty_midi finds >= 1 note. "Converts to MIDI without errors" (midi_ok): that, and
  it printed no `Error` line. Both matter: a folk-music LSTM's tunes measured 100% and 0%.
- degenerate: no notes at all, only rests, or one bar repeated for most of the tune (a low-loss model can
  happily write `z8|z8|z8|...` or loop one bar; a peer project counted ten all-rest tunes as valid).
- music21's ABC import time grows with the square of the tune length (640 bars: 13 s), so every file is
  evaluated in a worker process (evaluate_all) under a per-file time limit and a length cap. An empty,
  binary, huge or hanging file is a counted failure with a reason, never a crash; a worker that dies or
  does not answer is killed and replaced.

The musical statistics are ours from the music21 score (SCORE_STATISTICS) and muspy's from the MIDI
(eval_metrics.MUSPY_STATISTICS). Every function takes the check settings (DEFAULT_SETTINGS with any
overrides) as an argument.
"""
import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import tempfile
import time


from music_scaling_laws.data.abc_text import body_bars, parse_header, split_tunes
from music_scaling_laws.evaluation.eval_metrics import (MUSPY_STATISTICS, muspy_available, muspy_statistics,
                                                        wilson_interval)
from music_scaling_laws.external_tools import TimeLimitExceeded, abc_to_midi, time_limit
from music_scaling_laws.lifetime import usable_cpus, worker_init
from music_scaling_laws.progress import progress_bar

DEFAULT_SETTINGS = {
    "parse_timeout": 10.0,  # seconds for music21 on one tune (a normal folk tune takes ~0.02 s)
    "midi_timeout": 10.0,   # seconds for abc2midi on one tune
    # longer files are a counted failure ("too long"); prepare.py's --max_chars default, so no tune a
    # dataset may hold is refused (music21 without beaming: ~2000 bars, < 10 s)
    "max_chars": 20000,
    "repeated_bar_share": 0.5,   # degenerate when one bar makes up more than this share of the bars ...
    "repeated_bar_min_bars": 4,  # ... of a tune with at least this many bars
    # music21 ends its ABC import by computing beams (which flags are drawn joined): notation only, ~80%
    # of the parse time, and music21 already ignores the errors it raises. Skipping it makes the check 5x
    # faster without changing the notes, durations or bars it sees.
    "skip_beaming": True,
    "hang_slack": 10.0,  # a worker silent for parse_timeout + midi_timeout + this is killed and replaced
}

# the pitch statistics are muspy's, of the MIDI: music21 10.5 does not carry an accidental to the end of
# the bar as ABC says (K:A, "=cc" reads C, C#), abc2midi does (that, and abc2midi playing repeats twice,
# made the two pitch-class entropies differ on 61 of 200 corpus tunes)
SCORE_STATISTICS = ("notes", "bars", "notes_per_bar", "rest_ratio", "bars_matching_meter")
STATISTICS = SCORE_STATISTICS + MUSPY_STATISTICS
# summary rates: (key, what a result counts for it); midi_rate and midi_with_errors_rate are the old names
RATES = (("parse_valid_rate", lambda r: r["parse_ok"]),
         ("midi_converts_rate", lambda r: r["midi_notes"] > 0),
         ("midi_clean_rate", lambda r: r["midi_ok"]),
         ("degenerate_rate", lambda r: r["degenerate"]))


def check_settings(settings=None):
    """DEFAULT_SETTINGS with the given overrides; an unknown name is a mistake, not a silent no-op."""
    unknown = set(settings or {}) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown tune check settings: {', '.join(sorted(unknown))}")
    return {**DEFAULT_SETTINGS, **(settings or {})}


# ----------------------------------------------------------------------------- one file

_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 12, 13}) + b"\x7f"


def read_abc_bytes(raw, max_chars):
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


def run_abc2midi(tune, tmp_dir, timeout):
    """Convert a tune's text with abc2midi in tmp_dir (see external_tools.abc_to_midi), and muspy's
    statistics of the notes it wrote (even with errors on the way: they are the notes a listener hears)."""
    abc_path, midi_path = os.path.join(tmp_dir, "tune.abc"), os.path.join(tmp_dir, "tune.mid")
    with open(abc_path, "w") as f:
        f.write(tune)
    result = abc_to_midi(abc_path, midi_path, timeout)
    result.update(muspy_statistics(midi_path) if result["midi_notes"] > 0
                  else {**dict.fromkeys(MUSPY_STATISTICS), "yang_lerch_features": None})
    return result


def parse_music21(tune, timeout):
    """(score, None) or (None, error) with music21 under a time limit."""
    from music21 import converter
    try:
        with time_limit(timeout):
            return converter.parseData(tune, format="abc"), None
    except TimeLimitExceeded:
        return None, f"timeout: music21 took more than {timeout:g} s"
    except Exception as e:  # music21 raises many exception types on bad input; all mean "does not parse"
        return None, f"{type(e).__name__}: {str(e)[:200]}"


def score_statistics(score):
    """Musical statistics of a parsed tune (all voices together) plus what degeneracy needs."""
    from music21 import harmony, note, stream
    parts = list(score.parts) if isinstance(score, stream.Score) and score.parts else [score]
    events = [n for n in score.recurse().notes if not isinstance(n, harmony.Harmony)]  # chord symbols are text
    rests = list(score.recurse().getElementsByClass(note.Rest))
    note_length = sum(float(n.quarterLength) for n in events)
    rest_length = sum(float(r.quarterLength) for r in rests)

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
        "notes_per_bar": len(events) / n_bars if n_bars else None,
        "rest_ratio": rest_length / (note_length + rest_length) if note_length + rest_length > 0 else None,
        "bars_matching_meter": sum(bar_lengths) / len(bar_lengths) if bar_lengths else None,
    }
    return stats, bar_contents


def most_repeated_bar_share(bars, min_bars):
    """Share of the bars taken by the most frequent one; 0 for a tune shorter than min_bars."""
    if len(bars) < min_bars:
        return 0.0
    return collections.Counter(bars).most_common(1)[0][1] / len(bars)


def evaluate_text(text, tmp_dir, settings):
    """Every check on the text of one file. Never raises for bad input: failures are fields of the result."""
    result = failed_result(None)
    tunes = split_tunes(text)
    result["tunes_in_file"] = len(tunes)
    # a file is one tune: the first one (abc2midi -o converts only the first too); a text with neither
    # X: nor K: is still tried as written, so garbage is judged by the parsers, not only by us
    tune = tunes[0] if tunes else text
    header = parse_header(tune)
    result["headers_missing"] = [f for f in ("X", "K") if f not in header]

    result.update(run_abc2midi(tune, tmp_dir, settings["midi_timeout"]))
    score, result["parse_error"] = parse_music21(tune, settings["parse_timeout"])
    bars = body_bars(tune)  # the written bars judge repetition when music21 cannot read the tune
    if score is not None:
        stats, bar_contents = score_statistics(score)
        result.update({k: stats[k] for k in SCORE_STATISTICS})
        bars = bar_contents
        if stats["notes"] == 0:
            result["parse_error"] = "no notes" if stats["rests"] == 0 else "only rests"
    result["parse_ok"] = score is not None and not result["headers_missing"] and result["notes"] > 0
    if result["headers_missing"] and result["parse_error"] is None:
        result["parse_error"] = "missing header " + ", ".join(f + ":" for f in result["headers_missing"])

    notes = result["notes"] if score is not None else result["midi_notes"]
    repeated = most_repeated_bar_share(bars, settings["repeated_bar_min_bars"])
    if notes == 0:
        result["reason"] = "only rests" if score is not None and result["parse_error"] == "only rests" else "no notes"
    elif repeated > settings["repeated_bar_share"]:
        result["reason"] = f"one bar is {100 * repeated:.0f}% of the bars"
    result["degenerate"] = result["reason"] is not None
    result["repeated_bar_share"] = repeated
    return result


def failed_result(reason):
    """The record of a file that could not be evaluated (and the starting point of one that can)."""
    result = {"parse_ok": False, "midi_ok": False, "degenerate": True, "reason": reason, "parse_error": reason,
              "headers_missing": [], "tunes_in_file": 0, "midi_notes": 0, "midi_errors": [], "midi_warnings": [],
              "midi_messages": {}, "yang_lerch_features": None}
    result.update({k: None for k in STATISTICS})
    return result


def evaluate_item(item, tmp_dir, settings):
    """item: {"path": ...} for a file, or {"path": label, "text": ...} for a reference tune."""
    if "text" in item:
        raw = item["text"].encode("utf-8")
    elif not os.path.isfile(item["path"]):  # a FIFO or device would block the reader forever
        return {"path": item["path"], **failed_result("not a regular file")}
    else:
        try:
            with open(item["path"], "rb") as f:
                raw = f.read(settings["max_chars"] + 1)
        except OSError as e:
            return {"path": item["path"], **failed_result(f"unreadable: {e.strerror}")}
    text, reason = read_abc_bytes(raw, settings["max_chars"])
    if text is None:
        return {"path": item["path"], **failed_result(reason)}
    try:
        return {"path": item["path"], **evaluate_text(text, tmp_dir, settings)}
    except TimeLimitExceeded:  # the alarm fired just outside music21 (between its end and the cancel)
        return {"path": item["path"], **failed_result(f"timeout after {settings['parse_timeout']:g} s")}
    except Exception as e:  # a bug in a statistic must not take the whole evaluation down
        return {"path": item["path"], **failed_result(f"evaluation error: {type(e).__name__}: {e}")}


# ----------------------------------------------------------------------------- process pool

def _worker_loop(conn, tmp_dir, settings, parent_pid):
    worker_init(parent_pid)  # dies with the parent, whatever ends it; Ctrl-C is the parent's to handle
    if settings["skip_beaming"]:  # this worker process only ever parses to check, never to draw
        from music21 import stream
        stream.Stream.makeBeams = lambda self, *args, **kwargs: None if kwargs.get("inPlace") else self
    # music21 prints warnings for odd tunes; the result records what matters
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        while True:
            item = conn.recv()
            if item is None:
                return
            conn.send(evaluate_item(item, tmp_dir, settings))


class _Worker:
    """One worker process fed one file at a time, so a hung file can be killed without losing the rest."""

    def __init__(self, ctx, tmp_root, settings):
        self.conn, child = ctx.Pipe()
        tmp_dir = tempfile.mkdtemp(dir=tmp_root)
        self.process = ctx.Process(target=_worker_loop, args=(child, tmp_dir, settings, os.getpid()), daemon=True)
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


def evaluate_all(items, settings=None, n_workers=None, desc="eval"):
    """Evaluate items in worker processes (n_workers, default one per CPU core) under the check settings
    (DEFAULT_SETTINGS with the overrides given); results in the order of items."""
    settings = check_settings(settings)
    n_workers = max(1, min(n_workers or usable_cpus(), len(items)))
    # the hard limit only catches a worker stuck where the alarm cannot reach (C code, a crash)
    hard_limit = settings["parse_timeout"] + settings["midi_timeout"] + settings["hang_slack"]
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "fork":
        # imported once here, shared by every forked worker, instead of once per worker (muspy: ~1.5 s)
        from music21 import converter  # noqa: F401
        muspy_available()
    results = [None] * len(items)
    todo = collections.deque(range(len(items)))
    with tempfile.TemporaryDirectory(prefix="eval_syntax_") as tmp_root, \
            progress_bar(total=len(items), desc=desc, unit="tune", disable=len(items) < 50) as bar:
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
        except BaseException:  # a stop (Ctrl-C, SIGTERM) or an error: no worker finishes its tune first
            for w in pool:
                w.stop(kill=True)
            raise
        for w in pool:
            w.stop()
    return results


# ----------------------------------------------------------------------------- summary

def summarize(results):
    """Rates (with Wilson 95% intervals in ci95) and mean statistics of a list of results (one block of the
    report). midi_converts_rate: abc2midi wrote a MIDI file with notes, errors or not; midi_clean_rate: and
    printed no error. midi_rate and midi_with_errors_rate are the same two under their old names."""
    n = len(results)
    counts = {key: sum(bool(test(r)) for r in results) for key, test in RATES}
    summary = {"n_files": n, **{key: k / n if n else None for key, k in counts.items()}}
    summary["midi_rate"], summary["midi_with_errors_rate"] = summary["midi_clean_rate"], summary["midi_converts_rate"]
    summary["ci95"] = {key: wilson_interval(k, n) for key, k in counts.items()}
    summary["failures"] = dict(collections.Counter(_failure_kind(r) for r in results if not r["parse_ok"]).most_common())
    summary["means"], summary["n_values"] = {}, {}
    # over the files where the statistic exists: tunes that parse (score), that convert to MIDI (muspy)
    for key in STATISTICS:
        values = [r[key] for r in results if r.get(key) is not None]
        summary["means"][key] = sum(values) / len(values) if values else None
        summary["n_values"][key] = len(values)  # how many tunes each mean is over: the rest had no value
    summary["abc2midi_messages"] = message_counts(results)
    return summary


def message_counts(results):
    """{kind of abc2midi message: {tunes: how many tunes it printed it for, count: how often}}, most tunes first:
    what "without errors" counts against (external_tools.abc2midi_message_kind says what a kind is)."""
    tunes, count = collections.Counter(), collections.Counter()
    for r in results:
        for kind, k in (r.get("midi_messages") or {}).items():
            tunes[kind] += 1
            count[kind] += k
    return {kind: {"tunes": n, "count": count[kind]}
            for kind, n in sorted(tunes.items(), key=lambda kv: (-kv[1], kv[0]))}


def _failure_kind(result):
    error = result["parse_error"] or "unknown"
    return error.split(":")[0] if not error.startswith("missing header") else error


RATE_LABELS = {"parse_valid_rate": "parse-valid %", "midi_converts_rate": "converts to MIDI %",
               "midi_clean_rate": "converts to MIDI without errors %", "degenerate_rate": "degenerate %"}
TABLE_NOTE = ("converts to MIDI: abc2midi writes a MIDI file with notes (errors allowed); without errors: and "
              "prints no error.\nRates: % (Wilson 95% interval). Statistics are means: notes .. bars matching "
              "meter of the tunes that parse\n(music21), pitch range .. empty beat rate of the tunes that convert "
              "to MIDI (muspy, as played).")


def format_table(summary, reference=None):
    """A summary (and optionally a reference summary beside it) as a fixed-width text table."""
    columns = ["files"] + (["reference"] if reference else [])
    rows = [("tunes", "n_files", "{:d}")] + [(label, key, "pct") for key, label in RATE_LABELS.items()]
    rows += [(k.replace("_", " "), k, "{:.2f}") for k in STATISTICS]

    def cell(block, key, fmt):
        value = block.get(key, block["means"].get(key))
        if value is None:
            return "-"
        if fmt != "pct":
            return fmt.format(value)
        ci = block.get("ci95", {}).get(key)  # a summary written before the intervals has none
        return f"{100 * value:.1f}" + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")

    lines = [f"{'':34s}" + "".join(f"{c:>20s}" for c in columns)]
    for label, key, fmt in rows:
        blocks = [summary] + ([reference] if reference else [])
        lines.append(f"{label:34s}" + "".join(f"{cell(b, key, fmt):>20s}" for b in blocks))
    return "\n".join(lines + [TABLE_NOTE])
