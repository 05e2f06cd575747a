"""The FMC_UIA challenge's metrics on numpy arrays, computed the way its evaluation script does.

Everything here takes predictions already in original-image pixels (masks at
the ground truth's resolution, boxes and keypoints in pixels) and returns plain
Python floats, so the engine, rescoring from prediction files and the analysis
all agree to the last bit. No torch: laptops and the analysis import this.

Rules (``reference/fmc_uia.md``, "Official metrics"):

- segmentation: per image and per non-background class, DSC (both empty -> 1.0)
  and the maximum symmetric Hausdorff distance between the filled class
  regions in pixels (exactly one empty -> image diagonal, both empty -> 0);
  mean over images per class, then mean over non-background classes;
- classification: AUC (binary: probability of class 1; multi-class: macro
  one-vs-rest), accuracy, F1 macro and weighted, MCC; predicted class = argmax;
- detection: IoU of the single predicted and true box, mean over images;
- regression: MRE, mean Euclidean keypoint distance in pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = [
    "classification_metrics",
    "detection_metrics",
    "hausdorff_distance",
    "primary_value",
    "regression_metrics",
    "resize_nearest",
    "segmentation_metrics",
    "task_metrics",
]


# --------------------------------------------------------------------------- resizing


def resize_nearest(mask: np.ndarray, hw: tuple[int, int], method: Literal["cv2", "pil"] = "cv2") -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label map to ``hw = (height, width)``.

    ``method="cv2"`` (default) reproduces ``cv2.resize(..., INTER_NEAREST)``,
    which both the challenge's baseline (prediction back to original size) and
    its evaluator (prediction of the wrong size) use: source index
    ``floor(dst * (1 / (dst_size / src_size)))``, clamped. It is written out in
    numpy with the same double-precision operations, so OpenCV is not needed.
    ``method="pil"`` is Pillow's ``Image.NEAREST`` (pixel-centre sampling,
    about ``floor((dst + 0.5) * src_size / dst_size)``), bit-exact with Pillow.
    The two differ by one pixel at some positions, hence the explicit choice.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"resize_nearest expects a 2-D label map, got shape {arr.shape}")
    out_h, out_w = int(hw[0]), int(hw[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"target size must be positive, got {hw}")
    in_h, in_w = arr.shape
    if (in_h, in_w) == (out_h, out_w):
        return arr.copy()
    if method == "cv2":
        rows = _cv2_nearest_index(in_h, out_h)
        cols = _cv2_nearest_index(in_w, out_w)
    elif method == "pil":
        rows = _pil_nearest_index(in_h, out_h)
        cols = _pil_nearest_index(in_w, out_w)
    else:
        raise ValueError(f"unknown resize method {method!r}; expected 'cv2' or 'pil'")
    return arr[np.ix_(rows, cols)]


def _cv2_nearest_index(src: int, dst: int) -> np.ndarray:
    """OpenCV ``resizeNN``: ``min(cvFloor(x * (1. / (double(dst) / src))), src - 1)``."""
    inv = 1.0 / (float(dst) / float(src))
    idx = np.floor(np.arange(dst, dtype=np.float64) * inv).astype(np.int64)
    return np.minimum(idx, src - 1)


def _pil_nearest_index(src: int, dst: int) -> np.ndarray:
    """Pillow NEAREST (``ImagingScaleAffine``): start at half a step, add ``src / dst`` per pixel, truncate.

    The running sum is reproduced step by step because its rounding, not the
    exact ``(x + 0.5) * src / dst``, decides the boundary cases.
    """
    step = float(src) / float(dst)
    pos = step * 0.5
    out = np.empty(dst, dtype=np.int64)
    for x in range(dst):
        out[x] = int(pos)
        pos += step
    return np.clip(out, 0, src - 1)


# --------------------------------------------------------------------------- segmentation


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """DSC of two boolean masks; both empty is a perfect 1.0 (the challenge's rule)."""
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def hausdorff_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Maximum symmetric distance in pixels between two filled boolean masks.

    Every pixel of each set counts (not only contours), as in SimpleITK's
    ``HausdorffDistanceImageFilter`` that the challenge uses. Exactly one empty
    set gives the image diagonal, both empty give 0.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return 0.0
    if not has_a or not has_b:
        h, w = a.shape
        return math.sqrt(h * h + w * w)
    # edt(~B)[p] is the distance from p to the nearest pixel of B (0 inside B).
    a_to_b = float(distance_transform_edt(~b)[a].max())
    b_to_a = float(distance_transform_edt(~a)[b].max())
    return max(a_to_b, b_to_a)


def segmentation_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int) -> dict[str, float]:
    """Task DSC and HD: per image and non-background class, mean over images, then over classes.

    ``preds[i]`` must already be at ``gts[i]``'s original resolution (use
    :func:`resize_nearest`); a size mismatch is an error rather than a silent
    resize. ``num_classes`` includes the background (class 0), as in the CSV.
    Also returns ``DSC_class{c}`` and ``HD_class{c}`` for c = 1..num_classes-1.
    """
    if num_classes < 2:
        raise ValueError(f"segmentation needs num_classes >= 2 (background included), got {num_classes}")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted masks for {len(gts)} ground-truth masks")
    if len(gts) == 0:
        raise ValueError("segmentation_metrics needs at least one image")
    classes = range(1, num_classes)
    dsc = np.zeros((len(gts), num_classes - 1), dtype=np.float64)
    hd = np.zeros_like(dsc)
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.ndim != 2 or pred.shape != gt.shape:
            raise ValueError(
                f"image {i}: prediction shape {pred.shape} != ground truth shape {gt.shape}; "
                "resize predictions to the original resolution first (resize_nearest)"
            )
        for j, c in enumerate(classes):
            a = pred == c
            b = gt == c
            dsc[i, j] = _dice(a, b)
            hd[i, j] = hausdorff_distance(a, b)
    dsc_class = dsc.mean(axis=0)
    hd_class = hd.mean(axis=0)
    out: dict[str, float] = {"DSC": float(dsc_class.mean()), "HD": float(hd_class.mean())}
    for j, c in enumerate(classes):
        out[f"DSC_class{c}"] = float(dsc_class[j])
    for j, c in enumerate(classes):
        out[f"HD_class{c}"] = float(hd_class[j])
    return out


