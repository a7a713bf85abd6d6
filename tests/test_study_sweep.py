"""study.py's learning-rate sweep (lr_sweep, lr_sweep_tokens), data axis (token_budgets) and repeats (seeds): the
plan holds every (size, rate, budget, seed) run with its learning rate and tokens, a larger size's grid is centred
on the law of the smaller ones and a grid whose best rate is at its edge grows by a step, every size is trained at
the learning-rate law's rate (or its argmin), finished sweep runs are not trained again, a repeat differs from its
run only in the seed, bad values are one-line errors, and several budgets give the joint L(N, D) fit."""
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from music_scaling_laws.errors import UserError
from music_scaling_laws.study import report
import study
from music_scaling_laws.study import study_plan
import train
from helpers import ONE_THREAD, config_values, study_dry_run, study_runs
from music_scaling_laws.fits.plots import plot_lr_sweeps
from music_scaling_laws.study.script_runs import Timings

SMOKE = "config/study_smoke.py"
SMOKE_SIZES = [spec["name"] for spec in study_runs(SMOKE)]
# stride order: every step scores exactly batch x block tokens, so the budgets below are exact
TINY = ("--batch_size=8 --block_size=64 --warmup_iters=4 --eval_interval=0 --log_interval=4 --compile=False "
        "--dtype=float32 --data_order=stride")


def plan_rows(out_dir):
    """{run: (family, parameters, tokens, learning rate or None while the sweep has to choose it or the grid is
    still to be centred)} of the plan a dry run wrote to out_dir/plan.json."""
    plan = json.loads((Path(out_dir) / "plan.json").read_text())
    return {r["run"]: (r["family"], r["n_params"], r["tokens"], r["learning_rate"]) for r in plan["runs"]}


def test_plan_has_every_size_rate_and_budget(tmp_path):
    printed = study_dry_run(SMOKE, f"--out_dir={tmp_path / 's'}", "--lr_sweep=x0.5,x1,x2", "--lr_sweep_tokens=0.5",
                            "--token_budgets=4096,16384")
    rows = plan_rows(tmp_path / "s")
    configured = {family: config_values(train, f"config/{family}_tiny.py")["learning_rate"] for family in
                  ("gpt", "lstm")}  # the smoke study's sizes are of these two configs
    for size in SMOKE_SIZES:
        # the sweep: every rate, at half of the largest budget; the third size's grid is centred on the law of
        # the first two once they are swept, so for now it is the configured one, its rates still open
        third = [s for s in SMOKE_SIZES if s.split("_")[0] == size.split("_")[0]][2]
        for part, factor in ((".lr0.5x", 0.5), ("", 1), (".lr2x", 2)):
            family, _, tokens, lr = rows.pop(f"{size}.d16384{part}.sweep0.5")
            assert tokens == 8192, size
            assert lr is None if size == third else lr == pytest.approx(factor * configured[family])
        # the runs for the fits: every budget, at the rate the sweep will choose
        assert rows.pop(f"{size}.d4096.lr-best")[2:] == (4096, None)
        assert rows.pop(f"{size}.d16384.lr-best")[2:] == (16384, None)
    assert rows == {}, "runs nobody asked for"
    assert f"{SMOKE_SIZES[0]}: not finished" in printed


def fake_finished(run_dir, val_loss):
    os.makedirs(run_dir, exist_ok=True)
    Path(run_dir, "results.json").write_text(json.dumps({"val_loss": val_loss}))


SIZES = "\n".join(f"{name} config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd={w}"
                  for name, w in (("mid", 16), ("top", 32), ("big", 48)))
LR0 = config_values(train, "config/gpt_tiny.py")["learning_rate"]  # the rate x1 stands for in the runs of SIZES


def parabola(lr, best):
    """The sweep losses of the fake runs below: exactly the law's form, k = 0.1 around the size's best rate."""
    return 2.0 + 0.1 * math.log(lr / best) ** 2


