"""README: "`~` and `$VARS` in path knobs are expanded". The shell leaves `--key=~/x` alone, so the configurator must
expand every knob that names a path, including those whose names end in no path suffix."""
from music_scaling_laws.configurator import configure


def test_the_trunk_of_a_branch_and_the_prepare_script_of_bench_prepare_expand_home_and_variables(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OLD", "/tmp/old_repo")
    cfg = configure({"branch_from": "", "script": "prepare.py", "init_from": "scratch"},
                    ["--branch_from=~/out/trunk", "--script=$OLD/prepare.py", "--init_from=branch"])
    assert cfg["branch_from"] == f"{tmp_path}/home/out/trunk"
    assert cfg["script"] == "/tmp/old_repo/prepare.py"
    assert cfg["init_from"] == "branch"  # not a path: as typed
