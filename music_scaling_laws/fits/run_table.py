"""
Reading the runs a fit sees: run folders (results.json, with the test loss calc_perplexity.py wrote beside it) or a
CSV table, as one list of run dicts {family, run, n_params, n_params_non_embedding, tokens, flops, dataset_tokens,
seed, lr, trunk, loss, ...}. fit_policy.py decides which of them each fit uses, power_law.py fits them.
"""
import csv
import json
import math
import os
import sys

from music_scaling_laws.errors import UserError
from music_scaling_laws.run_files import (PERPLEXITY_SUFFIX, RESULTS, is_finished, read_perplexity, read_results,
                                          run_role)

REQUIRED_COLUMNS = ("family", "n_params", "loss")
NUMBER_COLUMNS = ("n_params_non_embedding", "tokens", "wall_time_s", "peak_mem_bytes", "flops", "dataset_tokens")
OPTIONAL_COLUMNS = NUMBER_COLUMNS + ("seed", "run", "trunk")


# -----------------------------------------------------------------------------
# input: run folders or a table

def _number(value, what):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} is not a number: {value!r}")
    if not math.isfinite(x):
        raise UserError(f"{what} is not finite: {value!r}")
    return x


def load_table(path):
    """Rows of a CSV with columns family,n_params,loss (+ optional columns) -> list of run dicts. A file that is not
    text, and counts of parameters or tokens that are not positive, are UserErrors (a zero or negative token
    count used to be taken for a missing one, and the joint fit vanished without a word)."""
    if not os.path.isfile(path):
        raise UserError(f"table {path} " + ("is a folder, not a CSV file" if os.path.isdir(path) else "not found"))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _table_rows(path, csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a CSV text file ({e.__class__.__name__}: {str(e)[:80]})")


def _table_rows(path, reader):
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {','.join(missing)} (needs {','.join(REQUIRED_COLUMNS)}; "
                         f"has {','.join(columns) or 'nothing'})")
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        raw = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(raw.values()):
            continue
        where = f"{path} line {line_no}"
        row = {"family": raw["family"], "run": raw.get("run") or f"{raw['family']}-{raw['n_params']}",
               "n_params": _number(raw["n_params"], f"{where}: n_params"),
               "loss": _number(raw["loss"], f"{where}: loss")}
        for col in NUMBER_COLUMNS:
            row[col] = _number(raw[col], f"{where}: {col}") if raw.get(col) else None
        # a table without a seed column: rows of one size and budget are taken for repeats (what else would a
        # table repeat?); with one, rows that share a seed are the same run twice
        row["seed"] = raw.get("seed") or None if "seed" in columns else f"row {line_no}"
        row["lr"] = None
        # runs that share a trunk (wsd branches cooled down from one trunk) share its errors: the joint fit resamples
        # them together
        row["trunk"] = raw.get("trunk") or None
        for col in ("n_params", "n_params_non_embedding", "tokens", "flops", "dataset_tokens"):
            if row[col] is not None and row[col] <= 0:
                raise UserError(f"{where}: {col} must be positive, got {raw[col]}")
        for col in ("wall_time_s", "peak_mem_bytes"):  # 0 reads as not measured; below, the efficiency plots break
            if row[col] is not None and row[col] < 0:
                raise UserError(f"{where}: {col} must not be negative (0 or empty: not measured), got {raw[col]}")
        if not row["family"]:
            raise UserError(f"{where}: empty family")
        rows.append(row)
    if not rows:
        raise UserError(f"{path} has no data rows")
    return rows, "loss"


def find_run_dirs(paths):
    """Run folders given directly, or the run sub-folders of a folder that holds several runs."""
    run_dirs = []
    for p in paths:
        if not os.path.isdir(p):
            raise UserError(f"run folder {p} " + ("is a file, not a folder" if os.path.exists(p) else "not found"))
        if is_finished(p):
            run_dirs.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p)
                      if is_finished(os.path.join(p, d)))
        if not subs:
            raise UserError(f"{p} has no {RESULTS} (is training finished?) and no run folders inside")
        # a study's learning-rate sweep runs (role 'sweep' in results.json) trained on a share of the budget with
        # their own schedule: measurements of the rate, not points of a law (study.py leaves them out of its fits,
        # so scaling.py on the study's runs/ folder must too); named directly they are fitted
        sweeps = [d for d in subs if role_of(d) == "sweep"]
        if sweeps:
            print(f"note: {len(sweeps)} learning-rate sweep run(s) in {p} left out of the fits "
                  f"({os.path.basename(sweeps[0])}, ...); name a run folder directly to fit it", file=sys.stderr)
        run_dirs.extend(d for d in subs if d not in sweeps)
    return run_dirs


