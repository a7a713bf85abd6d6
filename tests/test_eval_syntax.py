"""eval_syntax.py and the checks of tune_checks.py classify a fixed set of valid, invalid, all-rest, repetitive,
garbage, empty, binary, huge and hanging files correctly, compute their statistics as written by hand, and
never crash."""
import json
import math
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval_syntax  # noqa: E402
import tune_checks  # noqa: E402

LONG_BODY = "B|E>GE GEG|B>AB e2f|g>fe dgB|A>GA BG E|E>GE GEG|B>AB e2f|g>fe dcB|AGF E2:|\n"
FILES = {
    # name: (content, parse_ok, midi_ok, degenerate)
    "valid.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|cBAG FEDC|EGce gec2|d2B2 c4|\n", True, True, False),
    "valid_pickup_68.abc": ("X:1\nM:6/8\nL:1/8\nK:G\nD|GAB c2d|e3 d2|BAG A2G|G3 G2|\n", True, True, False),
    "latin1_title.abc": ("X:1\nT:Caf\xe9\nM:3/4\nL:1/4\nK:D\nDEF|GAB|A2F|D3|\n".encode("latin-1"), True, True, False),
    "bad_chord.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nCDEF|[[[[|\n", False, False, False),
    "bad_meter.abc": ("X:1\nM:0/0\nL:1/8\nK:C\nCDEF GABc|\n", False, False, False),
    "missing_key.abc": ("X:1\nM:4/4\nL:1/8\nCDEF GABc|cBAG FEDC|\n", False, False, False),
    "all_rests.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nz8|z8|z8|z8|\n", False, False, True),
    "one_bar_loop.abc": ("X:1\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|" * 7 + "c8|\n", True, True, True),
    "garbage.abc": ("@@@ ### qqq\n", False, False, True),
    "empty.abc": ("", False, False, True),
    "binary.abc": (bytes(range(256)) * 4, False, False, True),
    "huge.abc": ("X:1\nM:6/8\nL:1/8\nK:Em\n" + LONG_BODY * 2000, False, False, True),
}


def write_files(folder):
    folder.mkdir()
    for name, (content, *_) in FILES.items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(folder / name, mode) as f:
            f.write(content)


@pytest.fixture(scope="module")
def report(tmp_path_factory, run_script, char_dataset):
    folder = tmp_path_factory.mktemp("eval") / "tunes"
    write_files(folder)
    out = folder.parent / "report.json"
    proc = run_script(["eval_syntax.py", folder, "--reference", char_dataset, "--reference_tunes", "30",
                       "--workers", "2", "--out", out])
    return json.loads(out.read_text()), proc.stdout


def by_name(report):
    return {os.path.basename(f["path"]): f for f in report["files"]}


@pytest.mark.parametrize("name", list(FILES))
def test_each_file_is_classified(report, name):
    _, parse_ok, midi_ok, degenerate = FILES[name]
    result = by_name(report[0])[name]
    assert (result["parse_ok"], result["midi_ok"], result["degenerate"]) == (parse_ok, midi_ok, degenerate), result
    if not parse_ok:
        assert result["parse_error"]  # the reason is recorded


def test_failure_reasons_and_rates(report):
    report, stdout = report
    files = by_name(report)
    assert files["empty.abc"]["reason"] == "empty"
    assert files["binary.abc"]["reason"] == "binary"
    assert files["huge.abc"]["reason"].startswith("too long")
    assert files["all_rests.abc"]["reason"] == "only rests"
    assert files["garbage.abc"]["reason"] == "no notes"
    assert files["one_bar_loop.abc"]["reason"] == "one bar is 88% of the bars"
    assert files["missing_key.abc"]["parse_error"] == "missing header K:"
    assert files["bad_chord.abc"]["midi_errors"]  # abc2midi printed Error lines: not a clean conversion
    n = len(FILES)
    assert report["n_files"] == n
    assert report["parse_valid_rate"] == pytest.approx(sum(v[1] for v in FILES.values()) / n)
    assert report["midi_rate"] == pytest.approx(sum(v[2] for v in FILES.values()) / n)
    assert report["degenerate_rate"] == pytest.approx(sum(v[3] for v in FILES.values()) / n)
    assert "parse-valid %" in stdout and "reference" in stdout


