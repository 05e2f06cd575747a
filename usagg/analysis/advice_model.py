"""The model behind the predicted advice: a ridge regression of each paradigm's Δ across tasks, its features and
the Δ its predictions are bounded to.

The model, stated in every output: for each compared paradigm p that trains tasks together
(its registered scope is not "task" and it is not a control: CG, AU, AG, ...), a ridge regression across tasks of the
task's measured Δ_p versus TS (usagg/analysis/delta.py: seeds averaged per task, then Δ on the
study's analysis.scale, at the largest fraction the study ran with TS) on
  - log10 n_train,
  - the task type (one column per type),
  - the mean affinity onto the task from its group mates under p, and from the task to them
    (usagg/affinity.py; a task's group mates are the tasks sharing its job_id under p at p's
    largest fraction, usagg/analysis/inputs.py `paradigm_groups`), where the study measured it.
Features are standardised on the tasks fitted, the intercept is not penalised and the
penalty is fixed (RIDGE_PENALTY), so nothing is tuned on the tasks it is judged on.

Predictions are bounded to what the metric allows (usagg/tasktypes: `metric_bounds`), on the
scale's formula (usagg/analysis/scales.py) at the task's measured TS mean: each end is the Δ of
the metric at one of its bounds. For a metric in [0, 1] with TS at m: relative [−100, (1/m − 1)·100] %;
log_ratio (−∞, −100·ln m] (ln 0 is −∞: no lower bound); headroom [−m/D·100, 100], D the headroom
(from chance at most: an AUC's lower end is below −100). An end the metric does not bound is
infinite (a lower-is-better error in [0, ∞) has no lowest Δ on any scale).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.advice import BASELINE
from usagg.analysis.delta import Comparison
from usagg.analysis.inputs import paradigm_groups
from usagg.analysis.results import ResultsTable
from usagg.tasktypes import metric_bounds

if TYPE_CHECKING:
    from usagg.affinity import Affinity

#: Ridge penalty on the standardised features: fixed, never tuned on the tasks the model is judged on.
RIDGE_PENALTY = 1.0


def group_mates(table: ResultsTable, paradigm: str) -> dict[str, set[str]]:
    """Task -> the tasks it trained with under `paradigm` (the jobs of usagg/analysis/inputs.py `paradigm_groups`:
    tasks sharing a job_id at the largest fraction); {} when the paradigm's rows name no job."""
    mates: dict[str, set[str]] = {}
    for members in paradigm_groups(table, paradigm, table.tasks).values():
        for t in members:
            mates[t] = set(members) - {t}
    return mates


def design_matrix(
    comp: Comparison, table: ResultsTable, tasks: list[str], fraction: float, paradigm: str, aff: Affinity | None
) -> tuple[np.ndarray, list[str], str]:
    """The feature matrix of `paradigm`'s model (one row per task), its column names, and why a feature is missing."""
    cols: list[list[float]] = []
    names: list[str] = []
    why = ""
    n = [comp.n_train.get((fraction, t), math.nan) for t in tasks]
    if all(math.isfinite(v) for v in n):
        cols.append([math.log10(max(v, 1.0)) for v in n])
        names.append("log10 n_train")
    types = sorted({comp.info(t).type for t in tasks})
    for ty in types:
        cols.append([1.0 if comp.info(t).type == ty else 0.0 for t in tasks])
        names.append(f"type {ty}")
    if aff is not None:
        mates = group_mates(table, paradigm)
        if not mates:
            why = f"{paradigm}: its rows name no job_id, so its groups and their affinity are unknown; not used."
        else:
            needed = set(tasks).union(*(mates.get(t, set()) for t in tasks))
            missing = sorted(needed - set(aff.tasks))
            if missing:
                why = (
                    f"{paradigm}: the affinity was measured on {', '.join(aff.tasks)}, not on {', '.join(missing)}; "
                    "affinity not used."
                )
            else:
                cols.append([aff.onto(t, sorted(mates.get(t, ()))) for t in tasks])
                cols.append([aff.out_of(t, sorted(mates.get(t, ()))) for t in tasks])
                names += [f"affinity onto the task from its {paradigm} group", "affinity from the task to that group"]
    varying = [i for i, c in enumerate(cols) if max(c) - min(c) > 1e-12]  # a constant feature says nothing
    x = np.asarray([cols[i] for i in varying], dtype=float).reshape(len(varying), len(tasks)).T
    return x, [names[i] for i in varying], why


def ridge_predict(
    x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, penalty: float = RIDGE_PENALTY
) -> np.ndarray:
    """Ridge regression fitted on (x_fit, y_fit), predicting x_new: features standardised on x_fit (constant ones
    dropped), intercept the mean of y_fit and unpenalised."""
    mu, sd = x_fit.mean(axis=0), x_fit.std(axis=0)
    keep = sd > 1e-12
    z = (x_fit[:, keep] - mu[keep]) / sd[keep]
    y0 = float(y_fit.mean())
    coef = np.linalg.solve(z.T @ z + penalty * np.eye(z.shape[1]), z.T @ (y_fit - y0))
    return y0 + ((x_new[:, keep] - mu[keep]) / sd[keep]) @ coef


def delta_bounds(comp: Comparison, fraction: float, task: str) -> tuple[float, float]:
    """The Δ the task's primary metric allows against its measured TS mean, on the comparison's scale.

    Every scale's Δ rises with the metric where higher is better and falls where lower is, so its
    ends are the Δ at the metric's bounds (metric_bounds of the registry); an end is infinite where
    the metric has no bound or the scale's Δ is undefined at it (log_ratio at 0: ln 0 = −∞).
    """
    info = comp.info(task)
    base = comp.cells[(fraction, task, BASELINE)].mean
    ends = [comp.change(task, v, base).value if v is not None else None for v in metric_bounds(info.metric)]
    if not info.higher_is_better:  # a lower value is a gain: the metric's upper end is the lowest Δ
        ends.reverse()
    low, high = (e if e is not None else s * math.inf for e, s in zip(ends, (-1, 1), strict=True))
    return low, high


def predict(
    x: np.ndarray,
    y: dict[str, float],
    tasks: list[str],
    fit: list[str],
    new: list[str],
    bounds: dict[str, tuple[float, float]],
) -> dict[str, float]:
    """The `new` tasks predicted by the model fitted on the measured `fit` tasks (NaN when none), bounded."""
    if not fit:
        return {t: math.nan for t in new}
    idx = {t: i for i, t in enumerate(tasks)}
    pred = ridge_predict(x[[idx[t] for t in fit]], np.asarray([y[t] for t in fit]), x[[idx[t] for t in new]])
    return {t: float(np.clip(v, *bounds[t])) for t, v in zip(new, pred, strict=True)}


def held_out(
    x: np.ndarray, y: dict[str, float], tasks: list[str], folds: list[list[str]], bounds: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Each fold's tasks predicted by the model fitted on the measured tasks outside it."""
    out: dict[str, float] = {}
    for fold in folds:
        out |= predict(x, y, tasks, [t for t in tasks if t in y and t not in fold], fold, bounds)
    return out
