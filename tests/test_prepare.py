"""prepare.py and the shared ABC/tokenizer helpers, through the real CLI where a user would use it."""
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from music_scaling_laws.data import abc_text
from music_scaling_laws.data.dataset import read_json
from helpers import REPO, corpus_file, left_running, many_tunes, slow_tool, tagged, wait_for, write_midi
from music_scaling_laws.data.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

TUNE_A = """X:12
T:The Title Leaks Identity
C:Some Composer
M:6/8
L:1/8
% a comment
K:D
w: some lyrics
z3|z3 z3|DFA dAF|GBd gdB|AFD EFG|FDD D3:|
"""
TUNE_B = """X:7
T:Another
M:3/4
L:1/4
K:G
GAB|c2B|A3|G3|dcB|AGF|G3|]
"""


def split_texts(data_dir):
    """Each split decoded back to its list of tunes."""
    tok = load_tokenizer(data_dir)
    meta = read_json(data_dir / "meta.json")
    out = {}
    for split in ("train", "val", "test"):
        ids = np.fromfile(data_dir / f"{split}.bin", dtype=meta["dtype"])
        assert ids[-1] == tok.eot_id, "every tune, the last included, ends with EOT"
        tunes, start = [], 0
        for end in np.flatnonzero(ids == tok.eot_id):
            tunes.append(tok.decode(ids[start:end].tolist()))
            start = end + 1
        out[split] = tunes
    return out


# ----------------------------------------------------------------------------------------------------
# the shared ABC helpers

def test_clean_tune_keeps_music_drops_identity_and_leading_silence():
    tune, reason = abc_text.clean_tune(TUNE_A)
    assert reason is None
    assert tune == "X:1\nM:6/8\nL:1/8\nK:D\nDFA dAF|GBd gdB|AFD EFG|FDD D3:|\n"


def test_clean_tune_trims_the_same_number_of_bars_in_every_voice():
    tune, _ = abc_text.clean_tune("X:1\nM:4/4\nL:1/4\nK:C\nV:1\nz4|z4|CDEF|\nV:2\nz4|z4|z4|C,4|\n")
    assert tune == "X:1\nM:4/4\nL:1/4\nK:C\nV:1\nCDEF|\nV:2\nz4|C,4|\n"


def test_clean_tune_rejects_tunes_without_key_or_notes():
    assert abc_text.clean_tune("X:1\nT:no key\nCDEF|\n") == (None, "no_key")
    assert abc_text.clean_tune('X:1\nM:4/4\nK:C\nz4|"Am"z4|!fermata!z4|\n') == (None, "no_notes")


def test_split_tunes_drops_file_header_and_accepts_a_bare_tune():
    text = "% file header\nT:Book\n\n" + TUNE_A + "\n\r\n" + TUNE_B.replace("\n", "\r\n")
    tunes = abc_text.split_tunes(text)
    assert [abc_text.parse_header(t)["X"] for t in tunes] == ["12", "7"]
    assert abc_text.split_tunes("M:2/4\nK:C\nCD|EF|\n") == ["M:2/4\nK:C\nCD|EF|\n"]
    assert abc_text.split_tunes("no music here") == []


def test_complete_headers_adds_only_what_is_missing():
    assert abc_text.complete_headers("M:3/4\nK:G\nGAB|\n") == ("X:1\nM:3/4\nL:1/8\nK:G\nGAB|\n", ["X", "L"])
    assert abc_text.complete_headers("CDEF|GABc|\n") == ("X:1\nM:4/4\nL:1/8\nK:C\nCDEF|GABc|\n", ["X", "M", "L", "K"])
    full = "X:3\nM:6/8\nL:1/8\nK:D\nDFA|\n"
    assert abc_text.complete_headers(full) == (full, [])


def test_tokenizers_round_trip_exactly():
    tunes = [abc_text.clean_tune(t)[0] for t in (TUNE_A, TUNE_B)]
    char = CharTokenizer.train(tunes)
    bpe = BPETokenizer.train(tunes * 20, 300)
    for tok in (char, bpe):
        for tune in tunes:
            assert tok.decode(tok.encode(tune)) == tune
        assert tok.decode(tok.encode(tunes[0]) + [tok.eot_id]) == tunes[0] + "\n"
    # byte-level BPE: characters never seen in training still round-trip
    assert bpe.decode(bpe.encode("K:D\né♯ é\n")) == "K:D\né♯ é\n"
    # char level: an unseen character becomes UNK rather than a wrong character
    assert char.encode("é") == [char.unk_id]


