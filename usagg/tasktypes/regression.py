"""Regression: K keypoints per image (FMC_UIA `point_1_xy .. point_K_xy`, JSON pairs in pixels).

Scored as the challenge does: MRE, the mean Euclidean keypoint distance in
pixels (per image over keypoints, then over images). Keypoints live in [0, 1]
in model space and are mapped back unclipped: a landmark may sit at the border.
A missing or empty `point_k_xy` (k <= num_classes), which the challenge's code reads as
the point (0, 0), is a row error here, as are coordinates written as strings.
"""

from __future__ import annotations

import json
import math
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
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.data.fmc_uia import Sample
    from usagg.model.heads import TaskHead
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec

Points = tuple[tuple[float, float], ...]
#: `data check` summary key of an image with a keypoint at exactly (0, 0): a placeholder more often than a landmark.
ORIGIN = "point at (0, 0)"


@register_task_type
class Regression(TaskType):
    name = "regression"
    target_geometry = "points"
    csv_name = "Regression"  # as the challenge's files spell it
    order = 40
    metrics = (Metric("MRE", False, "px", lower=0.0),)
    num_classes_meaning = "number of keypoints"
    prediction_file = "regression_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_points_normalized", "predicted_points_pixels")
    marker, color, short_name = "D", "#999933", "regression"

    def required_columns(self, num_classes: int) -> tuple[str, ...]:
        return ("point_1_xy",)  # the count is checked per row, so a short row is reported as such

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        return tuple(f"point_{k + 1}_xy" for k in range(num_classes))

    def parse_label(self, row: Row, num_classes: int) -> Points:
        """point_1_xy..point_K_xy, each a JSON pair of numbers "[x, y]"; RowError otherwise.

        A filled point past K means the row disagrees with num_classes. A missing or empty point
        is an error, not (0, 0): the challenge's code would read it as the image corner and train
        towards it. Coordinates written as strings ('["3", "4"]') are refused too: the format is a
        pair of numbers, and quoted ones mean the file was written some other way than expected.
        """
        record = row.record
        filled = sorted(
            (int(c[len("point_") : -len("_xy")]), c)
            for c, v in record.items()
            if c and c.startswith("point_") and c.endswith("_xy") and c[6:-3].isdigit() and (v or "").strip()
        )
        if any(number > num_classes for number, _ in filled):
            given = ", ".join(c for _, c in filled)
            raise RowError(
                "keypoints_count",
                f"expected {num_classes} keypoints (num_classes) in point_1_xy..point_{num_classes}_xy, found {given}",
            )
        empty = [f"point_{k}_xy" for k in range(1, num_classes + 1) if k not in dict(filled)]
        if empty:
            raise RowError(
                "missing_keypoint",
                f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty or missing; expected "
                f'{num_classes} keypoints (num_classes) as JSON pairs like "[120.5, 88]" (the challenge\'s code '
                "reads an empty point as (0, 0), the image corner, which is no landmark)",
            )
        return tuple(_point(column, record[column].strip()) for _, column in filled)

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        return [json.dumps([x, y]) for x, y in label]

    def check_label(self, sample: Sample, image_hw: tuple[int, int], root: Path) -> tuple[list[tuple[str, str]], Any]:
        """Keypoints inside the image, give or take `label_margin` (a point far outside trains on nonsense)."""
        h, w = image_hw
        mx, my = label_margin(image_hw)
        outside = [
            f"point_{k + 1}_xy [{x:g}, {y:g}]"
            for k, (x, y) in enumerate(sample.label)
            if not (-mx <= x <= w + mx and -my <= y <= h + my)
        ]
        if not outside:
            return [], None
        return [
            (
                "keypoint_outside",
                f"task {sample.task_id}: {', '.join(outside)} outside the {w}x{h} image "
                f"(expected 0 <= x <= {w}, 0 <= y <= {h}, give or take {mx:g}, {my:g} px)",
            )
        ], None

    def check_task(
        self, samples: Sequence[Sample], image_hws: Sequence[tuple[int, int] | None], root: Path
    ) -> list[tuple[str, str]]:
        """Keypoints all within [0, 1] on images of more than a few pixels: fractions of the image size."""
        k = max(len(s.label) for s in samples)
        columns = ", ".join(self.csv_columns(k)) if k <= 2 else f"point_1_xy .. point_{k}_xy"
        return normalised_coordinates(samples, image_hws, root, "keypoints", lambda s: s.label, columns)

    def summary_keys(self, sample: Sample, checked: Any) -> list[str]:
        """The point count, and ORIGIN for an image with a point at exactly (0, 0) (often a placeholder)."""
        origin = any(x == 0 and y == 0 for x, y in sample.label)
        return [f"{len(sample.label)} points", *([ORIGIN] if origin else [])]

    def summary_text(self, counts: dict[str, int]) -> str:
        text = ", ".join(f"{v} x {k}" for k, v in counts.items() if k != ORIGIN) or "-"
        if counts.get(ORIGIN):
            text += f"; {counted(counts[ORIGIN], 'image')} with a point at exactly (0, 0): check they are landmarks"
        return text

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """float32 [N, K, 2] xy divided by the original width and height."""
        h = orig_hw[:, 0:1].astype(np.float64)
        w = orig_hw[:, 1:2].astype(np.float64)
        pts = np.array([s.label for s in samples], dtype=np.float64)
        return (pts / np.stack([w, h], axis=-1)).astype(np.float32)

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> TaskHead:
        from usagg.model.heads import KeypointDirectHead, KeypointHeatmapHead

        cls = KeypointHeatmapHead if heads.keypoints == "heatmap" else KeypointDirectHead
        return cls(embed_dim, n_features, task.num_classes, heads.hidden)

    def prediction_shape(self, task: TaskSpec, image_size: int) -> PredictionShape:
        """K (x, y) keypoints in [0, 1], K = num_classes."""
        return PredictionShape((task.num_classes, 2), "float")

    def trivial_predictions(self, task: TaskSpec, image_size: int, train_targets: np.ndarray) -> dict[str, np.ndarray]:
        """The mean training keypoints (as fractions of the image size), the same for every test image."""
        if not len(train_targets):
            return {}
        return {"training mean keypoints": np.asarray(train_targets, dtype=np.float64).mean(axis=0).astype(np.float32)}

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
        """MRE; item scores: the mean keypoint distance of each image (kind "mean")."""
        return self.score_per_image(
            task, preds, items, writer, metrics, to_pixels=points_to_pixels, write=write_points, measure=radial_errors
        )


