"""Classification: one class per image (FMC_UIA `mask` column holds the class index).

Scored as the challenge does: AUC (binary: probability of class 1; multi-class:
macro one-vs-rest), accuracy, F1 macro and weighted, MCC; the predicted class is
the argmax. Splits are stratified by class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.predictions import as_floats
from usagg.tasktypes import register_task_type
from usagg.tasktypes.base import EvalItem, Metric, Row, RowError, TaskType

if TYPE_CHECKING:
    import torch

    from usagg.data.fmc_uia import Sample
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec


@register_task_type
class Classification(TaskType):
    name = "classification"
    order = 20
    metrics = (
        Metric("AUC", True),
        Metric("ACC", True),
        Metric("F1_macro", True),
        Metric("F1_weighted", True),
        Metric("MCC", True),
    )
    num_classes_meaning = "classes"
    prediction_file = "classification_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_class", "predicted_probs")
    stratified = True
    marker, color, short_name = "s", "#882255", "classif."

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

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """int64 [N] class indices."""
        return np.array([s.label for s in samples], dtype=np.int64)

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> torch.nn.Module:
        from usagg.model.heads import ClassificationHead

        return ClassificationHead(embed_dim, n_features, task.num_classes, heads.hidden)

    def ground_truth(self, sample: Sample) -> int:
        return int(sample.label)

    def score(
        self, task: TaskSpec, preds: np.ndarray, items: Sequence[EvalItem], writer: PredictionWriter | None
    ) -> dict[str, float]:
        probs = np.asarray(preds, dtype=np.float64)
        if writer is not None:
            for it, p in zip(items, probs, strict=True):
                write_probs(writer, task.id, it.image_path, p)
        return classification_metrics(probs, np.array([it.gt for it in items], dtype=np.int64))


def write_probs(writer: PredictionWriter, task_id: str, image_path: str, probs: Sequence[float] | np.ndarray) -> None:
    """Class probabilities ``[C]``; the predicted class is their argmax."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size < 2 or not np.all(np.isfinite(p)):
        raise ValueError(f"{task_id}/{image_path}: probs must be C >= 2 finite numbers, got {probs!r}")
    writer.add(
        Classification, task_id, image_path, {"predicted_class": int(np.argmax(p)), "predicted_probs": as_floats(p)}
    )


# --------------------------------------------------------------------------- metrics


def _binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a 0/1 target; nan when only one class is present (undefined)."""
    from sklearn.metrics import roc_auc_score

    if np.unique(y_true).size < 2:
        return math.nan
    return float(roc_auc_score(y_true, score))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, ACC, F1_macro, F1_weighted and MCC from class probabilities ``[N, C]`` and labels ``[N]``.

    The predicted class is ``argmax(probs)``. AUC: with C = 2 the ROC AUC of
    ``probs[:, 1]``; with C > 2 the macro one-vs-rest AUC, i.e. the mean over
    classes of the binary AUC of ``labels == c`` against ``probs[:, c]``. When
    every class occurs in ``labels`` this equals sklearn's
    ``roc_auc_score(..., multi_class="ovr", average="macro")``. A class absent
    from ``labels`` has no defined one-vs-rest AUC, so the mean runs over the
    classes present (the challenge's script would fail there and record 0.0);
    AUC is nan only when a single class is present. F1 uses sklearn with
    ``zero_division=0`` over the classes seen in labels or predictions, MCC is
    sklearn's ``matthews_corrcoef``, as in the challenge's script.
    """
    from sklearn.metrics import f1_score, matthews_corrcoef

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

    pred = p.argmax(axis=1)
    if num_classes == 2:
        auc = _binary_auc((y == 1).astype(np.int64), p[:, 1])
    else:
        present = np.unique(y)
        if present.size < 2:
            auc = math.nan
        else:
            auc = float(np.mean([_binary_auc((y == c).astype(np.int64), p[:, c]) for c in present]))
    with warnings.catch_warnings():
        # MCC warns (and returns 0) when a row or column of the confusion matrix is empty.
        warnings.simplefilter("ignore", RuntimeWarning)
        mcc = float(matthews_corrcoef(y, pred))
    return {
        "AUC": auc,
        "ACC": float(np.mean(pred == y)),
        "F1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "F1_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "MCC": mcc,
    }
