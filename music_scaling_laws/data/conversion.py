"""
Steps 2-3 of prepare.py, run in its worker processes: every input file to ABC text (midi2abc, music21 for
scores), cached by content hash, split into cleaned tunes; and the pool that runs them, whose results go to a
Spool (numbered records in a nameless temporary file) in the order of the inputs, whatever order they finish in.
"""
import array
import gzip
import hashlib
import itertools
import json
import os
import resource
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from music_scaling_laws.errors import DISK_FULL
from music_scaling_laws.data import abc_text
from music_scaling_laws.data.dataset import read_json, write_json_atomic
from music_scaling_laws.external_tools import ConversionFailed, TimeLimitExceeded, midi_to_abc, time_limit
from music_scaling_laws.lifetime import end_pool, worker_init
from music_scaling_laws.progress import progress_bar

# bump when the conversion changes, so cached results from an older conversion are not reused
# (2: CPU-time limits, zero-length notes dropped)
_CONVERTER_VERSION = "midi2abc-s-2"
_RETRY_FACTOR = 4  # a conversion that runs out of time is tried once more with this many times the limit
# ... in these stages only. A music21 score gets one try with a generous limit instead: the slowest score of the
# default corpus that converts needs 40 CPU s (beethoven/opus133), while the one that never does
# (beethoven/opus18no4, stuck in music21's repeat expansion) burnt 60 + 240 CPU s of every cold run with a retry
_RETRIED_STAGES = ("midi2abc",)
_AHEAD_PER_WORKER = 4  # files handed to each worker ahead of time: it never waits, the queue stays short


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the midi2abc calls this worker has waited for
    return usage.ru_utime + usage.ru_stime


def run_midi2abc(midi_path, limits, max_bytes, cpu):
    """midi_to_abc under limits["midi2abc"], the CPU seconds it used put in cpu["midi2abc"]."""
    start = children_cpu_seconds()
    try:
        return midi_to_abc(midi_path, limits["midi2abc"], max_bytes)
    finally:
        cpu["midi2abc"] = round(children_cpu_seconds() - start, 3)


def score_to_abc(score_path, limits, max_bytes, cpu):
    """music21 score (MusicXML, Humdrum) -> MIDI -> midi2abc: the same path a Lakh MIDI file takes."""
    from music21 import converter
    with tempfile.TemporaryDirectory() as tmp:
        midi_path = os.path.join(tmp, "score.mid")
        start = time.process_time()
        try:
            # in-process, so only a signal can stop music21 on a pathological score
            with time_limit(limits["music21"], cpu=True):
                # forceSource: music21 would otherwise load a pickle from a shared temp folder (never
                # unpickle what another process could have written) and store one there
                score = converter.parse(score_path, forceSource=True)
                # music21 writes a note of length zero (a chord symbol, a grace note) as its note-off before its
                # note-on at the same tick: it sounds to the end of the track and midi2abc gives up with
                # "Error - note too short!". They carry no duration, so the MIDI loses nothing it could show.
                for note in [n for n in score.recurse().notes if n.duration.quarterLength == 0]:
                    note.activeSite.remove(note)
                score.write("midi", fp=midi_path)
        except TimeLimitExceeded:
            raise ConversionFailed("music21_timeout")
        except Exception:  # music21 raises many types on malformed scores
            raise ConversionFailed("music21_error")
        finally:
            cpu["music21"] = round(time.process_time() - start, 3)
        return run_midi2abc(midi_path, limits, max_bytes, cpu)


def convert_once(path, kind, limits, max_bytes):
    """One conversion under limits {stage: CPU seconds}: {abc, reason, cpu: seconds per stage, limits}."""
    cpu = {}
    try:
        text = run_midi2abc(path, limits, max_bytes, cpu) if kind == "midi" else \
            score_to_abc(path, limits, max_bytes, cpu)
        return {"abc": text, "reason": None, "cpu": cpu, "limits": limits}
    except ConversionFailed as e:
        return {"abc": None, "reason": str(e), "cpu": cpu, "limits": limits}


def cached_result_holds(result, longest):
    """Whether a cached conversion is what this run would get with `longest`, its retry's limits: every stage
    finished within them, or the stage that timed out had at least as long. So a success under a longer limit,
    or a timeout under a shorter one, is converted again, and the cache never makes a dataset depend on history."""
    timed_out = result["reason"][:-len("_timeout")] if (result["reason"] or "").endswith("_timeout") else None
    return all(result["limits"][stage] >= longest[stage] if stage == timed_out else seconds <= longest[stage]
               for stage, seconds in result["cpu"].items())


