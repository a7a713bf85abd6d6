"""
Is a folder of generated ABC tunes music? Every file is checked (tune_checks.py: does it parse, does it
convert to MIDI with or without errors, is it degenerate, what does it look like musically, with muspy's
metrics too) side by side with the same numbers on the dataset's real test tunes, so "80% valid" can be
read against what real music scores. Every rate has a Wilson 95% interval; the abc2midi messages behind
"without errors" are counted by kind (abc2midi_messages, for the files and for the real tunes). With a
reference, the tunes of each folder are compared with the real tunes the way Yang & Lerch 2018 do it (pairwise
intra- and inter-set distances per feature, overlap area and KL divergence with bootstrap intervals, next to
real tunes against real tunes at the same n; eval_metrics.yang_lerch), under the key yang_lerch: one folder
is one set, e.g. one model's unconditional tunes.

    python eval_syntax.py samples --reference data/music21 --out_file report.json
    python eval_syntax.py 'out/*/samples/*.abc' other_dir/tune.abc
    python eval_syntax.py samples --reference data/music21 --reference_split train --reference_tunes 2000

Plain arguments are folders (their *.abc files), files or glob patterns; every knob below is a --key.
"""
import glob
import os
import random
import sys
import time

import numpy as np

from music_scaling_laws.configurator import configure, lines_of
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.data.dataset import load_dataset, write_json_atomic
from music_scaling_laws.evaluation.eval_metrics import (YANG_LERCH_MIN_TUNES, format_yang_lerch, muspy_available,
                                                        statistic_values, yang_lerch)
from music_scaling_laws.lifetime import sigterm_stops, signal_name, usable_cpus
from music_scaling_laws.evaluation.tune_checks import (DEFAULT_SETTINGS, STATISTICS, evaluate_all, format_table,
                                                       summarize)

# -----------------------------------------------------------------------------
inputs = ""              # folders, files or globs (the plain arguments), one per line
reference = ""           # a prepare.py dataset folder: score its real tunes alongside
reference_tunes = 300    # real tunes scored for the reference column (a seeded random subset)
reference_split = "test"  # split the reference tunes come from (train: a larger pool, e.g. for benchmarks)
out_file = ""            # write the JSON report here
workers = usable_cpus()
# the checks' settings (what each is for: tune_checks.DEFAULT_SETTINGS)
parse_timeout = DEFAULT_SETTINGS["parse_timeout"]  # seconds per tune for music21
midi_timeout = DEFAULT_SETTINGS["midi_timeout"]
max_chars = DEFAULT_SETTINGS["max_chars"]    # longer files are counted failures
repeated_bar_share = DEFAULT_SETTINGS["repeated_bar_share"]
repeated_bar_min_bars = DEFAULT_SETTINGS["repeated_bar_min_bars"]
skip_beaming = DEFAULT_SETTINGS["skip_beaming"]
hang_slack = DEFAULT_SETTINGS["hang_slack"]
# Yang & Lerch's comparison of each folder's tunes with the reference
yang_lerch_bootstrap = 200   # bootstrap resamples (and real-vs-real draws) behind each interval
yang_lerch_min_tunes = YANG_LERCH_MIN_TUNES  # fewer tunes with a feature: that feature is not compared
# -----------------------------------------------------------------------------


