"""Task groups from measured affinity (paradigm AG), and how far two groupings agree (Rand index).

The objective is Fifty et al.'s (2021) total inter-task affinity, for a partition: every
task scores the mean affinity onto it from its group mates (a task alone scores 0), and
the partition into exactly `k` groups with the highest total wins. Small problems are
solved exactly (every partition, Stirling S(n, k) of them, up to `EXHAUSTIVE_LIMIT`);
larger ones by a beam search that adds tasks one at a time in order, keeping the
`beam_width` best partial partitions (scored on the tasks placed so far) that can still
open the groups left. Ties go to the partition met first in task order, so the answer is
the same on every machine. Torch-free, numpy only.
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
    method: str  # "exhaustive (N partitions)" or "beam search (width W)"

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


def partition_score(z: np.ndarray, assign: tuple[int, ...]) -> float:
    """Total affinity of a (partial) assignment: sum over placed tasks j of the mean Z[i, j] over mates i != j."""
    total = 0.0
    labels = np.asarray(assign)
    m = len(assign)
    for j in range(m):
        mates = [i for i in range(m) if i != j and labels[i] == labels[j]]
        if mates:
            total += float(z[mates, j].mean())
    return total


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


def _beam(z: np.ndarray, n: int, k: int, width: int) -> tuple[tuple[int, ...], float]:
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
    best = beam[0]
    return best, partition_score(z, best)


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
        best, best_score = (), -np.inf
        for a in _growth_strings(n, k):
            s = partition_score(z, a)
            if s > best_score + 1e-12:
                best, best_score = a, s
        method = f"exhaustive ({count:,} partitions)"
    else:
        best, best_score = _beam(z, n, k, beam_width)
        method = f"beam search (width {beam_width}, {count:.3g} partitions in all)"
    groups = tuple(tuple(t for t, g in zip(aff.tasks, best, strict=True) if g == label) for label in range(k))
    return Grouping(groups, float(best_score), method)


def _pairs_agree(a: dict[str, str], b: dict[str, str]) -> tuple[int, int, list[str]]:
    tasks = sorted(set(a) & set(b))
    if set(a) != set(b):
        raise ValueError(f"groupings over different tasks: {sorted(set(a) ^ set(b))}")
    agree = sum((a[x] == a[y]) == (b[x] == b[y]) for i, x in enumerate(tasks) for y in tasks[i + 1 :])
    return agree, len(tasks) * (len(tasks) - 1) // 2, tasks


def rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Share of task pairs both groupings treat alike (together in both, or apart in both); 1.0 is identical."""
    agree, pairs, _ = _pairs_agree(a, b)
    return agree / pairs if pairs else 1.0


def adjusted_rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Rand index corrected for chance (Hubert and Arabie 1985): 0 for random groupings, 1 for identical."""
    _, pairs, tasks = _pairs_agree(a, b)
    if pairs == 0:
        return 1.0
    la, lb = sorted(set(a.values())), sorted(set(b.values()))
    table = np.zeros((len(la), len(lb)), dtype=np.int64)
    for t in tasks:
        table[la.index(a[t]), lb.index(b[t])] += 1

    def comb2(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    index = comb2(table)
    ra, rb = comb2(table.sum(axis=1)), comb2(table.sum(axis=0))
    expected = ra * rb / pairs
    top = (ra + rb) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)