def read_cached(cache_file):
    """A cached conversion, or None when there is none or it cannot be read: a damaged or foreign file in the
    cache is converted again rather than stopping the run."""
    try:
        result = read_json(cache_file)
    except (OSError, ValueError):
        return None
    ok = isinstance(result, dict) and {"abc", "reason", "cpu", "limits"} <= set(result)
    return result if ok else None


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
        digest = hashlib.sha256(f.read() + _CONVERTER_VERSION.encode()).hexdigest()
    cache = settings["cache_dir"]
    cache_file = os.path.join(cache, digest[:2], digest + ".json") if cache else None
    limits = {"midi2abc": settings["midi2abc_timeout"], "music21": settings["music21_timeout"]}
    longest = {stage: _RETRY_FACTOR * seconds if stage in _RETRIED_STAGES else seconds
               for stage, seconds in limits.items()}
    result = read_cached(cache_file) if cache_file else None
    if result is None or not cached_result_holds(result, longest):
        result = convert_once(path, kind, limits, settings["max_abc_bytes"])
        if result["reason"] in [stage + "_timeout" for stage in _RETRIED_STAGES]:  # a slow machine: a second chance
            result = convert_once(path, kind, longest, settings["max_abc_bytes"])
        if cache_file:
            try:
                os.makedirs(os.path.dirname(cache_file), exist_ok=True)
                write_json_atomic(result, cache_file, indent=None)  # atomic: workers and runs share the cache
            except OSError:  # full or read-only since main checked it: the conversion stands, uncached
                pass
    if result["abc"] is None:
        raise ConversionFailed(result["reason"])
    return result["abc"]


# ----------------------------------------------------------------------------------------------------

def gzip_ratio(text):
    raw = text.encode("utf-8")
    return len(gzip.compress(raw, compresslevel=9, mtime=0)) / max(1, len(raw))



def process_file(item, settings):
    """Worker: one input file -> its cleaned tunes and the reasons for everything dropped."""
    path, kind = item
    try:
        text = convert_to_abc(path, kind, settings)
    except ConversionFailed as e:
        return {"path": path, "kind": kind, "failure": str(e)}
    except OSError as e:
        if e.errno in DISK_FULL:  # a full temporary folder is not this file's fault: the parent stops the run
            raise
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
    # the filter's compression ratio is measured here, in parallel, not in the parent (step 4 reads it)
    return {"path": path, "kind": kind, "failure": None, "tunes": tunes, "tunes_found": len(raw_tunes),
            "rejected": dict(rejected), "gzip_ratios": [gzip_ratio(t) for t in tunes]}


class Spool:
    """Numbered byte records in a temporary file without a name (the kernel frees it when it is closed or the
    process ends, however it ends), so the parent keeps the corpus on disk and only 16 bytes a record in memory.
    Records may arrive in any order and are read back by number."""

    def __init__(self, folder):
        self.file = tempfile.TemporaryFile(dir=folder)
        self.offsets, self.sizes = array.array("q"), array.array("q")
        self.end = 0

    def __len__(self):
        return len(self.offsets)

    def put(self, i, data):
        while len(self.offsets) <= i:
            self.offsets.append(-1)
            self.sizes.append(0)
        self.file.seek(self.end)
        self.file.write(data)
        self.offsets[i], self.sizes[i] = self.end, len(data)
        self.end += len(data)

    def get(self, i):
        self.file.seek(self.offsets[i])
        return self.file.read(self.sizes[i])

    def close(self):
        self.file.close()


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:  # unreadable: process_file counts it as a read error
        return 0


def convert_all(items, settings, workers, spool):
    """process_file over every item in a process pool; each result goes into spool (JSON) under its item's number
    as it arrives, to be read in the order of items (determinism). The pool is handed a few files per worker
    ahead, not the whole list, so neither its queue nor its finished results grow with the corpus."""
    # the likely slowest files first (scores, then the largest), so that no long conversion starts last and leaves
    # the other workers idle at the end; the results still go into the spool in the order of items
    queue = iter(sorted(enumerate(items), key=lambda job: (job[1][1] != "score", -file_size(job[1][0]))))
    # the workers die with this process however it ends and do not hold its lock (lifetime.worker_init); a stop
    # (Ctrl-C, SIGTERM) or an error kills them at once instead of waiting for their conversions
    pool = ProcessPoolExecutor(max_workers=max(1, workers), initializer=worker_init, initargs=(os.getpid(),))
    try:
        with progress_bar(total=len(items), desc="converting", unit="file") as bar:
            running = {}
            while True:
                for i, item in itertools.islice(queue, max(0, _AHEAD_PER_WORKER * max(1, workers) - len(running))):
                    running[pool.submit(process_file, item, settings)] = i
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    spool.put(running.pop(future), json.dumps(future.result()).encode())
                    bar.update()
    except BaseException:
        end_pool(pool)
        raise
    pool.shutdown()