# ----------------------------------------------------------------------------------------------------
# datasets made by the CLI

def test_char_dataset_outputs_and_statistics(char_dataset):
    meta = read_json(char_dataset / "meta.json")
    stats = read_json(char_dataset / "stats.json")
    assert meta["tokenizer"] == "char" and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == stats["vocab_size"] == len(meta["chars"]) + 2
    for key in ("files_found", "files_converted", "conversion_failures", "conversion_success_rate",
                "duplicates_removed", "filtered", "splits", "length_tokens"):
        assert key in stats
    assert stats["files_found"] == stats["files_converted"] == 2
    texts = split_texts(char_dataset)
    for split, tunes in texts.items():
        sp = stats["splits"][split]
        assert sp["tunes"] == len(tunes) > 0
        assert sp["tokens"] == os.path.getsize(char_dataset / f"{split}.bin") // 2
        assert sp["chars"] == sum(len(t) + 1 for t in tunes) == sp["tokens"]
        for tune in tunes:  # what was written is a cleaned tune, byte for byte
            assert abc_text.clean_tune(tune) == (tune, None)
    assert stats["tunes_kept"] == sum(len(t) for t in texts.values())
    # no tune text in two splits
    train, val, test = (set(texts[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert (char_dataset / "stats.md").read_text().startswith("# Dataset statistics")
    assert (char_dataset / "length_histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_bpe_dataset_round_trips_and_compresses(bpe_dataset, char_dataset):
    meta = read_json(bpe_dataset / "meta.json")
    stats = read_json(bpe_dataset / "stats.json")
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] == 512 and meta["eot_id"] == 511
    bpe_texts, char_texts = split_texts(bpe_dataset), split_texts(char_dataset)
    assert bpe_texts["train"] == char_texts["train"], "same tunes, same splits, exact decoding"
    # val/test: the char vocabulary comes from train, so a character unseen there decodes as UNK
    char_tok = load_tokenizer(char_dataset)
    for split in ("val", "test"):
        assert [char_tok.decode(char_tok.encode(t)) for t in bpe_texts[split]] == char_texts[split]
    for split in ("train", "val", "test"):
        assert stats["splits"][split]["chars_per_token"] > 1.5
        assert stats["splits"][split]["chars"] == read_json(char_dataset / "stats.json")["splits"][split]["chars"]


def test_dedup_and_filters_are_counted(tmp_path, run_script):
    src = tmp_path / "in"
    src.mkdir()
    degenerate = "X:1\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|" * 300 + "\n"
    short = "X:1\nM:4/4\nK:C\nC|\n"
    tunes = many_tunes(12)
    # the same tune under another number and title is a duplicate once cleaned
    duplicate = tunes[0].replace("X:1\nT:tune 0", "X:99\nT:Other title")
    (src / "a.abc").write_text("\n".join(tunes + [duplicate, degenerate, short, "X:5\nT:no key\nCDE|\n"]))
    out = tmp_path / "out"
    run_script(["prepare.py", "--input", src, "--out_dir", out, "--split_fractions", "0.8,0.1,0.1", "--max_chars", "5000"])
    stats = read_json(out / "stats.json")
    assert stats["duplicates_removed"] == 1
    assert stats["filtered"]["low_gzip_ratio"] == 1
    assert stats["filtered"]["too_short"] == 1
    assert stats["filtered"]["no_key"] == 1
    assert stats["tunes_kept"] == 12
    proc = run_script(["prepare.py", "--input", src, "--out_dir", out, "--max_chars", "80", "--split_fractions", "0.8,0.1,0.1",
                       "--overwrite=True"], check=False)  # every tune too long now: the old dataset must survive
    assert proc.returncode != 0 and "need at least 3" in proc.stderr
    assert read_json(out / "stats.json")["tunes_kept"] == 12
    assert not [p for p in os.listdir(tmp_path) if "incomplete" in p]


def test_same_input_and_seed_give_byte_identical_outputs(tmp_path, run_script):
    src = tmp_path / "tunes.abc"
    src.write_text("\n".join(many_tunes(30)))
    outs = []
    for name in ("one", "two"):
        outs.append(tmp_path / name)
        run_script(["prepare.py", "--input", src, "--out_dir", outs[-1], "--tokenizer", "bpe", "--vocab_size", "300",
                    "--split_fractions", "0.8,0.1,0.1", "--seed", "7"])
    files = sorted(os.listdir(outs[0]))
    assert "bpe.tiktoken" in files and files == sorted(os.listdir(outs[1]))
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    run_script(["prepare.py", "--input", src, "--out_dir", tmp_path / "three", "--tokenizer", "bpe",
                "--vocab_size", "300", "--split_fractions", "0.8,0.1,0.1", "--seed", "8"])
    assert (tmp_path / "three" / "train.bin").read_bytes() != (outs[0] / "train.bin").read_bytes()


def test_max_train_tokens_cuts_only_the_training_split(tmp_path, run_script, char_dataset):
    out = tmp_path / "cut"
    args = ["prepare.py", "--out_dir", out, "--split_fractions", "0.8,0.1,0.1", "--max_train_tokens", "5000"]
    for rel in ("airdsAirs/book1.abc", "essenFolksong/ballad10.abc"):
        args += ["--input", corpus_file(rel)]
    run_script(args)
    stats = read_json(out / "stats.json")
    assert os.path.getsize(out / "train.bin") == 2 * 5000 and stats["splits"]["train"]["tokens"] == 5000
    assert stats["train_tokens_before_cut"] == read_json(char_dataset / "stats.json")["splits"]["train"]["tokens"]
    for split in ("val", "test"):
        assert (out / f"{split}.bin").read_bytes() == (char_dataset / f"{split}.bin").read_bytes()


# ----------------------------------------------------------------------------------------------------
# MIDI: real midi2abc, planted bad files, the cache

def test_midi_collection_with_planted_bad_files(tmp_path, run_script):
    src = tmp_path / "collection"
    (src / "sub").mkdir(parents=True)
    for i in range(4):  # real MIDI files, starting after two bars of silence
        write_midi(src / "sub" / f"good{i}.mid", [60 + i, 62, 64, 65, 67, 69, 71, 72 - i, 60, 64, 67, 72], start=4.0)
    good = (src / "sub" / "good0.mid").read_bytes()
    (src / "empty.mid").write_bytes(b"")
    (src / "text.mid").write_text("this is not a MIDI file\n")
    (src / "truncated.midi").write_bytes(good[:30])
    (src / "latin1.abc").write_bytes("X:1\nT:Caf\xe9\nK:C\nCDEF|\n".encode("latin-1"))
    (src / "notes.txt").write_text("ignored: not a music file")
    (src / "tunes.abc").write_text("\n".join(many_tunes(6)))
    out = tmp_path / "out"
    proc = run_script(["prepare.py", "--input", src, "--out_dir", out, "--split_fractions", "0.6,0.2,0.2",
                       "--cache_dir", tmp_path / "cache"])
    stats = read_json(out / "stats.json")
    assert stats["files_found"] == 9 and stats["files_by_kind"] == {"abc": 2, "midi": 7}
    failures = stats["conversion_failures"]
    assert failures["empty_file"] == 1 and failures["not_midi"] == 1 and failures["not_utf8"] == 1
    assert sum(failures.values()) == 4, failures  # the truncated file fails too, with midi2abc's reason
    assert stats["files_converted"] == 5 and stats["conversion_success_rate"] == round(5 / 9, 4)
    (truncated_reason,) = failures.keys() - {"empty_file", "not_midi", "not_utf8"}
    # each failed file by name, relative to the --input folder (the same on any machine), and its reason
    assert stats["failed_files"] == [{"file": "empty.mid", "reason": "empty_file"},
                                     {"file": "latin1.abc", "reason": "not_utf8"},
                                     {"file": "text.mid", "reason": "not_midi"},
                                     {"file": "truncated.midi", "reason": truncated_reason}]
    assert "5/9 files converted" in proc.stdout
    tunes = [t for texts in split_texts(out).values() for t in texts]
    midi_tunes = [t for t in tunes if "V:" in t or "Q:" in t]
    assert len(midi_tunes) == 4, "every good MIDI file became a tune"
    for tune in midi_tunes:  # the leading silence was trimmed: the music starts with a note
        first_music = [l for l in tune.split("\n")[1:] if l and not abc_text.FIELD_LINE.match(l)][0]
        assert first_music.lstrip("|")[0] in "CDEFGABcdefg^_=", tune

    # a second run converts nothing: with a midi2abc that would fail, the cache still answers
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "midi2abc"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}"}
    run_script(["prepare.py", "--input", src, "--out_dir", tmp_path / "again", "--split_fractions", "0.6,0.2,0.2",
                "--cache_dir", tmp_path / "cache"], env=env)
    assert (tmp_path / "again" / "train.bin").read_bytes() == (out / "train.bin").read_bytes()


@pytest.mark.parametrize("script, option, reason", [
    # a busy loop: the limit counts CPU seconds (0.25 and its retry's 1 both mean one whole second)
    ("while :; do :; done", ["--midi2abc_timeout", "0.25"], "midi2abc_timeout"),
    ("exec yes 'CDEF GABc|'", ["--max_abc_bytes", "100000"], "midi2abc_output_too_large"),
    ("kill -FPE $$", [], "midi2abc_crashed_SIGFPE"),
])
def test_hanging_runaway_and_crashing_midi2abc_are_counted(tmp_path, run_script, script, option, reason):
    """midi2abc loops forever, writes hundreds of MB, or dies of SIGFPE on some corrupt files: stand-ins that do
    exactly that check the guards around every call."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "midi2abc").write_text(f"#!/bin/sh\n{script}\n")
    (fake_bin / "midi2abc").chmod(0o755)
    src = tmp_path / "in"
    src.mkdir()
    write_midi(src / "x.mid", [60, 62, 64])
    (src / "tunes.abc").write_text("\n".join(many_tunes(5)))
    run_script(["prepare.py", "--input", src, "--out_dir", tmp_path / "out", "--split_fractions", "0.6,0.2,0.2",
                "--cache_dir", "", *option], env={"PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert read_json(tmp_path / "out" / "stats.json")["conversion_failures"] == {reason: 1}


@pytest.mark.slow
def test_same_bytes_with_any_workers_and_any_cpu_load(tmp_path, run_script):
    """Whether a file converts is decided by CPU seconds, not by the clock: a midi2abc that needs 0.6 CPU seconds
    of its 1-second limit converts every file with one worker, and with two workers while two busy processes
    share the CPU with them (a 1-second wall-clock limit lost files there); the datasets are the same bytes."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    (fake_bin / "midi2abc").write_text(f"#!/bin/sh\n{sys.executable} -c '{burn}'\n"
                                       f"exec {shutil.which('midi2abc')} \"$@\"\n")
    (fake_bin / "midi2abc").chmod(0o755)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(2):
        write_midi(src / "sub" / f"m{i}.mid", [60 + i, 62, 64, 65, 67, 69, 71, 72 - i, 60, 64, 67, 72])
    (src / "sub" / "bad.mid").write_text("not a MIDI file\n")
    (src / "tunes.abc").write_text("\n".join(many_tunes(8)))
    args = ["prepare.py", "--input", src, "--split_fractions", "0.6,0.2,0.2", "--cache_dir", "", "--midi2abc_timeout", "1"]
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}"}
    run_script([*args, "--out_dir", tmp_path / "one", "--workers", "1"], env=env)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        run_script([*args, "--out_dir", tmp_path / "two", "--workers", "2"], env=env)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    stats = read_json(tmp_path / "one" / "stats.json")
    assert stats["files_converted"] == 3, stats["conversion_failures"]
    assert stats["failed_files"] == [{"file": os.path.join("sub", "bad.mid"), "reason": "not_midi"}]
    files = sorted(os.listdir(tmp_path / "one"))
    assert files == sorted(os.listdir(tmp_path / "two"))
    for f in files:  # train/val/test.bin, meta.json, stats.json, stats.md, the histogram
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_a_score_with_a_zero_length_note_converts(tmp_path, run_script):
    """music21 writes a zero-length note (here a chord symbol) as note-offs before note-ons at the same tick, so
    it sounds to the end of the track and midi2abc stopped with "note too short": six scores of the default
    corpus failed so. prepare.py drops such notes before writing the MIDI; a score named by --input takes the
    same path."""
    (tmp_path / "tunes.abc").write_text("\n".join(many_tunes(5)))
    run_script(["prepare.py", "--input", corpus_file("monteverdi/madrigal.3.10.mxl"), "--input",
                tmp_path / "tunes.abc", "--out_dir", tmp_path / "out", "--split_fractions", "0.6,0.2,0.2", "--cache_dir", ""])
    stats = read_json(tmp_path / "out" / "stats.json")
    assert stats["files_by_kind"] == {"abc": 1, "score": 1} and stats["failed_files"] == []
    assert stats["tunes_kept"] == 6, "the five tunes and the madrigal"
    # the madrigal's five voices: far longer than any of the small tunes (it may land in any split, where a
    # char vocabulary learnt from the training split need not hold its letters, so its length is checked)
    assert max(stats["length_chars"][split].get("max", 0) for split in ("train", "val", "test")) > 1000


