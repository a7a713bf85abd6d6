"""
The established metrics eval_syntax.py reports beside its own checks (tune_checks.py):
- per tune, muspy's statistics (Dong et al. 2020, the library the symbolic-music papers use) of the notes
  abc2midi wrote, as played (repeats twice): pitch range, pitch-class entropy, distinct pitch classes,
  pitch entropy, scale consistency (Mogren 2016), polyphony, groove consistency (Wu & Yang 2020) and
  empty-beat rate;
- per rate, a Wilson 95% interval: 64 sampled tunes know a rate only to within about +-10 points;
- per statistic, how far the samples' distribution lies from the real tunes' (Yang & Lerch 2018, "On the
  evaluation of generative models in music"): the overlapping area of the two kernel density estimates (1:
  the same distribution, 0: no overlap) and their KL divergence.

muspy is imported where used: the GPU machine lacks it, and without it its statistics are None (the checks
still run).
"""
import math

import numpy as np

MUSPY_STATISTICS = ("pitch_range", "pitch_class_entropy", "distinct_pitch_classes", "pitch_entropy",
                    "scale_consistency", "polyphony", "groove_consistency", "empty_beat_rate")
# abc2midi writes guitar chords, drums and drones to tracks of their own with one of these names; the
# statistics are of the notes the tune writes, as the score statistics are
ACCOMPANIMENT_TRACKS = {"gchord track", "drum track", "drone track"}
GRID = 12  # ticks per quarter note the notes are rounded to: sixteenths and eighth-note triplets fall on it
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def muspy_available():
    try:
        import muspy  # noqa: F401
        return True
    except ImportError:
        return False


def _finite(x):
    """A JSON number: counts stay ints, NaN (muspy's "undefined") becomes None, -0.0 becomes 0.0."""
    if x is None or isinstance(x, (int, np.integer)):
        return None if x is None else int(x)
    return None if math.isnan(x) else float(x) + 0.0


def muspy_statistics(midi_path):
    """muspy's statistics of the notes of an abc2midi MIDI file (accompaniment tracks left out); every value
    None without muspy, without notes, or where muspy has none (groove consistency needs two bars)."""
    none = dict.fromkeys(MUSPY_STATISTICS)
    try:
        import mido
        import muspy
    except ImportError:
        return none
    try:
        midi = mido.MidiFile(midi_path)
        midi.tracks = [t for t in midi.tracks
                       if not any(m.type == "text" and m.text in ACCOMPANIMENT_TRACKS for m in t)]
        music = muspy.from_mido(midi)
        if not any(track.notes for track in music.tracks):
            return none
        spans = [[(note.time, note.end) for note in track.notes] for track in music.tracks]
        resolution = music.resolution
        music.adjust_resolution(GRID)
        # abc2midi starts every note 1 tick late, and each further note of a chord 10 ticks later still (a
        # strum), and ends them on time: rounding the start to the nearest step would split a chord
        for track, track_spans in zip(music.tracks, spans):
            for note, (start, end) in zip(track.notes, track_spans):
                note.time = start * GRID // resolution
                note.duration = max(round(end * GRID / resolution) - note.time, 0)
        out = {"pitch_range": muspy.pitch_range(music), "pitch_class_entropy": muspy.pitch_class_entropy(music),
               "distinct_pitch_classes": muspy.n_pitch_classes_used(music),
               "pitch_entropy": muspy.pitch_entropy(music), "scale_consistency": muspy.scale_consistency(music),
               "polyphony": muspy.polyphony(music)}
        # muspy 0.5.0 counts the tick a note ends on as sounding: a quarter note ending on beat 2 marks
        # beat 2 non-empty, and a tune ending on a bar line gets an extra empty bar ('C2 z2 C2 z2' has an
        # empty-beat rate of 0 instead of 0.5). Ending every note one tick earlier makes both exact.
        for track in music.tracks:
            for note in track.notes:
                note.duration = max(note.duration - 1, 0)
        meter = music.time_signatures[0] if music.time_signatures else None
        ticks_per_bar = round(GRID * 4 * meter.numerator / meter.denominator) if meter else 4 * GRID
        out["groove_consistency"] = muspy.groove_consistency(music, ticks_per_bar) if ticks_per_bar >= 1 else None
        out["empty_beat_rate"] = muspy.empty_beat_rate(music)
        return {k: _finite(v) for k, v in out.items()}
    except Exception:  # a MIDI file abc2midi wrote with errors may be one mido or muspy cannot read
        return none


