"""Evaluation: run the model over a split, map predictions back to original pixels, score, optionally write them.

Scoring follows the challenge in original-image pixels, each task type's way
(`TaskType.score`, usagg/tasktypes/); the written files (usagg/predictions.py)
hold exactly the numbers that were scored.
The same function serves the per-epoch selection split and the final test
split, so the selected epoch is chosen by the metric that is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from usagg.data.datasets import TaskDataset
from usagg.engine.batches import TensorSplit
from usagg.engine.device import Compute
from usagg.model.m2dino import M2DINO
from usagg.predictions import PredictionWriter
from usagg.spec.models import TaskSpec
from usagg.tasktypes import EvalItem, metric_direction


@dataclass
class EvalSet:
    """One task's split for evaluation: the dataset (ground truth at original size) and its tensors."""

    task: TaskSpec
    dataset: TaskDataset
    tensors: TensorSplit
    _metas: list[dict] | None = field(default=None, repr=False)

    @property
    def metas(self) -> list[dict]:
        """Image paths, original sizes and ground truths; read once (masks come from disk)."""
        if self._metas is None:
            self._metas = [self.dataset.meta(i) for i in range(len(self.dataset))]
        return self._metas


@dataclass
class TaskResult:
    """One task's metrics on a split, and the MoE expert usage summed over it (int64 [blocks, E] or None)."""

    metrics: dict[str, float]
    expert_usage: np.ndarray | None
    n_images: int
    diagonal: float = math.nan  # mean image diagonal in px: the scale of pixel metrics (MRE, HD)


@torch.inference_mode()
def predict(
    model: M2DINO, split: TensorSplit, compute: Compute, batch_size: int
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Normalised predictions of a whole split (on the CPU) and the summed expert usage."""
    model.eval()
    preds: list[torch.Tensor] = []
    usage: torch.Tensor | None = None
    for _, x, _ in split.chunks(batch_size, compute.device):
        with compute.autocast():
            out = model(x, split.task_id)
        p = model.predict(out.outputs, split.task_id)
        preds.append((p if p.dtype == torch.int64 else p.float()).cpu())
        if out.expert_usage is not None:
            u = out.expert_usage.detach().to("cpu", torch.int64)
            usage = u if usage is None else usage + u
    return torch.cat(preds), None if usage is None else usage.numpy()


def score(eval_set: EvalSet, preds: torch.Tensor, writer: PredictionWriter | None = None) -> dict[str, float]:
    """Metrics of one task from its normalised predictions; also adds them to `writer` when given."""
    task, ds = eval_set.task, eval_set.dataset
    items = [
        EvalItem(m["image_path"], m["orig_hw"], m["gt"], s) for m, s in zip(eval_set.metas, ds.samples, strict=True)
    ]
    return ds.task_type.score(task, preds.numpy(), items, writer)


def evaluate(
    model: M2DINO,
    sets: dict[str, EvalSet],
    compute: Compute,
    batch_size: int,
    writer: PredictionWriter | None = None,
) -> dict[str, TaskResult]:
    """Predict, score (and write) every task of a split."""
    out: dict[str, TaskResult] = {}
    for task_id, es in sets.items():
        preds, usage = predict(model, es.tensors, compute, batch_size)
        diagonal = float(np.mean([math.hypot(*m["orig_hw"]) for m in es.metas])) if len(es.tensors) else math.nan
        out[task_id] = TaskResult(score(es, preds, writer), usage, len(es.tensors), diagonal)
    return out


def selection_score(results: dict[str, TaskResult], tasks: dict[str, TaskSpec]) -> float:
    """Mean over tasks of the primary metric on one scale, higher always better.

    Bounded metrics (DSC, AUC, IoU) enter as they are; pixel metrics where lower
    is better (MRE) enter as 1 − value / image diagonal, so a 20 px error on a
    keypoint task cannot outweigh every DSC of a multi-task job. A task whose
    primary metric is undefined (nan, e.g. AUC with one class) is left out;
    with none defined the score is -inf (never selected over a defined one).
    """
    vals = []
    for task_id, r in results.items():
        name = tasks[task_id].metric or ""
        v = r.metrics.get(name, math.nan)
        if v is None or not math.isfinite(v):
            continue
        if metric_direction(name):
            vals.append(v)
        elif math.isfinite(r.diagonal) and r.diagonal > 0:
            vals.append(1.0 - v / r.diagonal)
        else:
            vals.append(-v)
    return float(np.mean(vals)) if vals else -math.inf


def finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metrics: nan and inf become null (the store writes them as empty cells)."""
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}
