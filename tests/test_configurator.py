"""configurator.py, as every script reads its settings: types like the defaults, one-line errors for unknown keys
and wrong types ("did you mean"), today's command-line forms, ~ and $VARS in path knobs, and --help."""
import shutil

import pytest

import train
from helpers import exit_message, run_main
from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import UserError


def test_configurator_types_overrides_like_their_defaults(tmp_path):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("import math\nlr = 1e-3 * math.sqrt(4)\nname = 'from-file'\n")
    defaults = {"lr": 0.1, "steps": 10, "flag": False, "name": "x", "_private": 1}
    cfg = configure(defaults, [str(cfg_file), "--steps=2e3", "--flag=True", "--name=2024"])
    assert cfg == {"lr": 2e-3, "steps": 2000, "flag": True, "name": "2024"}
    assert type(cfg["steps"]) is int and defaults["steps"] == 10  # the defaults are not changed
    assert configure(defaults, ["--lr=1"])["lr"] == 1.0


@pytest.mark.parametrize("argv, expected", [
    (["--stepz=3"], "unknown config key 'stepz'"),
    (["--steps=3.5"], "steps must be int"),
    (["--flag=yes"], "flag must be bool"),
    (["--lr=fast"], "lr must be float"),
    (["--steps"], "--steps needs a value"),
    (["stray_argument"], "unexpected argument 'stray_argument'"),
    (["no_such_config.py"], "not found"),
])
def test_configurator_rejects_unknown_keys_and_wrong_types(argv, expected):
    with pytest.raises(UserError) as excinfo:
        configure({"lr": 0.1, "steps": 10, "flag": False}, argv)
    assert expected in exit_message(excinfo)


def test_configurator_reads_today_s_command_lines_too(tmp_path):
    """--key value, bare bool flags, positional arguments and repeated keys: the forms sample.py, prepare.py and
    calc_perplexity.py were called with before they moved to the configurator."""
    defaults = {"run": "", "inputs": "", "num": 1, "midi": False, "wav": False, "prompt": ""}
    cfg = configure(defaults, ["out/run", "--num", "3", "--midi", "--wav", "False", "--prompt", "X:1\\nK:D\\n"],
                    positional="run")
    assert cfg == {"run": "out/run", "inputs": "", "num": 3, "midi": True, "wav": False, "prompt": "X:1\\nK:D\\n"}
    cfg = configure(defaults, ["a", "b c", "--inputs", "x", "--inputs=y"], positional="run", repeatable=("inputs",))
    assert cfg["run"].splitlines() == ["a", "b c"] and cfg["inputs"].splitlines() == ["x", "y"]
    with pytest.raises(UserError) as excinfo:
        configure(defaults, ["a"])  # a script without a positional knob
    assert "unexpected argument" in exit_message(excinfo)


def test_configurator_expands_home_and_variables_in_path_knobs_only(tmp_path, monkeypatch):
    """What the shell leaves alone (`--out_dir=~/runs`: no `~` expansion after `=`) and what a config file holds
    is expanded in path knobs, line by line; other strings stay as typed; an unset variable is one line."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAKH", "/data/lmd_full")
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("data_dir = '~/data/lakh'\n")
    defaults = {"out_dir": "out", "data_dir": "data", "dataset_input": "", "input": "", "prompt_file": "",
                "prompt": "", "wandb_run_name": ""}
    monkeypatch.setenv("LAKH_RUN", "r1")
    cfg = configure(defaults, [str(cfg_file), "--out_dir=~/runs/$LAKH_RUN", "--dataset_input=${LAKH}/*.mid",
                               "--input", "~/a.abc", "--input", "$LAKH", "--prompt_file=~/p.abc",
                               "--prompt=X:1 ~$HOME", "--wandb_run_name=~me"], repeatable=("input",))
    home = str(tmp_path / "home")
    assert cfg["data_dir"] == f"{home}/data/lakh" and cfg["out_dir"] == f"{home}/runs/r1"
    assert cfg["dataset_input"] == "/data/lmd_full/*.mid" and cfg["input"] == f"{home}/a.abc\n/data/lmd_full"
    assert cfg["prompt_file"] == f"{home}/p.abc"
    assert cfg["prompt"] == "X:1 ~$HOME" and cfg["wandb_run_name"] == "~me"  # not paths: as typed
    monkeypatch.delenv("LAKH_RUN")
    with pytest.raises(UserError) as excinfo:
        configure(defaults, ["--out_dir=~/runs/$LAKH_RUN"])
    assert "out_dir=~/runs/$LAKH_RUN: the environment variable LAKH_RUN is not set" in exit_message(excinfo)


def test_study_finds_a_dataset_input_typed_with_a_tilde(run_script, tmp_path):
    """The issue's failing command: `study.py ... --dataset_input=~/corpus` said '~/corpus does not exist'."""
    from helpers import corpus_file
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(corpus_file("airdsAirs/book1.abc"), home / "book1.abc")
    proc = run_script(["study.py", "config/study_smoke.py", f"--out_dir={tmp_path / 'study'}",
                       "--dataset_input=~/book1.abc", "--stop_after=prepare"], env={"HOME": str(home)})
    assert f"from {home / 'book1.abc'}" in proc.stdout
    assert (tmp_path / "study" / "data" / "meta.json").exists()


def test_configurator_rejects_unknown_keys_in_config_files(tmp_path):
    cfg_file = tmp_path / "typo.py"
    cfg_file.write_text("n_layers = 4\n")
    with pytest.raises(UserError) as excinfo:
        configure({"n_layer": 2}, [str(cfg_file)])
    assert "unknown key 'n_layers'" in exit_message(excinfo)


def test_cli_rejects_an_unknown_key_with_one_line_and_nonzero_exit():
    proc = run_main(train, "config/gpt_tiny.py", "--learning_rat=1e-3")  # in this process: no torch start-up
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: unknown config key 'learning_rat'; did you mean 'learning_rate'? (see --help for the keys)"]


def test_help_lists_every_knob_with_its_default_and_the_comment_beside_it(run_script):
    proc = run_script(["train.py", "--help"])
    lines = proc.stdout.splitlines()
    assert "--learning_rate=0.001" in proc.stdout
    (init,) = [line for line in lines if line.startswith("  --init_from=")]
    assert init.startswith("  --init_from='scratch'  # 'scratch'")
    (knob,) = [line for line in run_script(["study.py", "--help"]).stdout.splitlines() if "--seed_sizes=" in line]
    assert "# '' = every size `seeds` times" in knob
