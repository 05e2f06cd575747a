"""Δ against data scale across a data-scale sweep (`fractions:` with several values): the statistics that pool the
fractions, where every other scale statistic stays within one fraction.

Within one fraction, Δ's relation to n_train is a comparison across tasks (Spearman ρ over tasks and over clinical
groups, the mixed model's slope: usagg/analysis/stats.py, mixed.py): the tasks differ in far more than their size,
and in a synthetic study every task can have the same n_train, which leaves those statistics undefined. A sweep
varies each task's own n_train while the task stays the same, so here each task's Δ is regressed on log10 n_train
over the fractions (its within-task least-squares slope; the task's own level is differenced away), and the slopes
are averaged over tasks with the wild cluster interval and p of Δm (usagg/analysis/cluster_inference.py, the tasks
of a clinical group one cluster): the two-stage form of a random-slope model with task as the random effect, which
needs no variance model of its own and keeps the coverage measured for Δm. It joins the exploratory Holm family
(usagg/analysis/families.py).

Both the slope and the Δm per fraction it is drawn beside (`COMMON_MEAN`, fig_fraction's points) are over one set
of tasks: those with a Δ in the paradigm's aggregates at every fraction (`common_tasks`). A task at chance, or
without a Δ, at one fraction is left out of both and named, so a change of Δm along the sweep is never a change of
the tasks averaged.
"""

from __future__ import annotations

import math

import numpy as np

from usagg.analysis.cluster_inference import CLUSTERS, METHOD, draws_text, monte_carlo, wild_cluster_mean
from usagg.analysis.delta import Comparison
from usagg.analysis.stats import Hypotheses, Stat, alternative, one_sided, sided
from usagg.wording import counted

#: The Stat.fraction of a statistic that pools every fraction (the statistics table prints it "all").
POOLED = math.inf
#: The within-task slope of Δ per tenfold n_train across the fractions, mean over tasks.
FRACTION_SLOPE = "slope of Δ per log10 n_train within task, across fractions (wild cluster bootstrap)"
#: Δm at one fraction over the tasks with a Δ at every fraction (an interval, no test of its own).
COMMON_MEAN = "Δm over the tasks with a Δ at every fraction, wild cluster bootstrap"


def common_tasks(comp: Comparison, paradigm: str) -> tuple[list[str], dict[str, str]]:
    """(the tasks with a Δ in the paradigm's aggregates at every fraction, task -> why each other task is left out:
    the first fraction where it has none). The slope also leaves out a task of one n_train at every fraction
    (`task_slope` None)."""
    kept, why = [], {}
    for info in comp.tasks:
        t = info.task
        for f in comp.fractions:
            d = comp.deltas.get((f, t, paradigm))
            if t in comp.left_out(f, paradigm):
                at_chance = t in comp.chance.get(f, ())
                why[t] = f"{comp.baseline} at chance at fraction {f:g}" if at_chance else "a one-task group"
            elif d is None or d.value is None:
                why[t] = f"no Δ at fraction {f:g}" + (f": {d.reason}" if d is not None and d.reason else "")
            else:
                continue
            break
        else:
            kept.append(t)
    return kept, why


def task_slope(comp: Comparison, task: str, paradigm: str) -> float | None:
    """The least-squares slope of the task's Δ on log10 n_train over the fractions (percentage points, or the
    scale's unit, per tenfold n_train); None with fewer than two distinct n_train."""
    pts = [
        (math.log10(n), d.value)
        for f in comp.fractions
        if (d := comp.deltas.get((f, task, paradigm))) is not None and d.value is not None
        and (n := comp.n_train.get((f, task), math.nan)) > 0
    ]  # fmt: skip
    x = np.asarray([p[0] for p in pts], dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return None
    y = np.asarray([p[1] for p in pts], dtype=float)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def fraction_trend_stats(
    comp: Comparison, resamples: int, seed: int, hypotheses: Hypotheses | None = None
) -> list[Stat]:
    """For a study of several fractions, per paradigm: the mean within-task slope across fractions (`FRACTION_SLOPE`,
    fraction `POOLED`) with its wild cluster interval and p (one-sided where analysis.hypotheses.scale states a
    direction, as for the mixed model's slope), and Δm at each fraction over the same tasks (`COMMON_MEAN`: interval
    only, no p). None for a study of one fraction."""
    if len(comp.fractions) < 2:
        return []
    out = []
    for p in comp.others:
        tasks, _ = common_tasks(comp, p)
        groups = [comp.info(t).group for t in tasks]
        for f in comp.fractions:
            vals = [comp.deltas[(f, t, p)].value for t in tasks]
            r = wild_cluster_mean(np.asarray(vals, dtype=float), groups, resamples, seed)
            out.append(
                Stat(COMMON_MEAN, p, f, r.mean, r.n, _method(r.clusters, resamples, seed, "Δm over tasks"),
                     ci=r.ci, note=r.note)
            )  # fmt: skip
        slopes = {t: s for t in tasks if (s := task_slope(comp, t, p)) is not None}
        r = wild_cluster_mean(
            np.asarray(list(slopes.values()), dtype=float), [comp.info(t).group for t in slopes], resamples, seed
        )
        alt = alternative(hypotheses, "scale", p)
        pv = None if r.p is None or r.mean is None else one_sided(r.p, r.mean, alt)
        what = "mean over tasks of each task's least-squares slope of Δ on log10 n_train over the fractions"
        side = sided(alt, "slope < 0" if alt == "less" else "slope > 0")
        method = f"{_method(r.clusters, resamples, seed, what)}{monte_carlo(r)}, {side}"
        floor = None if pv is None or r.p_floor is None else r.p_floor / (1 if alt == "two-sided" else 2)
        out.append(
            Stat(FRACTION_SLOPE, p, POOLED, r.mean, r.n, method, p=pv, ci=r.ci, note=r.note, p_floor=floor,
                 clusters=r.clusters)
        )  # fmt: skip
    return out


def _method(clusters: int, resamples: int, seed: int, what: str) -> str:
    """A statistic's method text: what is averaged, and the wild cluster bootstrap that gives its interval."""
    return f"{what}; {METHOD}; {counted(clusters, 'cluster')}: {CLUSTERS}, {draws_text(clusters, resamples, seed)}"
