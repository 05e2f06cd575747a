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
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from usagg.data.datasets import TaskDataset
from usagg.engine.batches import TensorSplit
from usagg.engine.device import Compute
from usagg.errors import UsaggError
from usagg.model.m2dino import M2DINO
from usagg.predictions import PredictionWriter
from usagg.spec.models import TaskSpec
from usagg.tasktypes import EvalItem, Metric, TaskType, metric_base, type_error


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
    p = torch.cat(preds) if len(preds) > 1 else preds[0]
    p = (p if p.dtype in (torch.int64, torch.float32) else p.float()).cpu()
    return Predicted(p, None if usage is None else usage.to("cpu", torch.int64).numpy(), loss)


def score(
    eval_set: EvalSet, preds: torch.Tensor, writer: PredictionWriter | None = None, metrics: list[str] | None = None
) -> dict[str, float]:
    """Metrics of one task from its normalised predictions (only `metrics` when given); also adds them to
    `writer` when given."""
    task, ds = eval_set.task, eval_set.dataset
    items = [
        EvalItem(m["image_path"], m["orig_hw"], m["gt"], s) for m, s in zip(eval_set.metas, ds.samples, strict=True)
    ]
    check_rows(ds.task_type, task, preds, len(items))
    try:
        scores = ds.task_type.score(task, preds.numpy(), items, writer, metrics=metrics)
    except UsaggError:
        raise
    except Exception as err:
        raise type_error(ds.task_type, task.id, "score()", err) from err
    return checked_scores(ds.task_type, task, scores)


def check_rows(task_type: TaskType, task: TaskSpec, preds: torch.Tensor, images: int) -> None:
    """A UsaggError naming the type, its module and the task unless `preds` holds one prediction per image.

    A type's `score` is handed the predictions as they are: a plug-in head's `predict` returning one row per batch
    was broadcast against every label by its `score`, and the job ended done with wrong metrics (audit: plug-ins).
    """
    rows = preds.shape[0] if preds.ndim else None
    if rows != images:
        got = "a 0-dimensional tensor" if rows is None else f"{rows} prediction row(s)"
        raise UsaggError(
            f"task type {task_type.name!r} ({type(task_type).__module__}) head predict() gave {got} for the "
            f"{images} image(s) of task {task.id!r}; predict must return one prediction per input image, stacked "
            f"along the first dimension (shape {tuple(preds.shape)})"
        )


def checked_scores(task_type: TaskType, task: TaskSpec, scores: dict[str, float]) -> dict[str, float]:
    """`scores` as floats when every name is a declared metric (or its per-class variant), the task's metric is
    there and each value is a real number (NaN: not computable on this split) within its metric's declared bounds.

    Otherwise a UsaggError naming the type: an undeclared name has no direction in results.csv, a task
    without its metric drops out of every aggregate from a job that would be recorded as done, and a value outside
    its bounds (a QWK of 1.7) enters every Δ and bound the analysis computes; an array or a string failed with a bare
    TypeError naming neither the type nor the metric.
    """
    undeclared = sorted(k for k in scores if metric_base(k) not in task_type.metric_names)
    metric = task.metric or task_type.primary_metric  # a validated TaskSpec has it filled in
    where = f"task type {task_type.name!r} ({type(task_type).__module__}) score() for task {task.id!r}"
    if undeclared or metric not in scores:
        problem = (
            f"returned the undeclared {', '.join(map(repr, undeclared))}"
            if undeclared
            else f"returned {', '.join(map(repr, scores)) or 'no metric'}, without the task's metric {metric!r}"
        )
        raise UsaggError(
            f"{where} {problem}; it must return the metrics it declares ({', '.join(task_type.metric_names)}), keyed "
            "by those names (per-class variants such as DSC_class2 included)"
        )
    declared = {m.name: m for m in task_type.metrics}
    problems = [p for k, v in scores.items() if (p := _value_problem(declared[metric_base(k)], k, v))]
    if problems:
        raise UsaggError(
            f"{where} returned {'; '.join(problems)}; score() returns each metric as a real number (NaN where it "
            "cannot be computed on the split) within the bounds its Metric declares"
        )
    return {k: float(v) for k, v in scores.items()}


#: How far past a declared bound a value may be and still count as on it (float rounding of an exact 1.0).
BOUND_SLACK = 1e-9


def _value_problem(declared: Metric, name: str, value: object) -> str | None:
    """What is wrong with `value` as metric `name` (a `declared` metric or its per-class variant), None if nothing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"{name} = {shown}, a {type(value).__name__}, not a real number"
    v = float(value)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return f"{name} = {v}, not finite (a metric that cannot be computed is NaN)"
    lower, upper = declared.lower, declared.upper
    if lower is not None and v < lower - BOUND_SLACK * max(1.0, abs(lower)):
        return f"{name} = {v:g}, below its declared lower bound {lower:g}"
    if upper is not None and v > upper + BOUND_SLACK * max(1.0, abs(upper)):
        return f"{name} = {v:g}, above its declared upper bound {upper:g}"
    return None


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
