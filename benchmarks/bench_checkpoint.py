"""What a job waits for its checkpoints: last.pt written in the background against in place (issue 24.4).

A last.pt before the last epoch is copied to host memory at the epoch's end and checksummed and written on a
thread while the next epoch trains (usagg/engine/checkpointing.py). This runs one AU job (two tasks, MoE,
dinov3_small at 32 px, so last.pt is some hundreds of MB beside short epochs, `checkpoint_every: 1`) through
`run_job` both ways, interleaved in one process: as shipped, and with each last.pt written in place from the
live state as before (no host copy, no thread). Per run: the seconds the job waited for checkpoints
(metrics.json `checkpoint_seconds`), training seconds and the job's wall seconds; the ratios of today's to
in-place's. CPU, one torch thread (the write then has the other core). `python -m benchmarks checkpoint`.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TASKS = [
    {"id": "fetal_head", "type": "segmentation", "num_classes": 2, "group": "Fetal"},
    {"id": "thyroid_malignancy", "type": "classification", "num_classes": 2, "group": "Thyroid"},
]


def _study(root: Path) -> dict[str, Any]:
    """The job's study: synthetic data, dinov3_small at 32 px with MoE, last.pt after every epoch."""
    return {
        "name": "bench-checkpoint",
        "paradigms": ["AU"],
        "data": {
            "synthetic": {"seed": 0, "image_size": 48, "default_size": 24, "val_size": 6, "out": str(root / "synth")},
            "selection_fraction": 0.25,
            "cache_dir": str(root / "cache"),
        },
        "tasks": TASKS,
        "model": {
            "backbone": "dinov3_small",
            "image_size": 32,
            "moe": {"experts": 4},
            "heads": {"hidden": 64, "decoder_channels": 32},
        },
        "training": {"epochs": 4, "batch_size": 8, "eval_batch_size": 16, "checkpoint_every": 1},
    }


ROUNDS = 2  # each way, interleaved: background, in place, background, in place


@contextlib.contextmanager
def in_place() -> Iterator[None]:
    """last.pt written as before: from the live state, in the training thread."""
    from usagg.engine import checkpointing

    start, copy = checkpointing._BackgroundWrite.start, checkpointing.host_copy
    checkpointing._BackgroundWrite.start = checkpointing._BackgroundWrite._write  # type: ignore[method-assign]
    checkpointing.host_copy = lambda obj: obj
    try:
        yield
    finally:
        checkpointing._BackgroundWrite.start = start  # type: ignore[method-assign]
        checkpointing.host_copy = copy


def _run(job: Any, folder: Path) -> dict[str, float]:
    from usagg.engine.job import run_job

    t0 = time.perf_counter()
    metrics = run_job(job, folder, "cpu")
    wall = time.perf_counter() - t0
    th = metrics["throughput"]
    return {
        "checkpoint_s": th["checkpoint_seconds"],
        "saves": th["checkpoint_saves"],
        "train_s": th["train_seconds"],
        "wall_s": wall,
        "last_pt_mb": (folder / "checkpoints" / "last.pt").stat().st_size / 2**20
        if (folder / "checkpoints" / "last.pt").is_file()
        else None,
    }


def main() -> dict:
    import torch

    from usagg.plan import plan
    from usagg.spec.models import Study

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="usagg-bench-checkpoint-") as tmp:
        root = Path(tmp)
        job = next(j for j in plan(Study.model_validate(_study(root))) if j.paradigm == "AU")
        _run(job, root / "warm")  # imports, decode cache, first kernels
        runs: dict[str, list[dict[str, float]]] = {"background": [], "in place": []}
        for r in range(ROUNDS):
            runs["background"].append(_run(job, root / f"bg{r}"))
            with in_place():
                runs["in place"].append(_run(job, root / f"ip{r}"))
    best = {k: min(v, key=lambda x: x["wall_s"]) for k, v in runs.items()}
    ratio = {m: best["background"][m] / best["in place"][m] for m in ("checkpoint_s", "wall_s")}
    print("one AU job (dinov3_small at 32 px, MoE, 2 tasks, 4 epochs, checkpoint_every 1), CPU, 1 torch thread")
    print(f"{'last.pt':<12}{'MB':>6}{'waited s':>10}{'saves':>7}{'train s':>9}{'wall s':>8}  (best wall of {ROUNDS})")
    for k, b in best.items():
        mb = b["last_pt_mb"] or 0.0
        print(f"{k:<12}{mb:>6.0f}{b['checkpoint_s']:>10.2f}{b['saves']:>7}{b['train_s']:>9.2f}{b['wall_s']:>8.2f}")
    print(f"background / in place: waited {ratio['checkpoint_s']:.2f}, wall {ratio['wall_s']:.2f}")
    return {"runs": runs, "best": best, "ratio": ratio}
