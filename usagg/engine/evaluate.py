"""Evaluation: run the model over a split, map predictions back to original pixels, score, optionally write them.

Scoring follows the challenge in original-image pixels, each task type's way
(`TaskType.score`, usagg/tasktypes/); the written files (usagg/predictions.py)
hold exactly the numbers that were scored.
The same function serves the per-epoch selection split and the final test
split, so the selected epoch is chosen by the metric that is reported; for
selection it computes only each task's primary metric (no Hausdorff distance
every epoch) and, in the same pass, the task's loss (usagg/engine/selection.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from usagg.data.datasets import TaskDataset
from usagg.engine.batches import TensorSplit
from usagg.engine.device import Compute
from usagg.engine.typechecks import check_predictions, checked_scores
from usagg.errors import UsaggError
from usagg.model.m2dino import M2DINO
from usagg.predictions import PredictionWriter
from usagg.spec.models import TaskSpec
from usagg.tasktypes import EvalItem, type_error


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
    loss: float = math.nan  # mean head loss over the split (selection only; without the MoE auxiliary loss)


@dataclass
class Predicted:
    """A split's normalised predictions (on the CPU), summed expert usage and, when asked, its mean loss."""

    preds: torch.Tensor
    expert_usage: np.ndarray | None
    loss: float = math.nan


@torch.inference_mode()
def predict(model: M2DINO, split: TensorSplit, compute: Compute, batch_size: int, with_loss: bool = False) -> Predicted:
    """Predictions of a whole split; `with_loss`: also the head's loss against the split's targets, batches
    weighted by their size. Predictions, usage and loss stay on the device until the split ends: one copy each
    to the host per split, none per batch."""
    model.eval()
    preds: list[torch.Tensor] = []
    usage: torch.Tensor | None = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=compute.device)
    for _, x, y in split.chunks(batch_size, compute.device):
        with compute.autocast():
            out = model(x, split.task_id, y if with_loss else None)
        if out.loss is not None:
            loss_sum += (out.loss - out.aux_loss).double() * x.shape[0]
        preds.append(model.predict(out.outputs, split.task_id))
        if out.expert_usage is not None:
            usage = out.expert_usage if usage is None else usage + out.expert_usage
    loss = float(loss_sum.item()) / len(split) if with_loss and len(split) else math.nan
    p = normalised(torch.cat(preds) if len(preds) > 1 else preds[0]).cpu()
    return Predicted(p, None if usage is None else usage.to("cpu", torch.int64).numpy(), loss)


def normalised(preds: torch.Tensor) -> torch.Tensor:
    """Predictions in the two dtypes `score` takes: int64 for integer and boolean ones (class maps), float32 for
    any other (a head's bf16 under autocast), so a type's declared kind (`PredictionShape.kind`) reads one dtype."""
    if preds.dtype in (torch.int64, torch.float32):
        return preds
    return preds.float() if preds.is_floating_point() or preds.is_complex() else preds.long()


def score(
    eval_set: EvalSet, preds: torch.Tensor, writer: PredictionWriter | None = None, metrics: list[str] | None = None
) -> dict[str, float]:
    """Metrics of one task from its normalised predictions (only `metrics` when given); also adds them to
    `writer` when given."""
    task, ds = eval_set.task, eval_set.dataset
    items = [
        EvalItem(m["image_path"], m["orig_hw"], m["gt"], s) for m, s in zip(eval_set.metas, ds.samples, strict=True)
    ]
    check_predictions(ds.task_type, task, preds, len(items), ds.image_size)
    try:
        scores = ds.task_type.score(task, preds.numpy(), items, writer, metrics=metrics)
    except UsaggError:
        raise
    except Exception as err:
        raise type_error(ds.task_type, task.id, "score()", err) from err
    return checked_scores(ds.task_type, task, scores)


def trivial_scores(eval_set: EvalSet, train_targets: np.ndarray) -> dict[str, float | None]:
    """The task's primary metric on this split for each trivial predictor of its type (`TaskType.trivial_predictions`:
    a constant mask, box, keypoints or class frequencies, from the training targets at most), scored by the same
    `score` as the model's predictions (null where undefined): the level a baseline without skill reaches, which
    the analysis holds the baseline against (metrics.json `trivial`). {} for an empty split or a type declaring
    none."""
    task, ds = eval_set.task, eval_set.dataset
    n = len(eval_set.metas)
    if n == 0:
        return {}
    metric = task.metric or ds.task_type.primary_metric
    try:
        rows = ds.task_type.trivial_predictions(task, ds.image_size, train_targets)
    except UsaggError:
        raise
    except Exception as err:
        raise type_error(ds.task_type, task.id, "trivial_predictions()", err) from err
    out: dict[str, float | None] = {}
    for name, row in rows.items():
        one = np.asarray(row)
        preds = normalised(torch.from_numpy(np.ascontiguousarray(np.broadcast_to(one, (n, *one.shape)))))
        value = score(eval_set, preds, metrics=[metric]).get(metric, math.nan)
        out[name] = float(value) if math.isfinite(value) else None
    return out


def evaluate(
    model: M2DINO,
    sets: dict[str, EvalSet],
    compute: Compute,
    batch_size: int,
    writer: PredictionWriter | None = None,
    *,
    for_selection: bool = False,
) -> dict[str, TaskResult]:
    """Predict, score (and write) every task of a split.

    `for_selection`: only each task's primary metric, plus its loss on the split in the same pass.
    """
    out: dict[str, TaskResult] = {}
    for task_id, es in sets.items():
        p = predict(model, es.tensors, compute, batch_size, with_loss=for_selection)
        diagonal = float(np.mean([math.hypot(*m["orig_hw"]) for m in es.metas])) if len(es.tensors) else math.nan
        metrics = score(es, p.preds, writer, [es.task.metric or ""] if for_selection else None)
        out[task_id] = TaskResult(metrics, p.expert_usage, len(es.tensors), diagonal, p.loss)
    return out


def finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metrics: nan and inf become null (the store writes them as empty cells)."""
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}