def test_statistics_match_a_hand_count(report):
    valid = by_name(report[0])["valid.abc"]
    # CDEF GABc|cBAG FEDC|EGce gec2|d2B2 c4| : pitch classes counted by reading the tune
    counts = {"C": 7, "D": 3, "E": 5, "F": 2, "G": 4, "A": 2, "B": 3}
    entropy = -sum(c / 26 * math.log2(c / 26) for c in counts.values())
    assert valid["notes"] == 26 and valid["bars"] == 4 and valid["notes_per_bar"] == 6.5
    assert valid["pitch_range"] == 79 - 60  # C4 .. g5
    assert valid["distinct_pitch_classes"] == 7
    assert valid["pitch_class_entropy"] == pytest.approx(entropy)
    assert valid["rest_ratio"] == 0 and valid["bars_matching_meter"] == 1.0
    # 6/8 with a pickup: the pickup and the last bar are not judged; of GAB c2d|e3 d2|BAG A2G one is short
    assert by_name(report[0])["valid_pickup_68.abc"]["bars_matching_meter"] == pytest.approx(2 / 3)
    means = report[0]["means"]
    assert set(means) == set(tune_checks.STATISTICS)


def test_reference_is_the_datasets_real_test_tunes(report, char_dataset):
    reference = report[0]["reference"]
    assert reference["n_files"] == 30
    # real, cleaned tunes: nearly all parse and convert, none is degenerate
    assert reference["parse_valid_rate"] >= 0.9 and reference["midi_with_errors_rate"] >= 0.9
    assert reference["degenerate_rate"] <= 0.05
    items = eval_syntax.reference_items(str(char_dataset), 5)
    assert len(items) == 5 and all(item["text"].startswith("X:1\n") for item in items)


def test_a_hanging_parse_or_worker_is_a_counted_failure(tmp_path, monkeypatch):
    long_tune = tmp_path / "long.abc"
    long_tune.write_text("X:1\nM:6/8\nL:1/8\nK:Em\n" + LONG_BODY * 40)  # 320 bars: ~0.5 s in music21
    fifo = tmp_path / "fifo.abc"
    os.mkfifo(fifo)  # opening it would block forever
    stuck, fine = tmp_path / "stuck.abc", tmp_path / "fine.abc"
    stuck.write_text(FILES["valid.abc"][0])
    fine.write_text(FILES["valid.abc"][0])
    settings = {"parse_timeout": 0.05, "midi_timeout": 2.0, "hang_slack": 1.0}  # killed after 0.05 + 2 + 1 s
    evaluate = tune_checks.evaluate_item

    def evaluate_or_hang(item, tmp_dir, settings):  # a worker stuck where no alarm reaches it (workers are forked)
        if item["path"].endswith("stuck.abc"):
            time.sleep(3600)
        return evaluate(item, tmp_dir, settings)

    monkeypatch.setattr(tune_checks, "evaluate_item", evaluate_or_hang)
    paths = [str(p) for p in (long_tune, fifo, stuck, fine)]
    results = tune_checks.evaluate_all([{"path": p} for p in paths], settings, n_workers=2)
    assert [r["path"] for r in results] == paths
    long_result, fifo_result, stuck_result, fine_result = results
    assert not long_result["parse_ok"] and long_result["parse_error"].startswith("timeout")
    assert long_result["midi_ok"]  # abc2midi still judged it
    assert fifo_result["reason"] == "not a regular file"
    assert stuck_result["reason"].startswith("timeout") and "killed" in stuck_result["reason"]
    assert fine_result["parse_ok"]  # the replacement worker carried on


def test_bad_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    for args in ([str(tmp_path / "nothing*.abc")], [str(tmp_path / "empty_dir")],
                 [str(tmp_path), "--reference", str(tmp_path / "no_dataset")]):
        (tmp_path / "t.abc").write_text(FILES["valid.abc"][0])
        with pytest.raises(SystemExit) as exit_info:
            eval_syntax.main(args)
        assert str(exit_info.value.code).startswith("error:")