def test_cache_is_reused_only_where_this_runs_limits_give_the_same(tmp_path, run_script):
    """Cached results planted by hand: ones this run's limits would reproduce are used (their tunes, their
    failures), ones it would not are converted again by the real midi2abc."""
    from music_scaling_laws.data.conversion import _CONVERTER_VERSION
    src, cache = tmp_path / "in", tmp_path / "cache"
    src.mkdir()
    planted_tunes = many_tunes(9)[6:]  # not among the tunes of tunes.abc
    (src / "tunes.abc").write_text("\n".join(many_tunes(6)))
    limits = {"midi2abc": 120.0, "music21": 240.0}
    planted = {"kept.mid": {"abc": planted_tunes[0], "reason": None, "cpu": {"midi2abc": 0.1}},
               "slow.mid": {"abc": planted_tunes[1], "reason": None, "cpu": {"midi2abc": 500.0}},
               "short_limit.mid": {"abc": None, "reason": "midi2abc_timeout", "cpu": {"midi2abc": 4.0}},
               "timed_out.mid": {"abc": None, "reason": "midi2abc_timeout", "cpu": {"midi2abc": 120.0}}}
    for i, (name, result) in enumerate(planted.items()):
        write_midi(src / name, [60 + i, 62, 64, 65, 67, 69, 71, 72, 60, 64, 67, 72 - i])
        digest = hashlib.sha256((src / name).read_bytes() + _CONVERTER_VERSION.encode()).hexdigest()
        (cache / digest[:2]).mkdir(parents=True, exist_ok=True)
        result_limits = {"midi2abc": 4.0, "music21": 240.0} if name == "short_limit.mid" else limits
        (cache / digest[:2] / f"{digest}.json").write_text(json.dumps({**result, "limits": result_limits}))
    write_midi(src / "damaged_cache.mid", [72, 71, 69, 67, 65, 64, 62, 60, 72, 67, 64, 60])
    digest = hashlib.sha256((src / "damaged_cache.mid").read_bytes() + _CONVERTER_VERSION.encode()).hexdigest()
    (cache / digest[:2]).mkdir(parents=True, exist_ok=True)
    (cache / digest[:2] / f"{digest}.json").write_text('{"abc": "X:1')  # cut short: converted again
    run_script(["prepare.py", "--input", src, "--out_dir", tmp_path / "out", "--split_fractions", "0.6,0.2,0.2",
                "--cache_dir", cache])  # --midi2abc_timeout 30: retried at 120 CPU seconds
    stats = read_json(tmp_path / "out" / "stats.json")
    assert stats["failed_files"] == [{"file": "timed_out.mid", "reason": "midi2abc_timeout"}]
    tunes = [t for texts in split_texts(tmp_path / "out").values() for t in texts]
    assert abc_text.clean_tune(planted_tunes[0])[0] in tunes  # reused
    assert abc_text.clean_tune(planted_tunes[1])[0] not in tunes  # converted again: the real tune instead
    assert stats["files_converted"] == 5 and sum("V:" in t or "Q:" in t for t in tunes) == 3