# --------------------------------------------------------------------------- classification


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


# --------------------------------------------------------------------------- detection and regression


def detection_metrics(pred_boxes_px: np.ndarray, gt_boxes_px: np.ndarray) -> dict[str, float]:
    """Mean IoU of one predicted box per image against its true box, ``[N, 4]`` xyxy pixels.

    The challenge's formula: intersection clamped at 0 (disjoint -> 0), areas
    as signed products, IoU 0 when the union is 0. No thresholds, no mAP.
    """
    p = np.asarray(pred_boxes_px, dtype=np.float64)
    g = np.asarray(gt_boxes_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 4 or p.shape != g.shape:
        raise ValueError(f"boxes must both be [N, 4], got {p.shape} and {g.shape}")
    if p.shape[0] == 0:
        raise ValueError("detection_metrics needs at least one image")
    iw = np.maximum(0.0, np.minimum(p[:, 2], g[:, 2]) - np.maximum(p[:, 0], g[:, 0]))
    ih = np.maximum(0.0, np.minimum(p[:, 3], g[:, 3]) - np.maximum(p[:, 1], g[:, 1]))
    inter = iw * ih
    union = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
    safe = np.where(union == 0, 1.0, union)
    iou = np.where(union == 0, 0.0, inter / safe)
    iou = np.where(inter == 0, 0.0, iou)  # inverted or disjoint boxes: exactly 0, never -0.0
    return {"IoU": float(iou.mean())}


def regression_metrics(pred_pts_px: np.ndarray, gt_pts_px: np.ndarray) -> dict[str, float]:
    """MRE: Euclidean keypoint distance in pixels, mean over keypoints per image, then over images."""
    p = np.asarray(pred_pts_px, dtype=np.float64)
    g = np.asarray(gt_pts_px, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] != 2 or p.shape != g.shape:
        raise ValueError(f"keypoints must both be [N, K, 2], got {p.shape} and {g.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError("regression_metrics needs at least one image and one keypoint")
    per_image = np.sqrt(((p - g) ** 2).sum(axis=2)).mean(axis=1)
    return {"MRE": float(per_image.mean())}


# --------------------------------------------------------------------------- dispatch

_BY_TYPE: dict[str, Callable[..., dict[str, float]]] = {
    "segmentation": segmentation_metrics,
    "classification": classification_metrics,
    "detection": detection_metrics,
    "regression": regression_metrics,
}


def task_metrics(task_type: str, **kwargs: Any) -> dict[str, float]:
    """Metrics of one task by type name (any case, so the CSV's ``Regression`` works).

    Keyword arguments are those of the type's function: ``preds, gts,
    num_classes`` / ``probs, labels`` / ``pred_boxes_px, gt_boxes_px`` /
    ``pred_pts_px, gt_pts_px``.
    """
    fn = _BY_TYPE.get(str(task_type).lower())
    if fn is None:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {sorted(_BY_TYPE)}")
    return fn(**kwargs)


def primary_value(metrics: dict[str, float], metric_name: str) -> float:
    """The value of the task's primary metric, with an error naming what is available."""
    if metric_name not in metrics:
        raise KeyError(f"metric {metric_name!r} not computed; available: {', '.join(sorted(metrics))}")
    return float(metrics[metric_name])
