"""prepare.py's library steps: which files an --input names (data/inputs.py) and when a cached conversion stands
(data/conversion.py)."""
import json

from helpers import many_tunes


def test_the_dataset_does_not_depend_on_where_its_inputs_lie(tmp_path, run_script):
    """Two --input files are taken in the order given, not in the order of their absolute paths: the same
    command on a copy of the collection elsewhere (folders that sort the other way) writes the same splits."""
    tunes = many_tunes(12)
    for where, (first, second) in {"one": ("a", "z"), "two": ("z", "a")}.items():
        (tmp_path / where / first).mkdir(parents=True)
        (tmp_path / where / second).mkdir()
        (tmp_path / where / first / "jigs.abc").write_text("\n".join(tunes[:6]))
        (tmp_path / where / second / "reels.abc").write_text("\n".join(tunes[6:]))
        run_script(["prepare.py", "--input", tmp_path / where / first / "jigs.abc", "--input",
                    tmp_path / where / second / "reels.abc", "--out_dir", tmp_path / where / "out",
                    "--split_fractions", "0.5,0.25,0.25", "--cache_dir", ""])
    for split in ("train", "val", "test"):
        name = f"{split}.bin"
        assert (tmp_path / "one" / "out" / name).read_bytes() == (tmp_path / "two" / "out" / name).read_bytes()


def test_an_existing_path_with_glob_characters_is_that_path(tmp_path, run_script):
    """"Tunes [2020].abc" is the file of that name (as a glob it matched nothing, or "Tunes 2.abc"); a pattern is
    expanded only where no such path exists."""
    from music_scaling_laws.data.inputs import collect_inputs
    tunes = many_tunes(12)
    (tmp_path / "Tunes [2020].abc").write_text("\n".join(tunes[:6]))
    (tmp_path / "Tunes 2.abc").write_text("\n".join(tunes[6:]))
    (tmp_path / "sets [a]").mkdir()
    (tmp_path / "sets [a]" / "x.abc").write_text(tunes[0])
    items, _, given = collect_inputs([str(tmp_path / "Tunes [2020].abc")])
    assert items == [(str(tmp_path / "Tunes [2020].abc"), "abc")] and given == [str(tmp_path / "Tunes [2020].abc")]
    items, names, _ = collect_inputs([str(tmp_path / "sets [a]")])
    assert items == [(str(tmp_path / "sets [a]" / "x.abc"), "abc")] and list(names.values()) == ["x.abc"]
    items, _, _ = collect_inputs([str(tmp_path / "Tunes [0-9].abc")])  # no such file: a pattern
    assert items == [(str(tmp_path / "Tunes 2.abc"), "abc")]
    run_script(["prepare.py", "--input", tmp_path / "Tunes [2020].abc", "--out_dir", tmp_path / "out",
                "--split_fractions", "0.5,0.25,0.25", "--cache_dir", ""])
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["tunes_kept"] == 6


def test_cached_result_holds_only_where_this_run_would_get_the_same():
    from music_scaling_laws.data.conversion import cached_result_holds
    longest = {"midi2abc": 120.0, "music21": 240.0}  # e.g. --midi2abc_timeout 30 (retried at 4x), --music21_timeout 240
    first, retry = {"midi2abc": 30.0, "music21": 60.0}, longest

    def holds(reason, cpu, limits):
        return cached_result_holds({"abc": None, "reason": reason, "cpu": cpu, "limits": limits}, longest)
    assert holds(None, {"music21": 3.0, "midi2abc": 0.2}, first)
    assert holds(None, {"midi2abc": 100.0}, retry)  # this run's retry finishes it too
    assert not holds(None, {"midi2abc": 300.0}, {"midi2abc": 400.0, "music21": 800.0})  # only a longer limit did
    assert holds("midi2abc_error", {"music21": 3.0, "midi2abc": 0.2}, first)
    assert holds("music21_timeout", {"music21": 240.0}, retry)  # ran out of as long a limit as this run has
    assert not holds("music21_timeout", {"music21": 60.0}, first)  # a shorter one: this run may finish it
    assert not holds("midi2abc_timeout", {"music21": 3.0, "midi2abc": 60.0}, {"midi2abc": 60.0, "music21": 240.0})