def multiple_name(m):
    """The run-name part of a rate m x the config's (study_plan.run_name): '' for the config's own."""
    return "" if m == 1 else f".lr{m:g}x"


@pytest.mark.slow
def test_grids_are_centred_on_the_law_extended_at_an_edge_and_every_size_trained_at_the_laws_rate(tmp_path):
    out = tmp_path / "s"
    args = [SMOKE, f"--out_dir={out}", f"--runs={SIZES}", "--lr_sweep=x0.5,x1,x2", "--lr_sweep_tokens=0.25"]

    def sweep(size, multiples, best):
        for m in multiples:
            fake_finished(out / "runs" / f"{size}{multiple_name(m)}.sweep0.25", parabola(m * LR0, best))

    # mid's best rate is the config's, top's 4x it: beyond top's grid, which grows a step at a time
    sweep("mid", (0.5, 1, 2), LR0)
    sweep("top", (0.5, 1, 2), 4 * LR0)
    printed = study_dry_run(*args)
    rows = plan_rows(out)
    assert rows["top.lr4x.sweep0.25"][3] == pytest.approx(4 * LR0)  # the next step above x2
    assert rows["big.sweep0.25"][3] is None and "big: not finished" in printed  # big waits for top
    sweep("top", (4,), 4 * LR0)
    study_dry_run(*args)
    rows = plan_rows(out)
    assert rows["top.lr8x.sweep0.25"][3] == pytest.approx(8 * LR0)  # x4 best: still the edge
    sweep("top", (8,), 4 * LR0)

    # top's x4 is inside its grid now: big's grid is the configured one moved by whole steps (x2) so that its
    # centre (x1) lies nearest the law's rate for big, a line in log-log through mid's and top's best rates
    study_dry_run(*args)
    rows = plan_rows(out)
    n = {size: rows[f"{size}.lr-best"][1] for size in ("mid", "top", "big")}
    b = math.log(4) / math.log(n["top"] / n["mid"])
    law_big = 4 * LR0 * (n["big"] / n["top"]) ** b
    shift = round(math.log2(law_big / LR0))
    assert shift >= 1  # (a check of the test: the grid does move)
    centred = [2.0 ** (shift + k) for k in (-1, 0, 1)]
    assert {name for name in rows if name.startswith("big.")} == \
        {f"big{multiple_name(m)}.sweep0.25" for m in centred} | {"big.lr-best"}
    for m in centred:
        assert rows[f"big{multiple_name(m)}.sweep0.25"][3] == pytest.approx(m * LR0)

    # every size swept: each is trained on the full budget at the law's rate (3 significant digits), which for
    # these exact parabolas is each size's own best rate, wherever it fell between the grid's points; named by its
    # value, or by the grid's name for it where the law's rate is one of the grid's
    sweep("big", centred, law_big)
    printed = study_dry_run(*args)
    rows = plan_rows(out)
    for name, lr in (("mid", LR0), ("top.lr4x", 4 * LR0), (f"big.lr{float(f'{law_big:.3g}'):g}", law_big)):
        assert rows[name][2:] == (16384, pytest.approx(lr, rel=5e-3)), name
    law_line = next(line for line in printed.splitlines() if line.startswith("[lr law] gpt:"))
    assert f"N^{b:.3f}" in law_line and "a rate 2x off costs 0.0480 nats" in law_line  # 0.1 * ln(2)^2
    assert "WARNING" not in printed

    # lr_choice='argmin': each size at its own sweep's best grid rate instead
    study_dry_run(*args, "--lr_choice=argmin")
    rows = plan_rows(out)
    assert rows["mid"][3] == pytest.approx(LR0) and rows["top.lr4x"][3] == pytest.approx(4 * LR0)
    best_big = min(centred, key=lambda m: abs(math.log(m * LR0 / law_big)))
    assert rows[f"big{multiple_name(best_big)}"][3] == pytest.approx(best_big * LR0)


