"""study.py's learning-rate sweep (lr_sweep, lr_sweep_tokens) and data axis (token_budgets): the plan holds every
(size, rate, budget) run with its learning rate and tokens, the rate with the lowest validation loss is the one
the study goes on with, a rate at the end of the grid is flagged, finished sweep runs are not trained again, bad
values are one-line errors, and several budgets give the joint L(N, D) fit."""
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ONE_THREAD, REPO

sys.path.insert(0, str(REPO))
import report  # noqa: E402
import study  # noqa: E402
import study_plan  # noqa: E402
from plots import plot_lr_sweeps  # noqa: E402
from script_runs import Timings  # noqa: E402

SMOKE = "config/study_smoke.py"
# stride order: every step scores exactly batch x block tokens, so the budgets below are exact
TINY = ("--batch_size=8 --block_size=64 --warmup_iters=4 --eval_interval=0 --log_interval=4 --compile=False "
        "--dtype=float32 --data_order=stride")


def plan_rows(stdout):
    """{run: (family, parameters, tokens, learning rate or None while the sweep has to choose)} of a printed plan."""
    rows = {}
    for line in stdout.splitlines():
        w = line.split()
        if len(w) >= 7 and w[1] in ("gpt", "lstm"):
            rows[w[0]] = (w[1], int(w[2].replace(",", "")), int(w[4].replace(",", "")),
                          None if w[6] == "sweep's" else float(w[6]))
    return rows


def test_plan_has_every_size_rate_and_budget(run_script, tmp_path):
    proc = run_script(["study.py", SMOKE, f"--out_dir={tmp_path / 's'}", "--lr_sweep=x0.5,x1,x2",
                       "--lr_sweep_tokens=0.5", "--token_budgets=4096,16384", "--dry_run=True"])
    rows = plan_rows(proc.stdout)
    configured = {"gpt": 6e-3, "lstm": 1e-2}  # config/gpt_tiny.py, config/lstm_tiny.py
    for size in ("gpt_16", "gpt_32", "gpt_48", "lstm_16", "lstm_40", "lstm_64"):
        # the sweep: every rate, at half of the largest budget
        for part, factor in ((".lr0.5x", 0.5), ("", 1), (".lr2x", 2)):
            family, _, tokens, lr = rows.pop(f"{size}.d16384{part}.sweep0.5")
            assert tokens == 8192 and lr == pytest.approx(factor * configured[family]), size
        # the runs for the fits: every budget, at the rate the sweep will choose
        assert rows.pop(f"{size}.d4096.lr-best")[2:] == (4096, None)
        assert rows.pop(f"{size}.d16384.lr-best")[2:] == (16384, None)
    assert rows == {}, "runs nobody asked for"
    assert "gpt_16: not finished" in proc.stdout


def fake_finished(run_dir, val_loss):
    os.makedirs(run_dir, exist_ok=True)
    Path(run_dir, "results.json").write_text(json.dumps({"val_loss": val_loss}))


SIZES = "\n".join(f"{name} config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd={w}"
                  for name, w in (("mid", 16), ("top", 32), ("gone", 48)))


