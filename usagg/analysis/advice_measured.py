"""A task's own measurement: what its intervals of Δ decide, before any model.

Advice for a task of the study: its own measurement first, where that decides (`decide`). Its intervals of
Δ (usagg/analysis/uncertainty.py `seed_interval`: Welch t over seeds, with the test set's variance of the
seed-mean Δ added, from a paired bootstrap over every seed where the jobs scored their test images, as a test
set of a few dozen images moves Δ more than the seeds do) at 1 − 2·0.05/k two-sided for the k paradigms
modelled, so each bound is one-sided at 0.05/k (Bonferroni: advising a paradigm no better than TS, or TS where
one is better, has a nominal probability of at most 5 % per task): the highest measured paradigm whose interval
lies above 0 is advised (others above 0, and a higher measured one whose interval covers 0, are named; which is
best among them is untested), TS where every interval lies below 0. Otherwise (an interval covers 0, one seed of
every paradigm or of TS: training noise unmeasured, or no spread measured) the advice is the predicted one
(advice_model.py, advice_scoring.py), which is also what a task new to the study gets, never a paradigm whose
interval lies below 0 for that task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from usagg.analysis.advice import BASELINE
from usagg.analysis.delta import Comparison
from usagg.analysis.tables import ci_end
from usagg.analysis.uncertainty import seed_interval, widest

#: A task's measured decision errs at most this often (nominally): each of its k paradigms' bounds one-sided at ALPHA/k.
DECISION_ALPHA = 0.05
#: A task's evidence where one seed (of every paradigm, or of TS) leaves its training noise unmeasured.
ONE_SEED, BASELINE_ONE_SEED = "one seed", f"{BASELINE} one seed"


def noise_unmeasured(evidence: str) -> bool:
    """Whether a task's own measurement is silent because one seed, of TS or of every paradigm, measured no spread."""
    return evidence in (ONE_SEED, BASELINE_ONE_SEED)


@dataclass(frozen=True)
class Decision:
    """What a task's own measurement decides (`decide`): a paradigm, or None where it leaves it open, and in a few words
    why."""

    choice: str | None
    intervals: dict[str, tuple[float, float] | None]
    evidence: str
    losses: tuple[str, ...] = ()  # paradigms whose interval lies below 0: never advised for the task
    test_set: bool = False  # whether the test set's variance is in an interval


def decision_level(k: int) -> float:
    """The two-sided level of each of a task's k intervals whose bounds are one-sided tests at DECISION_ALPHA / k, so
    that its decision errs at most DECISION_ALPHA of the time, nominally (Bonferroni)."""
    return 1 - 2 * DECISION_ALPHA / k


def decide(
    comp: Comparison, fraction: float, task: str, paradigms: list[str], level: float, test_var: dict[str, float]
) -> Decision:
    """What the task's own measurement decides: the highest measured paradigm whose interval of Δ at `level` lies
    above 0 (a gain on TS beyond the noise, even where another measured higher undecided); TS, where every
    paradigm's lies below 0; else nothing (an interval covers 0, one seed of TS or of every paradigm, no spread).
    `test_var`: paradigm -> the test set's variance of its seed-mean Δ, added to the seeds'."""
    stats = {p: seed_interval(comp, fraction, task, p, level, test_var.get(p, 0.0)) for p in paradigms}
    # an interval of no width measured no spread (every seed alike): it decides nothing
    ci = {p: st.ci if st is not None and st.ci is not None and st.ci[0] < st.ci[1] else None for p, st in stats.items()}
    for p in test_var:  # never narrower than the seeds' own interval (Welch's df can grow with the added variance)
        own = ci.get(p)
        seeds = seed_interval(comp, fraction, task, p, level) if own is not None else None
        if own is not None and seeds is not None and seeds.ci is not None:
            ci[p] = widest(own, seeds.ci)
    value = {p: st.value for p, st in stats.items() if st is not None and st.value is not None}
    used = any(p in test_var for p, c in ci.items() if c is not None)
    gains = [p for p in paradigms if (c := ci[p]) is not None and c[0] > 0]
    losses = tuple(p for p in paradigms if (c := ci[p]) is not None and c[1] < 0)
    if gains:  # a gain over TS beyond the noise: the highest measured of those
        best = max(gains, key=lambda p: (value[p], -paradigms.index(p)))
        lo, hi = ci[best] or (math.nan, math.nan)
        also = [p for p in gains if p != best]
        higher = [p for p in paradigms if p in value and value[p] > value[best]]
        evidence = f"Δ{best} {value[best]:+.1f} [{ci_end(lo)}, {ci_end(hi)}]" + (
            f"; {'/'.join(also)} also > 0" if also else ""
        )
        evidence += f"; {'/'.join(higher)} measured higher, undecided" if higher else ""
        return Decision(best, ci, evidence, losses, used)
    if len(losses) == len(paradigms):
        return Decision(BASELINE, ci, "every Δ's interval < 0", losses, used)
    if not any(c is not None for c in ci.values()):
        return Decision(None, ci, _no_interval_reason(comp, fraction, task, paradigms), losses, used)
    cover = [p for p in paradigms if ci[p] is not None and p not in losses]
    parts = [f"Δ{'/'.join(losses)} < 0"] if losses else []
    parts += [f"{'/'.join(cover)} cover{'s' if len(cover) == 1 else ''} 0"] if cover else []
    parts += [f"{p}: no interval" for p in paradigms if ci[p] is None]
    return Decision(None, ci, "; ".join(parts), losses, used)


def _no_interval_reason(comp: Comparison, fraction: float, task: str, paradigms: list[str]) -> str:
    """Why no paradigm of the task has an interval: no Δ at all, one seed of every paradigm, one seed of TS (its
    training noise is as unmeasured as theirs), or seeds that all agree."""
    seeds = [len(comp.seed_deltas(fraction, task, p)) for p in paradigms]
    if not any(seeds):
        return "no Δ measured"
    if all(n < 2 for n in seeds):
        return ONE_SEED
    base = comp.cells.get((fraction, task, BASELINE))
    return BASELINE_ONE_SEED if base is not None and base.n_seeds < 2 else "no spread measured"
