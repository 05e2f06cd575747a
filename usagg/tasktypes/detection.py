"""Detection: one box per image (FMC_UIA `x_min, y_min, x_max, y_max` in pixels, edges).

Scored as the challenge does: IoU of the single predicted and true box, mean
over images (no thresholds, no mAP). Boxes live in [0, 1] in model space
(x divided by the original width, y by the height) and are clipped there before
they are mapped back to pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.predictions import as_floats
from usagg.tasktypes import register_task_type
from usagg.tasktypes.base import (
    EvalItem,
    Metric,
    PredictionShape,
    Row,
    RowError,
    TaskType,
    label_margin,
    normalised_coordinates,
    positive_hw,
)

if TYPE_CHECKING:
    from usagg.data.fmc_uia import Sample
    from usagg.model.heads import TaskHead
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec

BOX_COLUMNS: tuple[str, ...] = ("x_min", "y_min", "x_max", "y_max")


@register_task_type
class Detection(TaskType):
    name = "detection"
    target_geometry = "boxes"
    order = 30
    metrics = (Metric("IoU", True, lower=0.0, upper=1.0),)
    num_classes_meaning = "1 (one box per image)"
    prediction_file = "detection_predictions.json"
    prediction_keys = ("image_path", "task_id", "bbox_normalized", "bbox_pixels")
    marker, color, short_name = "^", "#8800EE", "detection"

    def check_num_classes(self, n: int) -> str | None:
        return f"a detection task has num_classes 1 (one box per image), got {n}" if n != 1 else None

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        return BOX_COLUMNS

    def parse_label(self, row: Row, num_classes: int) -> tuple[float, float, float, float]:
        x_min, y_min, x_max, y_max = (row.number(c) for c in BOX_COLUMNS)
        box = (x_min, y_min, x_max, y_max)
        if x_min >= x_max or y_min >= y_max:
            raise RowError("bad_box", f"box {list(box)} needs x_min < x_max and y_min < y_max")
        return box

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        return list(label)

    def check_label(self, sample: Sample, image_hw: tuple[int, int], root: Path) -> tuple[list[tuple[str, str]], Any]:
        """A box with no area left inside the image is degenerate; one that strays beyond `label_margin`, outside."""
        x0, y0, x1, y1 = sample.label
        h, w = image_hw
        box = f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        if min(x1, w) - max(x0, 0) <= 0 or min(y1, h) - max(y0, 0) <= 0:
            return [
                (
                    "degenerate_box",
                    f"task {sample.task_id}: {box} has zero area once clipped to the {w}x{h} image",
                )
            ], None
        mx, my = label_margin(image_hw)
        if x0 < -mx or y0 < -my or x1 > w + mx or y1 > h + my:
            return [
                (
                    "box_outside",
                    f"task {sample.task_id}: {box} leaves the {w}x{h} image "
                    f"(expected 0 <= x <= {w}, 0 <= y <= {h}, give or take {mx:g}, {my:g} px)",
                )
            ], None
        return [], None

    def check_task(
        self, samples: Sequence[Sample], image_hws: Sequence[tuple[int, int] | None], root: Path
    ) -> list[tuple[str, str]]:
        """Boxes all within [0, 1] on images of more than a few pixels: fractions of the image size, not pixels."""
        return normalised_coordinates(
            samples, image_hws, root, "boxes", lambda s: (s.label[:2], s.label[2:]), ", ".join(BOX_COLUMNS)
        )

    def summary_keys(self, sample: Sample, checked: Any) -> list[str]:
        return ["1 box"]

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """float32 [N, 4] xyxy divided by the original width and height."""
        h = orig_hw[:, 0:1].astype(np.float64)
        w = orig_hw[:, 1:2].astype(np.float64)
        boxes = np.array([s.label for s in samples], dtype=np.float64)
        return (boxes / np.concatenate([w, h, w, h], axis=1)).astype(np.float32)

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> TaskHead:
        from usagg.model.heads import BoxHead

        return BoxHead(embed_dim, n_features, heads.hidden)

    def prediction_shape(self, task: TaskSpec, image_size: int) -> PredictionShape:
        """One box, xyxy in [0, 1]."""
        return PredictionShape((4,), "float")

    def trivial_predictions(self, task: TaskSpec, image_size: int, train_targets: np.ndarray) -> dict[str, np.ndarray]:
        """Constant boxes: the whole image, and the mean training box (xyxy as fractions of the image size, so it
        lands on each test image at the same relative place)."""
        out = {"whole-image box": np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)}
        if len(train_targets):
            out["training mean box"] = np.asarray(train_targets, dtype=np.float64).mean(axis=0).astype(np.float32)
        return out

    def ground_truth(self, sample: Sample) -> np.ndarray:
        return np.array(sample.label, dtype=np.float64)

    def score(
        self,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """IoU; item scores: the IoU of each image (kind "mean")."""
        return self.score_per_image(
            task, preds, items, writer, metrics, to_pixels=box_to_pixels, write=write_box, measure=box_iou
        )


def box_to_pixels(box_normalized: Sequence[float] | np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` in 0..1 (clipped there) to float64 pixels: x times width, y times height.

    Scoring uses the box this returns, so the metric and the written
    ``bbox_pixels`` are the same numbers.
    """
    box = np.asarray(box_normalized, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"a box is 4 finite numbers [x1, y1, x2, y2], got {box_normalized!r}")
    h, w = positive_hw(orig_hw)
    box = np.clip(box, 0.0, 1.0)
    return box * np.array([w, h, w, h], dtype=np.float64)


def write_box(
    writer: PredictionWriter,
    task_id: str,
    image_path: str,
    box_normalized: Sequence[float] | np.ndarray,
    orig_hw: tuple[int, int],
) -> None:
    """One box ``[x1, y1, x2, y2]`` in 0..1 (clipped) and the image's original ``(height, width)``."""
    box = np.clip(np.asarray(box_normalized, dtype=np.float64).reshape(-1), 0.0, 1.0)
    pixels = box_to_pixels(box, orig_hw)
    writer.add(Detection, task_id, image_path, {"bbox_normalized": as_floats(box), "bbox_pixels": as_floats(pixels)})


# --------------------------------------------------------------------------- metric


def box_iou(pred_boxes_px: np.ndarray, gt_boxes_px: np.ndarray) -> np.ndarray:
    """IoU per image, float64 [N], of one predicted box against its true box, ``[N, 4]`` xyxy pixels.

    The challenge's formula: intersection clamped at 0 (disjoint -> 0), areas
    as signed products, IoU 0 when the union is 0. No thresholds, no mAP.
    """
    p = np.asarray(pred_boxes_px, dtype=np.float64)
    g = np.asarray(gt_boxes_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 4 or p.shape != g.shape:
        raise ValueError(f"boxes must both be [N, 4], got {p.shape} and {g.shape}")
    if p.shape[0] == 0:
        raise ValueError("box_iou needs at least one image")
    iw = np.maximum(0.0, np.minimum(p[:, 2], g[:, 2]) - np.maximum(p[:, 0], g[:, 0]))
    ih = np.maximum(0.0, np.minimum(p[:, 3], g[:, 3]) - np.maximum(p[:, 1], g[:, 1]))
    inter = iw * ih
    union = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
    safe = np.where(union == 0, 1.0, union)
    iou = np.where(union == 0, 0.0, inter / safe)
    return np.where(inter == 0, 0.0, iou)  # inverted or disjoint boxes: exactly 0, never -0.0
