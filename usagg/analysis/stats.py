"""Statistics of Δ: Spearman ρ versus data scale, Wilcoxon signed-rank, bootstrap CI of the mean.

Every result carries its n and method, and small samples give a note ("n too small")
rather than an exception or a meaningless p. scipy is imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from usagg.analysis.delta import Comparison, group_n_train

MIN_N_SPEARMAN = 3
MIN_N_WILCOXON = 6  # below 6 pairs even a perfect split cannot reach p < 0.05 (two-sided, exact)
MIN_N_BOOTSTRAP = 2


@dataclass(frozen=True)
class Stat:
    """One statistic: value (ρ, W or mean), p or CI where it has one, n, method, and a note when not computed."""

    name: str
    paradigm: str
    fraction: float
    value: float | None
    n: int
    method: str
    p: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""


def _too_small(n: int, need: int) -> str:
    return f"n too small (n={n}, need ≥{need})"


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, int, str]:
    """Spearman ρ and two-sided p over finite pairs; (None, None, n, note) when undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < MIN_N_SPEARMAN:
        return None, None, n, _too_small(n, MIN_N_SPEARMAN)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None, n, "undefined (constant input)"
    from scipy.stats import spearmanr

    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n, ""


def wilcoxon_vs_zero(d: np.ndarray) -> tuple[float | None, float | None, int, str]:
    """Wilcoxon signed-rank statistic and two-sided p of Δ against 0 (scipy defaults)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < MIN_N_WILCOXON:
        return None, None, n, _too_small(n, MIN_N_WILCOXON)
    if np.all(d == 0):
        return None, None, n, "undefined (every Δ is 0)"
    from scipy.stats import wilcoxon

    res = wilcoxon(d)
    return float(res.statistic), float(res.pvalue), n, ""


def bootstrap_mean_ci(
    d: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float | None, tuple[float, float] | None, int, str]:
    """Mean and percentile bootstrap CI (tasks resampled with replacement, numpy Generator seeded with `seed`)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < MIN_N_BOOTSTRAP:
        return (float(d.mean()) if n else None), None, n, _too_small(n, MIN_N_BOOTSTRAP)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), (float(lo), float(hi)), n, ""


def statistics(comp: Comparison, resamples: int, seed: int) -> list[Stat]:
    """Every statistic for every non-baseline paradigm and fraction, in a stable order.

    Each call of the bootstrap gets a fresh Generator seeded with `seed`, so one paradigm's
    interval does not change when another paradigm is added or removed.
    """
    out: list[Stat] = []
    base = comp.baseline
    for f in comp.fractions:
        n_group = group_n_train(comp, f)
        for p in comp.others:
            names, vals = comp.delta_values(f, p)
            n_tr = np.asarray([comp.n_train.get((f, t), math.nan) for t in names], float)
            with np.errstate(divide="ignore", invalid="ignore"):
                logn = np.where(n_tr > 0, np.log(n_tr), np.nan)
            rho, pv, n, note = spearman(logn, vals)
            out.append(
                Stat(
                    "Spearman ρ(Δ, log n_train), tasks", p, f, rho, n, "scipy.stats.spearmanr, two-sided", pv, note=note
                )
            )
            gd: dict[str, list[float]] = {}
            for t, v in zip(names, vals, strict=True):
                gd.setdefault(comp.info(t).group, []).append(float(v))
            gx = np.asarray([n_group[g] for g in gd], float)
            gy = np.asarray([np.mean(v) for v in gd.values()], float)
            with np.errstate(divide="ignore", invalid="ignore"):
                glog = np.where(gx > 0, np.log(gx), np.nan)
            rho, pv, n, note = spearman(glog, gy)
            out.append(
                Stat(
                    "Spearman ρ(Δ, log n_train), groups",
                    p,
                    f,
                    rho,
                    n,
                    "spearmanr over groups: group Δ = mean of its tasks' Δ, group n_train = sum over its tasks",
                    pv,
                    note=note,
                )
            )
            w, pv, n, note = wilcoxon_vs_zero(vals)
            out.append(
                Stat(
                    f"Wilcoxon signed-rank, Δ vs 0 ({p} vs {base})",
                    p,
                    f,
                    w,
                    n,
                    "scipy.stats.wilcoxon on per-task Δ against 0, two-sided",
                    pv,
                    note=note,
                )
            )
            mean, ci, n, note = bootstrap_mean_ci(vals, resamples, seed)
            out.append(
                Stat(
                    "mean Δ % (Δm), 95 % bootstrap CI",
                    p,
                    f,
                    mean,
                    n,
                    f"percentile bootstrap over tasks, {resamples} resamples, seed {seed}",
                    ci=ci,
                    note=note,
                )
            )
    return out
