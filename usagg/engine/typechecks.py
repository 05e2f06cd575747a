"""What a task type's code hands the engine, checked where it arrives: its head's predictions before `score`
(`check_predictions`: one row per image, each row the shape and dtype kind the type declares), and `score`'s
metrics after it (`checked_scores`: the declared names, real numbers within their bounds).

A type is often someone else's code (a plug-in): each check fails the job with one paragraph naming the type,
the module that registered it and the task, where the mistake otherwise reached the results as wrong numbers or
ended deep inside a metric with a traceback naming neither. The checks read shapes and dtypes of predictions
already on the host, once per split: no device sync, no pass over the values.
"""

from __future__ import annotations

import math
import numbers

import torch

from usagg.errors import UsaggError
from usagg.spec.models import TaskSpec
from usagg.tasktypes import Metric, PredictionShape, TaskType, metric_base, type_error, type_origin
from usagg.wording import counted

#: The dtype `predict`'s normalised output has for each declared kind (usagg/engine/evaluate.py `normalised`).
KIND_DTYPES = {"integer": torch.int64, "float": torch.float32}


def check_predictions(task_type: TaskType, task: TaskSpec, preds: torch.Tensor, images: int, image_size: int) -> None:
    """A UsaggError naming the type, its origin and the task unless `preds` holds one prediction per image, each
    of the shape and dtype kind `task_type.prediction_shape` declares (a type declaring None: the row count only).

    A type's `score` is handed the predictions as they are: a plug-in head's `predict` returning one row per batch
    was broadcast against every label by its `score`, and the job ended done with wrong metrics (audit: plug-ins);
    a mask at another size, a class column short or a box of three coordinates was scored wrong or failed inside a
    metric.
    """
    where = f"task type {task_type.name!r} ({type_origin(task_type)}) head predict()"
    rows = preds.shape[0] if preds.ndim else None
    if rows != images:
        got = "a 0-dimensional tensor" if rows is None else f"{rows} prediction row(s)"
        raise UsaggError(
            f"{where} gave {got} for the {images} image(s) of task {task.id!r}; predict must return one prediction "
            f"per input image, stacked along the first dimension (shape {tuple(preds.shape)})"
        )
    declared = declared_shape(task_type, task, image_size)
    if declared is None:
        return
    # the paragraph leads with what a job's one-line error keeps (store.ERROR_CHARS): task, type, origin, both shapes
    kind_ok = declared.kind is None or preds.dtype == KIND_DTYPES[declared.kind]
    if tuple(preds.shape[1:]) != declared.shape or not kind_ok:
        got = f"{str(preds.dtype).removeprefix('torch.')} [{', '.join(map(str, preds.shape))}]"
        raise UsaggError(
            f"{where} for task {task.id!r} gave {got} for {counted(images, 'image')}, but the type declares "
            f"{declared.text()} per image (prediction_shape(), num_classes {task.num_classes}, image size "
            f"{image_size}): predict must return {declared.text(images)}, or prediction_shape() must declare what "
            "score() reads"
        )


def declared_shape(task_type: TaskType, task: TaskSpec, image_size: int) -> PredictionShape | None:
    """`task_type.prediction_shape(task, image_size)`, its errors and a return of another kind naming the type."""
    try:
        declared = task_type.prediction_shape(task, image_size)
    except Exception as err:
        raise type_error(task_type, task.id, "prediction_shape()", err) from err
    if declared is not None and not isinstance(declared, PredictionShape):
        raise UsaggError(
            f"task type {task_type.name!r} ({type_origin(task_type)}) prediction_shape() for task {task.id!r} "
            f"returned {declared!r}; it returns a tasktypes.PredictionShape, or None to have only the number of "
            "prediction rows checked"
        )
    return declared


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
    where = f"task type {task_type.name!r} ({type_origin(task_type)}) score() for task {task.id!r}"
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
