"""Task groups from measured affinity (paradigm AG), and how far two groupings agree (Rand index).

The objective is Fifty et al.'s (2021) total inter-task affinity, for a partition: every
task scores the mean affinity onto it from its group mates (a task alone scores 0), and
the partition into exactly `k` groups with the highest total wins. Small problems are
solved exactly (every partition, Stirling S(n, k) of them, up to `EXHAUSTIVE_LIMIT`);
larger ones by a beam search that adds tasks one at a time in order, keeping the
`beam_width` best partial partitions (scored on the tasks placed so far) that can still
open the groups left, then a local search from the beam's best: the best improving move
(one task to another group, never emptying one) or swap (two tasks of different groups),
until none improves. Scoring partial partitions misleads the beam (at 27 tasks in 9 groups
it ends 1.6-8.9 % below what moves and swaps reach on random matrices), and the local search
can only improve on it. Ties go to the partition met first in task order, so the answer is the same on every
machine. Torch-free: numpy, and scikit-learn for the Rand indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np

from usagg.affinity import Affinity

#: Largest number of partitions searched exhaustively (S(9, 4) = 7,770; S(12, 4) = 611,501 goes to the beam).
EXHAUSTIVE_LIMIT = 100_000
#: Partial partitions the beam keeps per step.
BEAM_WIDTH = 256


@dataclass(frozen=True)
class Grouping:
    """The chosen groups (each in task order, groups ordered by their first task), score and how it was found."""

    groups: tuple[tuple[str, ...], ...]
    score: float
    method: str  # "exhaustive (N partitions)" or "beam search (width W, ...) and local search"

    def labels(self) -> dict[str, str]:
        """task -> group label g1, g2, ... (the AG job names)."""
        return {t: f"g{i + 1}" for i, g in enumerate(self.groups) for t in g}


@cache
def stirling2(n: int, k: int) -> int:
    """Number of partitions of n items into exactly k non-empty groups."""
    if n == k:
        return 1
    if k == 0 or k > n:
        return 0
    return k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


def partition_score(z: np.ndarray, assign: tuple[int, ...] | np.ndarray) -> float:
    """Total affinity of a (partial) assignment: sum over placed tasks j of the mean Z[i, j] over mates i != j."""
    labels = np.asarray(assign)
    m = len(labels)
    mates = np.equal.outer(labels, labels)
    np.fill_diagonal(mates, False)
    count = mates.sum(axis=0)
    total = np.where(mates, z[:m, :m], 0.0).sum(axis=0)
    return float((total[count > 0] / count[count > 0]).sum())


def _growth_strings(n: int, k: int) -> Iterator[tuple[int, ...]]:
    """Restricted growth strings of length n using exactly k labels: each partition once, in task order."""

    def rec(prefix: list[int], used: int) -> Iterator[tuple[int, ...]]:
        i = len(prefix)
        if i == n:
            if used == k:
                yield tuple(prefix)
            return
        if k - used > n - i:  # too few tasks left to open the remaining groups
            return
        for label in range(min(used + 1, k)):
            prefix.append(label)
            yield from rec(prefix, max(used, label + 1))
            prefix.pop()

    yield from rec([], 0)


def _beam(z: np.ndarray, n: int, k: int, width: int) -> tuple[int, ...]:
    beam: list[tuple[int, ...]] = [()]
    for i in range(n):
        nxt: list[tuple[float, int, tuple[int, ...]]] = []
        for a in beam:
            used = max(a, default=-1) + 1
            for label in range(min(used + 1, k)):
                b = (*a, label)
                if k - max(used, label + 1) > n - i - 1:
                    continue
                nxt.append((-partition_score(z, b), len(nxt), b))
        nxt.sort()
        beam = [b for _, _, b in nxt[:width]]
    return beam[0]


def _local_search(z: np.ndarray, start: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Best-improvement local search from `start` over moves and swaps that keep exactly k groups; the first of
    equal best neighbours (moves before swaps, in task order) is taken, so the result is deterministic."""
    labels = np.asarray(start)
    n = len(labels)
    current = partition_score(z, labels)
    while True:
        best, best_labels = current + 1e-12, None
        sizes = np.bincount(labels, minlength=k)
        for i in range(n):
            if sizes[labels[i]] == 1:
                continue  # moving it would empty its group
            for g in range(k):
                if g != labels[i]:
                    cand = labels.copy()
                    cand[i] = g
                    s = partition_score(z, cand)
                    if s > best:
                        best, best_labels = s, cand
        for i in range(n):
            for j in range(i + 1, n):
                if labels[i] != labels[j]:
                    cand = labels.copy()
                    cand[i], cand[j] = labels[j], labels[i]
                    s = partition_score(z, cand)
                    if s > best:
                        best, best_labels = s, cand
        if best_labels is None:
            return _canonical(labels)
        labels, current = best_labels, best


def _canonical(labels: np.ndarray) -> tuple[int, ...]:
    """Relabel groups in order of their first task (a restricted growth string)."""
    seen: dict[int, int] = {}
    return tuple(seen.setdefault(int(v), len(seen)) for v in labels)


def choose_groups(
    aff: Affinity, k: int, *, exhaustive_limit: int = EXHAUSTIVE_LIMIT, beam_width: int = BEAM_WIDTH
) -> Grouping:
    """The partition of `aff.tasks` into exactly min(k, n) groups with the highest total affinity onto each task."""
    n = len(aff.tasks)
    if k < 1:
        raise ValueError(f"a grouping needs at least one group, got k={k}")
    k = min(k, n)
    z = np.asarray(aff.matrix, dtype=np.float64)
    count = stirling2(n, k)
    if count <= exhaustive_limit:
        best: tuple[int, ...] = ()
        best_score = -np.inf
        for a in _growth_strings(n, k):
            s = partition_score(z, a)
            if s > best_score + 1e-12:
                best, best_score = a, s
        method = f"exhaustive ({count:,} partitions)"
    else:
        best = _local_search(z, _beam(z, n, k, beam_width), k)
        best_score = partition_score(z, best)
        method = f"beam search (width {beam_width}, {count:.3g} partitions in all) and local search"
    groups = tuple(tuple(t for t, g in zip(aff.tasks, best, strict=True) if g == label) for label in range(k))
    return Grouping(groups, float(best_score), method)


def _labels(a: dict[str, str], b: dict[str, str]) -> tuple[list[str], list[str]]:
    """The two groupings' labels over the same tasks, in one task order."""
    if set(a) != set(b):
        raise ValueError(f"groupings over different tasks: {sorted(set(a) ^ set(b))}")
    tasks = sorted(a)
    return [a[t] for t in tasks], [b[t] for t in tasks]


def rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Share of task pairs both groupings treat alike (together in both, or apart in both); 1.0 is identical."""
    from sklearn.metrics import rand_score

    return float(rand_score(*_labels(a, b)))


def adjusted_rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Rand index corrected for chance (Hubert and Arabie 1985): 0 for random groupings, 1 for identical."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(*_labels(a, b)))
