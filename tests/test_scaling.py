"""power_law.py (with run_table.py, fit_policy.py, fit_text.py), plots.py and their command line scaling.py: the fit recovers known laws with honest intervals,
ignores the unit of N, warns when the data cannot pin the law down, draws every plot, and turns bad input into one
clear line."""
import csv
import functools
import json
import subprocess
import sys

import numpy as np
import pytest

from music_scaling_laws.errors import UserError
from music_scaling_laws.fits import power_law, run_table
import scaling
from helpers import REPO, run_main

TRUE = {"a": 40.0, "alpha": 0.3, "c": 1.2}
SIZES = np.geomspace(1e5, 1e8, 8)  # 8 sizes over 3 decades: a well-designed study

# 300 resamples: enough for 95% percentiles, 3x faster than the default
fit_power_law = functools.partial(power_law.fit_power_law, n_bootstrap=300)
fit_all = functools.partial(power_law.fit_all, n_bootstrap=300)


def synthetic_losses(noise_seed, sizes=SIZES, noise=0.01):
    """L = a N^-alpha + c with 1% multiplicative noise, like runs of a real study."""
    rng = np.random.default_rng(noise_seed)
    return (TRUE["a"] * sizes ** -TRUE["alpha"] + TRUE["c"]) * np.exp(rng.normal(0, noise, len(sizes)))


def run_cli(*args):
    """scaling.py ARGS, in this process (the test of every plot below runs the real command line)."""
    return run_main(scaling, *args)


