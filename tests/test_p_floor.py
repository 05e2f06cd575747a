"""With a few clusters every test has a smallest attainable p, and Holm over a family can put 0.05 out of reach
(audit finding 3): each test states its floor, and the report says when no test of the family can reach α."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagg.analysis.cluster_inference import MEAN_DELTA, wild_cluster_mean
from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.stats import Stat, holm_reach, spearman, spearman_floor, statistics

DEMO = Path(__file__).parent / "data" / "demo_results.csv"
FAR = [50, 51, 49, 52, 48, 50.5, 49.5, 50.2, 51]  # every value far from 0: the strongest evidence the data can give


def test_the_wild_cluster_p_cannot_go_below_six_over_six_to_the_g() -> None:
    """The 6 draws whose weights are all equal give |t*| = |t|: at 4 clusters p ≥ 6/1,296, at 3 ≥ 6/216."""
    four = wild_cluster_mean(FAR, list("aaabbbccd"), 2000, 0)
    assert four.p == pytest.approx(6 / 6**4) and four.p_floor == pytest.approx(6 / 6**4)
    three = wild_cluster_mean(FAR[:8], list("aabbcccc"), 2000, 0)
    assert three.p == pytest.approx(6 / 6**3) and three.p_floor == pytest.approx(0.0278, abs=1e-4)


def test_the_exact_group_spearman_cannot_go_below_two_over_g_factorial() -> None:
    assert spearman_floor(3) == pytest.approx(1 / 3) and spearman_floor(4) == pytest.approx(1 / 12)
    assert spearman_floor(4, "greater") == pytest.approx(1 / 24) and spearman_floor(9) is None
    _, p, _, _ = spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])
    assert p == pytest.approx(spearman_floor(4))  # a perfect ρ reaches the floor, not below


def _tested(n: int, floor: float | None, clusters: int | None = 4) -> list[Stat]:
    return [Stat("t", "AU", 1.0, 1.0, 9, "m", p=0.5, p_floor=floor, clusters=clusters) for _ in range(n)]


def test_holm_out_of_reach_is_said_only_when_it_is() -> None:
    """20 tests with a floor of 6/1,296: Holm's smallest adjusted p is at least 0.093 whatever the data."""
    said = holm_reach(_tested(20, 6 / 6**4), "exploratory")
    assert said.startswith("with 4 clusters (clinical groups) in each test, no test of the exploratory family can ")
    assert "0.0046" in said and "(0.093)" in said and said.endswith("'Holm 1' is not 'no effect'")
    assert holm_reach(_tested(10, 6 / 6**4)) == ""  # 10 × 0.0046 = 0.046: the strongest test could reach it
    assert holm_reach([*_tested(20, 6 / 6**4), *_tested(1, None)]) == ""  # a test with no floor (Wald t)
    # the clusters the tests have, not the study's groups: 3 where a paradigm leaves a one-task group out
    mixed = holm_reach([*_tested(2, 6 / 6**3, 3), *_tested(20, 6 / 6**4)], "exploratory")
    assert mixed.startswith("with 3 to 4 clusters (clinical groups) per test, no test of the exploratory family")
    assert holm_reach(_tested(20, 6 / 6**4, None), "exploratory").startswith("no test of the exploratory family")


def test_the_demo_states_its_floors(tmp_path: Path) -> None:
    """The demo's Δm tests (4 groups, exact) and group Spearman tests carry their floors, in the method text too;
    their family alone (the mixed model's Wald slopes, which have no floor, aside) cannot reach 0.05."""
    from usagg.analysis.cluster_inference import mean_delta_stats

    comp = compare(load_input(None, DEMO))
    dm = [s for s in mean_delta_stats(comp, 2000, 0) if s.p is not None]
    floors = {s.paradigm: s.p_floor for s in dm if s.name == MEAN_DELTA}
    # CG and CGD leave the one-task groups out: 3 clusters
    assert floors == pytest.approx({p: 6 / 6 ** (3 if p in ("CG", "CGD") else 4) for p in comp.others})
    assert "smallest attainable two-sided p 6/6^4 = 0.0046" in {s.paradigm: s for s in dm}["AU"].method
    rho = [s for s in statistics(comp) if s.name.endswith("groups") and s.p is not None]
    assert rho and all(s.p_floor == pytest.approx(2 / (6 if s.paradigm in ("CG", "CGD") else 24)) for s in rho)
    assert "(smallest attainable p 2/4! = 0.083)" in {s.paradigm: s for s in rho}["AU"].method
    assert {s.paradigm: s.clusters for s in dm + rho} == {p: 3 if p in ("CG", "CGD") else 4 for p in comp.others}
    note = holm_reach(dm + rho, "exploratory")
    assert note.startswith("with 3 to 4 clusters (clinical groups) per test, no test of the exploratory family can")
