"""The smallest Δm the wild cluster test of Δm detects (usagg/analysis/cluster_inference.py): its power simulated.

No formula holds at a study's few clinical groups. For one-task groups of seed sd 1, the z approximation's Δm
detected with power 0.8 is 1.6 at three groups and 1.4 at four, where the wild cluster restricted bootstrap-t
(216 and 1,296 Webb draws) gets there at about 11.5 and 2.8; at six groups of two tasks, 0.97 against 0.81
(simulated, 2,000 studies). So the power here is the test's own: `STUDIES` simulated studies draw every task's Δ as
the true Δm plus normal seed noise of the task's sd, the test runs on each with the weight draws compare uses
(every one of the 6^G where analysis.bootstrap covers them; else, compare's being random then too, the first
`DRAWS` of the same seed's), and the smallest Δm that `power` of them reject at α (their interval excludes 0,
before Holm's adjustment) is found by bisection on the same noise throughout. Seed noise only: a true Δ that
differs between groups adds to what the test must see through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from usagg.analysis.cluster_inference import MIN_CLUSTERS, WEBB, weight_draws

#: Simulated studies: the power's Monte Carlo error is about 1.3 points at 0.8, a few % of the Δm found.
STUDIES = 1000
#: Weight draws where compare's are random (more than 5 clusters at the default 10,000 resamples).
DRAWS = 1000
_HALVINGS = 7  # of the bracket [Δ/2, Δ]: to 0.4 % of Δm, inside the Monte Carlo error
_SEED = 20261207  # of the simulated noise, so the same plan prints the same Δm


@dataclass(frozen=True)
class MeanTestSim:
    """Simulated studies of one cluster layout: each study's seed noise summed per cluster, and the weight draws."""

    noise: np.ndarray  # (S, G)
    sizes: np.ndarray  # (G,) tasks per cluster
    weights: np.ndarray  # (B, G)

    @classmethod
    def of(cls, sds: Sequence[float], clusters: Sequence[str], resamples: int, seed: int) -> MeanTestSim:
        """The studies for tasks whose Δ has seed sd `sds`, in `clusters` (sorted by name, as wild_cluster_mean
        orders them), tested with the draws of analysis.bootstrap `resamples` and bootstrap_seed `seed`."""
        names = sorted(set(clusters))
        var = np.zeros(len(names))
        sizes = np.zeros(len(names))
        for c, sd in zip(clusters, sds, strict=True):
            var[names.index(c)] += sd**2
            sizes[names.index(c)] += 1
        noise = np.sqrt(var) * np.random.default_rng(_SEED).standard_normal((STUDIES, len(names)))
        if WEBB.size ** len(names) > resamples:
            return cls(noise, sizes, weight_draws(len(names), min(resamples, DRAWS), seed))
        # every draw: w and −w give the same |t*|, so half of them (first weight > 0) give the same p at half the work
        every = weight_draws(len(names), resamples, seed)
        return cls(noise, sizes, every[every[:, 0] > 0])

    def rejects(self, delta: float, alpha: float) -> np.ndarray:
        """Whether each study's test rejects H0: Δm = 0 at α (p ≤ α: its interval excludes 0) when every task's
        true Δ is `delta`: cluster_inference._Design.pvalue on the cluster sums, with its bootstrap sum of squares
        Σ_g (w_g r_g − n_g·shift)² expanded into (S, G) x (G, B) products and |t*| ≥ |t| compared squared, so that
        no (S, B, G) array, square root or division is formed."""
        n, g, w = float(self.sizes.sum()), self.sizes.size, self.weights
        sums = self.noise + self.sizes * delta  # the restricted residuals' cluster sums under μ0 = 0
        ybar = sums.sum(axis=1) / n
        cr1 = g / (g - 1) / n**2
        se = np.sqrt(cr1 * ((sums - self.sizes * ybar[:, None]) ** 2).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_obs = np.abs(ybar) / se  # se 0 only where every cluster's mean agrees exactly
        shift = sums @ w.T / n  # (S, B): ȳ* − μ0
        squares = (sums**2) @ (w**2).T - 2.0 * shift * (sums @ (w * self.sizes).T) + shift**2 * (self.sizes**2).sum()
        floor = (np.maximum(t_obs - 1e-12, 0.0) ** 2 * cr1)[:, None]  # the tolerance of _Design.pvalue
        p = (shift**2 >= floor * np.maximum(squares, 0.0)).mean(axis=1)
        return p <= alpha

    def least_p(self) -> float:
        """The p no study goes below: the share of draws ∝ (1, ..., 1), whose |t*| is |t| on any data (6 of 216
        at 3 clusters); a test at an α below it never rejects."""
        return float((np.ptp(self.weights, axis=1) == 0).mean())

    def power(self, delta: float, alpha: float) -> float:
        """The share of the studies whose test rejects at `delta`."""
        return float(self.rejects(delta, alpha).mean())


def detectable_mean(
    sds: Sequence[float], clusters: Sequence[str], resamples: int, seed: int, alpha: float, power: float
) -> float | None:
    """The smallest true Δm (every task's Δ the same) the wild cluster test rejects at α with `power`, each task's
    Δ with seed noise of sd `sds`; None below MIN_CLUSTERS clusters, where the test is not computed, where no Δm
    reaches `power` (α below `MeanTestSim.least_p`), and without seed noise (0 would read as any Δm detectable)."""
    if len(set(clusters)) < MIN_CLUSTERS:
        return None
    se = math.sqrt(math.fsum(s**2 for s in sds)) / len(sds)
    if se == 0:
        return None
    sim = MeanTestSim.of(sds, clusters, resamples, seed)
    if sim.least_p() > alpha:
        return None
    lo, hi = 0.0, (NormalDist().inv_cdf(1.0 - alpha / 2.0) + NormalDist().inv_cdf(power)) * se  # from z's Δm
    while sim.power(hi, alpha) < power:  # power rises to 1: p falls to least_p as Δm outgrows the noise
        lo, hi = hi, 2.0 * hi
    for _ in range(_HALVINGS):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if sim.power(mid, alpha) < power else (lo, mid)
    return hi
