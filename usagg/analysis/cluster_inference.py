"""Inference on a mean over tasks when tasks sharing one model are one cluster: the wild cluster bootstrap.

A study has few clusters (the demo 4, the FMC_UIA study 9 clinical groups), and a pairs
bootstrap that resamples 6-9 clusters covers some 82-86 % where it claims 95 %. Here the
mean ȳ over N tasks in G clusters is tested with the wild cluster restricted (WCR)
bootstrap-t of Cameron, Gelbach and Miller (2008): under H0: μ = μ0 the restricted
residuals y_i − μ0 of each cluster are multiplied by one weight w_g drawn from Webb's six
points (±√½, ±1, ±√(3/2), 6^G distinct draws, where Rademacher's 2^G are too few at G = 6),
the cluster-robust t (CR1: SE² = G/(G−1) · Σ_g S_g² / N², S_g the cluster's residual sum) is
recomputed, and p is the share of |t*| at least the observed |t| (symmetric): over every one of
the 6^G draws up to 6 clusters (`EXACT_DRAWS`, 46,656; or more where the resamples asked for are more: exact, the
same p on every machine and seed: 1,296 at 4 clusters, 7,776 at 5), else over that many random draws, with the p's
Monte Carlo error in the method text (`monte_carlo`). The p can never be below 6/6^G (`p_floor`). The interval is
the set of μ0 the test does not reject at 1 − level, found by bisection on a fixed set of
weight draws. Stated coverage of the 95 % interval, by simulation (normal cluster and task
effects, clusters of 1-4 tasks; tests/test_cluster_inference.py): within 3 points of 95 % at
6 and at 9 clusters. Vectorised numpy; a batch of data sets shares the weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from usagg.analysis.delta import Comparison
from usagg.analysis.stats import Hypotheses, Stat, alternative, effect_sizes, one_sided, pairs, sided
from usagg.wording import counted

#: Webb's six-point weights: mean 0, variance 1, symmetric.
WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])
#: Fewer clusters than this leave too few distinct weight draws (6^2 = 36) for a p or an interval.
MIN_CLUSTERS = 3
#: What an interval over fewer clusters than the simulated 6 and 9 is worth, by the same simulation (400 studies,
#: 199 draws; tests/test_cluster_inference.py): said beside the interval, which is valid but wide at 3.
FEW_CLUSTERS = {
    3: "3 clusters: wide by construction, simulated coverage 99 %",
    4: "4 clusters: simulated coverage 92-93 %",
    5: "5 clusters: simulated coverage 93-94 %",
}
#: Up to this many Webb draws (6^6: 6 clusters) a result of `wild_cluster_mean` enumerates every one, whatever
#: the resamples asked for: cheap (a fraction of a second), and exact where 2,000 random draws gave the simulated
#: fraction slope's p as 0.018 against the exact 0.0135.
EXACT_DRAWS = 6**6
METHOD = "wild cluster restricted bootstrap-t (Webb weights, CR1 SE, Cameron-Gelbach-Miller 2008)"


@dataclass(frozen=True)
class ClusterMean:
    """Mean over tasks with its wild-cluster interval and p against `null`; a note where none is computed."""

    mean: float | None
    ci: tuple[float, float] | None
    p: float | None
    n: int
    clusters: int
    note: str = ""
    #: The smallest two-sided p the test can give, whatever the data: 6/6^G (the 6 draws whose weights are all
    #: equal give |t*| = |t|): 0.028 at 3 clusters, 0.0046 at 4.
    p_floor: float | None = None
    #: The p's Monte Carlo error where the draws are random (`_mc_error`), for the method text; "" where exact.
    mc: str = ""


@dataclass(frozen=True)
class _Design:
    """Data sets of one cluster layout: y (S, N), the cluster of each column, and the weight draws (B, G)."""

    y: np.ndarray
    sizes: np.ndarray  # (G,) tasks per cluster
    sums: np.ndarray  # (S, G) sum of y per cluster
    weights: np.ndarray  # (B, G)

    @property
    def n(self) -> int:
        return int(self.y.shape[1])

    @property
    def g(self) -> int:
        return int(self.sizes.size)

    def mean_se(self) -> tuple[np.ndarray, np.ndarray]:
        """ȳ and its CR1 standard error, per data set."""
        ybar = self.y.mean(axis=1)
        resid = self.sums - self.sizes[None, :] * ybar[:, None]
        return ybar, np.sqrt(self.g / (self.g - 1) * (resid**2).sum(axis=1)) / self.n

    def pvalue(self, mu0: np.ndarray) -> np.ndarray:
        """Symmetric WCR bootstrap p of H0: μ = mu0, per data set."""
        ybar, se = self.mean_se()
        with np.errstate(divide="ignore", invalid="ignore"):
            # a mean exactly at the null is no evidence against it, even where the clusters' means agree (se 0:
            # 0 / 0 was nan, which no resample reached, p 0)
            t_obs = np.where(ybar == mu0, 0.0, np.abs((ybar - mu0) / se))
            restricted = self.sums - self.sizes[None, :] * mu0[:, None]  # (S, G)
            shift = restricted @ self.weights.T / self.n  # (S, B): ȳ* − μ0
            star = self.weights[None] * restricted[:, None, :] - self.sizes[None, None, :] * shift[..., None]
            se_star = np.sqrt(self.g / (self.g - 1) * (star**2).sum(axis=-1)) / self.n
            t_star = np.abs(shift / se_star)
        return (np.nan_to_num(t_star, nan=0.0) >= t_obs[:, None] - 1e-12).mean(axis=1)


def _design(y: np.ndarray, labels: Sequence[int], resamples: int, seed: int, exact_up_to: int = 0) -> _Design:
    lab = np.asarray(labels, int)
    g = int(lab.max()) + 1
    onehot = np.zeros((lab.size, g))
    onehot[np.arange(lab.size), lab] = 1.0
    return _Design(y, onehot.sum(axis=0), y @ onehot, weight_draws(g, resamples, seed, exact_up_to))


def p_floor(clusters: int) -> float:
    """The smallest two-sided WCR p at `clusters` clusters (see `ClusterMean.p_floor`)."""
    return float(WEBB.size) / WEBB.size**clusters


def draws_text(clusters: int, resamples: int, seed: int) -> str:
    """The draws a wild cluster result used, as its method text says them: every one (exact, no seed) or a sample,
    and the smallest p the test can attain where that is large enough to matter."""
    floor = f", smallest attainable two-sided p 6/6^{clusters} = {p_floor(clusters):.2g}" if 0 < clusters < 6 else ""
    if clusters > 0 and WEBB.size**clusters <= max(resamples, EXACT_DRAWS):
        return f"every one of the {WEBB.size**clusters:,} Webb draws (exact){floor}"
    return f"{resamples} draws, seed {seed}{floor}"


def weight_draws(g: int, resamples: int, seed: int, exact_up_to: int = 0) -> np.ndarray:
    """Every one of the 6^G Webb draws where there are no more than `resamples` (or `exact_up_to`) of them: the
    exact bootstrap distribution (2,000 random draws of the demo's 1,296 moved its p across 0.05 with the seed),
    else `resamples` random draws."""
    if WEBB.size**g <= max(resamples, exact_up_to):
        return np.array(list(itertools.product(WEBB, repeat=g)))
    rng = np.random.default_rng(seed)
    return WEBB[rng.integers(0, WEBB.size, size=(resamples, g))]


def wild_cluster_ci(
    y: np.ndarray,
    labels: Sequence[int],
    resamples: int,
    seed: int,
    level: float = 0.95,
    steps: int = 25,
    exact_up_to: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per row of y (S, N) by inverting the WCR test: clusters `labels` (0..G−1), shared weight draws."""
    d = _design(np.atleast_2d(np.asarray(y, float)), labels, resamples, seed, exact_up_to)
    ybar, se = d.mean_se()
    alpha = 1.0 - level
    ends = []
    for sign in (-1.0, 1.0):
        inside, outside = ybar.copy(), ybar + sign * se
        for _ in range(60):  # step out until rejected (the p at ȳ is 1)
            open_ = d.pvalue(outside) > alpha
            if not open_.any():
                break
            outside = np.where(open_, ybar + 2.0 * (outside - ybar), outside)
        for _ in range(steps):
            mid = (inside + outside) / 2.0
            keep = d.pvalue(mid) > alpha
            inside, outside = np.where(keep, mid, inside), np.where(keep, outside, mid)
        ends.append((inside + outside) / 2.0)
    return ends[0], ends[1]


def wild_cluster_mean(
    y: Sequence[float] | np.ndarray,
    clusters: Sequence[str],
    resamples: int,
    seed: int,
    level: float = 0.95,
    null: float = 0.0,
) -> ClusterMean:
    """Mean of y over tasks, its WCR interval and p against `null`, tasks with one cluster label sharing a weight.

    Finite values only; clusters are sorted by name and values within them, so the result does not depend on
    the order of the rows.
    """
    vals = np.asarray(y, float)
    keep = np.isfinite(vals)
    pairs = sorted((str(c), float(v)) for c, v, k in zip(clusters, vals, keep, strict=True) if k)
    n = len(pairs)
    names = sorted({c for c, _ in pairs})
    if n == 0:
        return ClusterMean(None, None, None, 0, 0, "no values")
    mean = math.fsum(v for _, v in pairs) / n
    if len(names) < MIN_CLUSTERS:
        return ClusterMean(mean, None, None, n, len(names), f"{counted(len(names), 'cluster')}: need ≥ {MIN_CLUSTERS}")
    arr = np.asarray([[v for _, v in pairs]])
    if np.ptp(arr) == 0:
        return ClusterMean(mean, (mean, mean), None, n, len(names), "constant values")
    labels = [names.index(c) for c, _ in pairs]
    d = _design(arr, labels, resamples, seed, EXACT_DRAWS)
    p = float(d.pvalue(np.asarray([null]))[0])
    low, high = wild_cluster_ci(arr, labels, resamples, seed, level, exact_up_to=EXACT_DRAWS)
    few = FEW_CLUSTERS.get(len(names), "")
    mc = _mc_error(p, d.weights.shape[0], len(names))
    return ClusterMean(mean, (float(low[0]), float(high[0])), p, n, len(names), few, p_floor(len(names)), mc)


def _mc_error(p: float, draws: int, clusters: int) -> str:
    """The Monte Carlo error of a p from random draws (none where every draw was enumerated): its 95 % half-width,
    binomial, so that a p of 0.018 from 2,000 draws is read as 0.018 ± 0.006."""
    if WEBB.size**clusters <= draws:
        return ""
    return f"p ± {1.96 * math.sqrt(p * (1 - p) / draws):.2g} (Monte Carlo 95 %, {draws:,} random draws)"


def monte_carlo(r: ClusterMean) -> str:
    """The Monte Carlo error of a result's p as its method text continues it ("" where every draw was used)."""
    return f", {r.mc}" if r.mc else ""


#: Name of the Δm statistic of this module (the stats table, the headline).
MEAN_DELTA = "Δm, wild cluster bootstrap (a clinical group's tasks: one cluster)"
#: The clusters of every mean over tasks: a clinical group's tasks share a model under CG and AU, and an imaging
#: domain under every paradigm (a group-level MoE effect moves TSM's tasks together too: with tasks as clusters,
#: TSM's tests rejected a true null 23-48 % of the time at α 0.05 with a group sd of 1-3 pp).
CLUSTERS = "clinical groups"


def mean_delta_stats(comp: Comparison, resamples: int, seed: int, hypotheses: Hypotheses | None = None) -> list[Stat]:
    """Δm of every paradigm and fraction with its WCR interval and p (H0: Δm = 0), the clinical groups the
    clusters; one-sided where analysis.hypotheses.delta states a direction (the bootstrap-t is symmetric, so the
    one-sided p is half the two-sided one on the stated side: it assumes group effects that are not strongly
    skewed)."""
    out = []
    for f in comp.fractions:
        for p in comp.others:
            names, vals = comp.delta_values(f, p)
            r = wild_cluster_mean(vals, [comp.info(t).group for t in names], resamples, seed)
            alt = alternative(hypotheses, "delta", p)
            pv = None if r.p is None or r.mean is None else one_sided(r.p, r.mean, alt)
            out.append(
                Stat(
                    MEAN_DELTA, p, f, r.mean, r.n,
                    f"{METHOD}; {counted(r.clusters, 'cluster')}: {CLUSTERS}, "
                    f"{draws_text(r.clusters, resamples, seed)}{monte_carlo(r)}, "
                    + sided(alt, "Δm < 0" if alt == "less" else "Δm > 0"),
                    p=pv, ci=r.ci, note=r.note, p_floor=_floor(r, alt), clusters=r.clusters,
                )
            )  # fmt: skip
    return out


def _floor(r: ClusterMean, alt: str) -> float | None:
    """The smallest p of a test as reported: the two-sided floor, halved where the test is one-sided."""
    if r.p is None or r.p_floor is None:
        return None
    return r.p_floor if alt == "two-sided" else r.p_floor / 2


def paired_stats(comp: Comparison, resamples: int, seed: int, hypotheses: Hypotheses | None = None) -> list[Stat]:
    """Each paired comparison (CG-AU, AG-CG, those analysis.hypotheses.paired names) at every fraction."""
    return [
        _paired(comp, f, a, b, alternative(hypotheses, "paired", f"{a}-{b}"), resamples, seed)
        for f in comp.fractions
        for a, b in pairs(comp, hypotheses)
    ]


def _paired(comp: Comparison, f: float, a: str, b: str, alt: str, resamples: int, seed: int) -> Stat:
    """The mean of the per-task differences Δ_a − Δ_b over the tasks both have (each one's exclusions apply), with
    its wild cluster interval and p, a clinical group's tasks one cluster; rank-biserial and Hodges-Lehmann beside
    it."""
    na, va = comp.delta_values(f, a)
    nb, vb = comp.delta_values(f, b)
    db = dict(zip(nb, vb, strict=True))
    tasks = [t for t in na if t in db]
    diff = np.asarray([v - db[t] for t, v in zip(na, va, strict=True) if t in db], float)
    r = wild_cluster_mean(diff, [comp.info(t).group for t in tasks], resamples, seed)
    unit = CLUSTERS
    pv = None if r.p is None or r.mean is None else one_sided(r.p, r.mean, alt)
    return Stat(
        f"paired mean Δ{a} − Δ{b}", f"{a}-{b}", f, r.mean, r.n,
        f"{METHOD} of the mean per-task Δ{a} − Δ{b}; {counted(r.clusters, 'cluster')}: {unit}, "
        f"{draws_text(r.clusters, resamples, seed)}{monte_carlo(r)}, "
        f"{sided(alt, f'{a} below {b}' if alt == 'less' else f'{a} above {b}')}",
        pv, ci=r.ci, note=r.note, effects=effect_sizes(diff) if diff.size else (), p_floor=_floor(r, alt),
        clusters=r.clusters,
    )  # fmt: skip
