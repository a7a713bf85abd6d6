"""eval_syntax.py and the checks of tune_checks.py classify a fixed set of valid, invalid, all-rest, repetitive,
garbage, empty, binary, huge and hanging files correctly, compute their statistics as written by hand, and
never crash."""
import json
import math
import os
import time

import numpy as np
import pytest

from music_scaling_laws.evaluation import eval_metrics
import eval_syntax
from music_scaling_laws.evaluation import tune_checks
LONG_BODY = "B|E>GE GEG|B>AB e2f|g>fe dgB|A>GA BG E|E>GE GEG|B>AB e2f|g>fe dcB|AGF E2:|\n"
FILES = {
    # name: (content, parse_ok, converts to MIDI, converts without errors, degenerate)
    "valid.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|cBAG FEDC|EGce gec2|d2B2 c4|\n", True, True, True, False),
    "valid_pickup_68.abc": ("X:1\nM:6/8\nL:1/8\nK:G\nD|GAB c2d|e3 d2|BAG A2G|G3 G2|\n", True, True, True, False),
    "latin1_title.abc": ("X:1\nT:Caf\xe9\nM:3/4\nL:1/4\nK:D\nDEF|GAB|A2F|D3|\n".encode("latin-1"),
                         True, True, True, False),
    # abc2midi prints an Error line and still writes the notes it read: converts, but not without errors
    "bad_chord.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nCDEF|[[[[|\n", False, True, False, False),
    "bad_meter.abc": ("X:1\nM:0/0\nL:1/8\nK:C\nCDEF GABc|\n", False, True, False, False),
    "missing_key.abc": ("X:1\nM:4/4\nL:1/8\nCDEF GABc|cBAG FEDC|\n", False, False, False, False),
    "all_rests.abc": ("X:1\nM:4/4\nL:1/8\nK:C\nz8|z8|z8|z8|\n", False, False, False, True),
    "one_bar_loop.abc": ("X:1\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|" * 7 + "c8|\n", True, True, True, True),
    "garbage.abc": ("@@@ ### qqq\n", False, False, False, True),
    "empty.abc": ("", False, False, False, True),
    "binary.abc": (bytes(range(256)) * 4, False, False, False, True),
    "huge.abc": ("X:1\nM:6/8\nL:1/8\nK:Em\n" + LONG_BODY * 2000, False, False, False, True),
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
                       "--workers", "2", "--out_file", out])
    return json.loads(out.read_text()), proc.stdout


def by_name(report):
    return {os.path.basename(f["path"]): f for f in report["files"]}


@pytest.mark.parametrize("name", list(FILES))
def test_each_file_is_classified(report, name):
    _, parse_ok, converts, clean, degenerate = FILES[name]
    result = by_name(report[0])[name]
    assert (result["parse_ok"], result["midi_notes"] > 0, result["midi_ok"], result["degenerate"]) == \
        (parse_ok, converts, clean, degenerate), result
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
    for column, key in ((1, "parse_valid_rate"), (2, "midi_converts_rate"), (3, "midi_clean_rate"),
                        (4, "degenerate_rate")):
        k = sum(v[column] for v in FILES.values())
        assert report[key] == pytest.approx(k / n)
        assert report["ci95"][key] == pytest.approx(eval_metrics.wilson_interval(k, n))
    assert report["midi_converts_rate"] > report["midi_clean_rate"]  # the two MIDI rates are not the same number
    # the old names, which older readers use, keep their meaning
    assert (report["midi_rate"], report["midi_with_errors_rate"]) == (report["midi_clean_rate"],
                                                                      report["midi_converts_rate"])
    assert "parse-valid %" in stdout and "reference" in stdout
    assert "converts to MIDI %" in stdout and "converts to MIDI without errors %" in stdout


