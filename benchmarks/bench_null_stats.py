"""The study's statistics on null data: how often each printed 95 % interval covers the truth and each p < 0.05.

Results tables of the 27 FMC_UIA tasks (tests/data/fmc_uia_tasks.yaml) with TS, CG, AU, TSM and CGD at three
seeds, where no paradigm changes any task on average: a paradigm that trains tasks together (CG, AU, CGD) moves
every task of a clinical group by one shared deviation (sd `GROUP_SD` pp, its own per paradigm) and each task by
its own (sd `TASK_SD` pp); TSM (one model per task) only by the task's; each seed adds 1.5 % noise. The OB group's
data sets are `OB_SCALE` times larger, so data size differs by group as in the study. Every table goes through
`usagg.analysis.summary.analyse`, as `usagg compare` runs it. A valid 95 % interval covers the truth (0, or the
task's true Δ) about 95 % of the time, a valid test rejects about 5 %, and Holm keeps the chance of any false
rejection among all printed p-values near 5 %.

`python -m benchmarks null_stats` (REPS tables, `BENCH_NULL_REPS` to change it).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tests" / "data" / "fmc_uia_tasks.yaml"
PARADIGMS = ("TS", "CG", "AU", "TSM", "CGD")
SHARED = {"CG", "AU", "CGD"}
GROUP_SD, TASK_SD, SEED_NOISE, OB_SCALE = 3.0, 2.0, 0.015, 6.0
REPS = 100


def _table(rep: int, tasks: list[dict], path: Path) -> dict[tuple[str, str], float]:
    """Write one null table; return each (paradigm, task)'s true Δ (%)."""
    from usagg.analysis.results import Row, write_results
    from usagg.tasktypes import metric_direction

    rng = np.random.default_rng(1000 + rep)
    n = {
        t["id"]: round(math.exp(rng.uniform(math.log(60), math.log(3000))) * (OB_SCALE if t["group"] == "OB" else 1))
        for t in tasks
    }
    level = {t["id"]: rng.uniform(10, 40) if t["metric"] == "MRE" else rng.uniform(0.6, 0.85) for t in tasks}
    groups = sorted({t["group"] for t in tasks})
    truth: dict[tuple[str, str], float] = {}
    for p in PARADIGMS[1:]:
        shared = {g: rng.normal(0, GROUP_SD) for g in groups}
        for t in tasks:
            truth[(p, t["id"])] = (shared[t["group"]] if p in SHARED else 0.0) + rng.normal(0, TASK_SD)
    rows = []
    for p in PARADIGMS:
        for seed in (0, 1, 2):
            for t in tasks:
                up = bool(metric_direction(t["metric"]))
                d = 0.0 if p == "TS" else truth[(p, t["id"])]
                value = level[t["id"]] * (1 + d / 100 if up else 1 - d / 100) * (1 + rng.normal(0, SEED_NOISE))
                unit = t["group"] if p in ("CG", "CGD") else ("all" if p == "AU" else t["id"])
                rows.append(
                    Row(study="null", job_id=f"{p}-{unit}-s{seed}", paradigm=p, group=t["group"], seed=seed,
                        fraction=1.0, task=t["id"], type=t["type"], metric=t["metric"], value=float(value),
                        higher_is_better=up, n_train=float(n[t["id"]]), steps=100.0)
                )  # fmt: skip
    write_results(rows, path)
    return truth


def main() -> dict:
    from usagg.analysis.inputs import load_input
    from usagg.analysis.simulate import load_tasks
    from usagg.analysis.summary import analyse

    reps = int(os.environ.get("BENCH_NULL_REPS", REPS))
    tasks = load_tasks(TASKS)
    hits: dict[str, list[bool]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            path = Path(tmp) / f"null{rep}.csv"
            truth = _table(rep, tasks, path)
            inp = load_input(None, path)
            inp.settings.bootstrap = 2000
            stats = analyse(inp).stats
            for s in stats:
                if s.task:
                    if s.ci is not None and s.name.startswith("Δ seed"):
                        hits["task Δ: seed interval covers the true Δ"].append(
                            s.ci[0] <= truth[(s.paradigm, s.task)] <= s.ci[1]
                        )
                    continue
                if s.ci is not None:
                    hits[f"{s.paradigm} {s.name}: CI covers 0"].append(s.ci[0] <= 0 <= s.ci[1])
                if s.p is not None:
                    hits[f"{s.paradigm} {s.name}: p < 0.05"].append(s.p < 0.05)
            adjusted = [s.p_holm for s in stats if s.p_holm is not None]
            hits["any Holm-adjusted p < 0.05 (family-wise error)"].append(min(adjusted) < 0.05)
    rates = {k: (float(np.mean(v)), len(v)) for k, v in sorted(hits.items())}
    print(f"statistics on {reps} null tables (group sd {GROUP_SD} pp, task sd {TASK_SD} pp, OB data x{OB_SCALE})")
    for k, (rate, n) in rates.items():
        print(f"{rate:6.3f}  n={n:5d}  {k}")
    return {"reps": reps, "rates": {k: {"rate": r, "n": n} for k, (r, n) in rates.items()}}
