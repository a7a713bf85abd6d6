"""
Data-pipeline benchmark: MIDI -> ABC conversion rate (one worker and all workers) and tokenizer encode
throughput, plus the projected time of a full Lakh MIDI conversion. Results go into BENCHMARKS.md by hand,
with the machine and date.

    python bench_data.py                       # synthetic Lakh-like MIDI files + data/music21 text
    python bench_data.py --midi_dir ~/lmd_full --n_files 500

Without --midi_dir the MIDI files are synthetic but shaped like Lakh songs (several instruments, a few
thousand notes, ~3 minutes), since midi2abc's time grows with the number of notes. Conversion is timed
through prepare.py's own worker (process_file), so the rate is the pipeline's, cleaning included.
"""
import glob
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.data.dataset import load_dataset
from music_scaling_laws.lifetime import worker_init
from music_scaling_laws.data.conversion import process_file
from music_scaling_laws.data.inputs import evenly_spaced
from music_scaling_laws.data.tokenizer import BPETokenizer, load_tokenizer

# settings (config files, --key=value or --key value)
midi_dir = ''                   # real MIDI files to convert ('': synthetic Lakh-like files)
n_files = 48                    # MIDI files to convert
data_dir = 'data/music21'       # char dataset whose training text is encoded
workers = os.cpu_count() or 1   # processes of the all-workers conversion run

# private: a public int global would be taken for a setting
_LAKH_FILES = 178_561  # files in Lakh MIDI's lmd_full
_PROJECTION_CORES = 16


def lakh_like_midi(path, rng, n_tracks=6, notes_per_track=500, seconds=180.0):
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=rng.choice([90, 100, 120, 128]))
    for t in range(n_tracks):
        inst = pretty_midi.Instrument(program=rng.randrange(0, 100), is_drum=(t == n_tracks - 1))
        step = seconds / notes_per_track
        for i in range(notes_per_track):
            start = i * step
            inst.notes.append(pretty_midi.Note(velocity=rng.randrange(60, 110), pitch=rng.randrange(36, 84),
                                               start=start, end=start + step * rng.choice([0.5, 1, 2])))
        pm.instruments.append(inst)
    pm.write(path)


def conversion_rate(files, workers):
    # generous limits and no cache: every file is really converted, and timed
    settings = {"midi2abc_timeout": 60, "music21_timeout": 60, "max_abc_bytes": 50_000_000, "cache_dir": ""}
    t0 = time.perf_counter()
    # the workers die with this process however it ends (lifetime.worker_init)
    with ProcessPoolExecutor(max_workers=workers, initializer=worker_init, initargs=(os.getpid(),)) as pool:
        results = list(pool.map(process_file, [(f, "midi") for f in files], [settings] * len(files), chunksize=4))
    elapsed = time.perf_counter() - t0
    ok = sum(1 for r in results if not r["failure"])
    return len(files) / elapsed, ok


def encode_rate(tokenizer, text, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokenizer.encode_array(text)
        best = min(best, time.perf_counter() - t0)
    return len(text.encode("utf-8")) / best / 1e6


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv)
    if cfg["n_files"] < 1 or cfg["workers"] < 1:
        fail(f"n_files and workers must be at least 1, got {cfg['n_files']} and {cfg['workers']}")
    data = load_dataset(cfg["data_dir"], need_stats=False)  # a missing dataset fails now, not after the timing
    with tempfile.TemporaryDirectory() as tmp:
        if cfg["midi_dir"]:
            files = evenly_spaced(sorted(glob.glob(os.path.join(cfg["midi_dir"], "**", "*.mid*"), recursive=True)),
                                  cfg["n_files"])
            source = f"{len(files)} files from {cfg['midi_dir']}"
        else:
            rng = random.Random(0)
            files = [os.path.join(tmp, f"song{i}.mid") for i in range(cfg["n_files"])]
            for f in files:
                lakh_like_midi(f, rng)
            source = f"{len(files)} synthetic Lakh-like files (6 tracks x 500 notes, 3 min)"
        one, ok = conversion_rate(files, 1)
        every, _ = conversion_rate(files, cfg["workers"])
    print(f"MIDI -> ABC ({source}, {ok} converted): {one:.1f} files/s with 1 worker, "
          f"{every:.1f} files/s with {cfg['workers']} workers")
    minutes = _LAKH_FILES / (one * _PROJECTION_CORES) / 60
    print(f"projected Lakh MIDI ({_LAKH_FILES:,} files) on {_PROJECTION_CORES} cores at the 1-worker rate: "
          f"{minutes:.0f} min")

    char = load_tokenizer(cfg["data_dir"])
    text = char.decode(data.split("train").tolist())
    tunes = text.split("\n\n")
    t0 = time.perf_counter()
    bpe = BPETokenizer.train(tunes, 4096)
    train_s = time.perf_counter() - t0
    mb = len(text.encode("utf-8")) / 1e6
    print(f"encode {mb:.1f} MB of ABC: char {encode_rate(char, text):.1f} MB/s, "
          f"BPE-4096 {encode_rate(bpe, text):.1f} MB/s (BPE training took {train_s:.1f} s)")


if __name__ == "__main__":
    main()