# ----------------------------------------------------------------------------------------------------
# user mistakes: one clear line, non-zero exit, no traceback

@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--input", d / "missing"], "does not exist"),
    (lambda d: ["--input", str(d / "*.nothing")], "matches nothing"),
    (lambda d: ["--input", d / "empty_dir"], "no .mid/.midi/.kar/.abc files"),
    (lambda d: ["--input", d / "two.abc"], "need at least 3"),
    (lambda d: ["--input", d / "ok.abc", "--split_fractions", "0.5,0.5"], "--split_fractions"),
    (lambda d: ["--input", d / "ok.abc", "--tokenizer", "words"], "char or bpe"),
    (lambda d: ["--input", d / "ok.abc", "--out_dir", d / "a_file" / "sub"], "cannot write"),
    (lambda d: ["--input", d / "ok.abc", "--split_fractions", "nan,0.5,0.5"], "three non-negative fractions"),
    # a cache that cannot be written is named, not blamed on the input ("only 0 tune(s) left"); a file in its
    # path stands for a read-only folder, which the tests' root user could still write
    (lambda d: ["--input", d / "ok.abc", "--cache_dir", d / "a_file" / "cache"], "--cache_dir"),
])
def test_bad_input_is_one_clear_line(tmp_path, run_script, make_args, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "two.abc").write_text("\n".join(many_tunes(2)))
    (tmp_path / "ok.abc").write_text("\n".join(many_tunes(5)))
    (tmp_path / "a_file").write_text("")
    args = make_args(tmp_path)
    if "--out_dir" not in args:
        args += ["--out_dir", tmp_path / "out"]
    proc = run_script(["prepare.py", *args], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# --out_dir: never deletes what prepare.py did not write

@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, run_script):
    """A BPE dataset of 30 tunes, copied by the tests that need one in --out_dir."""
    folder = tmp_path_factory.mktemp("small")
    (folder / "tunes.abc").write_text("\n".join(many_tunes(30)))
    run_script(["prepare.py", "--input", folder / "tunes.abc", "--out_dir", folder / "data", "--tokenizer", "bpe",
                "--vocab_size", "300", "--split_fractions", "0.8,0.1,0.1", "--cache_dir", ""])
    return folder / "data"


