"""The interval of a paradigm's absolute metric on a task, for Figure 2's error bars.

With ≥ 2 seeds: the 95 % t interval of the seed mean (the spread training seeds cause).
With one seed: the percentile bootstrap of the metric over the job's test images, from the
item_scores.json it wrote: the interval the spec's expectations report for a metric
(usagg/analysis/expect.py), from the source the test-set interval of a task's Δ uses
(usagg/analysis/uncertainty.py).
None where neither exists (one seed and no per-image scores).
"""

from __future__ import annotations

import math
from pathlib import Path

from usagg.analysis.delta import Comparison
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.uncertainty import LEVEL

SEEDS = "seeds"
TEST_SET = "test-set bootstrap"


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
    from usagg.analysis.expect import _test_set_ci  # the interval the spec's expectations use for a metric

    st = inp.settings
    ci = _test_set_ci(Path(inp.item_scores[job]).parent, task, st.task_bootstrap, st.bootstrap_seed)
    return None if ci is None else (ci[0], ci[1], TEST_SET)