def test_the_lowest_validation_loss_chooses_the_rate_and_an_edge_is_flagged(run_script, tmp_path):
    out = tmp_path / "s"
    losses = {"mid": {"x0.5": 2.0, "x1": 1.5, "x2": 1.8},     # best in the middle of the grid
              "top": {"x0.5": 2.0, "x1": 1.9, "x2": 1.7},     # best at the highest rate: flagged
              "gone": {"x0.5": 1.6, "x1": 1.5, "x2": None}}   # x2 diverged; x1 still the best, no flag
    for size, by_rate in losses.items():
        for rate, loss in by_rate.items():
            part = {"x0.5": ".lr0.5x", "x1": "", "x2": ".lr2x"}[rate]
            run_dir = out / "runs" / f"{size}{part}.sweep0.25"
            if loss is None:
                os.makedirs(run_dir)
                (run_dir / study_plan.DIVERGED).write_text("{}")
            else:
                fake_finished(run_dir, loss)
    proc = run_script(["study.py", SMOKE, f"--out_dir={out}", f"--runs={SIZES}", "--lr_sweep=x0.5,x1,x2",
                       "--lr_sweep_tokens=0.25", "--dry_run=True"])
    rows = plan_rows(proc.stdout)
    # the runs for the fits, on the full budget, at the chosen rate (the config's own rate keeps the plain name)
    assert rows["mid"][2:] == (16384, 6e-3)
    assert rows["top.lr2x"][2:] == (16384, 1.2e-2)
    assert rows["gone"][2:] == (16384, 6e-3)
    warnings = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "top:" in warnings[0] and "highest" in warnings[0], warnings
    assert "gone: best x1" in proc.stdout and "x2: diverged" in proc.stdout

    # every rate diverged: nothing to choose, one line
    for rate in ("x0.5", "x1"):
        run_dir = out / "runs" / f"gone{'.lr0.5x' if rate == 'x0.5' else ''}.sweep0.25"
        (run_dir / "results.json").unlink()
        (run_dir / study_plan.DIVERGED).write_text("{}")
    proc = run_script(["study.py", SMOKE, f"--out_dir={out}", f"--runs={SIZES}", "--lr_sweep=x0.5,x1,x2",
                       "--lr_sweep_tokens=0.25", "--dry_run=True"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "every learning rate of the sweep of gone diverged" in proc.stderr.strip().splitlines()[-1]


def test_a_sweep_trains_each_rate_then_the_best_on_the_full_budget_and_reuses_finished_runs(
        run_script, char_dataset, tmp_path):
    out = tmp_path / "s"
    args = ["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", "--max_tokens=4096",
            f"--train_args={TINY}", "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16",
            "--lr_sweep=x0.5,x2", "--lr_sweep_tokens=0.5", "--stop_after=train"]
    run_script(args, timeout=600, env=ONE_THREAD)
    results = {d.name: json.loads((d / "results.json").read_text()) for d in (out / "runs").iterdir()}
    sweep = {"g.lr0.5x.sweep0.5": 3e-3, "g.lr2x.sweep0.5": 1.2e-2}
    for name, lr in sweep.items():
        c = results[name]["config"]
        assert results[name]["tokens_trained"] == 2048
        assert (c["learning_rate"], c["min_lr"], c["warmup_iters"]) == pytest.approx((lr, lr / 10, 2)), name
    best = min(sweep, key=lambda name: results[name]["val_loss"])
    final = best.removesuffix(".sweep0.5")
    assert set(results) == set(sweep) | {final}
    c = results[final]["config"]
    assert results[final]["tokens_trained"] == 4096 and c["warmup_iters"] == 4
    assert c["learning_rate"] == pytest.approx(sweep[best])
    chosen = json.loads((out / "lr_sweep.json").read_text())["sizes"][0]
    assert chosen["points"][chosen["best"]]["run"] == best
    assert chosen["warning"] and "the best learning rate" in chosen["warning"]  # a grid of two: always an edge

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/ckpt.pt")}
    proc = run_script(args, timeout=600, env=ONE_THREAD)
    assert len(before) == 3 and before == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/ckpt.pt")}
    assert proc.stdout.count("finished earlier, skipped") == 3


def test_a_diverged_sweep_run_is_a_result_not_a_failure(tmp_path):
    """train.py stops a run whose loss became NaN with one line; in a sweep that run is marked and the rest goes
    on, while any other failure still stops the study."""
    runs = [{"name": n, "run_dir": str(tmp_path / n), "lr": lr} for n, lr in (("a.lr2x", 2.0), ("a", 1.0))]
    calls = []

    def train_all(todo, cfg, timings, logs):
        calls.append([r["name"] for r in todo])
        if len(calls) == 1:
            sys.exit("error: training a.lr2x failed (exit 1): error: loss became nan at iteration 3; stopped -- "
                     "full output in x.log")
        fake_finished(tmp_path / "a", 1.5)

    study_plan.train_sweep([{"size": "a", "runs": runs}], {}, None, None, train_all)
    assert calls == [["a.lr2x", "a"], ["a"]]
    assert study_plan.run_outcome(str(tmp_path / "a.lr2x")) == (math.inf, True)

    def broken(todo, cfg, timings, logs):
        sys.exit("error: training a failed (exit 1): error: out of memory")
    (tmp_path / "a" / "results.json").unlink()
    with pytest.raises(SystemExit, match="out of memory"):
        study_plan.train_sweep([{"size": "a", "runs": runs}], {}, None, None, broken)


@pytest.mark.parametrize("override, message", [
    ("--lr_sweep=x", "lr_sweep entry 'x' is neither a multiplier"),
    ("--lr_sweep=-1,1e-3", "lr_sweep entry '-1': a learning rate must be a positive number"),
    ("--lr_sweep=x0,x1", "lr_sweep entry 'x0': a multiplier must be a positive number"),
    ("--lr_sweep=x1", "at least two rates"),
    ("--lr_sweep=x1,1e-3", "mixes multipliers"),
    ("--lr_sweep_tokens=1.5", "lr_sweep_tokens"),
    ("--token_budgets=1e6,0", "token_budgets entry '0'"),
    ("--token_budgets=1e6,lots", "token_budgets entry 'lots'"),
])
def test_bad_sweep_and_budget_values_are_one_line(run_script, tmp_path, override, message):
    proc = run_script(["study.py", SMOKE, f"--out_dir={tmp_path / 's'}", override, "--dry_run=True"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def surface(n, d):
    """A known L(N, D) the fake runs lie on."""
    return 1.2 + 40 / n ** 0.35 + 300 / d ** 0.3


def test_token_budgets_give_the_joint_fit_and_the_largest_budget_alone_the_fit_of_n(tmp_path):
    plan, results = [], {}
    for family, scale in (("gpt", 1.0), ("lstm", 0.9)):
        for width, n in ((16, 5_000), (32, 20_000), (64, 80_000), (128, 320_000)):
            for k, d in enumerate((1e5, 3e5, 1e6)):
                name = f"{family}_{width}.d{study_plan.tokens_label(int(d))}"
                run_dir = tmp_path / "runs" / name
                os.makedirs(run_dir)
                loss = scale * surface(n, d)
                results[name] = {"model_type": family, "n_params": n, "n_params_non_embedding": 0.9 * n,
                                 "tokens_trained": int(d), "val_loss": loss}
                (run_dir / "results.json").write_text(json.dumps(results[name]))
                (run_dir / "test_perplexity.json").write_text(json.dumps({"loss": loss}))
                plan.append({"name": name, "run_dir": str(run_dir), "model_type": family, "top_budget": k == 2})
    cfg = {"perplexity_split": "test", "n_bootstrap": 50, "ci_level": 0.95, "out_dir": str(tmp_path)}
    fits, _, plots = study.fit_and_plot(plan, cfg, str(tmp_path / "no_data"), Timings(str(tmp_path / "t.json")))
    saved = json.loads((tmp_path / "fit.json").read_text())
    for family in ("gpt", "lstm"):
        f = saved[family]
        assert f["n_points"] == 4 and all(r.endswith(".d1M") for r in f["runs"])  # L(N): the largest budget
        j = f["joint"]
        assert j["n_points"] == 12 and len(j["runs"]) == 12
        assert j["alpha"] == pytest.approx(0.35, abs=0.05) and j["beta"] == pytest.approx(0.3, abs=0.05)
        for key in ("E", "A", "B", "alpha", "beta"):
            assert j[key + "_ci"] is not None, key
    for plot in ("iso_loss", "iso_flop"):
        assert Path(plots[plot]).read_bytes()[:4] == b"\x89PNG"
    st = SimpleNamespace(plan=plan, results=results, link=lambda p: os.path.relpath(p, tmp_path))
    text = "\n".join(report.section_fits(st, fits, "test_loss", plots))
    assert "plots/iso_loss.png" in text and "plots/iso_flop.png" in text
    assert "Joint fit L(N, D)" in text and "largest token budget only" in text


def test_report_shows_the_sweep_with_the_chosen_rate_and_the_edge_warning(tmp_path):
    def size(name, n, losses, best, warning=None):
        return {"size": name, "family": "gpt", "n_params": n, "tokens": 500_000, "best": best, "warning": warning,
                "points": [{"run": f"{name}.{r}", "rate": r, "lr": lr, "val_loss": loss, "diverged": loss is None}
                           for (r, lr), loss in zip((("x0.5", 3e-3), ("x1", 6e-3), ("x2", 1.2e-2)), losses)]}
    sweep = [size("gpt_64", 122_304, [1.95, 1.88, None], 1),
             size("gpt_32", 36_576, [2.2, 2.1, 2.05], 2, "gpt_32: the best learning rate ... is the highest")]
    plots = plot_lr_sweeps(sweep, str(tmp_path))
    assert Path(plots["lr_sweep_gpt"]).read_bytes()[:4] == b"\x89PNG"
    st = SimpleNamespace(cfg={"lr_sweep": "x0.5,x1,x2", "lr_sweep_tokens": 0.25, "token_budgets": ""},
                         link=lambda p: os.path.relpath(p, tmp_path))
    text = "\n".join(report.section_lr_sweep(st, sweep, plots))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| gpt_")}
    assert list(rows) == ["gpt_32", "gpt_64"]  # by size
    assert "**1.8800** (0.006)" in rows["gpt_64"] and "diverged" in rows["gpt_64"]
    assert "**2.0500** (0.012)" in rows["gpt_32"]
    assert "lr_sweep_gpt.png" in text and "- gpt_32: the best learning rate" in text
