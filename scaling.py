"""
Fit scaling laws L(N) to finished training runs (or to a published table) and plot them.

    python scaling.py out/study_quick/runs/* --out_dir out/study_quick/fit
    python scaling.py --table runs.csv --out_dir fit_published
    python scaling.py out/study_quick/runs --out_dir fits/ --loss=val --n_bootstrap=2000
    python scaling.py out/study_quick/runs --out_dir fits_ne/ --fit_params=non_embedding

Plain arguments are run folders (with results.json) or folders holding run folders; --table is a CSV with columns
family,n_params,loss[,n_params_non_embedding,tokens,flops,dataset_tokens,seed,trunk,wall_time_s,peak_mem_bytes,run]
(flops: a run's total training FLOPs; dataset_tokens: the size of its training set; seed: its initialisation seed;
trunk: the wsd trunk a branch was cooled down from, so branches of one trunk are resampled together).
The fit policy is study.py's (power_law.select_runs): for every model family it fits L = a*N^(-alpha) + c and the
pure L = a*N^(-alpha) on the family's largest token budget, on all or non-embedding parameters (fit_params), with
intervals scaled by the run-to-run noise that repeats (rows of one size and budget with different seeds) measure,
and writes OUT/fit.json, OUT/fit.md and the PNG plots (plots.py). Where a family's runs were trained on two or more
token budgets D (the tokens column, or results.json's tokens_trained), it also fits L = E + A/N^alpha + B/D^beta and
the compute-optimal N_opt(C), D_opt(C) with compute as the models compute it (the flops column or results.json's
train_flops; without them 6*N*D, and fit.md says so) (joint_fit.py): fit.json's `joint`, iso_loss.png and
iso_flop.png. docs/fits.md explains the intervals and what a simulation measured of them.
"""
import os
import sys

from music_scaling_laws.configurator import configure, lines_of
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.fits.plots import write_outputs
from music_scaling_laws.errors import UserError
from music_scaling_laws.fits.fit_text import fit_markdown, write_fit
from music_scaling_laws.fits.power_law import fit_all
from music_scaling_laws.fits.run_table import load_runs, load_table
from music_scaling_laws.run_files import FIT_JSON, FIT_MD

# -----------------------------------------------------------------------------
# knobs; a config file or --key=value overrides them, plain arguments are run folders
runs = ''              # run folders, one per line (the plain arguments)
table = ''             # a CSV of runs instead of run folders
out_dir = ''            # output folder for fit.json, fit.md and the plots
loss = 'auto'          # loss of run folders: 'test' (test_perplexity.json), 'val', or 'auto' (test if all have it)
n_bootstrap = 1000     # bootstrap resamples of the runs for the confidence intervals
ci_level = 0.95        # two-sided confidence level of every interval
seed = 1337            # bootstrap RNG seed, so a re-run gives the same intervals
fit_params = 'all'     # N of the fits: 'all' parameters or 'non_embedding' ones (Kaplan et al.'s choice)
# -----------------------------------------------------------------------------


def check_out(out):
    """One line, before the fits, for an --out_dir that cannot be the output folder: a file, or a path through a file;
    and for a folder standing where fit.json or fit.md goes."""
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out_dir {out} is a file; give a folder for fit.json, fit.md and the plots")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):  # the first existing folder on the way, which makedirs will create under
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        fail(f"--out_dir {out} cannot be created: {parent} is a file")
    for name in (FIT_JSON, FIT_MD):
        if os.path.isdir(os.path.join(out, name)):
            fail(f"{os.path.join(out, name)} is a folder, where scaling.py writes its {name}")


# the names these knobs had before 2026-11-30: accepted, with a note, until the next release
RENAMED = {"out": "out_dir"}


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv, positional="runs", renamed=RENAMED)
    run_dirs = lines_of(cfg["runs"])
    if bool(run_dirs) == bool(cfg["table"]):
        fail("give run folders or --table runs.csv (exactly one of them)")
    if not cfg["out_dir"]:
        fail("give --out_dir DIR, the folder for fit.json, fit.md and the plots")
    if cfg["loss"] not in ("auto", "test", "val"):
        fail(f"loss must be auto, test or val, got {cfg['loss']!r}")
    check_out(cfg["out_dir"])
    try:
        rows, loss_name = load_table(cfg["table"]) if cfg["table"] else load_runs(run_dirs, cfg["loss"])
        fits = fit_all(rows, n_bootstrap=cfg["n_bootstrap"], ci_level=cfg["ci_level"], seed=cfg["seed"],
                       fit_params=cfg["fit_params"])
    except UserError as e:
        fail(str(e))
    try:
        written = write_fit(fits, cfg["out_dir"], loss_name)
        written.update(write_outputs(rows, fits, cfg["out_dir"], loss_name))
    except OSError as e:  # a plot's name taken by a folder, a read-only folder: one line naming the path
        fail(f"cannot write {e.filename or cfg['out_dir']}: {e.strerror or e}")
    print(fit_markdown(fits, loss_name))
    print("wrote " + ", ".join(sorted(written.values())))


if __name__ == "__main__":
    main()