#: The longest cell read as a point: "[x, y]" with two numbers written out in full takes well under this, and a
#: longer cell is refused before it is parsed (deeply nested brackets would exhaust Python's recursion limit).
_POINT_CHARS = 200


def _point(column: str, raw: str) -> tuple[float, float]:
    """One cell "[x, y]" as finite numbers; RowError naming the column otherwise (strings included)."""
    if len(raw) > _POINT_CHARS:
        raise RowError(
            "keypoints_json",
            f"column {column} is {len(raw)} characters long, starting {raw[:40]!r}: expected a JSON pair like "
            f'"[120.5, 88]" (at most {_POINT_CHARS} characters)',
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    numbers = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
    if not numbers or not all(math.isfinite(v) for v in value):
        strings = isinstance(value, list) and any(isinstance(v, str) for v in value)
        why = "the coordinates are strings; " if strings else ""
        raise RowError("keypoints_json", f'column {column} is {raw!r}: {why}expected a JSON pair like "[120.5, 88]"')
    return float(value[0]), float(value[1])


def points_to_pixels(points_normalized: Sequence[float] | np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """``[K, 2]`` (or flat ``[2K]``) normalised xy to ``[K, 2]`` float64 pixels; not clipped.

    Keypoints may legitimately sit at or past the border, so unlike boxes they
    are converted as predicted (the baseline does the same).
    """
    pts = np.asarray(points_normalized, dtype=np.float64)
    if pts.size == 0 or pts.size % 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"keypoints are K finite (x, y) pairs, got shape {pts.shape}")
    h, w = positive_hw(orig_hw)
    return pts.reshape(-1, 2) * np.array([w, h], dtype=np.float64)


def write_points(
    writer: PredictionWriter,
    task_id: str,
    image_path: str,
    points_normalized: Sequence[float] | np.ndarray,
    orig_hw: tuple[int, int],
) -> None:
    """Keypoints ``[K, 2]`` (or flat) in normalised xy and the original ``(height, width)``."""
    pixels = points_to_pixels(points_normalized, orig_hw)
    writer.add(
        Regression,
        task_id,
        image_path,
        {
            "predicted_points_normalized": as_floats(np.asarray(points_normalized, dtype=np.float64)),
            "predicted_points_pixels": as_floats(pixels),
        },
    )


# --------------------------------------------------------------------------- metric


def radial_errors(pred_pts_px: np.ndarray, gt_pts_px: np.ndarray) -> np.ndarray:
    """Mean Euclidean keypoint distance in pixels of each image, float64 [N], from ``[N, K, 2]`` pixels."""
    p = np.asarray(pred_pts_px, dtype=np.float64)
    g = np.asarray(gt_pts_px, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] != 2 or p.shape != g.shape:
        raise ValueError(f"keypoints must both be [N, K, 2], got {p.shape} and {g.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError("radial_errors needs at least one image and one keypoint")
    return np.sqrt(((p - g) ** 2).sum(axis=2)).mean(axis=1)
