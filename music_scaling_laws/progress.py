"""
Progress of a long step, for a person at a terminal and for a log alike: on a terminal a tqdm bar; where stdout
is not a terminal (a log file, nohup, SLURM, `docker compose exec -T`, study.py reading its children) a plain
line every PROGRESS_INTERVAL_S seconds (environment variable, default 30) and a last one at the end, instead
of a bar redrawn with `\\r` ten times a second:

    train: 120/1000 it (12%), 3.21 it/s, 37s elapsed, ETA 4m34s | loss 2.3100, tokens 983,040, tok_s 26,563

A step shorter than the interval prints no line of its own (its script's summary says what it did). The one
helper of prepare.py, train.py, sample.py, eval_syntax.py (tune_checks.py), calc_perplexity.py and study.py:

    for item in progress_bar(items, desc="converting", unit="file"): ...
    bar = progress_bar(total=n, desc="train", unit="it"); bar.update(); bar.set_postfix(loss=...); bar.close()
"""
import os
import sys
import time

from tqdm import tqdm

DEFAULT_INTERVAL_S = 30.0


def interval_s():
    """Seconds between plain lines: PROGRESS_INTERVAL_S, else DEFAULT_INTERVAL_S."""
    try:
        return max(0.0, float(os.environ.get("PROGRESS_INTERVAL_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def fmt_seconds(seconds, compact=True):
    """3725 -> '1h02m' in a progress line, or '1 h 02 min' (compact=False) where a reader reads it (reports)."""
    seconds = int(round(seconds))
    sep, m_unit = ("", "m") if compact else (" ", "min")
    if seconds < 60:
        return f"{seconds}{sep}s"
    if seconds < 3600:
        return f"{seconds // 60}{sep}{m_unit}{sep}{seconds % 60:02d}{sep}s"
    return f"{seconds // 3600}{sep}h{sep}{seconds % 3600 // 60:02d}{sep}{m_unit}"


def progress_bar(iterable=None, total=None, desc="", unit="it", disable=False, initial=0, **tqdm_options):
    """A tqdm bar when stdout is a terminal, else a LogProgress; both iterate over iterable (if given) and take
    update(n), set_postfix(**values), refresh(), write(text) and close(), also as a context manager.
    tqdm_options (leave, dynamic_ncols, ...) apply to the bar only."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or sys.stdout.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial, **tqdm_options)
    return LogProgress(iterable, total, desc, unit, initial)


class LogProgress:
    """tqdm's interface, printing a plain line to stdout at most every interval_s() seconds (on update or
    refresh) and, if it printed any, a last one at close (unless that one already said the same count)."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, interval=None):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.interval = interval_s() if interval is None else interval
        self.start = self.last_line = time.time()
        self.lines, self.printed_n, self.postfix, self.closed = 0, None, {}, False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self):
        return self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict=None, refresh=True, **values):
        self.postfix = {**(ordered_dict or {}), **values}

    def refresh(self):
        """Print a line if the interval has passed since the last one (also while nothing finished: a step
        waiting on others shows that it is alive)."""
        if time.time() - self.last_line >= self.interval:
            self.print_line()

    def write(self, text):
        print(text, flush=True)

    def line(self):
        elapsed = time.time() - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.n} {self.unit}", f"{rate:.3g} {self.unit}/s", f"{fmt_seconds(elapsed)} elapsed"]
        if self.total and rate > 0:
            parts.append(f"ETA {fmt_seconds(max(0, self.total - self.n) / rate)}")
        text = f"{self.desc}: " + ", ".join(parts)
        if self.postfix:
            text += " | " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def print_line(self):
        print(self.line(), flush=True)
        self.last_line, self.lines, self.printed_n = time.time(), self.lines + 1, self.n

    def close(self):
        if not self.closed and self.lines and self.printed_n != self.n:
            self.print_line()
        self.closed = True
