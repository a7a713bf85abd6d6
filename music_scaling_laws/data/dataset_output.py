"""
Step 6 of prepare.py, what it writes: the reports of a dataset (tune-length percentiles, the length histogram,
stats.md: stats.json in Markdown) and the --out_dir folder, which it fills only when that cannot delete anything it
did not write. Kept apart so prepare.py holds the pipeline itself.
"""
import os
import sys

import numpy as np

from music_scaling_laws.errors import UserError
from music_scaling_laws.lifetime import hold_lock
from music_scaling_laws.data.dataset import META, SPLITS, STATS
from music_scaling_laws.data.tokenizer import BPE_FILE

_LISTED_FAILURES = 20  # failed files named in stats.md


def percentiles(values):
    if len(values) == 0:
        return {}
    out = {f"p{q}": int(np.percentile(values, q)) for q in (5, 25, 50, 75, 95, 99)}
    out.update(min=int(np.min(values)), max=int(np.max(values)), mean=round(float(np.mean(values)), 1))
    return out


def plot_lengths(lengths_by_split, path, tokenizer_name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    all_lengths = np.concatenate(list(lengths_by_split.values()))
    bins = np.logspace(np.log10(max(1, all_lengths.min())), np.log10(all_lengths.max() + 1), 50)
    for name, lengths in lengths_by_split.items():
        ax.hist(lengths, bins=bins, alpha=0.6, label=f"{name} ({len(lengths)} tunes)", density=True)
    ax.set_xscale("log")
    ax.set_xlabel(f"tune length in tokens ({tokenizer_name} tokenizer, EOT included)")
    ax.set_ylabel("density")
    ax.set_title("Sequence-length distribution per split")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version string: byte-identical across installs
    plt.close(fig)


def stats_markdown(stats):
    s = stats
    lines = ["# Dataset statistics", "",
             f"- source: {s['source']}",
             f"- tokenizer: {s['tokenizer']} (vocabulary {s['vocab_size']})",
             f"- files found: {s['files_found']} ({', '.join(f'{k}: {v}' for k, v in s['files_by_kind'].items())})",
             f"- files converted: {s['files_converted']} (success rate {100 * s['conversion_success_rate']:.1f}%)",
             "", "## Conversion failures", ""]
    lines += [f"- {k}: {v}" for k, v in s["conversion_failures"].items()] or ["- none"]
    failed = s.get("failed_files", [])
    if failed:  # Lakh has thousands: the first ones here, all of them in stats.json
        lines += ["", "Failed files (relative to their input folder):", ""]
        lines += [f"- {f['file']}: {f['reason']}" for f in failed[:_LISTED_FAILURES]]
        if len(failed) > _LISTED_FAILURES:
            lines.append(f"- ... and {len(failed) - _LISTED_FAILURES} more (stats.json lists every one)")
    lines += ["", "## Tunes", "",
              f"- tunes found: {s['tunes_found']}",
              f"- duplicates removed: {s['duplicates_removed']}"]
    lines += [f"- removed ({k}): {v}" for k, v in s["filtered"].items()]
    lines += [f"- tunes kept: {s['tunes_kept']}", "",
              "## Splits", "", "| split | tunes | tokens | chars | chars/token | unknown chars |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, sp in s["splits"].items():
        lines.append(f"| {name} | {sp['tunes']} | {sp['tokens']} | {sp['chars']} | "
                     f"{sp['chars_per_token']:.2f} | {sp.get('unknown_chars', 0)} |")
    if s.get("max_train_tokens"):
        lines += ["", f"Training split cut to {s['max_train_tokens']} tokens "
                      f"(from {s['train_tokens_before_cut']})."]
    lines += ["", "## Tune length (tokens, EOT included)", "", "| split | " +
              " | ".join(s["length_tokens"]["train"].keys()) + " |",
              "|---|" + "---:|" * len(s["length_tokens"]["train"])]
    for name, pct in s["length_tokens"].items():
        lines.append(f"| {name} | " + " | ".join(str(v) for v in pct.values()) + " |")
    lines += ["", "![length histogram](length_histogram.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# the --out_dir folder

OUTPUTS = (*(f"{split}.bin" for split in SPLITS), META, STATS, "stats.md", "length_histogram.png",
           BPE_FILE)  # everything prepare.py writes into --out_dir, so everything it may ever delete there


def inside(path, folder):
    """Whether path is folder or lies inside it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_out(cfg, out_dir, inputs):
    """A one-line refusal of an --out_dir that prepare.py could not replace without deleting what it did not write:
    a file, a folder holding an input or the cache, a non-empty folder that is not a dataset, a dataset with
    other files in it, or a dataset without --overwrite=True. Missing and empty folders are fine."""
    out = cfg["out_dir"]
    if os.path.islink(out_dir):  # renaming the link would leave its target behind, half replaced
        raise UserError(f"--out_dir {out} is a symbolic link: give the folder it points to")
    for path in inputs:
        if inside(path, out_dir):
            raise UserError(f"--out_dir {out} holds the input {path}: writing the dataset there would delete it")
    if cfg["cache_dir"] and inside(cfg["cache_dir"], out_dir):
        raise UserError(f"--cache_dir {cfg['cache_dir']} is inside --out_dir {out}: replacing the dataset would delete it")
    if not os.path.isdir(out_dir):
        if os.path.lexists(out_dir):
            raise UserError(f"--out_dir {out} is a file, not a folder: give a folder to write the dataset into")
        return
    names = set(os.listdir(out_dir))
    if names and not {META, STATS} <= names:
        raise UserError(f"--out_dir {out} is a folder of other files, not a prepare.py dataset: give a new or empty folder")
    if names - set(OUTPUTS):
        raise UserError(f"--out_dir {out} holds files prepare.py did not write ({', '.join(sorted(names - set(OUTPUTS))[:3])}): "
             f"move them away to replace the dataset")
    if names and not cfg["overwrite"]:
        raise UserError(f"--out_dir {out} already holds a dataset: --overwrite=True replaces it")


def lock_output(out_dir):
    """Hold a lock on --out_dir for as long as this process runs, so a second prepare.py writing the same dataset
    stops with one line instead of racing this one to the rename. The lock is a hidden file beside --out_dir (the
    folder itself is replaced); the kernel lets go of it when the process ends, however it ends."""
    path = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.prepare.lock")
    return hold_lock(path, f"another prepare.py is writing {out_dir} (it holds {path}); wait for it or choose "
                           f"another --out_dir", what="prepare.py's lock")


def replace_folder(new_dir, out_dir):
    """Rename the complete dataset new_dir to out_dir; an older dataset there (checked by check_out) goes only
    once the new one is in place, and only the files prepare.py writes are deleted."""
    if not os.path.exists(out_dir):
        os.rename(new_dir, out_dir)
        return
    old = new_dir + ".old"
    os.rename(out_dir, old)
    os.rename(new_dir, out_dir)
    for name in OUTPUTS:
        if os.path.exists(os.path.join(old, name)):
            os.remove(os.path.join(old, name))
    try:
        os.rmdir(old)
    except OSError:  # someone wrote into the old folder after check_out: keep what they wrote, say where
        print(f"note: {old} holds files prepare.py did not write; left there", file=sys.stderr)
