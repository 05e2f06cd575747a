"""How sure the advice's "beats / does not beat the trivial rules" is: the held-out hits of the model and of the best
rule compared per clinical group by an exact sign test, and the advised rule's regret with its spread.

The comparison in `Advice.beats_trivial` is a strict count over a handful of tasks (the demo's 9: had LOGO been
5 hits against 4, the report would have said the model beats every rule on one task's margin). The tasks of a
clinical group are not independent (they share a model), so the unit here is the group: each group where the model
hits more held-out tasks than the rule counts for the model, each where it hits fewer for the rule, and the exact
two-sided binomial p of that split says whether the held-out tasks tell the two apart (with 4 groups the smallest
p is 2/2^4 = 0.125: they never can). The p is counted out exactly (`sign_test_p`), without scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from usagg.analysis.advice import LOGO, Advice, AdviceRow, Rule

#: Below this p the groups tell the model and the rule apart.
ALPHA = 0.05


@dataclass(frozen=True)
class Apart:
    """Clinical groups where the model hits more held-out tasks than `rule`, fewer, and the sign test's p."""

    rule: str
    model_wins: int
    rule_wins: int
    p: float

    @property
    def told_apart(self) -> bool:
        return self.p <= ALPHA


def _advised(row: AdviceRow, scheme: str) -> str | None:
    return row.logo_advised if scheme == LOGO else row.loto_advised


def sign_test_p(wins: int, losses: int) -> float:
    """The exact two-sided sign test's p of `wins` against `losses` (ties left out), as scipy's binomtest at 0.5
    gives it: the binomial is symmetric, so twice the smaller tail, at most 1; written out because the report,
    reusing plot's memoised statistics, imports no scipy (tests/test_analysis_memo.py)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def apart(adv: Advice) -> Apart | None:
    """The sign test over clinical groups of the model against the best rule under `adv.primary`; None where no task
    has every paradigm measured or the rule kept no per-task advice."""
    best, scheme = adv.best_rule, adv.primary
    if not adv.n or scheme not in best.advised_by:
        return None
    diff: dict[str, int] = {}
    for r in adv.rows:
        if r.best_measured is None:
            continue
        model = int(_advised(r, scheme) == r.best_measured)
        rule = int(best.advised_by[scheme].get(r.task) == r.best_measured)
        diff[r.group] = diff.get(r.group, 0) + model - rule
    wins, losses = sum(d > 0 for d in diff.values()), sum(d < 0 for d in diff.values())
    p = sign_test_p(wins, losses)
    return Apart(best.name, wins, losses, p)


def regret_spread(adv: Advice, rule: Rule) -> tuple[float, float, float, float] | None:
    """A rule's held-out regret under `adv.primary` per task: (mean, sd over tasks, lowest and highest group mean),
    the cost of following it with its spread; None without per-task advice."""
    advised = rule.advised_by.get(adv.primary)
    if not advised:
        return None
    costs: dict[str, list[float]] = {}
    for r in adv.rows:
        m = r.measured
        if r.best_measured is None or r.task not in advised:
            continue
        best, got = m.get(r.best_measured), m.get(advised[r.task])
        if best is None or got is None:
            continue
        costs.setdefault(r.group, []).append(best - got)
    flat = [c for v in costs.values() for c in v]
    if not flat:
        return None
    groups = [float(np.mean(v)) for v in costs.values()]
    sd = float(np.std(flat, ddof=1)) if len(flat) > 1 else math.nan
    return float(np.mean(flat)), sd, min(groups), max(groups)


def uncertainty_text(adv: Advice) -> str:
    """The sentence after the verdict: whether the held-out tasks tell the model and the best rule apart, and the
    advised rule's regret with its spread where a rule gives the advice."""
    a = apart(adv)
    if a is None:
        return ""
    test = (
        f"{adv.primary}, clinical groups where the model hits more held-out tasks than '{a.rule}' / fewer: "
        f"{a.model_wins} / {a.rule_wins}, exact sign test p = {a.p:.2g}"
    )
    said = (
        f"The held-out tasks tell the model and the best rule apart ({test})."
        if a.told_apart
        else f"The held-out tasks cannot tell the model and the best rule apart ({test}): the hit counts are no "
        "ranking of the two."
    )
    if adv.beats_trivial:
        return said
    spread = regret_spread(adv, adv.best_rule)
    if spread is None:
        return said
    mean, sd, low, high = spread
    return (
        f"{said} Following '{adv.best_rule.name}' costs {mean:.1f} points of Δ held out ({adv.primary} regret; sd "
        f"over tasks {sd:.1f}, clinical group means {low:.1f} to {high:.1f})."
    )
