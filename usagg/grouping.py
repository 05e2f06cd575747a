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
machine. The exhaustive search scores every partition at once (a weight per ordered pair and partition, one matrix
product), so it can be repeated for many matrices: `grouping_stability` reruns it on circular block bootstrap
resamples of the affinity's measurements (runs of consecutive measurements along training, `resampled_matrices`) to
say how far the measured affinity determines AG's groups. The Rand indices count pairs
in numpy (scikit-learn's formulas; importing it took longer than the whole stability). Torch-free: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from usagg.affinity import Affinity

#: Largest number of partitions searched exhaustively (S(9, 4) = 7,770; S(12, 4) = 611,501 goes to the beam).
EXHAUSTIVE_LIMIT = 100_000
#: Partial partitions the beam keeps per step.
BEAM_WIDTH = 256
#: The exhaustive limit of each AG `search` setting (AGSettings.search): auto, always exhaustive, always the beam.
SEARCH_LIMITS = {"auto": EXHAUSTIVE_LIMIT, "exhaustive": 10**12, "beam": 0}
#: Tie margin: a later partition wins only when it scores more than this above the best so far.
TIE = 1e-12
#: Bootstrap resamples `grouping_stability` draws.
STABILITY_DRAWS = 200
#: Fewest blocks a draw joins (`block_length`): a job of fewer than 2 * 4 measurements is drawn one at a time.
BLOCKS_PER_DRAW = 4
#: Most weights x draws (partitions * tasks**2 * draws) `grouping_stability` multiplies out: about 1 s on one core.
STABILITY_WORK_LIMIT = 3 * 10**9
#: Weights (partitions * tasks**2) scored per chunk of the exhaustive search: 16 MB of float64.
_CHUNK = 2**21


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
        parts = _partitions(n, k)
        best = tuple(int(v) for v in parts[_first_best(_exhaustive_scores(z[None], parts))[0]])
        method = f"exhaustive ({count:,} partitions)"
    else:
        best = _local_search(z, _beam(z, n, k, beam_width), k)
        method = f"beam search (width {beam_width}, {count:.3g} partitions in all) and local search"
    groups = tuple(tuple(t for t, g in zip(aff.tasks, best, strict=True) if g == label) for label in range(k))
    return Grouping(groups, partition_score(z, best), method)


@cache
def _partitions(n: int, k: int) -> np.ndarray:
    """Every partition of n tasks into k groups as a row of group labels (restricted growth strings, in the order
    the search meets them); read-only, as it is shared between calls."""
    parts = np.array(list(_growth_strings(n, k)), dtype=np.intp).reshape(-1, n)
    parts.flags.writeable = False
    return parts


def _exhaustive_scores(zs: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """`partition_score` of every partition under each of the matrices zs [B, n, n], as [partitions, B]: a partition
    is a weight 1/(mates of j) on each pair (i, j) of group mates, so all of them score in one matrix product per
    chunk (chunks bound the memory to `_CHUNK` weights)."""
    b, n, _ = zs.shape
    flat = zs.reshape(b, n * n).T
    out = np.empty((len(parts), b))
    rows = max(1, _CHUNK // (n * n))
    for start in range(0, len(parts), rows):
        a = parts[start : start + rows]
        mates = a[:, :, None] == a[:, None, :]
        mates[:, np.arange(n), np.arange(n)] = False
        weights = mates / np.maximum(mates.sum(axis=1), 1)[:, None, :]
        out[start : start + rows] = weights.reshape(len(a), n * n) @ flat
    return out


def _first_best(scores: np.ndarray) -> np.ndarray:
    """For each column of scores [partitions, B], the partition the search keeps: walking in order, a later one
    replaces the best so far only when it scores more than `TIE` above it, so near-ties go to the first met. Only a
    partition above every earlier one can ever replace the best, so the walk visits those alone."""
    prior = np.maximum.accumulate(scores, axis=0)
    rising = np.vstack([np.ones((1, scores.shape[1]), dtype=bool), scores[1:] > prior[:-1]])
    chosen = np.empty(scores.shape[1], dtype=np.intp)
    for col in range(scores.shape[1]):
        best = 0
        for row in np.flatnonzero(rising[:, col]):
            if scores[row, col] > scores[best, col] + TIE:
                best = int(row)
        chosen[col] = best
    return chosen


def _codes(a: dict[str, str], b: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The two groupings over the same tasks, in one task order, as integer codes (labels of any kind)."""
    if set(a) != set(b):
        raise ValueError(f"groupings over different tasks: {sorted(set(a) ^ set(b))}")
    tasks = sorted(a)

    def codes(g: dict[str, str]) -> np.ndarray:
        return np.unique([str(g[t]) for t in tasks], return_inverse=True)[1]

    return codes(a), codes(b)


def _together(labels: np.ndarray) -> np.ndarray:
    """For labels [..., n], whether each pair i < j shares a group: [..., n (n - 1) / 2]."""
    i, j = np.triu_indices(labels.shape[-1], 1)
    return labels[..., i] == labels[..., j]


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairs together in both, only in b, only in a, apart in both, for pair flags a [P] against b [..., P]."""
    return (b & a).sum(-1), (b & ~a).sum(-1), (~b & a).sum(-1), (~b & ~a).sum(-1)


def _ari(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Adjusted Rand index from pair flags (scikit-learn's `adjusted_rand_score` formula, 1.0 where no pair is
    placed differently), for a [P] against each row of b [..., P]."""
    tp, fp, fn, tn = (c.astype(np.float64) for c in _pair_counts(a, b))
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    with np.errstate(divide="ignore", invalid="ignore"):
        ari = 2.0 * (tp * tn - fn * fp) / denom
    return np.where((fp == 0) & (fn == 0), 1.0, ari)


def rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Share of task pairs both groupings treat alike (together in both, or apart in both); 1.0 is identical."""
    x, y = (_together(c) for c in _codes(a, b))
    return float((x == y).mean()) if x.size else 1.0


def adjusted_rand_index(a: dict[str, str], b: dict[str, str]) -> float:
    """Rand index corrected for chance (Hubert and Arabie 1985): 0 for random groupings, 1 for identical."""
    x, y = (_together(c) for c in _codes(a, b))
    return float(_ari(x, y))


@dataclass(frozen=True)
class Stability:
    """How far the measured affinity determines a grouping: block bootstrap resamples of its measurements, regrouped."""

    draws: int
    measurements: tuple[int, ...]  # kept per measuring job (seeds), each resampled within its job
    same: float = math.nan  # share of draws whose search chose exactly the grouping
    mean_ari: float = math.nan  # mean adjusted Rand index of the draws' groupings against it
    together: dict[tuple[str, str], float] = field(default_factory=dict)  # its within-group pairs -> share together
    not_computed: str = ""  # why not, where it would take too long (the numbers are then NaN)
    blocks: tuple[int, ...] = ()  # per measuring job, the block length its resamples drew (`block_length`)


def block_length(m: int) -> int:
    """The block length for a job of `m` measurements: the smallest b with b**3 >= m (ceil(m ** (1/3)) in integers,
    so 27 gives 3 on every machine), at most m // `BLOCKS_PER_DRAW`, at least 1. The m ** (1/3) rate is the order of
    the block length that estimates a mean's variance best under dependence (Hall, Horowitz and Jing 1995); its
    constant is not estimated from a job's few measurements. The cap: a circular block bootstrap narrows the spread
    of independent measurements by about (b - 1) / (m - 1) in variance, and with fewer than 4 blocks a draw gains
    too little to pay for that (5 measurements in blocks of 2, median sd ratio to the i.i.d. bootstrap over 20
    simulated series: 0.99 for a random walk, 0.89 for independent measurements), so below 8 measurements
    (`every: auto` takes 5) it is 1, the i.i.d. bootstrap. 8-11 measurements: 2; 12-27: 3; 28-64: 4."""
    b = 1
    while b**3 < m:
        b += 1
    return max(1, min(b, m // BLOCKS_PER_DRAW))


def block_indices(m: int, block: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Circular block bootstrap indices [draws, m] (Politis and Romano 1992) into `m` measurements in their recorded
    order: ceil(m / block) block starts per draw, uniform over all m positions, each start followed by the next
    block - 1 measurements (past the last one the run wraps to the first), the blocks joined and cut to m. Every
    measurement is drawn once per draw on average, so the resampled sums are centred on the record's (a moving-block
    bootstrap, without the wrap, draws the first and last measurements less often, and the loss level drifts along
    training). Block 1 is the i.i.d. bootstrap, `rng.integers(0, m, (draws, m))`: the same numbers from the same
    generator."""
    if not 1 <= block <= m:
        raise ValueError(f"block length {block} for {m} measurements")
    starts = rng.integers(0, m, size=(draws, -(-m // block)))
    return ((starts[:, :, None] + np.arange(block)) % m).reshape(draws, -1)[:, :m]


def resampled_matrices(aff: Affinity, draws: int, seed: int, block: int | None = None) -> np.ndarray:
    """`draws` bootstrap matrices [draws, n, n]: per job, its measurements resampled in circular blocks of
    consecutive measurements (`block_indices`; `block` long, else `block_length` of the job's count; 1: i.i.d.),
    Z recomputed from the resampled sums as the engine does (1 - sum after / sum base, the base clamped at 1e-12),
    then averaged over jobs as `mean_affinity` does.

    A job's kept losses are in training order: the engine appends each measurement as it takes it
    (usagg/engine/affinity.py `LookaheadAffinity.measure`, at increasing steps), a resumed job's checkpoint gives back
    the list it had, and the record writes it as kept. So a block is a run of measurements at consecutive points of
    training, and the draw keeps their serial dependence (consecutive measurements share most of the weights; the loss
    level drifts), which an i.i.d. draw of single measurements breaks, understating the spread. It still assumes the
    dependence is short against the block and alike along training (stationary), and a wrapped block joins the last
    measurement to the first. One seeded generator, jobs in order: the same matrices on every machine."""
    rng = np.random.default_rng(seed)
    n = len(aff.tasks)
    total = np.zeros((draws, n, n))
    for base, after in zip(aff.base_losses, aff.after_losses, strict=True):
        b, a = np.asarray(base, dtype=np.float64), np.asarray(after, dtype=np.float64)
        pick = block_indices(len(b), block_length(len(b)) if block is None else block, draws, rng)
        total += 1.0 - a[pick].sum(axis=1) / np.maximum(b[pick].sum(axis=1), 1e-12)[:, None, :]
    return total / len(aff.base_losses)


def grouping_stability(
    aff: Affinity,
    k: int,
    groups: Sequence[Sequence[str]] | None = None,
    *,
    draws: int = STABILITY_DRAWS,
    seed: int = 0,
    exhaustive_limit: int = EXHAUSTIVE_LIMIT,
) -> Stability | None:
    """Whether `groups` (default: `choose_groups` on the record) survive the affinity's own measurement noise: the
    exhaustive search rerun on `draws` block bootstrap resamples of the measurements (`resampled_matrices`, runs of
    `block_length` consecutive measurements per job, recorded in `Stability.blocks`). None when a
    job kept fewer than 2 measurements (nothing to resample); not computed where AG's search was a beam search
    (each draw would repeat it: 0.1 s at 12 tasks, more beyond) or the partitions times draws are too many."""
    counts = tuple(len(b) for b in aff.base_losses)
    if not counts or min(counts) < 2:
        return None
    blocks = tuple(block_length(m) for m in counts)
    n = len(aff.tasks)
    k = min(k, n)
    chosen = choose_groups(aff, k, exhaustive_limit=exhaustive_limit).groups if groups is None else groups
    label = {t: g for g, members in enumerate(chosen) for t in members}
    if sorted(label) != sorted(aff.tasks) or len(chosen) != k:
        raise ValueError(f"the grouping {chosen} is not a partition of {aff.tasks} into {k} groups")
    count = stirling2(n, k)
    if count > exhaustive_limit:
        why = f"AG's search was a beam search ({count:.3g} partitions), too slow to repeat in each of {draws} draws"
        return Stability(draws, counts, not_computed=why, blocks=blocks)
    if count * n * n * draws > STABILITY_WORK_LIMIT:
        why = f"{count:,} partitions of {n} tasks scored in each of {draws} draws would take too long"
        return Stability(draws, counts, not_computed=why, blocks=blocks)
    parts = _partitions(n, k)
    picked = parts[_first_best(_exhaustive_scores(resampled_matrices(aff, draws, seed), parts))]
    mine = np.array(_canonical(np.array([label[t] for t in aff.tasks])))
    pairs, within = _together(picked), _together(mine)
    i, j = np.triu_indices(n, 1)
    return Stability(
        draws,
        counts,
        same=float((picked == mine).all(axis=1).mean()),
        mean_ari=float(_ari(within, pairs).mean()),
        together={
            (aff.tasks[a], aff.tasks[b]): float(v)
            for a, b, v, w in zip(i, j, pairs.mean(axis=0), within, strict=True)
            if w
        },
        blocks=blocks,
    )