# ----------------------------------------------------------------------------- rates


def wilson_interval(successes, n, z=Z95):
    """[low, high] Wilson score interval of a rate successes/n (None for n = 0): unlike rate +- z*SE it stays
    inside [0, 1] and is not zero-width at 0% or 100%."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


# ----------------------------------------------------------------------------- distributions


def scott_bandwidth(values):
    """Scott's rule, scipy.stats.gaussian_kde's default in one dimension: std * n^(-1/5); 0 for no spread."""
    return float(np.std(values, ddof=1)) * len(values) ** -0.2 if len(values) > 1 else 0.0


def gaussian_kde(values, grid, bandwidth):
    """The Gaussian kernel density estimate of values on grid, normalised to integrate to 1 there."""
    density = np.exp(-0.5 * ((grid[:, None] - np.asarray(values, float)[None, :]) / bandwidth) ** 2).sum(axis=1)
    return density / (density.sum() * (grid[1] - grid[0]))


def overlap_and_kl(samples, reference, grid_points=1024):
    """(overlapping area, KL(samples || reference)) of the Gaussian kernel density estimates of two sets of
    values on a common grid. Both are smoothed with the larger of their two Scott bandwidths: with its own,
    a set of nearly equal values (the reference's polyphony: 299 of 300 tunes exactly 1) is a spike whose
    overlap with any smooth curve is ~0 however alike the sets are. Sets with no spread at all get 1% of
    the pooled range."""
    a, b = np.asarray(samples, float), np.asarray(reference, float)
    pooled = np.concatenate([a, b])
    span = float(np.ptp(pooled))
    if span == 0:
        return 1.0, 0.0  # every value of both sets is the same number
    bandwidth = max(scott_bandwidth(a), scott_bandwidth(b)) or 0.01 * span
    grid = np.linspace(pooled.min() - 4 * bandwidth, pooled.max() + 4 * bandwidth, grid_points)
    step = grid[1] - grid[0]
    p, q = gaussian_kde(a, grid, bandwidth), gaussian_kde(b, grid, bandwidth)
    # a floor of a millionth of the uniform density keeps KL finite where the reference has no mass
    eps = 1e-6 / (grid[-1] - grid[0])
    overlap = float(np.minimum(p, q).sum() * step)
    kl = float((p * np.log((p + eps) / (q + eps))).sum() * step)
    return min(overlap, 1.0), max(kl, 0.0)


def statistic_values(results, keys):
    """{statistic: [its value in every result that has one]}."""
    return {k: [r[k] for r in results if r.get(k) is not None] for k in keys}


def compare_distributions(results, reference_values, keys, min_values=2):
    """{statistic: {overlap_area, kl, n, n_reference}} of results against the reference's values, for every
    statistic with at least min_values values on each side."""
    out = {}
    for key, values in statistic_values(results, keys).items():
        ref = reference_values.get(key) or []
        if len(values) >= min_values and len(ref) >= min_values:
            overlap, kl = overlap_and_kl(values, ref)
            out[key] = {"overlap_area": overlap, "kl": kl, "n": len(values), "n_reference": len(ref)}
    return out


def format_distributions(comparison):
    """The comparison as a fixed-width text table."""
    lines = [f"{'vs reference':34s}{'overlap area':>14s}{'KL':>10s}{'n':>6s}{'n ref':>7s}"]
    for key, c in comparison.items():
        lines.append(f"{key.replace('_', ' '):34s}{c['overlap_area']:14.3f}{c['kl']:10.3f}{c['n']:6d}"
                     f"{c['n_reference']:7d}")
    return "\n".join(lines)