def snapshot(folder):
    """Every file (bytes), folder and symbolic link under folder: what a refused run must leave as it was."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            seen[os.path.relpath(path, folder)] = os.readlink(path) if os.path.islink(path) else \
                None if os.path.isdir(path) else Path(path).read_bytes()
    return seen


def dataset_copy(tmp_path, dataset, *extra_files):
    """A copy of dataset at tmp_path/data, with files of the user's added."""
    shutil.copytree(dataset, tmp_path / "data")
    for name in extra_files:
        (tmp_path / "data" / name).write_text("mine\n")
    return tmp_path / "data"


def out_of(tmp_path, name, *files):
    """A folder tmp_path/name holding the user's files."""
    (tmp_path / name).mkdir(parents=True)
    for f in files:
        (tmp_path / name / f).write_text("mine\n")
    return tmp_path / name


@pytest.mark.parametrize("make_out, overwrite, message", [
    (lambda d, ds: d / "notes.txt", True, "is a file"),
    (lambda d, ds: out_of(d, "photos", "a.jpg"), True, "folder of other files"),
    (lambda d, ds: d / "src", True, "holds the input"),  # --out_dir equal to --input
    (lambda d, ds: d, True, "holds the input"),  # a folder above the input
    (lambda d, ds: out_of(d, "work/cache/aa", "x.json").parent.parent, True, "--cache_dir"),
    (lambda d, ds: dataset_copy(d, ds), False, "--overwrite=True"),  # a dataset, not asked to replace it
    (lambda d, ds: dataset_copy(d, ds, "notes.md"), True, "did not write (notes.md)"),
    (lambda d, ds: (d / "link").symlink_to(dataset_copy(d, ds)) or d / "link", True, "symbolic link"),
], ids=["file", "foreign_folder", "input_folder", "folder_above_input", "cache_inside", "dataset",
        "dataset_with_user_file", "symlink"])