def test_statistics_match_a_hand_count(report):
    valid = by_name(report[0])["valid.abc"]
    # CDEF GABc|cBAG FEDC|EGce gec2|d2B2 c4| : pitch classes and pitches counted by reading the tune
    counts = {"C": 7, "D": 3, "E": 5, "F": 2, "G": 4, "A": 2, "B": 3}
    pitches = {"C": 2, "D": 2, "E": 3, "F": 2, "G": 3, "A": 2, "B": 3, "c": 5, "d": 1, "e": 2, "g": 1}
    assert valid["notes"] == 26 and valid["bars"] == 4 and valid["notes_per_bar"] == 6.5
    assert valid["rest_ratio"] == 0 and valid["bars_matching_meter"] == 1.0
    # muspy's, of the MIDI abc2midi wrote
    assert valid["pitch_range"] == 79 - 60  # C4 .. g5
    assert valid["distinct_pitch_classes"] == 7
    assert valid["pitch_class_entropy"] == pytest.approx(entropy(counts.values()))
    assert valid["pitch_entropy"] == pytest.approx(entropy(pitches.values()))
    assert valid["scale_consistency"] == 1.0 and valid["polyphony"] == 1.0 and valid["empty_beat_rate"] == 0.0
    # onsets per bar on a 48-step grid: 8, 8, 7 (the same), 3 (of the 7): 0 + 1 + 4 of 3 x 48 steps differ
    assert valid["groove_consistency"] == pytest.approx(1 - 5 / 144)
    # 6/8 with a pickup: the pickup and the last bar are not judged; of GAB c2d|e3 d2|BAG A2G one is short
    assert by_name(report[0])["valid_pickup_68.abc"]["bars_matching_meter"] == pytest.approx(2 / 3)
    means = report[0]["means"]
    assert set(means) == set(tune_checks.STATISTICS)
    assert by_name(report[0])["bad_chord.abc"]["pitch_range"] == 5  # the notes abc2midi wrote despite its error
    assert by_name(report[0])["garbage.abc"]["pitch_range"] is None


