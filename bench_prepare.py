"""
prepare.py at Lakh scale: files/s and peak memory (RSS) against the number of input files, on a generated MIDI
corpus. The goal it checks: prepare.py's memory stays flat as the corpus grows (docs/lakh.md has the figures).

    python bench_prepare.py                                   # 20,000 files (4,000 distinct) in /tmp, 5k/10k/20k
    python bench_prepare.py --sizes=1000,2000 --distinct=500  # a quick look
    python bench_prepare.py --script=/tmp/old/prepare.py      # the same corpus through another prepare.py
    python bench_prepare.py --kind=abc --sizes=5000,20000 --corpus_dir=/tmp/bench_abc   # many tunes, no midi2abc

The corpus: `distinct` MIDI files written with pretty_midi, varied in length (20 to 1,500 notes a track, drawn
log-uniformly), in tracks (1 to 8, a drum track in some) and in tempo, then repeated (hard links) up to the
largest size, as a real collection repeats songs. Each size runs prepare.py on its own evenly spaced selection
of the corpus (--max_files), with the conversion cache off so every file goes through midi2abc. Memory is
read from the kernel's high-water marks (VmHWM) of prepare.py and of each worker process while it runs, so no
peak between two samples is missed; `tree` is the largest sum of the processes' resident sizes seen at once.
With --kind=abc the corpus is ABC files of abc_tunes distinct tunes each instead (no repeats, no midi2abc): the
memory per tune, where the MIDI corpus has one tune per file.
"""
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import exit_on_user_error, fail

# settings (config files, --key=value or --key value)
corpus_dir = '/tmp/bench_prepare_corpus'  # where the generated MIDI files go (made once, reused when complete)
sizes = '5000,10000,20000'                # corpus sizes to run prepare.py on (files)
distinct = 4000                           # different MIDI files; the rest of the corpus repeats them
max_notes = 1500                          # most notes of a track (fewer: cheaper files, the same memory question)
workers = 0                               # prepare.py --workers; 0 = its default (the CPUs this process may use)
script = 'prepare.py'                     # the prepare.py to measure (another checkout's, to compare)
kind = 'midi'                             # 'midi', or 'abc': files of abc_tunes generated tunes each
abc_tunes = 10                            # tunes per ABC file with kind=abc
keep_out = ''                             # '' = delete each dataset after measuring; a folder: keep them there
prepare_args = '--max_chars 100000'       # more prepare.py options; study_lakh.py's keeps whole songs


def write_song(path, rng, max_notes):
    """One MIDI file: 1-8 tracks (the last of 3+ is drums in half of them), each a melody of log-uniform length."""
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=rng.choice([72, 90, 100, 120, 128, 140]))
    n_tracks = rng.choice([1, 1, 2, 3, 4, 5, 6, 8])
    notes = int(round(20 * (max_notes / 20) ** rng.random())) if max_notes > 20 else max_notes
    for t in range(n_tracks):
        drums = t == n_tracks - 1 and n_tracks >= 3 and rng.random() < 0.5
        inst = pretty_midi.Instrument(program=rng.randrange(0, 100), is_drum=drums)
        start, low = 0.0, rng.randrange(36, 60)
        for _ in range(max(1, int(notes * rng.uniform(0.5, 1.0)))):
            length = rng.choice([0.125, 0.25, 0.25, 0.5, 0.5, 1.0])
            inst.notes.append(pretty_midi.Note(velocity=rng.randrange(50, 110), pitch=low + rng.randrange(0, 24),
                                               start=start, end=start + 0.9 * length))
            start += length
        pm.instruments.append(inst)
    pm.write(path)


def abc_file(path, i, n_tunes, rng):
    """n_tunes distinct 4/4 tunes of 8-40 bars (the file's number and the tune's make the first bar unique)."""
    notes = "CDEFGABcdefg"
    tunes = []
    for k in range(n_tunes):
        first = "".join(notes[int(d)] for d in f"{i:07d}{k:03d}"[-8:])
        bars = [first] + ["".join(rng.choice(notes) for _ in range(8)) for _ in range(rng.randrange(8, 40))]
        tunes.append(f"X:{k + 1}\nT:tune {i}.{k}\nM:4/4\nL:1/8\nK:{rng.choice('CGDAF')}\n{'|'.join(bars)}|]\n")
    with open(path, "w") as f:
        f.write("\n".join(tunes))


