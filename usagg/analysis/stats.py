"""Tests of Δ: Spearman ρ versus data scale, Wilcoxon signed-rank against 0, paired paradigms, effect sizes,
and the Holm correction (within the primary and the exploratory family: usagg/analysis/families.py).

Every result carries its n and method, and small samples give a note ("n too small")
rather than an exception or a meaningless p. A test is two-sided unless
analysis.hypotheses states a direction for it (usagg/spec/models/analysis.py, `Hypotheses`).

The tasks of a clinical group are not independent: under CG and AU they share a model, under every
paradigm an imaging domain, and their Δ move together. A task-level rank test then rejects a true null
far more often than its level (Wilcoxon 0.4 at α 0.05 with a group sd of 3 pp; Spearman 0.1-0.3 when
data size differs by group), so the task-level Spearman and Wilcoxon are descriptive (value and effect
sizes, no p) and the inference is cluster-robust, a clinical group one cluster: Δm's wild cluster test
(usagg/analysis/cluster_inference.py), the group-level Spearman, the mixed model's slope
(usagg/analysis/mixed.py), and a paired comparison's wild cluster test of the mean difference.
scipy and statsmodels are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from usagg.analysis.delta import Comparison
from usagg.wording import counted

MIN_N_SPEARMAN = 3
#: Non-zero pairs a Wilcoxon test needs: with fewer even a perfect split cannot reach p < 0.05 (exact test).
MIN_N_WILCOXON = 6
#: The paired comparison always made when both paradigms are present (more via analysis.hypotheses.paired).
DEFAULT_PAIRS = (("CG", "AU"), ("AG", "CG"))
Hypotheses = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Stat:
    """One statistic: value (ρ, W, mean or slope), p or CI where it has one, n, method, a note when not computed.

    `p_holm` is p after the Holm correction within its `family` (primary or exploratory: families.py); `effects` are
    named effect sizes beside the value (rank-biserial r, Hodges-Lehmann estimate, sd);
    `task` is set for a per-task statistic (the uncertainty of one task's Δ).
    """

    name: str
    paradigm: str
    fraction: float
    value: float | None
    n: int
    method: str
    p: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""
    p_holm: float | None = None
    effects: tuple[tuple[str, float], ...] = ()
    task: str = ""
    #: The smallest p the test can give whatever the data (few clusters or groups), as reported (one-sided halved).
    p_floor: float | None = None
    #: The clusters (clinical groups) a test with a `p_floor` rests on: G of the wild cluster test's floor 6/6^G,
    #: the groups of an exact group Spearman's 2/G! (fewer than the study's where a paradigm leaves a group out).
    clusters: int | None = None
    #: The Holm family of a test with a p: "primary" (confirmatory) or "exploratory"; "" without a p.
    family: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stat:
        """The inverse of dataclasses.asdict after a JSON round trip (lists back to tuples)."""
        ci = tuple(d["ci"]) if d.get("ci") is not None else None
        effects = tuple((str(k), float(v)) for k, v in d.get("effects") or ())
        return cls(**{**d, "ci": ci, "effects": effects})


def alternative(hypotheses: Hypotheses | None, family: str, key: str) -> str:
    """The direction analysis.hypotheses states for a test (`delta`, `scale`, `paired`), else two-sided."""
    return (hypotheses or {}).get(family, {}).get(key, "two-sided")


def sided(alt: str, meaning: str = "") -> str:
    """Method text of a direction: 'two-sided' or 'one-sided (greater: ρ > 0)'."""
    return "two-sided" if alt == "two-sided" else f"one-sided ({alt}{': ' + meaning if meaning else ''})"


def _too_small(n: int, need: int) -> str:
    return f"n too small (n={n}, need ≥{need})"


#: Up to this many pairs the p of ρ is exact (every ordering of y, 8! = 40,320); scipy's t approximation gives
#: p = 0 for ρ = ±1 at n = 3, where the exact two-sided p is 1/3.
EXACT_SPEARMAN = 8


def spearman(x: np.ndarray, y: np.ndarray, alt: str = "two-sided") -> tuple[float | None, float | None, int, str]:
    """Spearman ρ and its p over finite pairs, exact up to `EXACT_SPEARMAN` pairs; (None, None, n, note) when
    undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < MIN_N_SPEARMAN:
        return None, None, n, _too_small(n, MIN_N_SPEARMAN)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None, n, "undefined: every value is the same"
    from scipy.stats import spearmanr

    res = spearmanr(x, y, alternative=alt)
    rho = float(res.statistic)
    return rho, (_exact_spearman_p(x, y, rho, alt) if n <= EXACT_SPEARMAN else float(res.pvalue)), n, ""


def _rho_method(n: int, alt: str = "two-sided") -> str:
    """How the p of a ρ over `n` pairs was found, with the smallest p an exact test can attain."""
    if n > EXACT_SPEARMAN:
        return "scipy.stats.spearmanr, p from its t approximation"
    floor = spearman_floor(n, alt)
    exact = "scipy.stats.spearmanr, p exact over every ordering of the pairs"
    if floor is None:  # too few pairs for a p at all
        return exact
    return f"{exact} (smallest attainable p {'2' if alt == 'two-sided' else '1'}/{n}! = {floor:.2g})"


def spearman_floor(n: int, alt: str = "two-sided") -> float | None:
    """The smallest exact permutation p of ρ over `n` pairs: 2/n! two-sided (ρ = ±1), 1/n! one-sided (at 4 clinical
    groups 1/12: no such test reaches 0.05 after Holm over more than one test); None where the p is not exact."""
    if n > EXACT_SPEARMAN or n < MIN_N_SPEARMAN:
        return None
    return (2.0 if alt == "two-sided" else 1.0) / math.factorial(n)


def holm_reach(stats: Sequence[Stat], family: str = "this", alpha: float = 0.05) -> str:
    """A sentence where no test of the Holm family `stats` (named `family`: primary, exploratory) can reach `alpha`
    after the adjustment, whatever the data: Holm multiplies the smallest p by the family's size, and with a few
    clusters every test has a floor (the wild cluster test 6/6^G, the exact group Spearman 2/G!): so that 'Holm 1'
    is not read as 'no effect'. It names the clusters the tests have (`Stat.clusters`), not the study's clinical
    groups: CG's tests leave a one-task group out."""
    tested = [s for s in stats if s.p is not None and not s.task]
    if not tested or any(s.p_floor is None for s in tested):
        return ""
    low = min(s.p_floor or 0.0 for s in tested)
    if low * len(tested) <= alpha:
        return ""
    return (
        f"{_clusters_text(tested)}no test of the {family} family can reach {alpha:g} after Holm's adjustment: "
        f"the smallest p any of its {counted(len(tested), 'test')} can attain is {low:.2g}, and Holm multiplies the "
        f"smallest by {len(tested)} ({low * len(tested):.2g}); 'Holm 1' is not 'no effect'"
    )


def _clusters_text(tested: Sequence[Stat]) -> str:
    """'with 3 clusters (clinical groups) in each test, ', 'with 3 to 4 clusters (clinical groups) per test, ', or
    nothing where a test does not say (a statistic read back from before `Stat.clusters`)."""
    counts = sorted({s.clusters for s in tested if s.clusters is not None})
    if not counts or any(s.clusters is None for s in tested):
        return ""
    if len(counts) == 1:
        return f"with {counted(counts[0], 'cluster')} (clinical groups) in each test, "
    return f"with {counts[0]} to {counts[-1]} clusters (clinical groups) per test, "


def _exact_spearman_p(x: np.ndarray, y: np.ndarray, rho: float, alt: str) -> float:
    """The permutation p of ρ over every ordering of y's ranks (ties keep their mid-ranks)."""
    from itertools import permutations

    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    perms = np.asarray(list(permutations(ry)))
    cx, cp = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
    all_rho = (cp @ cx) / np.sqrt((cp**2).sum(axis=1) * (cx**2).sum())
    tol = 1e-12
    if alt == "greater":
        return float(np.mean(all_rho >= rho - tol))
    if alt == "less":
        return float(np.mean(all_rho <= rho + tol))
    return float(np.mean(np.abs(all_rho) >= abs(rho) - tol))


def wilcoxon_vs_zero(d: np.ndarray) -> tuple[float | None, float | None, int, str]:
    """Wilcoxon signed-rank statistic and two-sided p of Δ against 0 (zero_method="wilcox").

    n is the test's own: zero differences are dropped before ranking, so they are not counted.
    """
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if d.size and np.all(d == 0):
        return None, None, 0, "undefined (every Δ is 0)"
    n = int(np.count_nonzero(d))
    if n < MIN_N_WILCOXON:
        return (
            None,
            None,
            n,
            _too_small(n, MIN_N_WILCOXON) + (f", {d.size - n} zero pairs dropped" if d.size > n else ""),
        )
    from scipy.stats import wilcoxon

    res = wilcoxon(d, zero_method="wilcox")
    return float(res.statistic), float(res.pvalue), n, ""


def rank_biserial(d: np.ndarray) -> float | None:
    """Matched-pairs rank-biserial r = (R+ − R−) / (R+ + R−) over the non-zero Δ (the ranks Wilcoxon uses)."""
    from scipy.stats import rankdata

    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return None
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def hodges_lehmann(d: np.ndarray) -> float | None:
    """One-sample Hodges-Lehmann estimate: the median of the Walsh averages (d_i + d_j)/2, i ≤ j."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2))


def effect_sizes(d: np.ndarray) -> tuple[tuple[str, float], ...]:
    out = []
    r, hl = rank_biserial(d), hodges_lehmann(d)
    if r is not None:
        out.append(("rank-biserial r", r))
    if hl is not None:
        out.append(("Hodges-Lehmann (pp)", hl))
    return tuple(out)


def holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error), in the input order (statsmodels' multipletests)."""
    if not p:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(v) for v in multipletests(np.asarray(p, float), method="holm")[1]]


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(x), np.nan)


