"""
The external programs of the suite, each judged by what it writes rather than by its exit code:
midi2abc (MIDI -> ABC, prepare.py), abc2midi (ABC -> MIDI, sample.py and tune_checks.py), abcm2ps (sheet
music, sample.py) and fluidsynth (audio, sample.py). All are Debian packages (abcmidi, abcm2ps,
fluidsynth, fluid-soundfont-gm).

Every call has a time limit: run_tool for subprocesses, time_limit for Python code that can hang in-process
(music21 on a pathological score). midi2abc's and prepare.py's music21 limits count CPU seconds, not wall-clock
seconds, so whether a file converts does not depend on how busy the machine is (prepare.py keeps a dataset
byte-identical across machines and --workers).
"""
import collections
import contextlib
import errno
import glob
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import wave

import numpy as np

from music_scaling_laws.lifetime import tool_command

MIDI2ABC_ARGS = ["-s"]  # keep short notes: without -s a round trip kept the note count within 2% on only
                        # 37 of 60 real files, with it on 58 of 60


class ConversionFailed(Exception):
    """A file that cannot become ABC text; its message is the reason counted in the statistics."""


class TimeLimitExceeded(BaseException):
    """Raised inside the code under time_limit; a BaseException so no `except Exception` in a library eats it."""


def _raise_time_limit(signum, frame):
    raise TimeLimitExceeded()


@contextlib.contextmanager
def time_limit(seconds, cpu=False):
    """Raise TimeLimitExceeded in this (main) thread after `seconds` of wall-clock time (SIGALRM), or with
    cpu=True after `seconds` of this process's CPU time (SIGPROF), which other processes on the machine cannot
    use up."""
    timer, sig = (signal.ITIMER_PROF, signal.SIGPROF) if cpu else (signal.ITIMER_REAL, signal.SIGALRM)
    old = signal.signal(sig, _raise_time_limit)
    signal.setitimer(timer, seconds)
    try:
        yield
    finally:
        signal.setitimer(timer, 0)
        signal.signal(sig, old)


def run_tool(cmd, timeout, limits=None, **kwargs):
    """subprocess.run(cmd) with a time limit; None when it ran out (the child is killed). The tool dies with the
    process that runs it, so a killed worker leaves no tool running, and runs under limits ({"cpu": (soft, hard),
    ...}: lifetime.tool_command, which does both without forking the caller)."""
    if shutil.which(cmd[0]) is None:  # as subprocess says it: setpriv would only exit 127
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cmd[0])
    argv, preexec = tool_command(cmd, limits)
    try:
        return subprocess.run(argv, timeout=timeout, preexec_fn=preexec, **kwargs)
    except subprocess.TimeoutExpired:
        return None


# ----------------------------------------------------------------------------- midi2abc

# a blocked midi2abc uses no CPU, so a wall-clock limit of this many times its CPU limit ends it; a running one
# would need less than a tenth of a core to reach it (private: a public int would be taken for a setting)
_WALL_PER_CPU_SECOND = 10


