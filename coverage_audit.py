"""
How often the fits' 95% intervals hold the truth: tables drawn from a known law with the errors real studies have,
fitted through power_law.fit_all (the path scaling.py --table takes, without the CSV), and the share of studies whose
interval holds the true exponent. docs/fits.md reports what this measured.

    python coverage_audit.py                                  # every design, 200 studies each
    python coverage_audit.py --design=quick --studies=400 --n_bootstrap=1000

Designs (the law L = 14.3·N^-0.3 + 1.75 over 12k-481k parameters: the quick study's GPT sizes and losses):
  quick       6 sizes over 1.6 decades, two of them run twice; 0.3% seed noise and a 1% error per size that its
              seeds share (a rate set a little off, an architecture choice)
  quick_seeds the same without the per-size error (seed noise only)
  quick_twice the quick design with every size run twice (more repeats: seeds-only intervals got narrower and
              covered less)
  two_decades 6 sizes over 2 decades, one run each, 1% independent noise
  branches    the joint fit L(N, D): 6 sizes x 3 token budgets, each size's 3 budgets branches of one wsd trunk that
              share a 0.7% offset, plus 0.3% noise per branch (true alpha 0.35, beta 0.3)
  lack_of_fit not a coverage: how often the joint fit's lack-of-fit check fails on 6 N x 5 D grids (1% noise) drawn
              from the additive law (false alarms) and from Kaplan et al. 2020's L(N, D) (a misfit it must catch)
"""
import sys

import numpy as np

from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.fits.power_law import fit_all

LAW = {"a": 14.3, "alpha": 0.3, "c": 1.75}
JOINT = {"E": 1.0, "A": 112.0, "alpha": 0.35, "B": 126.0, "beta": 0.3}
QUICK_SIZES = np.geomspace(12.1e3, 481e3, 6)

# -----------------------------------------------------------------------------
design = 'all'        # 'quick', 'quick_seeds', 'quick_twice', 'two_decades', 'branches', 'lack_of_fit', 'all'
studies = 200          # synthetic studies per design
n_bootstrap = 300      # resamples per fit
seed = 0               # the studies' RNG seed
# -----------------------------------------------------------------------------


def law(n):
    return LAW["a"] * np.asarray(n, float) ** -LAW["alpha"] + LAW["c"]


def table(rng, sizes, repeats, seed_noise, size_noise):
    """Rows of one synthetic study: each size's runs share one error of scale size_noise (in ln loss), each run has
    its own of scale seed_noise."""
    rows = []
    for i, n in enumerate(sizes):
        offset = rng.normal(0, size_noise)
        for k in range(repeats[i]):
            rows.append({"family": "gpt", "run": f"gpt{i}.seed{k}", "n_params": float(n), "seed": k, "lr": None,
                         "tokens": None, "loss": float(law(n) * np.exp(offset + rng.normal(0, seed_noise)))})
    return rows


def branch_table(rng, seed_noise=0.003, trunk_noise=0.007):
    """6 sizes x 3 budgets of the joint law, each size's budgets branches of one trunk sharing its offset."""
    rows = []
    for i, n in enumerate(np.geomspace(1e5, 1e8, 6)):
        offset = rng.normal(0, trunk_noise)
        for d in np.geomspace(1e6, 1e9, 3):
            loss = JOINT["E"] + JOINT["A"] * n ** -JOINT["alpha"] + JOINT["B"] * d ** -JOINT["beta"]
            rows.append({"family": "gpt", "run": f"gpt{i}.d{d:.0f}", "n_params": float(n), "tokens": float(d),
                         "seed": 0, "lr": None, "trunk": f"gpt{i}.trunk",
                         "loss": float(loss * np.exp(offset + rng.normal(0, seed_noise)))})
    return rows


DESIGNS = {
    "quick": lambda rng: table(rng, QUICK_SIZES, [1, 2, 1, 2, 1, 1], 0.003, 0.01),
    "quick_seeds": lambda rng: table(rng, QUICK_SIZES, [1, 2, 1, 2, 1, 1], 0.003, 0.0),
    "quick_twice": lambda rng: table(rng, QUICK_SIZES, [2] * 6, 0.003, 0.01),
    "two_decades": lambda rng: table(rng, np.geomspace(12.1e3, 1.21e6, 6), [1] * 6, 0.01, 0.0),
    "branches": branch_table,
}


def audit(name, n_studies, n_boot, seed=0):
    """{coverage, median_width, studies} of alpha's interval (the joint fit's alpha for 'branches')."""
    rng = np.random.default_rng(seed)
    hits, widths = [], []
    for i in range(n_studies):
        f = fit_all(DESIGNS[name](rng), n_bootstrap=n_boot, seed=i)["gpt"]
        fit, truth = (f["joint"], JOINT["alpha"]) if name == "branches" else (f, LAW["alpha"])
        lo, hi = fit["alpha_ci"]
        hits.append(lo <= truth <= hi)
        widths.append(hi - lo)
    return {"coverage": float(np.mean(hits)), "median_width": float(np.median(widths)), "studies": n_studies}


def grid_table(rng, kaplan):
    """A 6 N x 5 D grid with 1% noise from the additive joint law, or from Kaplan et al.'s L(N, D)."""
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e5, 1e8, 6), np.geomspace(1e6, 1e9, 5)))
    loss = (((8.8e13 / N) ** (0.076 / 0.095) + 5.4e13 / D) ** 0.095 if kaplan else
            JOINT["E"] + JOINT["A"] * N ** -JOINT["alpha"] + JOINT["B"] * D ** -JOINT["beta"])
    return [{"family": "gpt", "run": f"r{i}", "n_params": float(n), "tokens": float(d), "seed": 0, "lr": None,
             "loss": float(x * np.exp(rng.normal(0, 0.01)))} for i, (n, d, x) in enumerate(zip(N, D, loss))]


def lack_of_fit_audit(n_studies, n_boot, seed=0):
    """{law: share of grids whose joint fit failed its lack-of-fit check}."""
    rng = np.random.default_rng(seed)
    return {law: float(np.mean([fit_all(grid_table(rng, law == "kaplan"), n_bootstrap=n_boot, seed=i)["gpt"]["joint"]
                                ["lack_of_fit"]["failed"] for i in range(n_studies)]))
            for law in ("additive", "kaplan")}


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv)
    if cfg["design"] not in (*DESIGNS, "lack_of_fit", "all"):
        fail(f"design must be one of {', '.join([*DESIGNS, 'lack_of_fit', 'all'])}, got {cfg['design']!r}")
    if cfg["studies"] < 1 or cfg["n_bootstrap"] < 1:
        fail("studies and n_bootstrap must be at least 1")
    if cfg["design"] in ("lack_of_fit", "all"):
        r = lack_of_fit_audit(cfg["studies"], cfg["n_bootstrap"], cfg["seed"])
        print(f"lack_of_fit: the check failed on {100 * r['additive']:.1f}% of {cfg['studies']} additive-law grids "
              f"(false alarms) and {100 * r['kaplan']:.1f}% of as many Kaplan-law grids", flush=True)
    for name in DESIGNS if cfg["design"] == "all" else [] if cfg["design"] == "lack_of_fit" else [cfg["design"]]:
        r = audit(name, cfg["studies"], cfg["n_bootstrap"], cfg["seed"])
        print(f"{name}: alpha's 95% interval held the truth in {100 * r['coverage']:.1f}% of {r['studies']} studies, "
              f"median width {r['median_width']:.3g}", flush=True)


if __name__ == "__main__":
    main()
