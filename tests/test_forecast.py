"""study.py --forecast (fits/forecast.py): a design's intervals, forecast before any training from the laws and the
noise a finished study measured."""
import contextlib
import io
import json

import numpy as np
import pytest

import study
from helpers import REPO
from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.forecast import assumed, draw, fit_rows, forecast_fits, forecast_text, parse_noise

QUICK_FIT = REPO / "docs" / "study_quick_wsd" / "fit.json"  # the quick study's fit (docs/fits.md)
LAW = {"E": 1.7, "A": 4.0, "alpha": 0.3, "B": 600.0, "beta": 0.55}


def fit_json(size_sigma=0.002, sigma=0.002, at_largest=0.003, surface=0.006):
    return {"gpt": {"size_sigma": size_sigma, "sigma": sigma, "residual_rms_log": at_largest,
                    "joint": {**LAW, "residual_rms_log": surface}}}


def planned(sizes, budgets=(2.5e5, 1e6, 2.5e6), seeded=()):
    """The runs for the fits as study_plan.final_plan gives them: wsd branches of one trunk per size and seed."""
    runs = []
    for i, n in enumerate(sizes):
        for seed in (1, 2) if i in seeded else (1,):
            trunk = {"name": f"gpt_{i}.seed{seed}.trunk", "trunk": True}
            for d in budgets:
                runs.append({"model_type": "gpt", "name": f"gpt_{i}.d{d:g}.seed{seed}", "n_params": int(n),
                             "n_params_non_embedding": int(0.8 * n), "tokens": int(d), "trunk_run": trunk,
                             **({"repeat": seed} if seed > 1 else {})})
    return runs


def forecast_cli(*argv):
    printed = io.StringIO()
    with contextlib.chdir(REPO), contextlib.redirect_stdout(printed):
        study.main([str(a) for a in argv])
    return printed.getvalue()


def test_the_errors_come_from_the_finished_study_and_its_shared_errors_are_not_counted_twice():
    law, noise = assumed(fit_json(0.002, 0.002, 0.003, 0.006), "gpt", None)
    assert law == LAW
    # each run's own: what is left of the scatter at the largest budget (L(N)'s) and below it (the joint surface's)
    # once the errors per size and per training are taken out
    assert noise == pytest.approx((0.002, 0.002, 0.001, (0.006 ** 2 - 8e-6) ** 0.5))
    assert assumed(fit_json(), "gpt", (0.01, 0.0, 0.0, 0.0))[1] == (0.01, 0.0, 0.0, 0.0)
    with pytest.raises(UserError, match="has no lstm fit"):
        assumed(fit_json(), "lstm", None)
    no_joint = {"gpt": {"alpha": 0.3}}
    with pytest.raises(UserError, match="no joint L\\(N, D\\) fit for gpt"):
        assumed(no_joint, "gpt", None)
    other_n = {"gpt": {**fit_json()["gpt"], "n_fitted": "all"}}
    with pytest.raises(UserError, match="fitted gpt on all parameters.*fit_params=non_embedding"):
        assumed(other_n, "gpt", None, "non_embedding")


def test_the_error_below_the_largest_budget_is_the_scatter_of_those_runs_alone():
    fit = fit_json()
    n, d = [1e4, 1e5, 1e4, 1e5], [1e6, 1e6, 1e7, 1e7]
    law_loss = [LAW["E"] + LAW["A"] * a ** -LAW["alpha"] + LAW["B"] * b ** -LAW["beta"] for a, b in zip(n, d)]
    misses = [0.03, -0.03, 0.0, 0.0]  # 3% below the largest budget, none at it
    fit["gpt"]["joint"].update(n_params=n, tokens=d, loss=[x * np.exp(m) for x, m in zip(law_loss, misses)])
    assert assumed(fit, "gpt", None)[1][3] == pytest.approx((0.03 ** 2 - 8e-6) ** 0.5)


def test_the_runs_below_the_largest_budget_get_their_own_error():
    rows = fit_rows(planned([1e4, 1e5, 1e6]))
    rng = np.random.default_rng(0)
    exact = {r["run"]: r["loss"] for r in draw(rows, LAW, (0, 0, 0, 0), rng)}
    noisy = draw(rows, LAW, (0, 0, 0, 0.05), rng)
    moved = {r["tokens"]: abs(np.log(r["loss"] / exact[r["run"]])) > 1e-9 for r in noisy}
    assert moved == {250000: True, 1000000: True, 2500000: False}


def test_rows_are_the_planned_runs_for_the_fits_with_their_trunks_and_seeds():
    rows = fit_rows(planned([1e4, 1e5], seeded=(1,)), fit_params="non_embedding")
    assert len(rows) == 9 and {r["trunk"] for r in rows} == {"gpt_0.seed1.trunk", "gpt_1.seed1.trunk",
                                                            "gpt_1.seed2.trunk"}
    assert sorted({r["seed"] for r in rows}) == [1, 2]
    assert {r["law_n"] for r in rows} == {8000.0, 80000.0}  # the N the study's fits use


