"""
The established metrics eval_syntax.py reports beside its own checks (tune_checks.py):
- per tune, muspy's statistics (Dong et al. 2020, the library the symbolic-music papers use) of the notes
  abc2midi wrote, as played (repeats twice): pitch range, pitch-class entropy, distinct pitch classes,
  pitch entropy, scale consistency (Mogren 2016), polyphony, groove consistency (Wu & Yang 2020) and
  empty-beat rate;
- per rate, a Wilson 95% interval: 64 sampled tunes know a rate only to within about +-10 points;
- per tune, Yang & Lerch's (2018, "On the evaluation of generative models in music") features of the same
  notes (YANG_LERCH_FEATURES), and per set of tunes their comparison with the real tunes the way that paper
  does it (yang_lerch): for each feature, the distances between every two tunes of the samples (intra-set),
  of the real tunes (intra-set) and between a sample and a real tune (inter-set); a kernel density estimate
  of each with its own bandwidth; the overlapping area and KL divergence of the inter-set distances against
  the real intra-set ones (1 and 0: a sampled tune lies as far from the real tunes as they lie from each
  other), with bootstrap intervals and the same numbers for real tunes against real tunes at the same n.

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
# Yang & Lerch's features, each a number or a vector per tune (their names in the paper in brackets): pitch
# classes (PCH, shares of the 12), distinct pitches (PC), pitch range (PR), mean absolute interval between
# consecutive notes in semitones (PI), notes (NC), mean time between consecutive onsets in quarter notes (IOI),
# note lengths (NLH, shares of the 12 classes of NOTE_LENGTHS) and ours, the share of bars that fill the meter
# (tune_checks' bars_matching_meter, of the score)
YANG_LERCH_FEATURES = ("pitch_class_histogram", "pitch_count", "pitch_range", "mean_interval", "note_count",
                       "mean_ioi", "note_length_histogram", "bar_fill")
# the paper's 12 note-length classes in quarter notes: whole, half, quarter, 8th, 16th, their dotted forms, and
# half-, quarter- and 8th-note triplets; a note counts for the class nearest its length (on a log scale)
# the features as a reader names them (the report's tables)
YANG_LERCH_NAMES = {"pitch_class_histogram": "pitch classes (histogram)", "pitch_count": "distinct pitches",
                    "pitch_range": "pitch range", "mean_interval": "mean interval", "note_count": "notes",
                    "mean_ioi": "time between onsets", "note_length_histogram": "note lengths (histogram)",
                    "bar_fill": "bars filling the meter"}
NOTE_LENGTHS = (4, 2, 1, 1 / 2, 1 / 4, 3, 3 / 2, 3 / 4, 3 / 8, 4 / 3, 2 / 3, 1 / 3)
YANG_LERCH_MIN_TUNES = 10  # fewer tunes with a feature: not compared (45 distances make a poor density)


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
    none = {**dict.fromkeys(MUSPY_STATISTICS), "yang_lerch_features": None}
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
        features = note_features([(n.time, n.duration, n.pitch) for t in music.tracks for n in t.notes])
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
        return {**{k: _finite(v) for k, v in out.items()}, "yang_lerch_features": features}
    except Exception:  # a MIDI file abc2midi wrote with errors may be one mido or muspy cannot read
        return none


def note_features(notes):
    """Yang & Lerch's features (YANG_LERCH_FEATURES but bar_fill) of notes [(onset, duration, MIDI pitch)] with
    times in GRID steps per quarter note; the interval and onset means are None below two notes or onsets."""
    notes = sorted(notes, key=lambda n: (n[0], n[2]))  # in time; a chord low to high
    pitches = np.array([p for _, _, p in notes])
    onsets = sorted({t for t, _, _ in notes})
    pcs = np.bincount(pitches % 12, minlength=12)
    lengths = np.log2(np.maximum([d / GRID for _, d, _ in notes], 1 / GRID))
    nearest = np.abs(lengths[:, None] - np.log2(NOTE_LENGTHS)[None]).argmin(axis=1)
    return {"pitch_class_histogram": (pcs / len(notes)).tolist(), "pitch_count": len(set(pitches.tolist())),
            "pitch_range": int(pitches.max() - pitches.min()),
            "mean_interval": float(np.abs(np.diff(pitches)).mean()) if len(notes) > 1 else None,
            "note_count": len(notes),
            "mean_ioi": float(np.diff(onsets).mean() / GRID) if len(onsets) > 1 else None,
            "note_length_histogram": (np.bincount(nearest, minlength=len(NOTE_LENGTHS)) / len(notes)).tolist()}


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


def density_on_grid(values, grid, bandwidth):
    """gaussian_kde on an even grid by linear binning: each value's weight is split between its two nearest grid
    points and the counts are convolved with the kernel. Equal to the exact estimate to ~(step / bandwidth)^2,
    and thousands of times faster for the tens of thousands of distances of a bootstrap."""
    step = grid[1] - grid[0]
    t = (np.asarray(values, float) - grid[0]) / step
    i = np.clip(np.floor(t).astype(int), 0, len(grid) - 2)
    w = t - i
    counts = np.bincount(i, 1 - w, len(grid)) + np.bincount(i + 1, w, len(grid))
    m = min(len(grid) - 1, int(np.ceil(5 * bandwidth / step)))
    kernel = np.exp(-0.5 * (np.arange(-m, m + 1) * step / bandwidth) ** 2)
    from scipy.signal import fftconvolve
    density = np.maximum(fftconvolve(counts, kernel)[m:m + len(grid)], 0)  # FFT round-off can dip below 0
    return density / (density.sum() * step)


def overlap_and_kl(p_values, q_values, grid_points=2048):
    """(overlapping area, KL(p || q)) of the Gaussian kernel density estimates of two sets of values, each with
    its own Scott bandwidth (Yang & Lerch). A set with no spread at all gets 1% of the pooled range (its values
    are a spike there); two sets of one and the same number overlap fully."""
    a, b = np.asarray(p_values, float), np.asarray(q_values, float)
    pooled = np.concatenate([a, b])
    span = float(np.ptp(pooled))
    if span == 0:
        return 1.0, 0.0  # every value of both sets is the same number
    h_a, h_b = scott_bandwidth(a) or 0.01 * span, scott_bandwidth(b) or 0.01 * span
    reach = 4 * max(h_a, h_b)
    grid = np.linspace(pooled.min() - reach, pooled.max() + reach, grid_points)
    step = grid[1] - grid[0]
    p, q = density_on_grid(a, grid, h_a), density_on_grid(b, grid, h_b)
    # a floor of a millionth of the uniform density keeps KL finite where q has no mass
    eps = 1e-6 / (grid[-1] - grid[0])
    overlap = float(np.minimum(p, q).sum() * step)
    kl = float((p * np.log((p + eps) / (q + eps))).sum() * step)
    return min(overlap, 1.0), max(kl, 0.0)


def statistic_values(results, keys):
    """{statistic: [its value in every result that has one]}."""
    return {k: [r[k] for r in results if r.get(k) is not None] for k in keys}


def feature_values(results, feature):
    """A Yang & Lerch feature's value in every result that has it (bar_fill: those that parse; the others: those
    whose MIDI has notes)."""
    values = [r.get("bars_matching_meter") if feature == "bar_fill"
              else (r.get("yang_lerch_features") or {}).get(feature) for r in results]
    return [v for v in values if v is not None]


def distance_matrix(a, b):
    """Euclidean distances between every value of a and every value of b (numbers or equal-length vectors)."""
    a = np.asarray(a, float).reshape(len(a), -1)
    b = np.asarray(b, float).reshape(len(b), -1)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))


def intra_distances(d, idx):
    """The distances between every two of the tunes idx (indices into the square distance matrix d)."""
    i, j = np.triu_indices(len(idx), k=1)
    return d[idx[i], idx[j]]


def yang_lerch_pair(d_sr, d_rr, s_idx, r_idx):
    """(overlap, KL(intra || inter)) of the real tunes r_idx's intra-set distances and the inter-set distances of
    samples s_idx to them, from the distance matrices samples x real (d_sr) and real x real (d_rr)."""
    return overlap_and_kl(intra_distances(d_rr, r_idx), d_sr[np.ix_(s_idx, r_idx)].ravel())


def yang_lerch(results, reference, n_bootstrap=200, ci_level=0.95, min_tunes=YANG_LERCH_MIN_TUNES, seed=0,
               baseline_cache=None):
    """Yang & Lerch's comparison of a set of tunes (eval results) with the real tunes (reference results), per
    feature of YANG_LERCH_FEATURES:
      intra-set distances within the samples and within the real tunes, inter-set between a sample and a real
      tune; overlap area and KL(real intra || inter) of their kernel density estimates (each its own bandwidth,
      as mgeval, the paper's code, orders them), an interval from n_bootstrap resamples of the set, and the
      baseline: the same numbers for n real tunes drawn at random against the other real tunes, over
      n_bootstrap draws (median and interval), so a number can be read against what real music scores at this n.
    Only tunes that have a feature count for it (n); a feature with fewer than min_tunes tunes on either side is
    not compared, and says why; the baseline is None when fewer than min_tunes real tunes would be left for
    it. baseline_cache, a dict, keeps the
    baselines (feature, n) between calls on the same reference."""
    lo_q, hi_q = 50 * (1 - ci_level), 50 * (1 + ci_level)
    rng = np.random.default_rng(seed)
    cache = {} if baseline_cache is None else baseline_cache
    out = {}
    for feature in YANG_LERCH_FEATURES:
        s, r = feature_values(results, feature), feature_values(reference, feature)
        entry = {"n": len(s), "n_real": len(r), "n_tunes": len(results)}
        if len(s) < min_tunes or len(r) < min_tunes:
            entry.update(compared=False, reason=f"{len(s)} of {len(results)} tunes and {len(r)} real tunes have "
                                                f"this feature; at least {min_tunes} of each are needed")
            out[feature] = entry
            continue
        d_sr, d_rr, d_ss = distance_matrix(s, r), distance_matrix(r, r), distance_matrix(s, s)
        all_s, all_r = np.arange(len(s)), np.arange(len(r))
        overlap, kl = yang_lerch_pair(d_sr, d_rr, all_s, all_r)
        # the set's tunes resampled, the real ones kept: resampling both lumps both densities with repeated tunes
        # and pulls every interval below its own estimate; how much the real side varies is the baseline's to show
        boot = np.array([yang_lerch_pair(d_sr, d_rr, rng.integers(0, len(s), len(s)), all_r)
                         for _ in range(n_bootstrap)])
        entry.update(compared=True, overlap=overlap, kl=kl,
                     overlap_ci=np.percentile(boot[:, 0], [lo_q, hi_q]).tolist(),
                     kl_ci=np.percentile(boot[:, 1], [lo_q, hi_q]).tolist(),
                     intra_mean=float(intra_distances(d_ss, all_s).mean()),
                     intra_real_mean=float(intra_distances(d_rr, all_r).mean()), inter_mean=float(d_sr.mean()))
        key = (feature, len(s))
        if key not in cache:
            cache[key] = real_baseline(d_rr, len(s), n_bootstrap, min_tunes, rng, lo_q, hi_q)
        entry["baseline"] = cache[key]
        out[feature] = entry
    return out


def real_baseline(d_rr, n, n_draws, min_tunes, rng, lo_q, hi_q):
    """The comparison of n real tunes drawn at random with the other real tunes, n_draws times: median and
    interval of overlap and KL; None when fewer than min_tunes real tunes would be left to compare with."""
    if len(d_rr) - n < min_tunes:
        return None
    draws = []
    for _ in range(n_draws):
        order = rng.permutation(len(d_rr))
        s_idx, r_idx = order[:n], order[n:]
        draws.append(yang_lerch_pair(d_rr, d_rr, s_idx, r_idx))
    draws = np.array(draws)
    return {"n_real": len(d_rr) - n, "overlap": float(np.median(draws[:, 0])), "kl": float(np.median(draws[:, 1])),
            "overlap_ci": np.percentile(draws[:, 0], [lo_q, hi_q]).tolist(),
            "kl_ci": np.percentile(draws[:, 1], [lo_q, hi_q]).tolist()}


def format_yang_lerch(comparison):
    """One set's comparison as a fixed-width text table."""
    lines = [f"{'Yang & Lerch vs real':24s}{'n':>5s}{'overlap':>22s}{'real vs real':>22s}{'KL':>20s}"
             f"{'real vs real':>20s}"]
    for feature, c in comparison.items():
        if not c["compared"]:
            lines.append(f"{feature.replace('_', ' '):24s}{c['n']:5d}  not compared: {c['reason']}")
            continue
        b = c["baseline"] or {}
        ci = lambda e, k: f"{e[k]:.2f} [{e[k + '_ci'][0]:.2f}, {e[k + '_ci'][1]:.2f}]" if k in e else "-"  # noqa: E731
        lines.append(f"{feature.replace('_', ' '):24s}{c['n']:5d}{ci(c, 'overlap'):>22s}{ci(b, 'overlap'):>22s}"
                     f"{ci(c, 'kl'):>20s}{ci(b, 'kl'):>20s}")
    return "\n".join(lines)