def expand_inputs(patterns):
    """Folders (their *.abc files), files and glob patterns -> sorted unique file list."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(glob.glob(os.path.join(glob.escape(pattern), "*.abc")))
            if not found:
                fail(f"no .abc files in folder {pattern}")
        elif os.path.exists(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not found:
                fail(f"{pattern} is not a file, a folder or a glob that matches files")
        paths.extend(found)
    return list(dict.fromkeys(paths))


def reference_items(data_dir, limit, split="test", seed=0):
    """The dataset's real tunes of a split (decoded from split.bin, cut at EOT), a seeded random subset."""
    if not os.path.isdir(data_dir):
        fail(f"no dataset folder at {data_dir} (give --reference a prepare.py dataset)")
    dataset = load_dataset(data_dir, need_stats=False)
    tokenizer = dataset.tokenizer()
    ids = dataset.split(split)
    ends = np.flatnonzero(ids == dataset.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    picked = sorted(random.Random(seed).sample(range(len(ends)), min(limit, len(ends))))
    path = dataset.path(split)
    return [{"path": f"{path}#{i}", "text": tokenizer.decode(ids[starts[i]:ends[i]].tolist())} for i in picked]


def check_config(cfg):
    """One-line errors for values no run can use."""
    if cfg["workers"] < 1 or cfg["parse_timeout"] <= 0 or cfg["max_chars"] < 1 or cfg["reference_tunes"] < 1:
        fail("--workers, --parse_timeout, --max_chars and --reference_tunes must be positive")
    if cfg["midi_timeout"] <= 0 or cfg["hang_slack"] < 0 or cfg["repeated_bar_min_bars"] < 1:
        fail("--midi_timeout and --repeated_bar_min_bars must be positive, --hang_slack >= 0")
    if not 0 < cfg["repeated_bar_share"] <= 1:
        fail("--repeated_bar_share must be in (0, 1]")
    if cfg["yang_lerch_bootstrap"] < 1 or cfg["yang_lerch_min_tunes"] < 2:
        fail("--yang_lerch_bootstrap must be at least 1 and --yang_lerch_min_tunes at least 2")
    if cfg["reference_split"] not in ("train", "val", "test"):
        fail(f"--reference_split must be train, val or test, got {cfg['reference_split']!r}")
    if not lines_of(cfg["inputs"]):
        fail("give the folders, .abc files or glob patterns to evaluate")
    check_out(cfg["out_file"])


def check_out(out):
    """One line for a report path that cannot be written: checked before the evaluation (minutes on many tunes),
    not after it. A missing folder is not created: a typo in it would otherwise hide the report somewhere new."""
    if not out:
        return
    if os.path.isdir(out):
        fail(f"--out_file {out} is a folder; give the report's file name, e.g. {os.path.join(out, 'eval_syntax.json')}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        fail(f"--out_file {out}: {parent} " + ("is a file, not a folder" if os.path.exists(parent) else "does not exist"))


def timed_summary(results, seconds):
    """summarize() plus the wall-clock time and throughput of the evaluation."""
    return {**summarize(results), "seconds": seconds, "tunes_per_s": len(results) / seconds if seconds > 0 else None}


def compare_sets(results, ref_results, cfg):
    """Yang & Lerch's comparison (eval_metrics.yang_lerch) of every folder's tunes with the reference tunes: one
    folder, one set (a study writes each model's unconditional and each prompt's tunes to folders of their own)."""
    folders = {}
    for r in results:
        folders.setdefault(os.path.dirname(r["path"]), []).append(r)
    cache = {}  # the real-vs-real baselines, shared by sets of the same size
    return {"min_tunes": cfg["yang_lerch_min_tunes"], "n_bootstrap": cfg["yang_lerch_bootstrap"],
            "ci_level": 0.95, "n_real": len(ref_results),
            "sets": {folder: yang_lerch(rs, ref_results, cfg["yang_lerch_bootstrap"],
                                        min_tunes=cfg["yang_lerch_min_tunes"], baseline_cache=cache)
                     for folder, rs in folders.items()}}


# the names these knobs had before 2026-11-30: accepted, with a note, until the next release
RENAMED = {"out": "out_file", "timeout": "parse_timeout"}


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv, positional="inputs", renamed=RENAMED)
    check_config(cfg)
    try:
        with sigterm_stops():  # SIGTERM, like Ctrl-C, kills the workers and removes their temporary folder
            return evaluate(cfg)
    except KeyboardInterrupt as stop:
        fail(f"stopped by {signal_name(stop)}: nothing written" + (f" to {cfg['out_file']}" if cfg["out_file"] else "")
             + "; run the same command again")


def evaluate(cfg):
    """The evaluation of main's settings: the table printed, the report written to --out_file and returned."""
    settings = {key: cfg[key] for key in DEFAULT_SETTINGS}
    
    paths = expand_inputs(lines_of(cfg["inputs"]))
    ref_items = reference_items(cfg["reference"], cfg["reference_tunes"], cfg["reference_split"]) \
        if cfg["reference"] else None
    t0 = time.time()
    results = evaluate_all([{"path": p} for p in paths], settings, cfg["workers"], desc="files")
    report = timed_summary(results, time.time() - t0)
    if ref_items is not None:
        t0 = time.time()
        ref_results = evaluate_all(ref_items, settings, cfg["workers"], desc="reference")
        # every reference tune's statistics, so report.py can compare any subset of the files with them
        values = statistic_values(ref_results, STATISTICS)
        report["reference"] = {"data_dir": cfg["reference"], "split": cfg["reference_split"],
                               **timed_summary(ref_results, time.time() - t0),
                               "failed": [r for r in ref_results if not r["parse_ok"] or not r["midi_ok"]][:20],
                               "values": values}
        report["yang_lerch"] = compare_sets(results, ref_results, cfg)
    report["settings"] = {**{k: settings[k] for k in ("parse_timeout", "midi_timeout", "max_chars",
                                                      "repeated_bar_share", "skip_beaming")},
                          "workers": cfg["workers"], "muspy": muspy_available()}
    report["files"] = results

    print(format_table(report, report.get("reference")))
    if not report["settings"]["muspy"]:
        print("muspy is not installed: its statistics are left out (pip install -r requirements.txt)")
    for folder, comparison in report.get("yang_lerch", {}).get("sets", {}).items():
        print(f"{folder}:\n{format_yang_lerch(comparison)}")
    if report["failures"]:
        print("parse failures: " + ", ".join(f"{k} x{v}" for k, v in report["failures"].items()))
    print(f"{len(results)} files in {report['seconds']:.1f} s ({report['tunes_per_s']:.1f} tunes/s, "
          f"{cfg['workers']} workers)")
    if ref_items is not None:
        ref = report["reference"]
        print(f"reference: {ref['n_files']} {cfg['reference_split']} tunes of {cfg['reference']} in "
              f"{ref['seconds']:.1f} s ({ref['tunes_per_s']:.1f} tunes/s)")
    if cfg["out_file"]:
        try:
            write_json_atomic(report, cfg["out_file"], indent=1)
        except OSError as e:  # e.g. a read-only folder: say so in one line, the table above is still printed
            fail(f"cannot write --out_file {cfg['out_file']}: {e.strerror}")
        print(f"wrote {cfg['out_file']}")
    return report


if __name__ == "__main__":
    main()
