"""The interval of a paradigm's absolute metric on a task, for Figure 2's error bars.

With ≥ 2 seeds: the 95 % t interval of the seed mean (the spread training seeds cause).
With one seed: the percentile bootstrap of the metric over the job's test images, from the
item_scores.json it wrote (usagg/analysis/task_ci.py recomputes the metric on each resample),
the same source and method the test-set interval of a task's Δ uses (usagg/analysis/uncertainty.py).
None where neither exists (one seed and no per-image scores).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.delta import Comparison
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.uncertainty import LEVEL

if TYPE_CHECKING:
    from usagg.analysis.task_ci import ItemScores

SEEDS = "seeds"
TEST_SET = "test-set bootstrap"


def metric_ci(scores: ItemScores, resamples: int, seed: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap CI of one job's metric over its test images; None with < 2 images or a metric undefined
    on more than 1 - MIN_DEFINED_SHARE of the resamples (as task_ci.paired_delta_ci, whose batched metric it uses)."""
    from usagg.analysis.task_ci import _CHUNK, MIN_DEFINED_SHARE, _metrics

    n = len(scores.images)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, size=(_CHUNK, n))[: resamples - start] for start in range(0, resamples, _CHUNK)]
    values = np.concatenate([_metrics(scores, idx) for idx in draws])
    defined = values[np.isfinite(values)]
    if defined.size < MIN_DEFINED_SHARE * resamples:
        return None
    lo, hi = np.quantile(defined, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def absolute_interval(
    inp: AnalysisInput, comp: Comparison, f: float, task: str, p: str
) -> tuple[float, float, str] | None:
    """(low, high, source) of the absolute metric of `p` on `task` at fraction `f`: seeds when ≥ 2, else the
    lowest seed's test-set bootstrap, else None."""
    cell = comp.cells.get((f, task, p))
    if cell is None:
        return None
    if cell.n_seeds > 1:
        from scipy.stats import t as student

        half = float(student.ppf(0.5 + LEVEL / 2, cell.n_seeds - 1)) * cell.sd / math.sqrt(cell.n_seeds)
        return cell.mean - half, cell.mean + half, SEEDS
    seeds = sorted(comp.seed_values.get((f, task, p), {}))
    jobs = {(r.paradigm, r.fraction, r.seed, r.task): r.job_id for r in inp.table.rows if r.job_id}
    job = jobs.get((p, f, seeds[0], task)) if seeds else None
    if job is None or job not in inp.item_scores:
        return None
    from usagg.analysis.task_ci import load_item_scores

    scores = load_item_scores(Path(inp.item_scores[job]).parent).get(task)
    if scores is None:
        return None
    st = inp.settings
    ci = metric_ci(scores, min(st.task_bootstrap, 1000), st.bootstrap_seed)
    return None if ci is None else (ci[0], ci[1], TEST_SET)
