"""The interval of a paradigm's absolute metric on a task, for Figure 2's error bars.

With ≥ 2 seeds: the 95 % t interval of the seed mean (the spread training seeds cause).
With one seed: the percentile bootstrap of the metric over the job's test images, from the
item_scores.json it wrote (usagg/analysis/task_ci.py `metric_ci`, the interval the spec's expectations
report for a one-seed metric, usagg/analysis/expect.py), with the Monte Carlo error of its end-points that
Figure 2's caption states beside its resamples (`task_ci.resampling_text`).
None where neither exists (one seed and no per-image scores).
Either is cut at the metric's possible range (usagg/tasktypes: AUC in [0, 1], MRE ≥ 0): a t interval
knows no bound, and with two seeds one for an AUC can reach 1.5.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from usagg.analysis.delta import Comparison
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.task_ci import endpoint_errors, metric_draws, percentile_ci
from usagg.analysis.tdist import t_quantile
from usagg.analysis.uncertainty import LEVEL, item_scores_reader, job_ids
from usagg.tasktypes import metric_bounds

SEEDS = "seeds"
TEST_SET = "test-set bootstrap"


class Interval(NamedTuple):
    """An error bar of Figure 2: its ends, where it comes from (SEEDS, TEST_SET), whether an end was cut at the
    metric's bound (the caption says so) and, for a test-set bootstrap, the Monte Carlo error of its end-points
    (the larger of the two, `task_ci.endpoint_errors`)."""

    low: float
    high: float
    source: str
    clipped: bool
    mc: float | None = None


def within_bounds(metric: str, low: float, high: float, source: str, mc: float | None = None) -> Interval:
    """(low, high) from `source`, cut at the range `metric` can take (unknown metrics: as is)."""
    lo_b, hi_b = metric_bounds(metric)
    lo = low if lo_b is None else max(low, lo_b)
    hi = high if hi_b is None else min(high, hi_b)
    return Interval(lo, hi, source, (lo, hi) != (low, high), mc)


def absolute_interval(inp: AnalysisInput, comp: Comparison, f: float, task: str, p: str) -> Interval | None:
    """The interval of the absolute metric of `p` on `task` at fraction `f`: seeds when ≥ 2, else the lowest seed's
    test-set bootstrap, else None; cut at the metric's bounds."""
    cell = comp.cells.get((f, task, p))
    if cell is None:
        return None
    metric = comp.info(task).metric
    if cell.n_seeds > 1:  # tdist, not scipy: `usagg report` draws Figure 2 without importing scipy
        half = t_quantile(0.5 + LEVEL / 2, cell.n_seeds - 1) * cell.sd / math.sqrt(cell.n_seeds)
        return within_bounds(metric, cell.mean - half, cell.mean + half, SEEDS)
    seeds = sorted(comp.seed_values.get((f, task, p), {}))
    scores = item_scores_reader(inp)(job_ids(inp).get((p, f, seeds[0], task))).get(task) if seeds else None
    if scores is None:
        return None
    st = inp.settings
    draws = metric_draws([scores], st.task_bootstrap, st.bootstrap_seed)
    ci = None if draws is None else percentile_ci(draws, LEVEL)
    errors = None if draws is None else endpoint_errors(draws, LEVEL)
    return None if ci is None else within_bounds(metric, ci[0], ci[1], TEST_SET, max(errors) if errors else None)