def test_out_that_holds_other_data_is_refused_and_left_alone(tmp_path, run_script, small_dataset, make_out,
                                                             overwrite, message):
    """Each refusal is one line, before any work, and leaves every file as it was; --overwrite=True (asked for
    wherever it is not the point) replaces a dataset, never anything else."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tunes.abc").write_text("\n".join(many_tunes(5)))
    (tmp_path / "notes.txt").write_text("mine\n")
    out = make_out(tmp_path, small_dataset)
    before = snapshot(tmp_path)
    proc = run_script(["prepare.py", "--input", tmp_path / "src", "--out_dir", out, "--split_fractions", "0.6,0.2,0.2",
                       "--cache_dir", tmp_path / "work" / "cache", f"--overwrite={overwrite}"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_dataset_and_only_its_files(tmp_path, run_script, small_dataset):
    out = dataset_copy(tmp_path, small_dataset)
    assert "bpe.tiktoken" in os.listdir(out)
    (tmp_path / "tunes.abc").write_text("\n".join(many_tunes(12)))
    args = ["prepare.py", "--input", tmp_path / "tunes.abc", "--split_fractions", "0.6,0.2,0.2", "--cache_dir", ""]
    run_script([*args, "--out_dir", out, "--overwrite=True"])
    stats = read_json(out / "stats.json")
    assert stats["tokenizer"] == "char" and stats["tunes_kept"] == 12
    # the old dataset's BPE file went with it; nothing else is left beside the folder
    assert sorted(os.listdir(out)) == ["length_histogram.png", "meta.json", "stats.json", "stats.md", "test.bin",
                                       "train.bin", "val.bin"]
    assert sorted(os.listdir(tmp_path)) == [".data.prepare.lock", "data", "tunes.abc"]  # the lock, README says
    # an empty folder is no dataset: it is filled without --overwrite
    (tmp_path / "empty").mkdir()
    run_script([*args, "--out_dir", tmp_path / "empty"])
    assert (tmp_path / "empty" / "train.bin").read_bytes() == (out / "train.bin").read_bytes()


def test_a_second_prepare_on_the_same_out_stops_with_one_line(tmp_path, run_script):
    """Two prepare.py runs writing one dataset would race to its rename: the second stops before any work. The
    lock belongs to a process, so one that was killed leaves nothing that blocks the next run."""
    import fcntl
    (tmp_path / "tunes.abc").write_text("\n".join(many_tunes(12)))
    args = ["prepare.py", "--input", tmp_path / "tunes.abc", "--split_fractions", "0.6,0.2,0.2", "--cache_dir", "",
            "--out_dir", tmp_path / "data"]
    with open(tmp_path / ".data.prepare.lock", "a+") as held:  # what a running prepare.py holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_script(args, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: another prepare.py is writing") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "data").exists()
    run_script(args)  # released: the next run goes ahead
    assert (tmp_path / "data" / "train.bin").exists()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_prepare_leaves_nothing_running_and_a_rerun_goes_ahead(tmp_path, run_script, stop):
    """Killed (SIGKILL) or stopped (SIGTERM: docker stop, pre-emption) while its workers are inside midi2abc,
    prepare.py leaves no worker and no midi2abc running, nothing holding its lock: the same command run again at
    once writes the dataset an uninterrupted run writes, byte for byte, and no temporary folder stays behind."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_midi(src / f"m{i}.mid", [60 + i, 62, 64, 65, 67, 69, 71, 72 - i])
    (src / "tunes.abc").write_text("\n".join(many_tunes(8)))
    args = ["prepare.py", "--input", src, "--split_fractions", "0.6,0.2,0.2", "--cache_dir", "", "--workers", "2"]
    tag, calls = tagged(), tmp_path / "calls"
    env = {**os.environ, **tag, **slow_tool(tmp_path / "bin", "midi2abc", calls)}
    proc = subprocess.Popen([sys.executable, *map(str, args), "--out_dir", tmp_path / "data"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(os.listdir(calls)) >= 2, proc)  # both workers are waiting for their midi2abc
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=10)
    assert left_running(tag) == [], "a worker or a midi2abc outlived prepare.py"
    if stop == signal.SIGTERM:
        assert proc.returncode == 1 and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("error: stopped by SIGTERM:") and "run the same command again" in stderr
        assert not any(".incomplete-" in name for name in os.listdir(tmp_path))
    else:
        assert proc.returncode == -signal.SIGKILL
    run_script([*args, "--out_dir", tmp_path / "data"])  # at once: nothing holds the lock
    run_script([*args, "--out_dir", tmp_path / "whole"])
    assert not any(".incomplete-" in name for name in os.listdir(tmp_path))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    files = sorted(os.listdir(tmp_path / "whole"))
    assert files == sorted(os.listdir(tmp_path / "data"))
    for f in files:
        assert (tmp_path / "data" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f


def test_workers_default_to_the_cpus_this_process_may_use():
    """Under SLURM or a container's CPU set, --workers defaults to the CPUs the process may run on, not to every
    core of the node (os.cpu_count)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); import prepare; print(prepare.workers)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "1"
