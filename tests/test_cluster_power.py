"""The smallest Δm compare's wild cluster test detects (audit F10): the simulated test is compare's test, and the
Δm it finds has the power it claims on studies it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from usagg.analysis.cluster_inference import _design, wild_cluster_mean
from usagg.analysis.cluster_power import MeanTestSim, detectable_mean


def _clusters(sizes: tuple[int, ...]) -> list[str]:
    return [f"g{g}" for g, k in enumerate(sizes) for _ in range(k)]


@pytest.mark.slow  # over a second: out of `make test-fast`
@pytest.mark.parametrize(
    ("sizes", "resamples", "dm"), [((1, 2, 1), 10000, 6.0), ((2, 1, 3, 1), 10000, 1.5), ((1,) * 7, 500, 1.0)]
)
def test_the_simulated_test_rejects_where_compares_does(sizes: tuple[int, ...], resamples: int, dm: float) -> None:
    """Study by study, the simulation's verdict at α 0.05 is wild_cluster_mean's p ≤ 0.05 on the same Δs: every
    draw (3 and 4 clusters) or the same random draws (7 clusters, resamples below the simulation's DRAWS)."""
    clusters = _clusters(sizes)
    rng = np.random.default_rng(3)
    ys = dm + rng.normal(size=(60, len(clusters)))
    sim = MeanTestSim.of([1.0] * len(clusters), clusters, resamples, seed=4)
    labels = np.array([int(c[1:]) for c in clusters])
    sums = np.stack([ys[:, labels == g].sum(axis=1) for g in range(len(sizes))], axis=1)
    got = MeanTestSim(sums, sim.sizes, sim.weights).rejects(0.0, 0.05)
    want = [(r := wild_cluster_mean(y, clusters, resamples, 4)).p is not None and r.p <= 0.05 for y in ys]
    assert got.tolist() == want and 5 < sum(want) < 55  # both verdicts occur


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [(1, 1, 1, 1), (2, 1, 3, 2, 1)])
def test_the_detectable_dm_has_80_percent_power_on_fresh_studies(sizes: tuple[int, ...]) -> None:
    """400 new studies at the Δm found, each task's Δ with its own seed sd: compare's test (wild_cluster_mean's
    p, on all of them at once) rejects Δm = 0 in 80 % of them, within 3 standard errors; the z approximation's Δm
    is far smaller."""
    clusters = _clusters(sizes)
    sds = np.linspace(0.5, 1.5, len(clusters))
    dm = detectable_mean(list(sds), clusters, 10000, 0, 0.05, 0.8)
    assert dm is not None
    z = 2.8016 * np.sqrt((sds**2).sum()) / len(clusters)
    assert dm > 1.3 * z  # few clusters: the test needs far more than z says
    rng = np.random.default_rng(11)
    labels = [int(c[1:]) for c in clusters]
    p = _design(dm + sds * rng.normal(size=(400, len(clusters))), labels, 10000, 0).pvalue(np.zeros(400))
    power = float((p <= 0.05).mean())
    assert abs(power - 0.8) <= 3 * np.sqrt(0.8 * 0.2 / 400), power


def test_below_three_clusters_or_out_of_reach_there_is_none() -> None:
    assert detectable_mean([1.0] * 4, _clusters((2, 2)), 10000, 0, 0.05, 0.8) is None
    # at 3 clusters p cannot fall below 6/216 (the draws ∝ (1, 1, 1)): α 0.01 is out of any Δm's reach
    assert detectable_mean([1.0] * 3, _clusters((1, 1, 1)), 10000, 0, 0.01, 0.8) is None
    assert detectable_mean([0.0] * 3, _clusters((1, 1, 1)), 10000, 0, 0.05, 0.8) is None  # not "any Δm": no noise