def write_table(path, rows, columns=("family", "n_params", "loss")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_fit_recovers_known_law_inside_its_interval(noise_seed):
    fit = fit_power_law(SIZES, synthetic_losses(noise_seed))
    for name, true in TRUE.items():
        lo, hi = fit[name + "_ci"]
        assert lo <= true <= hi, f"{name}: true {true} outside {fit[name + '_ci']}"
    # the interval must also be informative, not "anything goes"
    assert fit["alpha_ci"][1] - fit["alpha_ci"][0] < TRUE["alpha"]
    assert abs(fit["alpha"] - TRUE["alpha"]) < 0.1
    assert abs(fit["c"] - TRUE["c"]) < 0.1


def test_pure_power_law_is_recovered_exactly_without_noise():
    sizes = np.geomspace(1e6, 1e9, 5)
    fit = fit_power_law(sizes, 7.0 * sizes ** -0.076, pure=True)  # Kaplan et al.'s alpha_N
    assert fit["alpha"] == pytest.approx(0.076, rel=1e-6)
    assert fit["a"] == pytest.approx(7.0, rel=1e-5)


def test_one_diverged_run_does_not_drag_the_exponent():
    sizes = np.geomspace(1e5, 1e8, 8)
    clean = synthetic_losses(0, sizes)
    spoiled = clean.copy()
    spoiled[5] *= 1.3  # one run with a bad learning rate
    a_clean = fit_power_law(sizes, clean)["alpha"]
    a_spoiled = fit_power_law(sizes, spoiled)["alpha"]
    assert abs(a_spoiled - a_clean) < 0.03


def test_unit_of_n_does_not_change_alpha_or_c():
    L = synthetic_losses(0)
    rows = [{"family": "gpt", "run": str(i), "n_params": n, "loss": l} for i, (n, l) in enumerate(zip(SIZES, L))]
    in_params = fit_all(rows)["gpt"]
    in_micro = fit_all([dict(r, n_params=r["n_params"] * 1e6) for r in rows])["gpt"]
    for key in ("alpha", "alpha_ci", "c", "c_ci", "alpha_pure", "alpha_pure_ci"):
        assert np.allclose(in_micro[key], in_params[key], rtol=1e-6), key
    # only a carries the unit: a N^-alpha is the same number whatever N is counted in
    assert in_micro["a"] == pytest.approx(in_params["a"] * 1e6 ** in_params["alpha"], rel=1e-5)


def test_published_table_fits_the_same_in_millions_and_in_parameters(tmp_path):
    """The seeds' complaint: naive least squares gave alpha~0.87 with N in millions and ~3.8 in parameters."""
    table = [("gpt", 0.8, 1.02), ("gpt", 3.2, 0.83), ("gpt", 12, 0.74), ("gpt", 40, 0.705), ("gpt", 100, 0.69)]
    millions = write_table(tmp_path / "millions.csv", table)
    params = write_table(tmp_path / "params.csv", [(f, n * 1e6, l) for f, n, l in table])
    # read as scaling.py --table reads a table, fitted as it fits one (its plots are tested below)
    alphas = [fit_all(run_table.load_table(str(csv_path))[0], n_bootstrap=20)["gpt"]["alpha"]
              for csv_path in (millions, params)]
    assert alphas[0] == pytest.approx(alphas[1], rel=1e-6)


def test_a_renamed_knob_keeps_working_for_a_release_with_a_note(tmp_path):
    """--out became --out_dir (2026-11-30): the old name, on the command line or in a config file, still writes the
    fits where it says, with a one-line note naming the new name; a typo of either is still an error."""
    table = write_table(tmp_path / "runs.csv", [("gpt", 1e6, 1.0), ("gpt", 4e6, 0.9), ("gpt", 2e7, 0.8)])
    r = run_cli("--table", table, "--out", tmp_path / "old", "--n_bootstrap", 20)
    assert r.returncode == 0 and (tmp_path / "old" / "fit.json").is_file(), r.stderr
    assert r.stderr.splitlines()[0] == "note: --out is now --out_dir; the old name works until the next release"
    config = tmp_path / "old_names.py"
    config.write_text(f"out = {str(tmp_path / 'from_config')!r}\n")
    r = run_cli(config, "--table", table, "--n_bootstrap", 20)
    assert r.returncode == 0 and (tmp_path / "from_config" / "fit.json").is_file(), r.stderr
    assert f"note: config file {config}: out is now out_dir" in r.stderr
    r = run_cli("--table", table, "--outt", tmp_path / "typo")
    assert r.returncode != 0 and "did you mean" in r.stderr and not (tmp_path / "typo").exists()


def test_ill_conditioned_table_warns(tmp_path):
    # a pure power law with noise: nothing says where (or whether) the loss saturates
    sizes = np.geomspace(1e6, 3e7, 5)
    rng = np.random.default_rng(0)
    loss = 5 * sizes ** -0.05 * np.exp(rng.normal(0, 0.01, 5))
    rows = [("lstm", n, l) for n, l in zip(sizes, loss)] + [("gpt", 1e6, 1.1), ("gpt", 4e6, 0.9), ("gpt", 2e7, 0.8)]
    out = tmp_path / "fit"
    r = run_cli("--table", write_table(tmp_path / "runs.csv", rows), "--out_dir", out, "--n_bootstrap", 300)
    assert r.returncode == 0, r.stderr
    fits = json.loads((out / "fit.json").read_text())
    lstm_warnings = " ".join(fits["lstm"]["warnings"])
    assert "irreducible loss c is not determined" in lstm_warnings
    assert "alpha is poorly determined" in lstm_warnings
    assert any("only 3 model sizes" in w for w in fits["gpt"]["warnings"])
    assert "Warnings for lstm" in (out / "fit.md").read_text()


def test_four_sizes_warn_that_the_interval_has_one_degree_of_freedom():
    """4 losses on one curve give a narrow interval by chance of agreement; the user is told it ignores seed noise."""
    sizes = np.geomspace(4e4, 1e6, 4)
    rows = [{"family": "lstm", "run": str(i), "n_params": n, "loss": 1.1 + 60 * n ** -0.6} for i, n in enumerate(sizes)]
    assert any("one degree of freedom" in w for w in fit_all(rows)["lstm"]["warnings"])


def test_well_conditioned_fit_has_no_warnings():
    sizes = np.geomspace(1e5, 1e8, 8)
    rows = [{"family": "gpt", "run": str(i), "n_params": n, "loss": l}
            for i, (n, l) in enumerate(zip(sizes, synthetic_losses(0, sizes, noise=0.003)))]
    assert fit_all(rows)["gpt"]["warnings"] == []


@pytest.mark.parametrize("content, args, message", [
    (None, ["--table", "missing.csv"], "missing.csv not found"),
    ("family,n_params\ngpt,1e6\n", ["--table", "runs.csv"], "lacks column(s) loss"),
    ("family,n_params,loss\ngpt,1e6,1.0\ngpt,2e6,0.9\nlstm,1e6,1\nlstm,2e6,.9\nlstm,4e6,.8\n",
     ["--table", "runs.csv"], "family 'gpt' has 2 model size(s)"),
    ("family,n_params,loss\ngpt,1e6,one\n", ["--table", "runs.csv"], "loss is not a number"),
    (None, ["no_such_run_dir"], "run folder no_such_run_dir not found"),
    (None, [], "exactly one of them"),
])
def test_bad_input_gives_one_clear_line(tmp_path, content, args, message):
    if content is not None:
        (tmp_path / "runs.csv").write_text(content)
    r = run_main(scaling, *args, "--out_dir", "fit", cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def fake_run(root, name, family, n_params, loss, tokens=200_000):
    """A finished run folder as train.py writes it (results.json, log.jsonl) plus calc_perplexity's test loss."""
    d = root / name
    d.mkdir()
    results = {"model_type": family, "n_params": n_params, "n_params_non_embedding": n_params - 20_000,
               "tokens_trained": tokens, "val_loss": loss + 0.02, "wall_time_s": n_params / 5e3,
               "peak_mem_bytes": 4 * n_params + 5e7}
    (d / "results.json").write_text(json.dumps(results))
    with open(d / "log.jsonl", "w") as f:
        for step, t in enumerate(np.linspace(0, tokens, 6)):
            curve = loss + 2.0 / (1 + t / 2e4)
            f.write(json.dumps({"iter": step * 10, "tokens": int(t), "train_loss": curve - 0.01,
                                "val_loss": curve if step % 2 == 0 else None}) + "\n")
    (d / "test_perplexity.json").write_text(json.dumps({"loss": loss, "split": "test"}))
    return d


def test_run_folders_give_fits_and_every_plot(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for fam, k in (("gpt", 1.0), ("lstm", 1.15)):
        for n in (5e4, 2e5, 8e5, 3.2e6):
            fake_run(runs, f"{fam}_{int(n)}", fam, int(n), k * (0.5 * (n / 1e5) ** -0.25 + 1.0))
    out = tmp_path / "fit"
    r = subprocess.run([sys.executable, str(REPO / "scaling.py"), runs, "--out_dir", out, "--n_bootstrap", "200"],
                       capture_output=True, text=True, cwd=REPO)  # the real command line; a folder of runs is expanded
    assert r.returncode == 0, r.stderr
    fits = json.loads((out / "fit.json").read_text())
    assert set(fits) == {"gpt", "lstm"}
    for f in fits.values():
        assert f["n_points"] == 4
        assert f["alpha_ci"] is None and any("no interval is given" in w for w in f["warnings"])  # 4 sizes, no repeats
        assert "alpha_non_embedding" in f and "alpha_pure" in f
    assert fits["gpt"]["loss"][0] == pytest.approx(0.5 * 0.5 ** -0.25 + 1.0)  # test loss, not val loss
    for png in ("scaling", "scaling_gpt", "scaling_lstm", "scaling_non_embedding", "training_curves",
                "efficiency", "compute"):
        data = (out / f"{png}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000, png
    assert "| gpt | 4 |" in (out / "fit.md").read_text()


def test_run_folder_without_results_is_an_error(tmp_path):
    (tmp_path / "half_trained").mkdir()
    r = run_cli(tmp_path / "half_trained", "--out_dir", tmp_path / "fit")
    assert r.returncode != 0 and "no results.json" in r.stderr and "Traceback" not in r.stderr


def test_run_folders_at_several_token_counts_get_a_joint_fit(tmp_path):
    """D comes from results.json's tokens_trained; the joint fit and its two plots appear only when D varies."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for n in (5e4, 4e5, 3.2e6):
        for d in (1e5, 1e6, 1e7):
            fake_run(runs, f"gpt_{int(n)}_{int(d)}", "gpt", int(n), 1.0 + 30 * n ** -0.3 + 40 * d ** -0.3, tokens=d)
    out = tmp_path / "fit"
    r = run_cli(runs, "--out_dir", out, "--n_bootstrap", 100)
    assert r.returncode == 0, r.stderr
    joint = json.loads((out / "fit.json").read_text())["gpt"]["joint"]
    assert sorted(set(joint["tokens"])) == [1e5, 1e6, 1e7]
    assert joint["alpha"] == pytest.approx(0.3, abs=0.02) and joint["beta"] == pytest.approx(0.3, abs=0.02)
    assert (out / "iso_loss.png").is_file() and (out / "iso_flop.png").is_file()


def three_sizes(root, run_id=None):
    """Three finished gpt runs (test loss 1.x, val loss 0.02 higher), each measured by calc_perplexity.py: with
    run_id, results.json and test_perplexity.json record the same run_id and the final iteration, as they do now."""
    root.mkdir()
    runs = [fake_run(root, f"gpt_{n}", "gpt", n, 1.0 + n ** -0.2) for n in (50_000, 400_000, 3_200_000)]
    if run_id:
        for d in runs:
            for name, extra in (("results.json", {"iters": 100}), ("test_perplexity.json", {"iter_num": 100})):
                data = json.loads((d / name).read_text())
                (d / name).write_text(json.dumps({**data, **extra, "run_id": run_id}))
    return runs


def measured_again(run_dir, **changes):
    path = run_dir / "test_perplexity.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("change, says", [({"run_id": "older"}, "earlier training"),
                                          ({"iter_num": 60}, "iteration 60")])
def test_a_stale_test_loss_is_never_used(tmp_path, capsys, change, says):
    """A test_perplexity.json measured on an earlier training of the run (another run_id) or before its end is
    treated as missing, with a warning naming the run: the fit falls back to the val loss of every run."""
    runs = three_sizes(tmp_path / "runs", run_id="current")
    rows, loss_name = run_table.load_runs([tmp_path / "runs"])
    assert loss_name == "test_loss" and capsys.readouterr().err == ""
    measured_again(runs[1], **change)
    rows, loss_name = run_table.load_runs([tmp_path / "runs"])
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: ") and "gpt_400000" in warning and says in warning
    assert len(warning.splitlines()) == 1
    assert loss_name == "val_loss" and all(r["loss"] == r["val_loss"] for r in rows)
    assert {r["run"]: r["test_loss"] for r in rows}["gpt_400000"] is None
    with pytest.raises(UserError, match="gpt_400000"):
        run_table.load_runs([tmp_path / "runs"], loss="test")


def test_old_files_without_run_ids_are_used_as_before(tmp_path, capsys):
    three_sizes(tmp_path / "runs")  # results.json and test_perplexity.json from before run_ids were recorded
    rows, loss_name = run_table.load_runs([tmp_path / "runs"])
    assert loss_name == "test_loss"
    assert {r["run"]: r["loss"] for r in rows}["gpt_50000"] == pytest.approx(1.0 + 50_000 ** -0.2)
    assert capsys.readouterr().err == ""


def test_a_wsd_trunk_is_left_out_of_the_fits(tmp_path):
    """A wsd trunk (train.py --branch_budgets) stopped before any cooldown: its branches are the budgets' runs."""
    three_sizes(tmp_path / "runs")
    trunk = fake_run(tmp_path / "runs", "gpt_50000.trunk", "gpt", 50_000, 1.5)
    results = json.loads((trunk / "results.json").read_text())
    (trunk / "results.json").write_text(json.dumps({**results, "branch_budgets": [100_000, 200_000]}))
    rows, _ = run_table.load_runs([tmp_path / "runs"])
    assert sorted(r["run"] for r in rows) == ["gpt_3200000", "gpt_400000", "gpt_50000"]


def test_a_damaged_test_loss_file_counts_as_missing(tmp_path):
    runs = three_sizes(tmp_path / "runs", run_id="current")
    (runs[0] / "test_perplexity.json").write_text('{"loss": 1.')  # cut short
    r = run_cli(tmp_path / "runs", "--out_dir", tmp_path / "fit", "--n_bootstrap", 20)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("warning: ") and "gpt_50000" in r.stderr and "not valid JSON" in r.stderr
    assert "Fits of the val loss" in r.stdout  # as when a run has no test loss
    r = run_cli(tmp_path / "runs", "--out_dir", tmp_path / "fit", "--loss", "test")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr


def test_outputs_of_the_wrong_kind_are_one_line(tmp_path):
    """--out_dir a file or inside one, a folder where fit.json or a plot goes, a folder given as the table or a file as
    a run folder: one line, non-zero, and the file in the way is left as it was."""
    three_sizes(tmp_path / "runs")
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "fit_json_taken" / "fit.json").mkdir(parents=True)
    (tmp_path / "plot_taken" / "scaling.png").mkdir(parents=True)
    for args, says in (([tmp_path / "runs", "--out_dir", tmp_path / "a_file"], "is a file"),
                       ([tmp_path / "runs", "--out_dir", tmp_path / "a_file" / "fit"], "is a file"),
                       ([tmp_path / "runs", "--out_dir", tmp_path / "fit_json_taken"], "fit.json is a folder"),
                       ([tmp_path / "runs", "--out_dir", tmp_path / "plot_taken"], "scaling.png"),
                       (["--table", tmp_path / "runs", "--out_dir", tmp_path / "fit"], "is a folder"),
                       ([tmp_path / "a_file", "--out_dir", tmp_path / "fit"], "is a file")):
        r = run_cli(*args, "--n_bootstrap", 20)
        assert r.returncode != 0 and r.stderr.startswith("error: ") and says in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "a_file").read_text() == "mine"


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a CSV text file"),
    (b"family,n_params,loss,tokens\ngpt,1e6,1.0,-5\n", "line 2: tokens must be positive, got -5"),
    (b"family,n_params,loss,tokens\ngpt,1e6,1.0,2e5\ngpt,2e6,0.9,0\n", "line 3: tokens must be positive, got 0"),
    (b"family,n_params,loss\ngpt,-1e6,1.0\n", "n_params must be positive"),
    (b"family,n_params,loss,wall_time_s\ngpt,1e6,1.0,60\ngpt,2e6,0.9,-60\n", "line 3: wall_time_s must not be negative"),
    (b"family,n_params,loss,peak_mem_bytes\ngpt,1e6,1.0,-1e9\n", "line 2: peak_mem_bytes must not be negative"),
    (b"family,n_params,loss,flops\ngpt,1e6,1.0,-1e12\n", "line 2: flops must be positive, got -1e12"),
])
def test_a_binary_table_and_counts_that_are_not_positive_are_one_line(tmp_path, content, message):
    """A binary file given as --table, and token or parameter counts of zero or below (once taken for missing
    counts: the joint fit vanished with exit 0), are refused in one line."""
    (tmp_path / "runs.csv").write_bytes(content)
    r = run_main(scaling, "--table", "runs.csv", "--out_dir", "fit", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: ") and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_study_runs_folder_leaves_its_learning_rate_sweep_out_of_the_fits(tmp_path, capsys):
    """scaling.py on a study's runs/ fits the runs study.py fits: the sweep runs (NAME.sweepFRACTION, trained on a
    share of the budget) are left out with a note, and fitted only when named directly."""
    from music_scaling_laws.fits.run_table import find_run_dirs
    for name in ("gpt_64", "gpt_64.lr0.00344", "gpt_64.lr2x.sweep0.125", "gpt_64.sweep0.125", "gpt_64.d200k.sweep1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text("{}")
    assert [p.rsplit("/", 1)[-1] for p in find_run_dirs([str(tmp_path)])] == ["gpt_64", "gpt_64.lr0.00344"]
    assert "3 learning-rate sweep run(s)" in capsys.readouterr().err
    assert find_run_dirs([str(tmp_path / "gpt_64.sweep0.125")]) == [str(tmp_path / "gpt_64.sweep0.125")]


def test_an_interval_that_reaches_the_search_bound_is_printed_as_a_one_sided_bound(tmp_path):
    """Issue 29: an exponent's 95% percentiles that land on the search box [0, 10] are where the solver stopped, not
    where the runs put it: fit.md and fit.json's warnings say 'α > 0.02, no upper bound', never '[0.02, 10]'."""
    from music_scaling_laws.fits.fitting import ci_text, with_ci
    fit = {"alpha": 0.3, "alpha_ci": [0.0213, 10.0], "c": 1.2, "c_ci": [2e-6, 1.9], "c_bounds": [1e-6, 3.0]}
    assert with_ci(fit, "alpha") == "0.3 (α > 0.0213, no upper bound)"
    assert with_ci(dict(fit, alpha_ci=[0.0, 0.5]), "alpha") == "0.3 (α < 0.5, no lower bound)"
    assert with_ci(dict(fit, alpha_ci=[0.0, 10.0]), "alpha") == "0.3 (not bounded by the runs)"
    assert with_ci(dict(fit, alpha_ci=[0.1, 0.5]), "alpha") == "0.3 [0.1, 0.5]"
    assert ci_text(fit["c_ci"], fit["c_bounds"], "c") == "c < 1.9, no lower bound"
    # through scaling.py: 5 sizes over a factor 3, 3% noise: alpha's interval runs into the box
    sizes = np.geomspace(1e6, 3e6, 5)
    loss = (40 * sizes ** -0.3 + 1.2) * np.exp(np.random.default_rng(4).normal(0, 0.03, 5))
    out = tmp_path / "fit"
    r = run_cli("--table", write_table(tmp_path / "runs.csv", [("gpt", n, x) for n, x in zip(sizes, loss)]),
                "--out_dir", out, "--n_bootstrap", 200)
    assert r.returncode == 0, r.stderr
    f = json.loads((out / "fit.json").read_text())["gpt"]
    assert f["alpha_ci"][1] >= 9.99, f["alpha_ci"]
    md = (out / "fit.md").read_text()
    assert ", 10]" not in md and ("no upper bound" in md or "not bounded by the runs" in md)
    assert any(w.startswith("alpha is not bounded by these runs") for w in f["warnings"])