#: Why a task-level test of a paradigm whose tasks share a model prints no p (see the module docstring).
DEPENDENT = (
    "no p: the tasks of a clinical group are not independent (a shared model, a shared imaging domain), so a "
    "task-level test would reject a true null too often; Δm's wild cluster test is the test of Δ"
)


def one_sided(p: float, estimate: float, alt: str) -> float:
    """A symmetric two-sided test's one-sided p from its two-sided p and the estimate's sign."""
    if alt == "two-sided":
        return p
    agrees = estimate < 0 if alt == "less" else estimate > 0
    return p / 2 if agrees else 1 - p / 2


def statistics(comp: Comparison, hypotheses: Hypotheses | None = None) -> list[Stat]:
    """The rank tests of Δ for every non-baseline paradigm and fraction, in a stable order (no Holm yet); the
    cluster-robust ones are usagg/analysis/cluster_inference.py's."""
    out: list[Stat] = []
    base = comp.baseline
    for f in comp.fractions:
        for p in comp.others:
            names, vals = comp.delta_values(f, p)
            alt = alternative(hypotheses, "scale", p)
            rho_side = sided(alt, "ρ < 0" if alt == "less" else "ρ > 0")
            logn = _log(np.asarray([comp.n_train.get((f, t), math.nan) for t in names], float))
            rho, pv, n, note = spearman(logn, vals, alt)
            if pv is not None:
                pv, note = None, DEPENDENT
            out.append(  # no p is given: the method says how ρ is computed, not how a p would be
                Stat("Spearman ρ(Δ, log n_train), tasks", p, f, rho, n, "scipy.stats.spearmanr (ρ only, descriptive)",
                     pv, note=note)
            )  # fmt: skip
            gd: dict[str, list[float]] = {}
            gn: dict[str, float] = {}  # a group's n_train over the tasks of this Δ (left-out tasks not counted)
            for t, v in zip(names, vals, strict=True):
                g = comp.info(t).group
                gd.setdefault(g, []).append(float(v))
                gn[g] = gn.get(g, 0.0) + comp.n_train.get((f, t), math.nan)
            glog = _log(np.asarray([gn[g] for g in gd], float))
            gy = np.asarray([np.mean(v) for v in gd.values()], float)
            rho, pv, n, note = spearman(glog, gy, alt)
            out.append(
                Stat(
                    "Spearman ρ(Δ, log n_train), groups", p, f, rho, n,
                    f"{_rho_method(n, alt)} over groups: group Δ = mean of its tasks' Δ, group n_train = sum over "
                    "those tasks, "
                    + rho_side,
                    pv, note=note, p_floor=spearman_floor(n, alt) if pv is not None else None,
                    clusters=n if pv is not None else None,
                )
            )  # fmt: skip
            # descriptive, like the task-level ρ: no p, so a `delta` hypothesis (Δm's test) gives it no side
            w, pv, n, note = wilcoxon_vs_zero(vals)
            if pv is not None:
                pv, note = None, DEPENDENT
            out.append(
                Stat(
                    f"Wilcoxon signed-rank, Δ vs 0 ({p} vs {base})", p, f, w, n,
                    "scipy.stats.wilcoxon on per-task Δ against 0 (zero_method=wilcox: n counts non-zero Δ; "
                    "W only, descriptive)",
                    pv, note=note, effects=effect_sizes(vals) if vals.size else (),
                )
            )  # fmt: skip
    return out


def pairs(comp: Comparison, hypotheses: Hypotheses | None) -> list[tuple[str, str]]:
    """CG-AU, then any pair analysis.hypotheses.paired names, where both paradigms have a Δ."""
    stated = [tuple(k.split("-", 1)) for k in (hypotheses or {}).get("paired", {})]
    pairs = list(dict.fromkeys([*DEFAULT_PAIRS, *stated]))
    return [(a, b) for a, b in pairs if a in comp.others and b in comp.others]