def test_noisier_studies_forecast_wider_intervals_that_still_hold_the_truth():
    plan = planned(np.geomspace(3e3, 6e6, 8), seeded=(1, 5))
    quiet = forecast_fits(plan, fit_json(), studies=6, n_bootstrap=50, noise=(0.001,) * 4)["gpt"]
    loud = forecast_fits(plan, fit_json(), studies=6, n_bootstrap=50, noise=(0.01,) * 4)["gpt"]
    for label in ("L(N) alpha", "joint alpha", "joint beta"):
        q, lo = quiet["exponents"][label], loud["exponents"][label]
        assert q["fitted"] == 6 and q["median_width"] < lo["median_width"], label
        assert q["coverage"] >= 0.5 and q["truth"] == LAW[label.split()[-1]]
    assert quiet["exponents"]["joint beta"]["share_within_half"] == 1.0  # a decade of D, 0.1% errors: beta is pinned
    assert loud["exponents"]["L(N) alpha"]["share_within_half"] == 0.0


def test_a_draw_without_an_interval_counts_as_one_that_did_not_conclude(monkeypatch):
    import music_scaling_laws.fits.forecast as forecast
    calls = iter(range(100))

    def fit_all(rows, *args):  # every other draw's fits give no interval (a fit that could not be identified)
        ok = next(calls) % 2 == 0
        ci = [0.29, 0.31] if ok else None
        return {"gpt": {"alpha_ci": ci, "joint": {"alpha_ci": ci, "beta_ci": [0.5, 0.6] if ok else None}}}
    monkeypatch.setattr(forecast, "fit_all", fit_all)
    f = forecast_fits(planned([1e4, 1e5, 1e6]), fit_json(), studies=4)["gpt"]["exponents"]["L(N) alpha"]
    assert f["fitted"] == 2 and f["share_within_half"] == 0.5 and f["coverage"] == 0.5


def test_a_plan_with_one_budget_has_no_joint_exponents_to_forecast():
    result = forecast_fits(planned([1e4, 1e5, 1e6, 1e7, 1e8], budgets=(1e6,)), fit_json(), studies=2, n_bootstrap=20)
    assert result["gpt"]["exponents"]["joint alpha"] is None and result["gpt"]["budgets"] == 1
    assert "no joint fit: the plan has one token budget of gpt" in forecast_text(result, "f", 20, 0.95)


@pytest.mark.parametrize("config", ["config/study_quick.py", "config/study_gpu.py"])  # README's: the GPU study
def test_study_forecasts_a_config_from_a_fit_json_and_stops(tmp_path, config):
    out = forecast_cli(config, f"--forecast={QUICK_FIT}", "--forecast_studies=2",
                       "--forecast_bootstrap=20", f"--out_dir={tmp_path / 'study'}", f"--data_dir={tmp_path / 'none'}")
    assert "forecast: this plan's fits" in out
    for family in ("gpt", "lstm"):
        assert f"\n{family}: L = " in out and "2 draws" in out
    assert out.count("joint beta") == 2 and out.count("L(N) alpha") == 2
    assert not (tmp_path / "study").exists() and not (tmp_path / "none").exists()  # nothing trained or prepared
    assert "is not prepared yet: the plan assumes a vocabulary of 128" in out


@pytest.mark.parametrize("argv, message", [
    (["--forecast=/nonexistent/fit.json"], "forecast: no file /nonexistent/fit.json"),
    (["--forecast={bad}"], "cannot read .* as JSON"),
    (["--forecast={no_joint}"], "no joint L\\(N, D\\) fit for gpt"),
    (["--forecast={quick}", "--forecast_noise=0.1,0.2,0.1"], "forecast_noise must be four errors"),
    (["--forecast={quick}", "--forecast_studies=0"], "forecast_studies must be at least 1"),
    (["--forecast={quick}", "--forecast_bootstrap=0"], "forecast_bootstrap must be at least 1"),
    (["--forecast={gpt_only}"], "has no lstm fit"),
])
def test_forecast_mistakes_are_one_line(tmp_path, argv, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "no_joint.json").write_text(json.dumps({"gpt": {"alpha": 0.1}, "lstm": {"alpha": 0.1}}))
    (tmp_path / "gpt_only.json").write_text(json.dumps({"gpt": json.loads(QUICK_FIT.read_text())["gpt"]}))
    paths = {"bad": tmp_path / "bad.json", "no_joint": tmp_path / "no_joint.json", "quick": QUICK_FIT,
             "gpt_only": tmp_path / "gpt_only.json"}
    with pytest.raises(SystemExit, match=f"^error: .*{message}"):
        forecast_cli("config/study_quick.py", *[a.format(**paths) for a in argv], f"--out_dir={tmp_path / 's'}")


def test_parse_noise():
    assert parse_noise("") is None
    assert parse_noise("0.002,0.002,0.001,0.005") == (0.002, 0.002, 0.001, 0.005)
    for bad in ("a,b,c,d", "0.1,0.1,0.1", "-0.1,0,0,0", "1,0,0,0"):
        with pytest.raises(UserError):
            parse_noise(bad)