def midi_to_abc(midi_path, timeout, max_bytes):
    """ABC text of a MIDI file by `midi2abc -s`, or ConversionFailed(reason). On corrupt files midi2abc loops
    forever, dies of SIGFPE or writes hundreds of MB: hence the limit of `timeout` CPU seconds and the output-size
    cap."""
    with open(midi_path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionFailed("empty_file")
    if head not in (b"MThd", b"RIFF"):
        raise ConversionFailed("not_midi")
    cpu_seconds = math.ceil(timeout)  # RLIMIT_CPU counts whole seconds; the wall-clock backstop follows it
    with tempfile.TemporaryFile() as out:
        # stdout goes to a file so RLIMIT_FSIZE can stop a runaway conversion (it gets SIGXFSZ)
        proc = run_tool(["midi2abc", *MIDI2ABC_ARGS, "-f", midi_path], _WALL_PER_CPU_SECOND * cpu_seconds,
                        stdout=out, stderr=subprocess.PIPE,
                        # past cpu_seconds (whole seconds) it gets SIGXCPU, a second later SIGKILL; a crash leaves
                        # no core file in the user's folder
                        limits={"cpu": (cpu_seconds, cpu_seconds + 1), "fsize": (max_bytes, max_bytes),
                                "core": (0, 0)})
        if proc is None or proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
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


# ----------------------------------------------------------------------------- abc2midi

def midi_note_count(midi_path):
    """Notes pretty_midi finds in a MIDI file; 0 when the file is missing, empty or unreadable."""
    import pretty_midi
    if not os.path.exists(midi_path) or os.path.getsize(midi_path) == 0:
        return 0
    try:
        return sum(len(inst.notes) for inst in pretty_midi.PrettyMIDI(midi_path).instruments)
    except Exception:  # pretty_midi raises many types on a damaged file; all mean "no notes"
        return 0


def midi_seconds(midi_path):
    """How long a MIDI file plays, in seconds (pretty_midi: the end of its last note or event); 0 when unreadable."""
    import pretty_midi
    try:
        return float(pretty_midi.PrettyMIDI(midi_path).get_end_time())
    except Exception:  # pretty_midi raises many types on a damaged file
        return 0.0


def abc2midi_message_kind(line):
    """The kind of an abc2midi message, without its place and its particulars, so that messages can be counted by
    kind: 'Warning in line-char 5-12 : Track 0 Bar 1 has 1 time units while the time signature has 3' ->
    'Warning: Track # Bar # has # time units while the time signature has #'; quoted text becomes "…"."""
    level, _, text = line.strip().partition(" ")
    text = re.sub(r"^in line-char [\d-]+ :\s*", "", text)
    text = re.sub(r'"[^"]*"', '"…"', text)
    text = re.sub(r"'[^']*'", "'…'", text)
    # the text, character or tune fragment abc2midi quotes after these is the particular, not the kind
    text = re.sub(r"(Ignoring text:|Unrecognized character:|reserved character)\s*.*$", r"\1 …", text)
    return f"{level}: " + re.sub(r"-?\d+(\.\d+)?", "#", text).strip()


def abc_to_midi(abc_path, midi_path, timeout):
    """abc2midi exits 0 even on garbage, so it is judged by what it does: midi_ok when the MIDI file it
    wrote holds >= 1 note (pretty_midi) and it printed no `Error` line. Converts the first tune only."""
    if os.path.exists(midi_path):
        os.remove(midi_path)
    out = {"midi_ok": False, "midi_notes": 0, "midi_errors": []}
    proc = run_tool(["abc2midi", abc_path, "-o", midi_path, "-silent"], timeout, capture_output=True,
                    text=True, errors="replace")
    if proc is None:
        out["midi_errors"] = [f"abc2midi timed out after {timeout:g} s"]
        return out
    lines = (proc.stdout + proc.stderr).splitlines()
    out["midi_errors"] = [l.strip() for l in lines if l.startswith("Error")][:5]
    out["midi_warnings"] = [l.strip() for l in lines if l.startswith("Warning")][:5]
    out["midi_messages"] = dict(collections.Counter(abc2midi_message_kind(l) for l in lines
                                                    if l.startswith(("Error", "Warning"))))
    out["midi_notes"] = midi_note_count(midi_path)
    out["midi_ok"] = out["midi_notes"] > 0 and not out["midi_errors"]
    return out


# ----------------------------------------------------------------------------- abcm2ps, fluidsynth

def abc_to_svg(abc_path, svg_path, timeout):
    """Sheet music with abcm2ps -g. It writes <stem>001.svg, <stem>002.svg ... (one per page) and nothing
    for text it cannot set; pages are renamed to svg_path, <stem>_page2.svg ..."""
    stem = svg_path[:-len(".svg")] if svg_path.endswith(".svg") else svg_path
    for old in glob.glob(glob.escape(stem) + "[0-9][0-9][0-9].svg"):
        os.remove(old)
    out = {"svg": None, "svg_ok": False, "svg_errors": []}
    proc = run_tool(["abcm2ps", "-g", "-O", stem + ".svg", abc_path], timeout, capture_output=True, text=True,
                    errors="replace")
    if proc is None:
        out["svg_errors"] = [f"abcm2ps timed out after {timeout:g} s"]
        return out
    out["svg_errors"] = [l.strip() for l in (proc.stdout + proc.stderr).splitlines() if "error" in l.lower()][:5]
    pages = sorted(glob.glob(glob.escape(stem) + "[0-9][0-9][0-9].svg"))
    paths = []
    for n, page in enumerate(pages, 1):
        target = svg_path if n == 1 else f"{stem}_page{n}.svg"
        os.replace(page, target)
        paths.append(target)
    if paths:
        with open(paths[0], errors="replace") as f:
            out["svg_ok"] = "<svg" in f.read(2000)
        out["svg"] = paths[0]
        if len(paths) > 1:
            out["svg_pages"] = paths
    return out


def wav_peak(wav_path):
    """Peak amplitude of a 16/32-bit PCM WAV as a share of full scale (0 for silence or an unreadable file)."""
    try:
        with wave.open(wav_path) as w:
            width, frames = w.getsampwidth(), w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError):
        return 0.0
    dtype = {2: np.int16, 4: np.int32}.get(width)
    if dtype is None or not frames:
        return 0.0
    samples = np.frombuffer(frames, dtype=dtype)
    return float(np.abs(samples.astype(np.float64)).max()) / np.iinfo(dtype).max


def midi_to_wav(midi_path, wav_path, soundfont_path, timeout, sample_rate=22050, silence_peak=1e-3):
    """Audio with fluidsynth and a General MIDI soundfont, judged by the WAV: written and not silent (a peak
    below silence_peak of full scale; rests render as silence)."""
    if os.path.exists(wav_path):
        os.remove(wav_path)
    out = {"wav": None, "wav_ok": False, "wav_peak": 0.0}
    proc = run_tool(["fluidsynth", "-ni", "-F", wav_path, "-r", str(sample_rate), soundfont_path, midi_path],
                    timeout, capture_output=True)
    if proc is not None and os.path.exists(wav_path):
        out["wav"] = wav_path
        out["wav_peak"] = wav_peak(wav_path)
        out["wav_ok"] = out["wav_peak"] > silence_peak
    return out