def test_fewer_than_three_sizes_take_their_argmin_and_a_diverged_rate_is_a_result(tmp_path):
    out = tmp_path / "s"
    args = [SMOKE, f"--out_dir={out}", "--runs=solo config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16",
            "--lr_sweep=x0.5,x1,x2", "--lr_sweep_tokens=0.25"]
    fake_finished(out / "runs" / "solo.lr0.5x.sweep0.25", 1.6)
    fake_finished(out / "runs" / "solo.sweep0.25", 1.5)
    os.makedirs(out / "runs" / "solo.lr2x.sweep0.25")
    (out / "runs" / "solo.lr2x.sweep0.25" / "diverged.json").write_text("{}")
    printed = study_dry_run(*args)
    rows = plan_rows(out)
    assert rows["solo"][2:] == (16384, LR0)  # x1 is best; x2 diverged, so x1 is no edge and nothing is added
    assert set(rows) == {"solo", "solo.lr0.5x.sweep0.25", "solo.sweep0.25", "solo.lr2x.sweep0.25"}
    assert "x2: diverged" in printed
    warnings = [line for line in printed.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "fewer than the 3 a learning-rate law needs" in warnings[0], warnings

    # every rate diverged: nothing to choose, one line
    for name in ("solo.lr0.5x.sweep0.25", "solo.sweep0.25"):
        (out / "runs" / name / "results.json").unlink()
        (out / "runs" / name / "diverged.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:  # configurator.fail: one line on stderr and exit 1
        study_dry_run(*args)
    assert str(stop.value.code).startswith("error: ") and "\n" not in str(stop.value.code)
    assert "every learning rate of the sweep of solo diverged" in str(stop.value.code)


def test_seeds_repeat_the_runs_for_the_fits_in_their_own_folders(tmp_path):
    study_dry_run(SMOKE, f"--out_dir={tmp_path / 's'}", "--seeds=2", "--seed_sizes=gpt_16:3,lstm_40",
                  "--token_budgets=4096,16384")
    rows = plan_rows(tmp_path / "s")
    repeats = {name for name in rows if ".seed" in name}
    assert repeats == {"gpt_16.d4096.seed2", "gpt_16.d4096.seed3", "gpt_16.d16384.seed2", "gpt_16.d16384.seed3",
                       "lstm_40.d4096.seed2", "lstm_40.d16384.seed2"}
    for name in repeats:
        assert rows[name] == rows[name.rsplit(".", 1)[0]]  # the same model, tokens and rate
    study_dry_run(SMOKE, f"--out_dir={tmp_path / 's'}", "--seeds=3")
    assert sum(".seed" in name for name in plan_rows(tmp_path / "s")) == 12  # 6 sizes x 2 repeats


@pytest.mark.slow
def test_a_repeat_differs_from_its_run_only_in_the_initialisation_seed(run_script, char_dataset, tmp_path):
    out = tmp_path / "s"
    run_script(["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", "--max_tokens=2048",
                f"--train_args={TINY}", "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16",
                "--seeds=2", "--stop_after=train"], timeout=600, env=ONE_THREAD)
    first, second = (json.loads((out / "runs" / name / "results.json").read_text()) for name in ("g", "g.seed2"))
    c1, c2 = first["config"], second["config"]
    assert c2["seed"] == c1["seed"] + 1 and c2["data_seed"] == c1["data_seed"]
    assert {k for k in c1 if c1[k] != c2.get(k)} == {"seed", "out_dir", "run_role"}  # the role shapes no result
    assert (first["role"], second["role"]) == ("run", "seed_repeat")  # as results.json says it to the fits
    assert first["tokens_trained"] == second["tokens_trained"] == 2048
    assert first["val_loss"] != second["val_loss"]  # other initial weights


@pytest.mark.slow
def test_a_sweep_trains_each_rate_extends_its_edge_then_the_best_on_the_full_budget_and_reuses_finished_runs(
        run_script, char_dataset, tmp_path):
    out = tmp_path / "s"
    args = ["study.py", SMOKE, f"--out_dir={out}", f"--data_dir={char_dataset}", "--max_tokens=4096",
            f"--train_args={TINY}", "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16",
            "--lr_sweep=x0.5,x2", "--lr_sweep_tokens=0.5", "--stop_after=train"]
    run_script(args, timeout=900, env=ONE_THREAD)
    results = {d.name: json.loads((d / "results.json").read_text()) for d in (out / "runs").iterdir()
               if (d / "results.json").exists()}
    sweep = sorted((d.name for d in (out / "runs").iterdir() if d.name.endswith(".sweep0.5")),
                   key=lambda name: float(name.split(".lr")[1].split("x")[0]))
    for name in sweep:
        if name in results:  # (a rate far beyond the grid may diverge: a result, without results.json)
            lr = float(name.split(".lr")[1].split("x")[0]) * LR0
            c = results[name]["config"]
            assert results[name]["tokens_trained"] == 2048
            assert (c["learning_rate"], c["min_lr"], c["warmup_iters"]) == pytest.approx((lr, lr / 10, 2)), name
            assert results[name]["role"] == "sweep", name  # what keeps it out of scaling.py's fits
    # a grid of two always has its best at an edge: it grows by steps as wide as its own (4x) on that side,
    # until the best is inside it or MAX_EXTEND steps were added
    chosen = json.loads((out / "lr_sweep.json").read_text())
    size = chosen["sizes"][0]
    assert 1 <= size["extended"] == len(sweep) - 2 <= study_plan.MAX_EXTEND
    assert set(sweep) - {"g.lr0.5x.sweep0.5", "g.lr2x.sweep0.5"} in (
        {f"g.lr{4 ** -k / 2:g}x.sweep0.5" for k in range(1, size["extended"] + 1)},
        {f"g.lr{2 * 4 ** k:g}x.sweep0.5" for k in range(1, size["extended"] + 1)})
    best = size["points"][size["best"]]["run"]
    assert best == min((n for n in sweep if n in results), key=lambda n: results[n]["val_loss"])
    assert bool(size["warning"]) == (size["best"] in (0, len(sweep) - 1))
    assert size["extended"] == study_plan.MAX_EXTEND or not size["warning"]
    # one size: no law, so the full run takes the sweep's best rate, with a warning saying why
    assert size["by"] == "argmin" and "fewer than the 3" in chosen["warnings"][0]
    final = best.removesuffix(".sweep0.5")
    assert set(results) == {n for n in sweep if n in results} | {final}
    c = results[final]["config"]
    assert results[final]["tokens_trained"] == 4096 and c["warmup_iters"] == 4
    assert c["learning_rate"] == pytest.approx(results[best]["config"]["learning_rate"])

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/ckpt.pt")}
    proc = run_script(args, timeout=600, env=ONE_THREAD)
    assert len(before) == len(results) and before == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/ckpt.pt")}
    assert proc.stdout.count("finished earlier, skipped") == len(results)


def test_a_diverged_sweep_run_is_a_result_not_a_failure(tmp_path):
    """train.py stops a run whose loss became NaN with one line; in a sweep that run is marked and the rest goes
    on, while any other failure still stops the study."""
    runs = [{"name": n, "run_dir": str(tmp_path / n), "lr": lr} for n, lr in (("a.lr2x", 2.0), ("a", 1.0))]
    sizes = [{"size": "a", "runs": runs, "waiting": False}]
    calls = []

    def train_all(todo, cfg, timings, logs):
        calls.append([r["name"] for r in todo])
        if len(calls) == 1:  # as train.py does: the marker in the run's folder, then its one-line failure
            (tmp_path / "a.lr2x").mkdir()
            (tmp_path / "a.lr2x" / "diverged.json").write_text('{"iteration": 3, "loss": "nan"}')
            raise UserError("training a.lr2x failed (exit 1): error: loss became nan at iteration 3; stopped -- "
                     "full output in x.log")
        fake_finished(tmp_path / "a", 1.5)

    assert study_plan.train_sweep(lambda: sizes, {}, None, None, train_all) == sizes
    assert calls == [["a.lr2x", "a"], ["a"]]
    assert study_plan.run_outcome(str(tmp_path / "a.lr2x")) == (math.inf, True)

    def broken(todo, cfg, timings, logs):
        raise UserError("training a failed (exit 1): error: out of memory")
    (tmp_path / "a" / "results.json").unlink()
    with pytest.raises(UserError, match="out of memory"):
        study_plan.train_sweep(lambda: sizes, {}, None, None, broken)


@pytest.mark.parametrize("override, message", [
    ("--lr_sweep=x", "lr_sweep entry 'x' is neither a multiplier"),
    ("--lr_sweep=-1,1e-3", "lr_sweep entry '-1': a learning rate must be a positive number"),
    ("--lr_sweep=x0,x1", "lr_sweep entry 'x0': a multiplier must be a positive number"),
    ("--lr_sweep=x1", "at least two rates"),
    ("--lr_sweep=x1,1e-3", "mixes multipliers"),
    ("--lr_sweep_tokens=1.5", "lr_sweep_tokens"),
    ("--token_budgets=1e6,0", "token_budgets entry '0'"),
    ("--token_budgets=1e6,lots", "token_budgets entry 'lots'"),
    ("--seeds=0", "seeds must be at least 1"),
    ("--seed_sizes=nope:2", "seed_sizes names 'nope'"),
    ("--seed_sizes=gpt_16:two", "seed_sizes entry 'gpt_16:two'"),
    ("--seed_sizes=gpt_16:2,gpt_16:3", "seed_sizes names gpt_16 twice"),
    ("--seed_sizes=gpt_16,lstm_40,gpt_16:3", "seed_sizes names gpt_16 twice"),
    ("--lr_choice=best", "lr_choice must be 'law'"),
])
def test_bad_sweep_seed_and_budget_values_are_one_line(tmp_path, override, message):
    with pytest.raises(SystemExit) as stop:  # configurator.fail: one line on stderr and exit 1, no traceback
        study_dry_run(SMOKE, f"--out_dir={tmp_path / 's'}", override)
    assert str(stop.value.code).startswith("error: ") and "\n" not in str(stop.value.code)
    assert message in str(stop.value.code)


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


def test_report_shows_the_sweep_the_law_and_the_rate_each_size_is_trained_at(tmp_path):
    def size(name, n, multiples, best_multiple, extended=0, diverged=()):
        runs = []
        for m in multiples:
            run_dir = tmp_path / "runs" / f"{name}{multiple_name(m)}.sweep0.25"
            if m in diverged:
                os.makedirs(run_dir)
                (run_dir / "diverged.json").write_text("{}")
            else:
                fake_finished(run_dir, parabola(m, best_multiple) - 0.1 * math.log(n))
            runs.append({"name": run_dir.name, "run_dir": str(run_dir), "rate": f"x{m:g}", "lr": m * LR0,
                         "model_type": "gpt", "n_params": n, "tokens": 500_000})
        return {"size": name, "runs": runs, "waiting": False, "extended": extended, "centred_on": None}
    # best rates 2x, 1x, 0.5x the config's as N grows 3x, 3x: lr* ~ N^-0.63; gpt_32's grid grew a step up
    sizes = [size("gpt_64", 109_728, (0.5, 1, 2), 1, diverged=(2,)), size("gpt_32", 36_576, (0.5, 1, 2, 4), 2, 1),
             size("gpt_96", 329_184, (0.25, 0.5, 1), 0.5)]
    choice = study_plan.choose_rates(sizes, {"ci_level": 0.95, "lr_choice": "law"})
    plots = plot_lr_sweeps(choice, str(tmp_path))
    assert Path(plots["lr_sweep_gpt"]).read_bytes()[:4] == b"\x89PNG"
    st = SimpleNamespace(cfg={"lr_sweep": "x0.5,x1,x2", "lr_sweep_tokens": 0.25, "token_budgets": ""},
                         link=lambda p: os.path.relpath(p, tmp_path))
    text = "\n".join(report.section_lr_sweep(st, choice, plots))
    header = next(line for line in text.splitlines() if line.startswith("| size"))
    assert [c.strip() for c in header.split("|")[4:9]] == ["x0.25", "x0.5", "x1", "x2", "x4"]  # every rate swept
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| gpt_")}
    assert list(rows) == ["gpt_32", "gpt_64", "gpt_96"]  # by size
    assert "**2.0000** (0.006)" not in rows["gpt_64"] and "diverged" in rows["gpt_64"]
    assert "| – |" in rows["gpt_64"]  # gpt_64 never ran x0.25 or x4
    assert "0.012 (x2), +1 step(s)" in rows["gpt_32"]
    law = choice["laws"]["gpt"]
    assert law["b"] == pytest.approx(math.log(0.25) / math.log(9), abs=1e-6)
    assert f"N^{law['b']:.3f}" in text and "costs **0.0480 nats**" in text
    for s in choice["sizes"]:
        assert s["by"] == "law" and f"**{s['lr']:.3g}** (law)" in rows[s["size"]]
    assert "lr_sweep_gpt.png" in text


def wsd_study(out, data_dir):
    return [SMOKE, f"--out_dir={out}", f"--data_dir={data_dir}", "--token_budgets=4096,16384",
            f"--train_args={TINY} --lr_schedule=wsd --cooldown_frac=0.5", "--seeds=2",
            "--runs=g config/gpt_tiny.py --n_layer=1 --n_head=2 --n_embd=16"]


def test_wsd_plan_has_one_trunk_per_size_and_seed(char_dataset, tmp_path):
    """With lr_schedule='wsd' and token_budgets, each size and seed trains one trunk up to its largest budget's
    cooldown and every budget's run is a branch of it: the plan shows the trunk (8 + 24 of 32 steps: 16 steps of
    512 tokens, 8,192 tokens) and counts each trunk's compute once."""
    out = tmp_path / "s"
    study_dry_run(*wsd_study(out, char_dataset))
    rows = plan_rows(out)
    assert {name: row[2] for name, row in rows.items()} == {
        "g.trunk": 8192, "g.d4096": 4096, "g.d16384": 16384,
        "g.seed2.trunk": 8192, "g.d4096.seed2": 4096, "g.d16384.seed2": 16384}
    # the compute the study spends: per seed the trunk's 8,192 tokens and the cooldowns' 2,048 + 8,192
    plan = json.loads((out / "plan.json").read_text())
    trunk_flops = next(r["train_flops"] for r in plan["runs"] if r["run"] == "g.trunk")
    assert plan["total_train_flops"] == pytest.approx(trunk_flops * 2 * (8192 + 2048 + 8192) / 8192, rel=1e-9)


@pytest.mark.slow  # end-to-end: six real train.py runs (two trunks, four branches) through study.py, ~25 s
def test_wsd_budgets_branch_from_one_trunk_per_size_and_seed(run_script, char_dataset, tmp_path):
    """Every budget's run of a wsd study is a branch of its size's and seed's trunk: the whole budget's tokens,
    its trunk recorded, and the trunk keeps a branch checkpoint per budget."""
    out = tmp_path / "s"
    run_script(["study.py", *wsd_study(out, char_dataset), "--stop_after=train"], timeout=600, env=ONE_THREAD)
    for seed in ("", ".seed2"):
        trunk = out / "runs" / f"g{seed}.trunk"
        assert sorted(p.name for p in trunk.glob("branch_*.pt")) == ["branch_16384.pt", "branch_4096.pt"]
        assert json.loads((trunk / "results.json").read_text())["branch_budgets"] == [4096, 16384]
        for budget, start in ((4096, 4), (16384, 16)):
            res = json.loads((out / "runs" / f"g.d{budget}{seed}" / "results.json").read_text())
            assert res["tokens_trained"] == budget and res["lr_schedule"] == "wsd"
            assert res["trunk"]["out_dir"] == str(trunk.resolve()) and res["trunk"]["iter"] == start
    assert json.loads((out / "runs" / "g.trunk" / "results.json").read_text())["config"]["seed"] + 1 == \
        json.loads((out / "runs" / "g.seed2.trunk" / "results.json").read_text())["config"]["seed"]


def test_report_names_the_schedule():
    cosine = {"lr_schedule": "cosine", "warmup_iters": 30, "cooldown_frac": 0.2}
    wsd = {**cosine, "lr_schedule": "wsd"}
    plan = [{"name": n, "train_config": {}} for n in ("a", "b.d1M", "b.d2M")]
    results = {"a": {"config": {k: v for k, v in cosine.items() if k != "lr_schedule"}},  # a run from before wsd
               "b.d1M": {"config": {**wsd, "branch_from": "runs/b.trunk"}}, "b.d2M": {"config": wsd}}
    text = report.schedule_text(SimpleNamespace(plan=plan, results=results))
    assert "**cosine**: a linear warm-up over 30 steps" in text
    assert "**wsd** (warmup-stable-decay" in text and "over the last 20% of the steps; 1 run(s) are branches" in text


def test_a_run_s_role_is_read_from_results_or_from_what_older_results_record():
    from music_scaling_laws.run_files import run_role
    assert run_role({"role": "seed_repeat", "config": {"out_dir": "x/gpt_64.sweep0.125"}}) == "seed_repeat"
    assert run_role({"branch_budgets": [1, 2], "config": {"out_dir": "runs/gpt_64.trunk"}}) == "trunk"
    assert run_role({"config": {"init_from": "branch", "out_dir": "runs/gpt_64.d1M.seed2"}}) == "branch"
    assert run_role({"config": {"out_dir": "runs/gpt_64.d1M.lr2x.sweep0.125"}}) == "sweep"
    assert run_role({"config": {"out_dir": "runs/gpt_64.lr0.00213.seed2/"}}) == "seed_repeat"
    assert run_role({"config": {"out_dir": "runs/gpt_64.d1M.lr0.00213"}}) == "run"
    assert run_role({}, name="gpt_64.lr2x.sweep0.25") == "sweep"


def test_the_study_tells_train_py_each_run_s_role(tmp_path, monkeypatch):
    """Sweep runs on a share of the budget get --run_role=sweep, seed repeats --run_role=seed_repeat (train.py writes
    it into results.json; it marks trunks and branches itself); plan.json says every run's role."""
    seen, real = {}, study.resolve_run

    def resolve(*args):
        r = real(*args)
        seen[r["name"]] = r["argv"]
        return r
    monkeypatch.setattr(study, "resolve_run", resolve)
    study_dry_run("config/study_quick.py", f"--out_dir={tmp_path}")
    roles = {r["run"]: r["role"] for r in json.loads((tmp_path / "plan.json").read_text())["runs"]}
    role_arg = {name: [a for a in argv if a.startswith("--run_role=")] for name, argv in seen.items()}
    assert role_arg["gpt_32.d1M.lr0.5x.sweep0.125"] == ["--run_role=sweep"] == role_arg["gpt_16.d1M.sweep0.125"]
    assert roles["gpt_32.d1M.lr0.5x.sweep0.125"] == "sweep"
    seed_runs = [n for n in roles if n.endswith(".seed2")]
    assert seed_runs and all(role_arg[n] == ["--run_role=seed_repeat"] for n in seed_runs)
    assert roles["gpt_16.lr-best.trunk"] == "trunk" and roles["gpt_16.d1M.lr-best"] == "branch"
