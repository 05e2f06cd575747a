"""Whether the projection predicts jobs it never saw (usagg/projection.py): calibrate on whole jobs, predict others.

The calibration is `make gpu-check`'s projection phase (benchmarks/gpu_check.py `whole_jobs`: a TS job and an
AU job of studies/fmc_uia.yaml's model, each at two epoch counts, CAL_N images per task). The targets are the
same kinds of job with TARGET_N images per task at TARGET_EPOCHS, run end to end the same way: more images and
more epochs than any calibration job. Each target's seconds (its trunk stage aside) are set against
`job_seconds` of its shape (its own training and selection images, tasks, `checkpoint_every`) under the costs
`kind_cost` read from the calibration, and against the former model, where everything an epoch added was a cost
per training image. On the CPU (the default) the check's tiny model stands in for fmc_uia's;
`BENCH_PROJECTION_DEVICE=cuda` runs fmc_uia's own shapes.

`python -m benchmarks projection`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

CAL_N, CAL_EPOCHS = 24, (1, 3)
TARGET_N, TARGET_EPOCHS = 48, (4, 8)


def _former(lo: Any, hi: Any, epochs: int, images: float) -> float:
    """The former model's seconds for a job: an epoch's whole growth charged per training image, the rest fixed."""
    per_epoch = (hi.seconds - lo.seconds) / (hi.epochs - lo.epochs)
    per_image = max(0.0, per_epoch) / sum(lo.train_images.values())
    return max(0.0, lo.seconds - lo.epochs * per_epoch) + epochs * per_image * images


def main() -> dict:
    from benchmarks.gpu_check import _settings, fmc_study, measured_job, whole_jobs
    from usagg.projection import JobShape, TrunkCost, job_seconds, kind_cost

    device = os.environ.get("BENCH_PROJECTION_DEVICE", "cpu")
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"bench projection: BENCH_PROJECTION_DEVICE={device!r}: expected cpu or cuda")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench projection: BENCH_PROJECTION_DEVICE=cuda, but no CUDA device is visible")
    base = _settings(device)
    fmc = fmc_study(device, base)
    with tempfile.TemporaryDirectory(prefix="usagg-bench-projection-") as tmp:
        cal = whole_jobs(Path(tmp) / "cal", {**base, "proj_n": CAL_N, "proj_epochs": CAL_EPOCHS}, device, fmc)
        tgt = whole_jobs(Path(tmp) / "tgt", {**base, "proj_n": TARGET_N, "proj_epochs": TARGET_EPOCHS}, device, fmc)
    pairs = {moe: [measured_job(r) for r in cal["rows"] if r["moe"] == moe] for moe in (False, True)}
    costs = {moe: kind_cost(*pair) for moe, pair in pairs.items()}
    training = fmc.training
    rows = []
    for r in tgt["rows"]:
        shape = JobShape(
            r["paradigm"],
            r["moe"],
            r["epochs"],
            dict(r["train_images"]),
            select_images=r["select_images"],
            checkpoint_every=training.checkpoint_every,
            writes_best=training.selection == "best" and r["select_images"] > 0,
            tasks=r["tasks"],
        )
        measured = r["wall_s"] - r["trunk_s"]
        predicted = sum(job_seconds(shape, costs[r["moe"]], TrunkCost(0.0, 0.0)).values())
        former = _former(*pairs[r["moe"]], r["epochs"], sum(r["train_images"].values()))
        rows.append(
            {
                "job": f"{r['paradigm']} {r['epochs']} epochs, {TARGET_N} images per task",
                "measured_s": round(measured, 3),
                "predicted_s": round(predicted, 3),
                "error": round(predicted / measured - 1, 4),
                "former_s": round(former, 3),
                "former_error": round(former / measured - 1, 4),
                "saves": r["saves"],
            }
        )
    print(
        f"projection against jobs it never saw ({device}; calibrated on {CAL_N} images per task at {CAL_EPOCHS} "
        f"epochs, targets at {TARGET_N} images per task):"
    )
    print(f"{'job':<36}{'measured s':>12}{'projected s':>13}{'error':>8}{'former s':>10}{'error':>8}")
    for row in rows:
        print(
            f"{row['job']:<36}{row['measured_s']:>12.2f}{row['predicted_s']:>13.2f}{row['error']:>+8.1%}"
            f"{row['former_s']:>10.2f}{row['former_error']:>+8.1%}"
        )
    return {"device": device, "calibration": cal["rows"], "targets": rows}
