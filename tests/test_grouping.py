"""AG's group search and the agreement of groupings (usagg/grouping.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from usagg.affinity import Affinity
from usagg.grouping import _beam, adjusted_rand_index, choose_groups, partition_score, rand_index, stirling2


def _aff(z: np.ndarray) -> Affinity:
    return Affinity([f"t{i}" for i in range(len(z))], z.tolist())


def _brute_force(z: np.ndarray, k: int) -> float:
    """The best total over every assignment of labels 0..k-1 using all k (a different enumeration)."""
    n = len(z)
    best = -np.inf
    for labels in itertools.product(range(k), repeat=n):
        if len(set(labels)) == k:
            best = max(best, partition_score(z, labels))
    return best


def test_stirling_numbers() -> None:
    assert [stirling2(9, k) for k in range(1, 6)] == [1, 255, 3025, 7770, 6951]
    assert stirling2(4, 5) == 0 and stirling2(3, 3) == 1


def test_score_is_the_mean_affinity_onto_each_task_from_its_mates() -> None:
    z = np.array([[0, 0.2, 0.4], [0.6, 0, -0.2], [0.1, 0.3, 0]])
    # groups {0, 1}, {2}: onto 0 from 1 is 0.6, onto 1 from 0 is 0.2, task 2 alone scores 0
    assert partition_score(z, (0, 0, 1)) == pytest.approx(0.8)
    # one group: onto 0 mean(0.6, 0.1), onto 1 mean(0.2, 0.3), onto 2 mean(0.4, -0.2)
    assert partition_score(z, (0, 0, 0)) == pytest.approx(0.35 + 0.25 + 0.1)


def test_exhaustive_recovers_a_planted_grouping() -> None:
    rng = np.random.default_rng(0)
    planted = [0, 0, 0, 1, 1, 2, 2, 2, 3]
    z = np.where(np.equal.outer(planted, planted), 0.4, -0.2) + rng.normal(0, 0.05, (9, 9))
    g = choose_groups(_aff(z), 4)
    assert g.groups == (("t0", "t1", "t2"), ("t3", "t4"), ("t5", "t6", "t7"), ("t8",))
    assert g.method.startswith("exhaustive (7,770")
    assert g.labels()["t8"] == "g4"


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_and_beam_find_the_brute_force_optimum(seed: int) -> None:
    z = np.random.default_rng(seed).normal(0, 1, (7, 7))
    best = _brute_force(z, 3)
    assert choose_groups(_aff(z), 3).score == pytest.approx(best)
    assert choose_groups(_aff(z), 3, exhaustive_limit=0, beam_width=64).score == pytest.approx(best)


def test_beam_search_on_27_tasks_finds_planted_groups_quickly() -> None:
    rng = np.random.default_rng(1)
    planted = [i % 7 for i in range(27)]
    z = np.where(np.equal.outer(planted, planted), 0.5, -0.1) + rng.normal(0, 0.05, (27, 27))
    g = choose_groups(_aff(z), 7)
    assert g.method.startswith("beam search")
    got = {t: lab for t, lab in g.labels().items()}
    assert adjusted_rand_index(got, {f"t{i}": str(p) for i, p in enumerate(planted)}) == 1.0


CASES = [(n, k, seed) for n in range(4, 10) for k in range(2, min(5, n - 1) + 1) for seed in range(3)]


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_beam_and_local_search_is_optimal_wherever_every_partition_can_be_tried(n: int, k: int, seed: int) -> None:
    z = np.random.default_rng(1000 * n + 10 * k + seed).normal(0, 1, (n, n))
    every = choose_groups(_aff(z), k)
    assert every.method.startswith("exhaustive")
    searched = choose_groups(_aff(z), k, exhaustive_limit=0)
    assert searched.method.endswith("and local search")
    assert searched.score == pytest.approx(every.score, abs=1e-9)
    assert len(searched.groups) == k and sorted(t for g in searched.groups for t in g) == sorted(_aff(z).tasks)


def _improving_neighbour(z: np.ndarray, labels: list[int], k: int) -> bool:
    """Whether any move (not emptying a group) or swap of `labels` scores higher (written apart from grouping.py)."""
    base = partition_score(z, tuple(labels))
    for i in range(len(labels)):
        for g in range(k):
            moved = labels.copy()
            moved[i] = g
            if len(set(moved)) == k and partition_score(z, tuple(moved)) > base + 1e-9:
                return True
        for j in range(i + 1, len(labels)):
            swapped = labels.copy()
            swapped[i], swapped[j] = labels[j], labels[i]
            if partition_score(z, tuple(swapped)) > base + 1e-9:
                return True
    return False


@pytest.mark.slow  # over a second: out of `make test-fast`
@pytest.mark.parametrize("seed", range(3))
def test_local_search_improves_the_beam_at_27_tasks_in_9_groups(seed: int) -> None:
    """The issue's finding: the beam alone stops below what moves and swaps reach; after the local search no move or
    swap improves and the score is never below the beam's."""
    z = np.random.default_rng(seed).normal(0, 1, (27, 27))
    beam = partition_score(z, _beam(z, 27, 9, 256))
    g = choose_groups(_aff(z), 9)
    index = {t: i for i, grp in enumerate(g.groups) for t in grp}
    labels = [index[f"t{i}"] for i in range(27)]
    assert g.score == pytest.approx(partition_score(z, tuple(labels)))
    assert g.score > 1.03 * beam
    assert not _improving_neighbour(z, labels, 9)


def test_more_groups_than_tasks_leaves_each_alone() -> None:
    g = choose_groups(_aff(np.ones((3, 3))), 5)
    assert g.groups == (("t0",), ("t1",), ("t2",)) and g.score == 0.0


def test_rand_index_and_adjusted_rand_by_hand() -> None:
    a = {"w": "0", "x": "0", "y": "1", "z": "1"}
    b = {"w": "A", "x": "A", "y": "B", "z": "C"}
    # 6 pairs; only (y, z) is together in a and apart in b
    assert rand_index(a, b) == pytest.approx(5 / 6)
    # contingency [[2, 0, 0], [0, 1, 1]]: index 1, row pairs 2, column pairs 1, expected 2 * 1 / 6, max 1.5
    assert adjusted_rand_index(a, b) == pytest.approx((1 - 1 / 3) / (1.5 - 1 / 3))
    assert rand_index(a, a) == 1.0 and adjusted_rand_index(a, {k: v + "!" for k, v in a.items()}) == 1.0
    with pytest.raises(ValueError, match="different tasks"):
        rand_index(a, {"w": "0"})
