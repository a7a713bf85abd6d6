"""
The library behind the scripts at the repository's root (prepare.py, train.py, sample.py, study.py, ...): everything
they import and no user runs directly. Its sub-packages follow a study's stages:

    data/        what a tune is (abc_text), tokenizers, a prepared dataset's contract and prepare.py's outputs
    training/    train.py's settings and resume rules, schedule, step, loop state, checkpoints, devices, windows
    evaluation/  the checks of one tune and the musical statistics eval_syntax.py reports
    fits/        the power laws, their intervals and warnings, the learning-rate law and the plots
    study/       study.py's plan, how it runs the scripts (locally, forked, submitit), its report

and beside them what every stage shares: the configurator, the one error type (errors.UserError), the run-folder
contract (run_files), progress bars, the external tools (midi2abc, abc2midi, ...) and process lifetimes.
The package imports nothing from the root: the scripts import it, never the other way round.
"""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: where the scripts stand
