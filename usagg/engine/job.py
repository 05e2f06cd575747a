"""One Job end to end, without the run store: data, model, training, selection, test evaluation, files.

`run_job` writes into a job folder (its splits, checkpoints and predictions,
at the places `usagg.store.JobPaths` names) and returns the job's metrics;
`runner.run_one` adds the store around it (lock, state, log, errors, metrics).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usagg.engine.batches import TensorSplit, place
from usagg.engine.device import resolve_compute, resolve_device, seed_everything, set_threads
from usagg.engine.evaluate import EvalSet, evaluate, finite_or_none
from usagg.engine.jobdata import load_job_data
from usagg.engine.trainer import Trainer
from usagg.model.m2dino import build_model
from usagg.plan import Job
from usagg.predictions import PredictionWriter
from usagg.store import JobPaths, write_json_atomic

log = logging.getLogger(__name__)


def _eval_sets(job: Job, datasets: dict, device: torch.device) -> dict[str, EvalSet]:
    tensors = place({t: TensorSplit.from_dataset(ds) for t, ds in datasets.items()}, device)
    return {t.id: EvalSet(t, datasets[t.id], tensors[t.id]) for t in job.tasks if t.id in datasets}


def run_job(job: Job, job_dir: Path, device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate `job` in `job_dir`; returns the job's metrics (the caller writes them).

    `device`: cpu, cuda or cuda:N (None: the first visible GPU, else the CPU);
    `threads`: CPU threads for torch (None: torch's choice).
    """
    t_start = time.perf_counter()
    paths = JobPaths(Path(job_dir))
    set_threads(threads)
    dev = resolve_device(device)
    compute = resolve_compute(job.training.precision, dev)
    seed_everything(job.seed, dev)
    log.info(
        "job %s: tasks %s, moe %s, fraction %g, seed %d, device %s, precision %s",
        job.id,
        ", ".join(job.task_ids),
        job.moe,
        job.fraction,
        job.seed,
        dev,
        compute.precision,
    )

    data = load_job_data(job)
    write_json_atomic(paths.splits, data.record())
    for t in job.tasks:
        n = {k: len(getattr(data.splits[t.id], k)) for k in ("train", "select", "test")}
        log.info("task %s (%s): %d train, %d select, %d test images", t.id, t.type, n["train"], n["select"], n["test"])

    model = build_model(job.model, job.tasks, job.moe)
    counts = model.trainable_counts()
    log.info("parameters: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if model.weights_info.get("random_init"):
        log.warning(
            "!!! RANDOM INIT: the %s encoder has NO pretrained weights (model.weights is empty); "
            "results are not comparable to a pretrained DINOv3 !!!",
            job.model.backbone,
        )

    train = place({t: TensorSplit.from_dataset(ds) for t, ds in data.train.items()}, dev)
    trainer = Trainer(
        model,
        train,
        _eval_sets(job, data.select, dev),
        job.tasks,
        job.training,
        compute,
        job.seed,
        paths.checkpoints,
        job.id,
    )
    fit = trainer.fit()

    # Final evaluation of the selected weights on the test split, predictions in the challenge format.
    test_sets = _eval_sets(job, data.test, dev)
    pred_dir = paths.predictions
    if pred_dir.exists():
        shutil.rmtree(pred_dir)  # a previous, interrupted attempt's files
    t_eval = time.perf_counter()
    with PredictionWriter(pred_dir) as writer:
        results = evaluate(model, test_sets, compute, job.training.eval_batch_size, writer)
    eval_s = time.perf_counter() - t_eval
    n_test = sum(r.n_images for r in results.values())

    tasks: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    for t in job.tasks:
        r = results.get(t.id)
        tasks[t.id] = {
            "type": t.type,
            "primary": t.metric,
            "metrics": finite_or_none(r.metrics) if r else {},
            "n_train": len(data.splits[t.id].train),
            "n_test": r.n_images if r else 0,
        }
        if r is not None and r.expert_usage is not None:
            usage[t.id] = np.asarray(r.expert_usage, dtype=np.int64).tolist()
    return {
        "job_id": job.id,
        "tasks": tasks,
        "expert_usage": usage if job.moe and usage else None,
        "weights": dict(model.weights_info),
        "params": counts,
        "selection": {"mode": fit.selection, "epoch": fit.selected_epoch, "score": fit.best_score},
        "history": fit.history,
        "training": {
            "epochs": job.training.epochs,
            "steps": fit.steps,
            "steps_per_epoch": trainer.steps_per_epoch,
            "device": str(dev),
            "precision": compute.precision,
        },
        "throughput": {
            "train_images_per_s": round(fit.images_per_s, 2),
            "train_seconds": round(fit.train_seconds, 3),
            "eval_images_per_s": round(n_test / eval_s, 2) if eval_s > 0 else None,
            "wall_seconds": round(time.perf_counter() - t_start, 3),
        },
    }
