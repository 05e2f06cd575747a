"""One Job end to end, without the run store: data, model, training, selection, test evaluation, files.

`run_job` writes into a job folder (its splits, checkpoints and predictions,
at the places `usagg.store.layout.JobPaths` names) and returns the job's metrics (a
`usagg.jobmetrics.JobMetrics` as metrics.json holds it); `runner.run_one` adds the
store around it (lock, state, log, errors, metrics). `build_trainer` is the one
place a job's Trainer is wired (run_job and the engine tests use it).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usagg.affinity import write_affinity
from usagg.atomic import write_json_atomic, write_json_checked
from usagg.cachedir import cache_root
from usagg.engine.accel import AccelMode, fallback_text, mode_ran, whole_step_graphs
from usagg.engine.augment import Augmenter
from usagg.engine.batches import GpuRoom, TensorSplit, job_trunks, place, trunk_share
from usagg.engine.callbacks import Callback
from usagg.engine.device import Compute, resolve_compute, resolve_device, seed_everything, set_threads
from usagg.engine.evaluate import EvalSet, TaskResult, evaluate, finite_or_none, trivial_scores
from usagg.engine.history import HistoryCsv
from usagg.engine.jobdata import JobData, load_job_data
from usagg.engine.kept import job_ended, job_model
from usagg.engine.progress import Progress, ProgressFn, send
from usagg.engine.selecting import RuleTests
from usagg.engine.trainer import FitResult, Trainer
from usagg.jobmetrics import NO_SELECTION_SPLIT, JobMetrics, running_code
from usagg.model.m2dino import M2DINO, build_model
from usagg.model.trunk import Trunk
from usagg.plan import Job
from usagg.predictions import PredictionWriter
from usagg.store.layout import JobPaths
from usagg.tasktypes import metric_direction
from usagg.wording import counted

log = logging.getLogger(__name__)


def _eval_sets(
    job: Job, datasets: dict, device: torch.device, trunks: dict[str, Trunk] | None = None, room: GpuRoom | None = None
) -> dict[str, EvalSet]:
    splits = {t: TensorSplit.from_dataset(ds, (trunks or {}).get(t)) for t, ds in datasets.items()}
    tensors = place(splits, device, room)
    return {t.id: EvalSet(t, datasets[t.id], tensors[t.id]) for t in job.tasks if t.id in datasets}


def build_trainer(
    job: Job,
    ckpt_dir: Path,
    compute: Compute,
    *,
    data: JobData | None = None,
    model: M2DINO | None = None,
    trunks: dict[str, Trunk] | None = None,
    augment: Augmenter | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: ProgressFn | None = None,
    step_graphs: bool = False,
    room: GpuRoom | None = None,
) -> Trainer:
    """The Trainer of `job` on `compute`'s device, wired as the job runs: its training splits (through the frozen
    `trunks`, with `augment`) and selection splits placed on the device, its training spec, seed, id and affinity.

    `data` and `model` default to the job's (load_job_data, build_model after the caller seeded): pass them where
    the caller needs them too (run_job builds the trunk from both) or wants another initialisation. `on_epoch` gets
    the whole history after each epoch; `callbacks` watch the fit (usagg/engine/callbacks.py); `progress` hears its
    epoch and step (usagg/engine/progress.py); `step_graphs`: each task's whole step recorded as a CUDA graph
    (usagg/engine/step.py); `room`: the job's GPU budget for its data (usagg/engine/batches.py `GpuRoom`; else
    the training and selection splits get one of their own).
    """
    dev = compute.device
    data = data if data is not None else load_job_data(job)
    model = model if model is not None else build_model(job.model, job.tasks, job.moe).to(dev)
    tr = trunks or {}
    room = room or GpuRoom(dev)
    train = place({t: TensorSplit.from_dataset(ds, tr.get(t), augment) for t, ds in data.train.items()}, dev, room)
    return Trainer(
        model,
        train,
        _eval_sets(job, data.select, dev, trunks, room),
        job.tasks,
        job.training,
        compute,
        job.seed,
        ckpt_dir,
        job.id,
        on_epoch=on_epoch,
        affinity=job.affinity,
        job_hash=job.hash,
        callbacks=callbacks,
        progress=progress,
        step_graphs=step_graphs,
    )


def _selection_record(fit: FitResult, trainer: Trainer, rule_tests: RuleTests) -> dict[str, Any]:
    """metrics.json `selection`: what was selected, how, what to keep in mind reading it, and the test metric of
    every task under each selection rule (`rules`, the selection gap's input) or why there is none."""
    out: dict[str, Any] = {
        "mode": fit.selection,
        "scope": fit.scope,
        "epoch": fit.selected_epoch,
        "epochs": fit.task_epochs,
        "score": fit.best_score,
        "rule": "model: mean relative change of the primary metrics versus the first selection epoch; "
        "task: each task's own primary metric; ties: lower selection loss, then the later epoch",
        "warnings": fit.warnings,
    }
    if fit.scope == "task" and fit.selection == "best":  # a one-task job always has scope model
        out["note"] = "optimistic: each task is tested at its own best epoch, which no single model of the job has"
    if trainer.select:
        out["rules"] = rule_tests.record(trainer.selector, trainer.state.epoch)
        rule_tests.log_cost(fit.train_seconds)
    else:
        out["rules_note"] = NO_SELECTION_SPLIT
    return out


def device_text(dev: torch.device) -> str:
    """Where a job computes, as its start line says it: 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if dev.type == "cuda":
        index = torch.cuda.current_device() if dev.index is None else dev.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{dev} ({counted(torch.get_num_threads(), 'thread')})"


def run_job(
    job: Job,
    job_dir: Path,
    device: str | None = None,
    threads: int | None = None,
    callbacks: Sequence[Callback] = (),
    accel: AccelMode = "eager",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train and evaluate `job` in `job_dir`; returns the job's metrics.json content, checked by `JobMetrics`
    (the caller writes it).

    `device`: cpu, cuda or cuda:N (None: the first visible GPU, else the CPU);
    `threads`: CPU threads for torch (None: torch's choice). After every epoch the
    job's history.csv is rewritten, then `callbacks` (run_one: the trackers) watch the fit; `progress` hears where
    the job runs (its first report, phase "start"), then the epoch and step (usagg/engine/progress.py).
    `accel`: launch-overhead option on CUDA (usagg/engine/accel.py; the CPU stays eager).
    """
    t_start = time.perf_counter()
    paths = JobPaths(Path(job_dir))
    set_threads(threads)
    dev = resolve_device(device)
    compute = resolve_compute(job.training.precision, dev)
    seed_everything(job.seed, dev)
    log.info(
        "job %s: tasks %s, moe %s, fraction %g, seed %d, device %s (%d CPU threads), precision %s",
        job.id,
        ", ".join(job.task_ids),
        job.moe,
        job.fraction,
        job.seed,
        dev,
        torch.get_num_threads(),
        compute.precision,
    )
    # the run's start line, before the data and the model load (minutes on a first run)
    note = fallback_text(accel, dev)
    send(progress, Progress(job.id, "start", 0, job.training.epochs, 0, 0, device=device_text(dev), accel_note=note))

    data = load_job_data(job)
    write_json_atomic(paths.splits, data.record(job.tasks))
    for t in job.tasks:
        n = {k: len(getattr(data.splits[t.id], k)) for k in ("train", "select", "test")}
        log.info("task %s (%s): %d train, %d select, %d test images", t.id, t.type, n["train"], n["select"], n["test"])

    # On the device before the frozen trunk is built: the trunk runs the model's own frozen blocks there. Under
    # compile or graphs on CUDA, the worker's compiled model of the same structure with this job's weights.
    model = job_model(job, accel, dev, cache_root(job.data.cache_dir))
    counts = model.trainable_counts()
    log.info("parameters: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if model.weights_info.get("random_init"):
        log.warning(
            "!!! RANDOM INIT: the %s encoder has NO pretrained weights (model.weights is empty); "
            "results are not comparable to a pretrained DINOv3 !!!",
            job.model.backbone,
        )

    step_graphs = whole_step_graphs(accel, dev)
    room = GpuRoom(dev)  # one GPU budget for the job's data: its trunks, then its test, training and selection splits
    trunks = job_trunks(model, job, data, compute, room)  # frozen-trunk cache
    test_sets = _eval_sets(job, data.test, dev, trunks, room)  # the rules' test passes use them during training
    rule_tests = RuleTests(job.tasks, test_sets, job.training)  # the selection gap's record
    # the rules' tests, history.csv, then trackers
    watchers: list[Callback] = [rule_tests, HistoryCsv(paths.history, job.task_ids), *callbacks]
    trainer = build_trainer(
        job,
        paths.checkpoints,
        compute,
        data=data,
        model=model,
        trunks=trunks,
        augment=Augmenter(job.training.augmentation, job.seed),
        callbacks=watchers,
        progress=progress,
        step_graphs=step_graphs,
        room=room,
    )
    fit = trainer.fit()
    _record_affinity(trainer, fit, paths, job)
    if (share := trunk_share(trainer.train)) is not None:
        log.info(share)
    results, eval_s = _final_evaluation(trainer, fit, model, test_sets, compute, job, paths)
    trivial = _trivial(trainer, test_sets, results)
    metrics = _job_metrics(
        job, data, model, trainer, fit, rule_tests, results, counts, trivial,
        timing=(t_start, eval_s), ran=(dev, compute.precision, mode_ran(accel, model, step_graphs), step_graphs),
    )  # fmt: skip
    job_ended(model)  # the model may serve the worker's next job of its structure
    return metrics


def _record_affinity(trainer: Trainer, fit: FitResult, paths: JobPaths, job: Job) -> None:
    """affinity.json of a job that measured inter-task affinity (AU for AG), logged with its cost, and a warning where
    the lookahead step overshot (a negative self-affinity)."""
    if trainer.affinity is None:
        return
    aff = trainer.affinity.record(fit.train_seconds)
    write_affinity(paths.affinity, aff)
    log.info(
        "affinity: %d measurement(s), every %d steps, probe %s images per task: %.1f s, %.1f %% of training",
        len(aff.steps),
        aff.every,
        job.affinity.probe_size if job.affinity else "?",
        aff.seconds,
        100 * aff.share,
    )
    if aff.overshot:
        log.warning(
            "affinity: the lookahead step raised the own probe loss of %s (negative self-affinity): it overshoots; "
            "a lower analysis.affinity.lookahead_lr measures in the linear regime",
            ", ".join(aff.overshot),
        )
    if aff.at_resolution:
        log.warning("affinity: %s", aff.resolution_text())


def _final_evaluation(
    trainer: Trainer,
    fit: FitResult,
    model: M2DINO,
    test_sets: dict[str, EvalSet],
    compute: Compute,
    job: Job,
    paths: JobPaths,
) -> tuple[dict[str, TaskResult], float]:
    """The selected weights on the test split, predictions written in the challenge's format and each test image's
    scores in item_scores.json (the test-set bootstrap's input): every task with the weights of its selected epoch
    (one epoch for all with selection_scope model). The results by task and the seconds it took."""
    if paths.predictions.exists():
        shutil.rmtree(paths.predictions)  # a previous, interrupted attempt's files
    t_eval = time.perf_counter()
    with PredictionWriter(paths.predictions) as writer:
        results: dict[str, TaskResult] = {}
        for epoch, ids in fit.test_groups():
            trainer.use_weights(epoch)
            sets = {t: test_sets[t] for t in ids if t in test_sets}
            results.update(evaluate(model, sets, compute, job.training.eval_batch_size, writer))
    write_json_checked(paths.item_scores, writer.item_scores())
    return results, time.perf_counter() - t_eval


def _trivial(
    trainer: Trainer, test_sets: dict[str, EvalSet], results: dict[str, TaskResult]
) -> dict[str, dict[str, float | None]]:
    """Task -> the primary metric of each trivial predictor on its test split (`trivial_scores`, from the training
    targets of this job), and a warning in the job's log where the model's own is no better than the best of them:
    a mask, box or class no better than a constant one (the analysis then calls the task's baseline at chance)."""
    out = {}
    for t, es in test_sets.items():
        split = trainer.train.get(t)
        if split is None or not (levels := trivial_scores(es, split.targets.cpu().numpy())):
            continue
        out[t] = levels
        metric = es.task.metric or es.dataset.task_type.primary_metric
        value, higher = results[t].metrics.get(metric) if t in results else None, metric_direction(metric)
        finite = {k: v for k, v in levels.items() if v is not None}
        if value is None or not finite or higher is None or not math.isfinite(value):
            continue
        name, best = (max if higher else min)(finite.items(), key=lambda kv: kv[1])
        if (value <= best) if higher else (value >= best):
            log.warning(
                "task %s: %s %.4g is no better than the %s's %.4g, a constant prediction: this model shows no skill "
                "on the task (the analysis calls a baseline that does not beat it at chance)",
                t, metric, value, name, best,
            )  # fmt: skip
    return out


def _job_metrics(
    job: Job,
    data: JobData,
    model: M2DINO,
    trainer: Trainer,
    fit: FitResult,
    rule_tests: RuleTests,
    results: dict[str, TaskResult],
    counts: dict[str, int],
    trivial: dict[str, dict[str, float | None]],
    *,
    timing: tuple[float, float],
    ran: tuple[torch.device, str, str, bool],
) -> dict[str, Any]:
    """metrics.json's content, checked by `JobMetrics`: each task's test metrics, steps and trivial predictors'
    scores (`trivial`, from `_trivial`), expert usage, the weights and parameters, the selection record, the
    history, how it trained (the code that ran it too) and its throughput. `timing`: the job's start
    (perf_counter) and the test evaluation's seconds; `ran`: device, precision, the accel mode that ran and whether
    whole-step graphs replayed."""
    t_start, eval_s = timing
    dev, precision, accel_ran, step_graphs = ran
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
            "steps": sum(h.get("task_steps", {}).get(t.id, 0) for h in fit.history),
        }
        if t.id in trivial:
            tasks[t.id]["trivial"] = trivial[t.id]
        if r is not None and r.expert_usage is not None:
            usage[t.id] = np.asarray(r.expert_usage, dtype=np.int64).tolist()
    later = trainer.later_images_per_s
    return JobMetrics.model_validate(
        {
            "job_id": job.id,
            "tasks": tasks,
            "expert_usage": usage if job.moe and usage else None,
            "weights": dict(model.weights_info),
            "params": counts,
            "selection": _selection_record(fit, trainer, rule_tests),
            "history": fit.history,
            "training": {
                "epochs": job.training.epochs,
                "steps": fit.steps,
                "steps_per_epoch": trainer.steps_per_epoch,
                "sampling": trainer.sampler.mode,
                "loss_balance": trainer.balance.record(),
                "device": str(dev),
                "threads": trainer.cpu_threads,
                "threads_before": trainer.threads_before,
                "precision": precision,
                **running_code(),
            },
            "throughput": {
                "train_images_per_s": round(fit.images_per_s, 2),
                "train_seconds": round(fit.train_seconds, 3),
                "later_images_per_s": None if later is None else round(later, 2),
                "eval_images_per_s": round(n_test / eval_s, 2) if eval_s > 0 else None,
                "wall_seconds": round(time.perf_counter() - t_start, 3),
                "selection_seconds": round(trainer.selection.eval_seconds, 3),
                "keep_seconds": round(trainer.selection.keep_seconds, 3),
                "rule_test_seconds": round(rule_tests.seconds, 3),
                "checkpoint_seconds": round(trainer.checkpoints.seconds, 3),
                "checkpoint_saves": trainer.checkpoints.saves,
                "epoch_end_seconds": round(trainer.epoch_end_seconds, 3),
                "accel": accel_ran,
                **(
                    {"replayed_steps": trainer.train_step.replays, "unrecorded_tasks": trainer.train_step.unrecorded()}
                    if step_graphs
                    else {}
                ),
            },
        }
    ).to_json()