def entropy(counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


@pytest.mark.parametrize("body, key, expected", [
    # ABC: an accidental holds to the end of the bar, so =c c are two C naturals: A C D B, 4 classes
    # (music21 10.5 reads the second as C#: 5)
    ("K:A\nA2A2=ccdB|", "distinct_pitch_classes", 4),
    # half the beats are empty; muspy 0.5.0 on the raw MIDI says 0.2 (it counts the beat a note ends on)
    ("K:C\nz2 C2 z2 C2|", "empty_beat_rate", 0.5),
    # abc2midi plays the guitar chords on a track of its own; the tune's notes are one line
    ("K:G\n\"G\"GABc dedB|\"C\"c2e2 \"D\"d2B2|", "polyphony", 1.0),
    ("K:C\n[CEG]4 C4|", "polyphony", (3 * 4 + 4) / 8),
    # a 6/8 bar is 36 grid steps; the two bars' onsets (6, and 2 of those 6) differ at 4
    ("M:6/8\nK:C\nCDE FGA|c3 C3|", "groove_consistency", 1 - 4 / 36),
])
def test_muspy_statistics_of_small_tunes(tmp_path, body, key, expected):
    pytest.importorskip("muspy")
    tune = "X:1\nL:1/8\n" + ("" if "M:" in body else "M:4/4\n") + body + "\n"
    result = tune_checks.run_abc2midi(tune, str(tmp_path), timeout=10)
    assert result[key] == pytest.approx(expected), result


def test_wilson_interval():
    for k, n in ((0, 64), (1, 64), (32, 64), (63, 64), (64, 64), (3, 7)):
        low, high = eval_metrics.wilson_interval(k, n)
        assert 0 <= low <= k / n <= high <= 1 and high - low > 0
    assert eval_metrics.wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)  # textbook value
    widths = [(lambda ci: ci[1] - ci[0])(eval_metrics.wilson_interval(n // 2, n)) for n in (16, 64, 256, 1024)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.07
    assert eval_metrics.wilson_interval(0, 0) is None


def test_overlap_area_and_kl():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(size=200)
    overlap, kl = eval_metrics.overlap_and_kl(x, x)
    assert overlap == pytest.approx(1, abs=1e-6) and kl == pytest.approx(0, abs=1e-9)
    overlap, kl = eval_metrics.overlap_and_kl(x, x + 50)  # disjoint
    assert overlap < 1e-3 and kl > 5
    overlap, kl = eval_metrics.overlap_and_kl(x, y)  # the same distribution, other draws
    assert 0.85 < overlap < 1 and 0 <= kl < 0.1
    shifted = eval_metrics.overlap_and_kl(x, y + 1)
    assert 0.4 < shifted[0] < overlap and shifted[1] > kl  # further apart: less overlap, larger KL
    assert eval_metrics.overlap_and_kl(y, x)[0] == pytest.approx(overlap, abs=1e-6)  # overlap is symmetric
    assert eval_metrics.overlap_and_kl([3, 3, 3], [3, 3]) == (1.0, 0.0)
    assert eval_metrics.overlap_and_kl([1, 1, 1], [5, 5])[0] < 1e-3  # constant sets: no bandwidth to estimate
    for a, b in ((x, y), ([1, 1, 2], [1, 2, 2, 7]), (x[:5], y * 3)):
        assert eval_metrics.overlap_and_kl(a, b)[1] >= 0


def test_yang_lerch_in_the_report_says_why_a_small_set_is_not_compared(report):
    report, stdout = report
    reference = report["reference"]
    assert set(reference["values"]) == set(tune_checks.STATISTICS)
    assert len(reference["values"]["notes"]) >= 0.9 * reference["n_files"]  # one value per tune that parses
    (folder, comparison), = report["yang_lerch"]["sets"].items()  # one folder of files, one set
    assert folder.endswith("tunes") and set(comparison) == set(eval_metrics.YANG_LERCH_FEATURES)
    # 12 files, of which only a few convert to MIDI: never compared, and said so, with the counts
    for c in comparison.values():
        assert not c["compared"] and "at least 10" in c["reason"] and c["n_real"] >= 25 and c["n_tunes"] == len(FILES)
    assert "not compared" in stdout


def synthetic_results(values, feature="pitch_range"):
    """eval results holding only one Yang & Lerch feature's values (None: a tune without it)."""
    return [{"yang_lerch_features": None if v is None else {feature: v}} for v in values]


def test_yang_lerch_matches_a_hand_computation():
    """Samples with pitch ranges 0, 4, 5 and real tunes with 1, 2, 4, 7 (and one real tune without notes): the
    distances written out by hand, each set's density by scipy's gaussian_kde (its own Scott bandwidth), the
    overlap and KL integrated by quad."""
    from scipy.integrate import quad
    from scipy.stats import gaussian_kde
    samples, real = synthetic_results([0, 4, 5]), synthetic_results([1, 2, None, 4, 7])
    intra_real = [1, 3, 6, 2, 5, 3]  # |1-2| |1-4| |1-7| |2-4| |2-7| |4-7|
    inter = [1, 2, 4, 7, 3, 2, 0, 3, 4, 3, 1, 2]  # each sample against each real tune
    d_rr = eval_metrics.distance_matrix([1, 2, 4, 7], [1, 2, 4, 7])
    assert sorted(eval_metrics.intra_distances(d_rr, np.arange(4))) == sorted(intra_real)
    assert sorted(eval_metrics.distance_matrix([0, 4, 5], [1, 2, 4, 7]).ravel()) == sorted(inter)
    p, q = gaussian_kde(intra_real), gaussian_kde(inter)
    overlap = quad(lambda x: min(p(x)[0], q(x)[0]), -15, 25, limit=200)[0]
    kl = quad(lambda x: p(x)[0] * np.log(p(x)[0] / q(x)[0]), -15, 25, limit=200)[0]
    result = eval_metrics.yang_lerch(samples, real, n_bootstrap=50, min_tunes=3)["pitch_range"]
    assert result["compared"] and (result["n"], result["n_real"], result["n_tunes"]) == (3, 4, 3)
    assert result["overlap"] == pytest.approx(overlap, abs=2e-3) and result["kl"] == pytest.approx(kl, rel=1e-2)
    assert result["intra_mean"] == pytest.approx((4 + 5 + 1) / 3) and result["inter_mean"] == pytest.approx(32 / 12)
    assert result["baseline"] is None  # 4 real tunes leave 1 to compare 3 with: no baseline
    # vectors (pitch-class histograms) are compared by their Euclidean distance
    assert eval_metrics.distance_matrix([[1, 0, 0]], [[0, 1, 0], [1, 0, 0]]).ravel().tolist() == [2 ** 0.5, 0]


def test_yang_lerch_tells_real_like_tunes_from_others():
    """Samples drawn from the real tunes' distribution score like real tunes against real tunes (inside the
    baseline's interval); samples twice as spread out score far below it."""
    rng = np.random.default_rng(3)
    real = synthetic_results(rng.normal(20, 3, 100).tolist())
    alike = eval_metrics.yang_lerch(synthetic_results(rng.normal(20, 3, 30).tolist()), real, n_bootstrap=100)
    other = eval_metrics.yang_lerch(synthetic_results(rng.normal(20, 9, 30).tolist()), real, n_bootstrap=100)
    a, o = alike["pitch_range"], other["pitch_range"]
    base = a["baseline"]
    assert base == o["baseline"] and base["n_real"] == 70  # the same n: the same baseline
    assert base["overlap_ci"][0] <= a["overlap"] <= 1 and a["overlap_ci"][1] >= base["overlap_ci"][0]
    assert o["overlap"] < base["overlap_ci"][0] and o["overlap_ci"][1] < a["overlap_ci"][0]
    assert o["kl"] > base["kl_ci"][1] and o["intra_mean"] > 2 * a["intra_mean"]
    few = eval_metrics.yang_lerch(synthetic_results([20] * 9 + [None] * 5), real)["pitch_range"]
    assert not few["compared"] and few["reason"].startswith("9 of 14 tunes")


def test_note_features_of_a_small_tune(tmp_path):
    """Yang & Lerch's features of 'CDEF GABc|c4 G2 E2|', counted by hand (abc2midi plays it once)."""
    pytest.importorskip("muspy")
    tune = "X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|c4 G2 E2|\n"
    f = tune_checks.run_abc2midi(tune, str(tmp_path), timeout=10)["yang_lerch_features"]
    pcs = [3, 0, 1, 0, 2, 1, 0, 2, 0, 1, 0, 1]  # C D E F G A B c c G E: C x3, E x2, G x2, the rest once
    assert f["pitch_class_histogram"] == pytest.approx([c / 11 for c in pcs])
    assert (f["note_count"], f["pitch_count"], f["pitch_range"]) == (11, 8, 12)
    assert f["mean_interval"] == pytest.approx((2 + 2 + 1 + 2 + 2 + 2 + 1 + 0 + 5 + 3) / 10)
    assert f["mean_ioi"] == pytest.approx((8 * 0.5 + 2 + 1) / 10)  # eighths, then a half and a quarter
    lengths = dict(zip(eval_metrics.NOTE_LENGTHS, f["note_length_histogram"]))
    assert lengths[0.5] == pytest.approx(8 / 11) and lengths[2] == pytest.approx(1 / 11)
    assert lengths[1] == pytest.approx(2 / 11) and sum(f["note_length_histogram"]) == pytest.approx(1)


def test_abc2midi_messages_are_counted_by_kind(tmp_path):
    """A real tune's decorations that abc2midi does not know, and a short bar: each message's kind, without its
    place, counted per tune and over tunes."""
    deco = tune_checks.run_abc2midi('X:1\nM:6/8\nL:1/8\nK:D\n~(fed) "D.S."ABc|d3 e3|\n', str(tmp_path), 10)
    short = tune_checks.run_abc2midi("X:1\nM:3/4\nL:1/8\nK:G\nAB|c2d2e2|f2|\n", str(tmp_path), 10)
    assert deco["midi_messages"] == {"Error: Malformed note : expecting a-g or A-G": 1,
                                     'Error: Unrecognized chord name "…"': 1}
    assert short["midi_messages"] == {"Warning: Track # Bar # has # time units while the time signature has #": 1}
    assert not deco["midi_ok"] and short["midi_ok"] and short["midi_warnings"]  # warnings are no errors
    counts = tune_checks.summarize([{**tune_checks.failed_result(None), **r} for r in (deco, short, deco)])
    assert counts["abc2midi_messages"]["Error: Malformed note : expecting a-g or A-G"] == {"tunes": 2, "count": 2}
    assert list(counts["abc2midi_messages"])[0].startswith("Error: Malformed")  # most tunes first


def test_reference_is_the_datasets_real_test_tunes(report, char_dataset):
    reference = report[0]["reference"]
    assert reference["n_files"] == 30
    # real, cleaned tunes: nearly all parse and convert, none is degenerate
    assert reference["parse_valid_rate"] >= 0.9 and reference["midi_converts_rate"] >= 0.9
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


def test_kernel_density_is_scipys():
    from scipy.stats import gaussian_kde
    values = np.random.default_rng(1).gamma(2.0, size=150)
    grid = np.linspace(-2, 15, 400)
    ours = eval_metrics.gaussian_kde(values, grid, eval_metrics.scott_bandwidth(values))
    assert ours == pytest.approx(gaussian_kde(values)(grid), rel=2e-3, abs=1e-6)  # scipy's sums to 1 on R
    binned = eval_metrics.density_on_grid(values, grid, eval_metrics.scott_bandwidth(values))
    assert binned == pytest.approx(ours, rel=1e-2, abs=1e-4)  # linear binning: the same curve


def test_an_out_that_cannot_be_the_report_is_one_line_before_any_work(tmp_path, monkeypatch, run_script):
    """--out_file that is a folder, or whose folder is missing or a file: one line, non-zero, before a tune is checked
    (minutes of work never end in a traceback), and nothing is created or replaced."""
    (tmp_path / "t.abc").write_text(FILES["valid.abc"][0])
    (tmp_path / "a_file").write_text("mine")
    monkeypatch.setattr(eval_syntax, "evaluate_all", lambda *a, **k: pytest.fail("evaluated before checking --out_file"))
    for out, says in ((tmp_path, "is a folder"), (tmp_path / "missing" / "r.json", "does not exist"),
                      (tmp_path / "a_file" / "r.json", "is a file")):
        with pytest.raises(SystemExit) as exit_info:
            eval_syntax.main([str(tmp_path / "t.abc"), "--out_file", str(out)])
        message = str(exit_info.value.code)
        assert message.startswith("error:") and says in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "t.abc"]
    assert (tmp_path / "a_file").read_text() == "mine"
    # the same as a user sees it: exit status 1, one line on stderr
    proc = run_script(["eval_syntax.py", tmp_path / "t.abc", "--out_file", tmp_path], check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "is a folder" in proc.stderr
