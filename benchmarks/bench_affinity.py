"""What measuring inter-task affinity costs the AU job (issue 11: under 15 % of the job).

The demo study's AU job (9 synthetic tasks, studies/demo.yaml with AG added) is trained twice
in this process on the CPU: once measuring affinity (`analysis.affinity` at its defaults: 5
lookahead measurements of every task pair) and once not, in the order with, without. Reported:
the measurement's own seconds as a share of the measuring job's training time (the share the job
log and affinity.json state) and the ratio of the two jobs' training times (a busy machine slows
both alike). `python -m benchmarks affinity`; BENCH_AFFINITY_EPOCHS overrides the demo's epochs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.demo_au import demo_au_job, env_int

TARGET_SHARE = 0.15


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from usagg.affinity import read_affinity
    from usagg.engine.job import run_job

    epochs = env_int("BENCH_AFFINITY_EPOCHS", None)  # None: the demo's epochs

    def edit(spec: dict) -> None:
        if epochs is not None:
            spec["training"]["epochs"] = epochs

    with tempfile.TemporaryDirectory(prefix="usagg-bench-affinity-") as tmp:
        au = demo_au_job(Path(tmp), edit)
        with_aff = run_job(au, Path(tmp) / "with", "cpu")
        aff = read_affinity(Path(tmp) / "with" / "affinity.json")
        without = run_job(au.model_copy(update={"affinity": None}), Path(tmp) / "without", "cpu")
    t_with = with_aff["throughput"]["train_seconds"]
    t_without = without["throughput"]["train_seconds"]
    result = {
        "tasks": len(au.tasks),
        "steps": with_aff["training"]["steps"],
        "measurements": len(aff.steps),
        "every": aff.every,
        "probe_size": au.affinity.probe_size if au.affinity else None,
        "measure_seconds": round(aff.seconds, 2),
        "train_seconds_with": t_with,
        "train_seconds_without": t_without,
        "share": round(aff.share, 4),
        "ratio_with_over_without": round(t_with / t_without, 3),
        "target_share": TARGET_SHARE,
        "met": aff.share <= TARGET_SHARE,
        "self_affinity_min": round(min(aff.matrix[i][i] for i in range(len(aff.tasks))), 5),
        "overshot": aff.overshot,
    }
    print("affinity cost on the demo's AU job (CPU)")
    print(
        f"  tasks {result['tasks']}, steps {result['steps']}, {result['measurements']} measurements every "
        f"{result['every']} steps, probe {result['probe_size']} images per task"
    )
    print(
        f"  measuring: {aff.seconds:.1f} s = {100 * aff.share:.1f} % of training (target <= {100 * TARGET_SHARE:.0f} %)"
        f" {'met' if result['met'] else 'NOT met'}"
    )
    print(
        f"  training with / without measuring: {t_with:.1f} s / {t_without:.1f} s = {result['ratio_with_over_without']}"
    )
    print(
        f"  self-affinity (diagonal) min {result['self_affinity_min']:+.5f}; "
        f"negative, the step overshoots, for: {', '.join(aff.overshot) or 'none'}"
    )
    return result