def make_corpus(folder, n_files, n_distinct, max_notes, kind="midi", abc_tunes=10):
    """folder/NNNNN.mid, n_files of them, file i a copy of distinct song i % n_distinct (made once)."""
    stamp = os.path.join(folder, f".complete-{kind}-{n_files}-{n_distinct}-{max_notes}-{abc_tunes}")
    if os.path.isfile(stamp):
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = random.Random(0)
    t0 = time.time()
    for i in range(n_files):
        path = os.path.join(folder, f"{i:06d}.mid")
        if kind == "abc":
            abc_file(path[:-4] + ".abc", i, abc_tunes, rng)
        elif i < n_distinct:
            write_song(path, rng, max_notes)
        else:
            os.link(os.path.join(folder, f"{i % n_distinct:06d}.mid"), path)
    open(stamp, "w").close()
    print(f"wrote {n_files} {kind.upper()} files ({n_distinct if kind == 'midi' else n_files} distinct) into "
          f"{folder} in {time.time() - t0:.0f} s", flush=True)


def descendants(pid):
    """pid's child processes and theirs, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def measure(cmd):
    """Run cmd; (seconds, peak RSS of the process in MiB, peak of any Python child, peak sum of the tree)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    top = child = tree = 0
    while proc.poll() is None:
        mem = memory_kib(proc.pid)
        if mem:
            top = max(top, mem[1])
            total = mem[0]
            for pid in descendants(proc.pid):
                m = memory_kib(pid)
                if m and m[1] > 0:
                    try:
                        exe = os.readlink(f"/proc/{pid}/exe")
                    except OSError:
                        exe = ""
                    if "python" in os.path.basename(exe):  # the workers, not the short midi2abc calls
                        child = max(child, m[1])
                    total += m[0]
            tree = max(tree, total)
        time.sleep(0.2)
    output = proc.stdout.read()
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} failed ({proc.returncode}): {output.strip().splitlines()[-1:]}")
    return time.time() - t0, top / 1024, child / 1024, tree / 1024, output.strip().splitlines()[-1]


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv)
    try:
        counts = sorted(int(float(s)) for s in cfg["sizes"].split(","))
    except ValueError:
        fail(f"sizes must be numbers of files like 5000,10000, got {cfg['sizes']!r}")
    if not counts or counts[0] < 10 or cfg["distinct"] < 1:
        fail("sizes must be at least 10 files and distinct at least 1")
    if cfg["kind"] not in ("midi", "abc"):
        fail(f"kind must be midi or abc, got {cfg['kind']!r}")
    make_corpus(cfg["corpus_dir"], counts[-1], min(cfg["distinct"], counts[-1]), cfg["max_notes"], cfg["kind"],
                cfg["abc_tunes"])
    print(f"prepare.py = {os.path.abspath(cfg['script'])}; {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} usable")
    print("| files | seconds | files/s | peak RSS prepare.py (MiB) | peak RSS of a worker (MiB) | "
          "peak RSS all processes (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        out = os.path.join(cfg["keep_out"] or tempfile.mkdtemp(prefix="bench_prepare_"), f"data_{n}")
        cmd = [sys.executable, cfg["script"], "--input", cfg["corpus_dir"], "--out_dir", out, "--max_files", str(n),
               "--cache_dir", "", "--overwrite=True", *shlex.split(cfg["prepare_args"]),
               *(["--workers", str(cfg["workers"])] if cfg["workers"] else [])]
        seconds, top, child, tree, last = measure(cmd)
        print(f"| {n:,} | {seconds:.0f} | {n / seconds:.1f} | {top:.0f} | {child:.0f} | {tree:.0f} |", flush=True)
        print(f"  ({last})", flush=True)
        if not cfg["keep_out"]:
            shutil.rmtree(os.path.dirname(out), ignore_errors=True)


if __name__ == "__main__":
    main()
