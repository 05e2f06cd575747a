"""Test-set bootstrap of one task's Δ: confidence limits from the per-image scores two jobs recorded.

A job's final test evaluation writes item_scores.json (`JobPaths.item_scores`, filled by
`PredictionWriter.add_item_scores` in usagg/predictions.py from each type's `score`): per
task and test image, what recomputes the task's primary metric on any resample of the test
images. `paired_delta_ci` resamples the images two jobs share (both scored on the same images,
so one resample serves both: a paired bootstrap) and returns the percentile interval of the
relative change (usagg/analysis/scales.py `change` on the relative scale, as delta.py's `relative_change`).

Percentile rather than BCa: the relative change is a ratio whose resamples can be undefined
(an AUC with a class absent from the resample, a baseline of 0); the percentile interval just
leaves those out and respects the ratio's skew without a model of it, while BCa's bias and
acceleration terms assume every resample and every leave-one-out value is defined, and its
jackknife would cost one AUC per test image. With thousands of test images the two agree.

The result depends on the seed and the set of shared images only: images are matched by their
CSV path and put in path order before resampling, so the order a job listed them in is irrelevant.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from usagg.analysis.item_scores import ItemScores, load_item_scores
from usagg.analysis.scales import change

__all__ = [
    "ItemScores",
    "endpoint_bands",
    "endpoint_errors",
    "error_span",
    "load_item_scores",
    "metric_ci",
    "metric_draws",
    "paired_delta_ci",
    "paired_delta_draws",
    "percentile_ci",
    "resampled_deltas",
    "resampled_means",
    "resampled_metric",
    "resampling_text",
]

#: A CI needs the Δ defined on at least this share of the resamples (else None): beyond it, leaving the
#: undefined ones out (e.g. resamples without an image of a rare class) would condition the interval too much.
MIN_DEFINED_SHARE = 0.9
#: Resamples drawn per call of the generator; fixed, because the stream of draws depends on the chunking.
_CHUNK = 64


def resampled_metric(s: ItemScores, idx: np.ndarray) -> float:
    """The task's metric on the images at positions `idx` (repeats allowed); nan where it is undefined.

    On all positions in order it reproduces the metric as the job scored it, bit for bit, except an AUC
    that scikit-learn cannot compute: scored 0.0 by the challenge's rule, nan here, so that a bootstrap
    can leave such resamples out instead of counting them as a worst possible classifier.
    """
    from usagg.tasktypes.classification import auc_or_nan, label_metric

    idx = np.asarray(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be a 1-D array of image positions, got {idx.dtype} of shape {idx.shape}")
    if idx.size == 0:
        return math.nan
    v = s.values[idx]
    if s.kind == "mean":
        return float(v.mean()) if v.ndim == 1 else float(v.mean(axis=0).mean())
    labels = v[:, 0].astype(np.int64)
    if s.kind == "auc":
        return auc_or_nan(v[:, 1:], labels)
    return label_metric(s.metric, labels, v[:, 1].astype(np.int64))


def resampled_means(sides: Sequence[Sequence[ItemScores]], resamples: int, seed: int) -> tuple[np.ndarray, int] | None:
    """Each side's seed-mean metric on the same `resamples` bootstrap resamples of the test images every score of
    every side shares (matched by path, put in path order): ([len(sides), resamples], images shared), nan where a
    seed's metric is undefined on a resample; None when fewer than 2 images are shared. Several sides on one
    resample each is what pairs them: a Δ, or a difference of two Δ, sees the test set's part of its spread only.
    Deterministic for a seed, independent of the order of the images."""
    flat = [s for side in sides for s in side]
    kinds = {(s.metric, s.kind, s.higher_is_better) for s in flat}
    if len(kinds) != 1:
        raise ValueError(f"cannot pair {', '.join(f'{m} ({k})' for m, k, _ in sorted(kinds))}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    shared = sorted(set.intersection(*(set(s.images) for s in flat)))
    n = len(shared)
    if n < 2:
        return None
    restricted = [[_restricted(s, shared) for s in side] for side in sides]
    rng = np.random.default_rng(seed)
    out = np.empty((len(sides), resamples))
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, size=(_CHUNK, n))[: resamples - start]
        for k, side in enumerate(restricted):  # a seed undefined on a resample: the side's mean is nan
            out[k, start : start + len(idx)] = np.mean([_metrics(s, idx) for s in side], axis=0)
    return out, n


def percentile_ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """The percentile interval of bootstrap draws at `level`, leaving the undefined (nan) ones out; None when more
    than 1 - MIN_DEFINED_SHARE of them are undefined."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    defined = draws[np.isfinite(draws)]
    if defined.size == 0 or defined.size < MIN_DEFINED_SHARE * draws.size:
        return None
    lo, hi = np.quantile(defined, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def metric_ci(
    scores: Sequence[ItemScores], resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the seed-mean metric of `scores` (one per seed, of one task) over the test images
    they all scored; None where fewer than 2 are shared or the metric is undefined on too many resamples."""
    draws = metric_draws(scores, resamples, seed)
    return None if draws is None else percentile_ci(draws, level)


def metric_draws(scores: Sequence[ItemScores], resamples: int, seed: int) -> np.ndarray | None:
    """The seed-mean metric on each of `metric_ci`'s resamples (nan where undefined); None when fewer than 2 images
    are shared."""
    drawn = resampled_means([scores], resamples, seed) if scores else None
    return None if drawn is None else drawn[0][0]


def resampled_deltas(means: np.ndarray, base: int, other: int, higher_is_better: bool) -> np.ndarray:
    """The relative change in % (scales' `change`, relative scale) of side `other` versus side `base` on each resample
    of `resampled_means`; nan where either side or the change is undefined."""
    out = np.full(means.shape[1], math.nan)
    for k, (mb, mo) in enumerate(zip(means[base], means[other], strict=True)):
        if math.isfinite(mb) and math.isfinite(mo):
            d = change("relative", "", float(mo), float(mb), higher_is_better)[0]  # no metric: delta.relative_change
            out[k] = math.nan if d is None else d
    return out


def paired_delta_ci(
    base: ItemScores | Sequence[ItemScores],
    other: ItemScores | Sequence[ItemScores],
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the relative change in % of `other` versus `base` (delta's `relative_change`).

    Both are recomputed on the same resamples of the test images they share (matched by path). Given several
    seeds' scores each, a resample's Δ is that of the seed means (each seed's metric on the same images, then
    averaged per side), as the comparison's Δ is: the test set's part of the seed-mean Δ's spread. None when
    fewer than 2 images are shared or the Δ is undefined on more than 1 - MIN_DEFINED_SHARE of the resamples.
    Deterministic for a seed, independent of the order of the images.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    draws = paired_delta_draws(base, other, resamples, seed)
    return None if draws is None else percentile_ci(draws, level)


def paired_delta_draws(
    base: ItemScores | Sequence[ItemScores], other: ItemScores | Sequence[ItemScores], resamples: int, seed: int
) -> np.ndarray | None:
    """The relative change in % on each of `paired_delta_ci`'s resamples (nan where undefined); None when fewer than
    2 images are shared."""
    bases = [base] if isinstance(base, ItemScores) else list(base)
    others = [other] if isinstance(other, ItemScores) else list(other)
    drawn = resampled_means([bases, others], resamples, seed)
    return None if drawn is None else resampled_deltas(drawn[0], 0, 1, bases[0].higher_is_better)


def endpoint_bands(draws: np.ndarray, level: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The 95 % Monte Carlo band of each end-point of `percentile_ci(draws, level)`: how far another set of as many
    resamples would move it. The number of defined draws below the true q-quantile is binomial (B, q), so the band
    runs between the order statistics B·q ∓ 1.96·√(B·q·(1 − q)) (distribution-free, no density to estimate); None
    where `percentile_ci` gives no interval."""
    if percentile_ci(draws, level) is None:
        return None
    x = np.sort(draws[np.isfinite(draws)])
    b = x.size
    bands = []
    for q in ((1.0 - level) / 2.0, (1.0 + level) / 2.0):
        half = 1.96 * math.sqrt(b * q * (1.0 - q))
        lo, hi = max(0, math.floor(b * q - half)), min(b - 1, math.ceil(b * q + half))
        bands.append((float(x[lo]), float(x[hi])))
    return bands[0], bands[1]


def endpoint_errors(draws: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """The Monte Carlo error (95 %) of each end-point of `percentile_ci(draws, level)`: half its `endpoint_bands`
    band; None where there is no interval."""
    bands = endpoint_bands(draws, level)
    return None if bands is None else ((bands[0][1] - bands[0][0]) / 2, (bands[1][1] - bands[1][0]) / 2)


def resampling_text(resamples: int, seed: int, errors: Sequence[float] = (), ends: str = "end-points") -> str:
    """How a test-set bootstrap was drawn and how far another of as many resamples would move its `ends`, where a
    reader meets its interval: '2000 resamples, seed 0; end-points ± 0.42 (Monte Carlo 95 %)', over several
    intervals '± 0.42 at most, median ± 0.1'; the resamples alone where no error is known. A percentile interval's
    end-points move with the bootstrap's seed: an end closer to a bound than its error could fall on its other side."""
    text = f"{resamples} resamples, seed {seed}"
    return f"{text}; {ends} {error_span(errors)} (Monte Carlo 95 %)" if errors else text


def error_span(errors: Sequence[float]) -> str:
    """Monte Carlo errors as the report says them wherever it gives one: '± 0.42' alone, over several intervals
    '± 0.42 at most, median ± 0.1' (the same wording, digits and spacing in a caption, a table note, a cell)."""
    mc = sorted(errors)
    return f"± {mc[0]:.2g}" if len(mc) == 1 else f"± {mc[-1]:.2g} at most, median ± {statistics.median(mc):.2g}"


def _restricted(s: ItemScores, images: list[str]) -> ItemScores:
    """`s` on `images` (a subset of its own), in that order."""
    where = {img: i for i, img in enumerate(s.images)}
    return ItemScores(s.metric, s.higher_is_better, s.kind, tuple(images), s.values[[where[i] for i in images]])


def _metrics(s: ItemScores, idx: np.ndarray) -> np.ndarray:
    """The metric on each row of resample positions `idx` [B, n]: vectorised for means and AUC."""
    if s.kind == "mean":
        v = s.values[idx].mean(axis=1)  # [B] or [B, C]: mean over images (then over classes)
        return v if v.ndim == 1 else v.mean(axis=1)
    if s.kind == "auc":
        return _weighted_auc(s.values[:, 0].astype(np.int64), s.values[:, 1:], _counts(idx, len(s.images)))
    return np.array([resampled_metric(s, row) for row in idx])


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each image is drawn in each resample: int [B, n]."""
    rows = np.arange(idx.shape[0])[:, None] * n
    return np.bincount((rows + idx).ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n)


def _weighted_auc(labels: np.ndarray, probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`auc_or_nan` (usagg/tasktypes/classification.py) of B resamples given as image counts `w` [B, n].

    ROC AUC is the Mann-Whitney statistic with ties counted one half, which is what scikit-learn's
    trapezoidal area equals; a resample is the full set with each image weighted by its count. Binary:
    the probability of class 1; more classes: the mean one-vs-rest AUC, undefined (nan) when a class is
    absent from the resample, as scikit-learn refuses it.
    """
    if probs.shape[1] > 2 and not np.allclose(1.0, probs.sum(axis=1)):
        return np.full(w.shape[0], math.nan)  # scikit-learn refuses multi-class scores that are not probabilities
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    per_class = [_weighted_binary_auc(labels == c, probs[:, c], w) for c in classes]
    return np.mean(per_class, axis=0)


def _weighted_binary_auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    order = np.argsort(score, kind="stable")
    s, pos = score[order], positive[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    ws = w[:, order].astype(np.float64)
    p = np.add.reduceat(ws * pos, starts, axis=1)  # positives' weight per score group [B, U]
    q = np.add.reduceat(ws * ~pos, starts, axis=1)  # negatives' weight per score group
    below = np.cumsum(q, axis=1) - q
    wins = (p * (below + 0.5 * q)).sum(axis=1)
    total = p.sum(axis=1) * q.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), math.nan)
