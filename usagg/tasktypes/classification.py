"""Classification: one class per image (FMC_UIA `mask` column holds the class index).

Scored as the challenge does: AUC (binary: probability of class 1; multi-class:
macro one-vs-rest; NaN where scikit-learn calls it undefined, a binary task with one
class present; 0.0 where scikit-learn refuses the input, a class absent from a
multi-class task), accuracy, F1 macro and weighted, MCC; the predicted class is the
argmax. Splits are stratified by class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.predictions import as_floats
from usagg.tasktypes import register_task_type
from usagg.tasktypes.base import EvalItem, Metric, PredictionShape, Row, RowError, TaskType

if TYPE_CHECKING:
    from usagg.data.fmc_uia import Sample
    from usagg.model.heads import TaskHead
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec


@register_task_type
class Classification(TaskType):
    name = "classification"
    target_geometry = "label"
    order = 20
    metrics = (
        Metric("AUC", True, lower=0.0, upper=1.0),
        Metric("ACC", True, lower=0.0, upper=1.0),
        Metric("F1_macro", True, lower=0.0, upper=1.0),
        Metric("F1_weighted", True, lower=0.0, upper=1.0),
        Metric("MCC", True, lower=-1.0, upper=1.0),
    )
    num_classes_meaning = "classes"
    prediction_file = "classification_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_class", "predicted_probs")
    stratified = True
    marker, color, short_name = "s", "#543005", "classif."

    def check_num_classes(self, n: int) -> str | None:
        return f"a classification task needs num_classes >= 2, got {n}" if n < 2 else None

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        return ("mask",)

    def parse_label(self, row: Row, num_classes: int) -> int:
        label = row.integer("mask")
        if not 0 <= label < num_classes:
            raise RowError("label_out_of_range", f"class label {label} is outside 0..{num_classes - 1} (num_classes)")
        return label

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        return [int(label)]

    def stratum(self, label: Any) -> int:
        return int(label)

    def summary_keys(self, sample: Sample, checked: Any) -> list[str]:
        return [str(sample.label)]

    def summary_text(self, counts: dict[str, int]) -> str:
        return " ".join(f"{k}:{v}" for k, v in counts.items()) or "-"

    def train_split_warning(self, samples: Sequence[Sample], num_classes: int) -> str | None:
        """A class with no training image: the model never learns it, and its test metrics do not show that."""
        absent = _absent(samples, num_classes)
        if absent is None:
            return None
        return (
            f"{absent}: the model never sees that class and predicts it for no image, while its AUC on the test "
            "split ranks probabilities it never learnt and can read anything up to 1.0; add training images of "
            "the class (e.g. move some of its val rows to train)"
        )

    def test_split_warning(self, samples: Sequence[Sample], num_classes: int) -> str | None:
        """A class with no test image: AUC is then undefined, and what the scoring records instead."""
        absent = _absent(samples, num_classes)
        if absent is None:
            return None
        if num_classes == 2:
            return (
                f"{absent}: its AUC is undefined and will be NaN (an empty cell in results.csv), as the "
                "challenge's evaluation reports it; ACC, F1 and MCC are computed as usual"
            )
        return (
            f"{absent}: scikit-learn refuses its one-vs-rest AUC, which will be 0.0, as the challenge's "
            "evaluation records the refusal; ACC, F1 and MCC are computed as usual"
        )

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """int64 [N] class indices."""
        return np.array([s.label for s in samples], dtype=np.int64)

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> TaskHead:
        from usagg.model.heads import ClassificationHead

        return ClassificationHead(embed_dim, n_features, task.num_classes, heads.hidden)

    def prediction_shape(self, task: TaskSpec, image_size: int) -> PredictionShape:
        """Class probabilities [C], which AUC reads as they are and ACC, F1, MCC through their argmax."""
        return PredictionShape((task.num_classes,), "float")

    def trivial_predictions(self, task: TaskSpec, image_size: int, train_targets: np.ndarray) -> dict[str, np.ndarray]:
        """The training class frequencies as every image's probabilities: AUC 0.5 (all tied), ACC the test share of
        the training split's majority class."""
        counts = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=task.num_classes)[: task.num_classes]
        freq = counts / counts.sum() if counts.sum() else np.full(task.num_classes, 1.0 / task.num_classes)
        return {"training class frequencies": freq.astype(np.float32)}

    def ground_truth(self, sample: Sample) -> int:
        return int(sample.label)

    def score(
        self,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """AUC, ACC, F1, MCC; item scores: AUC the label and probabilities (kind "auc"), ACC whether each
        image is right ("mean"), F1 and MCC the true and predicted class ("confusion")."""
        wanted = self.wanted(metrics)
        if not items:
            return self.empty_scores(metrics)
        probs = np.asarray(preds, dtype=np.float64)
        labels = np.array([it.gt for it in items], dtype=np.int64)
        if writer is not None:
            for it, p in zip(items, probs, strict=True):
                write_probs(writer, task.id, it.image_path, p)
        out = classification_metrics(probs, labels, wanted)
        if writer is not None and task.metric in out:
            kind, values = item_values(task.metric, probs, labels)
            self.record_item_scores(writer, task, kind, items, values)
        return out


def _absent(samples: Sequence[Sample], num_classes: int) -> str | None:
    """ "no image of class 1 (of 0..1)" for the classes no sample has; None when every class has one."""
    missing = sorted(set(range(num_classes)) - {int(s.label) for s in samples})
    if not missing:
        return None
    return f"no image of class {', '.join(map(str, missing))} (of 0..{num_classes - 1})"


def item_values(metric: str, probs: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray]:
    """(kind, values) that recompute `metric` on a resample of the images (usagg/predictions.py `ITEM_KINDS`)."""
    if metric == "AUC":
        return "auc", np.column_stack([labels, probs]).astype(np.float64)
    pred = probs.argmax(axis=1)
    if metric == "ACC":
        return "mean", (pred == labels).astype(np.float64)
    return "confusion", np.column_stack([labels, pred]).astype(np.float64)


def write_probs(writer: PredictionWriter, task_id: str, image_path: str, probs: Sequence[float] | np.ndarray) -> None:
    """Class probabilities ``[C]``; the predicted class is their argmax."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size < 2 or not np.all(np.isfinite(p)):
        raise ValueError(f"{task_id}/{image_path}: probs must be C >= 2 finite numbers, got {probs!r}")
    writer.add(
        Classification, task_id, image_path, {"predicted_class": int(np.argmax(p)), "predicted_probs": as_floats(p)}
    )


# --------------------------------------------------------------------------- metrics


def auc_or_nan(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the challenge's evaluate.py calls scikit-learn, nan where scikit-learn cannot compute it.

    C = 2: ``roc_auc_score(labels, probs[:, 1])``; C > 2:
    ``roc_auc_score(labels, probs, average="macro", multi_class="ovr")``, which
    needs every class in ``labels`` (and rows summing to 1). Undefined cases
    (one class present, a class absent from a multi-class task) are nan here,
    whether scikit-learn raises or (binary) warns and returns nan.
    """
    auc = _sklearn_auc(probs, labels)
    return math.nan if auc is None else auc


def _sklearn_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """scikit-learn's AUC as evaluate.py asks for it; None where it raises (the script then records 0.0)."""
    from sklearn.metrics import roc_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning: a single class present, nan returned
        try:
            if probs.shape[1] == 2:
                auc = roc_auc_score(labels, probs[:, 1])
            else:
                auc = roc_auc_score(labels, probs, average="macro", multi_class="ovr")
        except ValueError:
            return None
    return float(auc)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, metrics: Sequence[str] = ("AUC", "ACC", "F1_macro", "F1_weighted", "MCC")
) -> dict[str, float]:
    """AUC, ACC, F1_macro, F1_weighted and MCC (those ``metrics`` names) from probabilities ``[N, C]`` and labels.

    The predicted class is ``argmax(probs)``. AUC: with C = 2 the ROC AUC of
    ``probs[:, 1]``; with C > 2 sklearn's macro one-vs-rest AUC. As the
    challenge's evaluation records it: NaN where scikit-learn returns NaN (a
    binary task with a single class present: undefined, left out of model
    selection, an empty cell in results), 0.0 where scikit-learn raises (a class
    of a multi-class task absent from ``labels``); :func:`auc_or_nan` is NaN for
    both. `usagg data check` warns of a val split that lacks a class. F1 uses
    sklearn with ``zero_division=0`` over the classes seen in labels or
    predictions, MCC is sklearn's ``matthews_corrcoef``, as in the challenge's script.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be [N, C] with C >= 2, got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"labels must be [N] with N = {p.shape[0]}, got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError("classification_metrics needs at least one sample")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain nan or inf")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer class indices")
        y = y.astype(np.int64)
    num_classes = p.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")

    unknown = set(metrics) - {"AUC", *_FROM_LABELS}
    if unknown:
        raise ValueError(f"unknown classification metric(s) {sorted(unknown)}; expected AUC, {', '.join(_FROM_LABELS)}")
    out: dict[str, float] = {}
    if "AUC" in metrics:
        auc = _sklearn_auc(p, y)
        out["AUC"] = 0.0 if auc is None else auc
    pred = p.argmax(axis=1)
    out.update({name: label_metric(name, y, pred) for name in _FROM_LABELS if name in metrics})
    return out


def label_metric(name: str, labels: np.ndarray, pred: np.ndarray) -> float:
    """ACC, F1_macro, F1_weighted or MCC from the true and the predicted classes (no probabilities needed)."""
    return _FROM_LABELS[name](np.asarray(labels), np.asarray(pred))


def _mcc(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    with warnings.catch_warnings():
        # MCC warns (and returns 0) when a row or column of the confusion matrix is empty.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(matthews_corrcoef(y, pred))


def _f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def f1(y: np.ndarray, pred: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(y, pred, average=average, zero_division=0))

    return f1


#: The metrics of (labels, predicted classes), in the order reported (after AUC).
_FROM_LABELS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "ACC": lambda y, pred: float(np.mean(pred == y)),
    "F1_macro": _f1("macro"),
    "F1_weighted": _f1("weighted"),
    "MCC": _mcc,
}