def role_of(run_dir):
    """run_files.run_role of a finished run folder; a results.json that is not JSON counts as a plain run here, and
    load_runs says what is wrong with it."""
    try:
        return run_role(read_results(run_dir), os.path.basename(os.path.normpath(run_dir)))
    except json.JSONDecodeError:
        return "run"


def test_loss_of(run_dir, results=None):
    """Test-split loss written next to the run by calc_perplexity.py --out_file (run_files.perplexity_path), or None
    when there is none, or it is stale or damaged (then a one-line warning naming the file goes to stderr)."""
    ppl, why = read_perplexity(run_dir, "test", results)
    if why:
        print(f"warning: {why}", file=sys.stderr)
    return ppl.get("loss") if ppl else None


def load_runs(paths, loss="auto"):
    """results.json of each run -> list of run dicts. loss: 'test', 'val' or 'auto' (test when every run has it)."""
    run_dirs = find_run_dirs(paths)
    rows = []
    for d in run_dirs:
        try:
            res = read_results(d)
        except json.JSONDecodeError as e:
            raise UserError(f"{d}/{RESULTS} is not valid JSON ({e})")
        if run_role(res, os.path.basename(os.path.normpath(d))) == "trunk":  # a wsd trunk: stopped before any
            continue                                                                 # cooldown, its branches are the runs
        for key in ("model_type", "n_params", "val_loss"):
            if res.get(key) is None:
                raise UserError(f"{d}/{RESULTS} lacks {key}")
        config = res.get("config") or {}
        tokens, epochs = _float_or_none(res.get("tokens_trained")), _float_or_none(res.get("epochs"))
        rows.append({"family": res["model_type"], "run": os.path.basename(os.path.normpath(d)), "run_dir": d,
                     "n_params": float(res["n_params"]),
                     "n_params_non_embedding": _float_or_none(res.get("n_params_non_embedding")),
                     "tokens": tokens,
                     "wall_time_s": _float_or_none(res.get("wall_time_s")),
                     "peak_mem_bytes": _float_or_none(res.get("peak_mem_bytes")),
                     # the FLOPs the model computes (train.py: flops_per_token x tokens), not 6·N·D
                     "flops": _float_or_none(res.get("train_flops")),
                     # the training split's size: tokens_trained / epochs (one epoch = every train window once)
                     "dataset_tokens": tokens / epochs if tokens and epochs else None,
                     "seed": config.get("seed"), "lr": config.get("learning_rate"),
                     # a wsd branch (train.py --init_from=branch) shares its trunk's weights and so its errors
                     "trunk": trunk_of(res),
                     "val_loss": float(res["val_loss"]), "test_loss": _float_or_none(test_loss_of(d, res))})
    have_test = all(r["test_loss"] is not None for r in rows)
    if loss == "test" and not have_test:
        missing = [r["run"] for r in rows if r["test_loss"] is None]
        raise UserError(f"--loss=test but no test{PERPLEXITY_SUFFIX} of the finished model in {', '.join(missing)}")
    loss_name = "test_loss" if loss == "test" or (loss == "auto" and have_test) else "val_loss"
    for r in rows:
        r["loss"] = r[loss_name]
    return rows, loss_name


def trunk_of(res):
    """The wsd trunk a run was branched from (results.json's trunk.out_dir, which train.py keeps through a resume;
    else config.branch_from of a branch), as an absolute path, or None for a run trained on its own."""
    trunk = (res.get("trunk") or {}).get("out_dir") if isinstance(res.get("trunk"), dict) else None
    config = res.get("config") or {}
    if trunk is None and config.get("init_from") == "branch" and config.get("branch_from"):
        trunk = config["branch_from"]
    return os.path.abspath(trunk) if trunk else None


def _float_or_none(x):
    return None if x is None else float(x)

