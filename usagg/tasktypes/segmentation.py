"""Segmentation: a class map per image (FMC_UIA `mask_path` PNGs, pixel = class index, 0 = background).

Scored as the challenge does, on the ground truth read as OpenCV's IMREAD_GRAYSCALE reads it
(`read_mask_grayscale`): per image and non-background class, DSC (both empty -> 1.0) and the maximum
symmetric Hausdorff distance between the filled class regions in pixels
(exactly one empty -> image diagonal, both empty -> 0); mean over images per
class, then over classes. Predictions go back to the original size with the
challenge's nearest-neighbour rule (OpenCV's) and are written as uint8 PNGs at
the CSV's `mask_path` with `../` removed, plus usagg's `segmentation_index.json`
pairing each PNG with its image so a folder can be rescored alone.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.data.masks import check_mask, read_mask_grayscale
from usagg.tasktypes import register_task_type
from usagg.tasktypes.base import EvalItem, Metric, PredictionShape, Row, TaskType
from usagg.wording import counted

if TYPE_CHECKING:
    import torch

    from usagg.data.fmc_uia import Sample
    from usagg.model.heads import TaskHead
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec

_COUNT_WORDS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}

#: What to do about a mask whose values are past num_classes, the end of every such message.
_SAVE_AS = "save the mask as an 8-bit grayscale PNG of class indices"


def _values_cause(mode: str, bad: list[int]) -> str:
    """Why a mask holds values past num_classes, from its PNG's mode, and what to do: the values a user's own tools
    show (0/1 in a 1-bit PNG, palette indices) are not those the challenge's OpenCV reader sees. (16-bit and
    non-grey colour masks are refused before their values count: `check_mask`.)"""
    if mode == "1":
        return f"it is a 1-bit PNG, which reads as 0/255 (as the challenge's OpenCV reader reads it): {_SAVE_AS}"
    if mode in ("P", "PA"):
        return (
            "it is a palette PNG, which reads as its colours' luminance (as the challenge's OpenCV reader reads "
            f"it), not its palette indices: {_SAVE_AS}"
        )
    if mode in ("RGB", "RGBA"):
        return f"it is an {mode} PNG, read as its luminance like the challenge's OpenCV reader does: {_SAVE_AS}"
    if bad == [255]:
        return f"a binary mask saved as 0/255 must store its foreground as 1: {_SAVE_AS}"
    return f"masks are read as 8-bit grayscale like the challenge's evaluation: {_SAVE_AS}"


@register_task_type
class Segmentation(TaskType):
    name = "segmentation"
    hash_settings = ("seg_loss_stride",)
    target_geometry = "mask"
    order = 10
    metrics = (Metric("DSC", True, lower=0.0, upper=1.0), Metric("HD", False, "px", lower=0.0))
    num_classes_meaning = "classes including the background"
    prediction_file = "segmentation_index.json"
    prediction_keys = ("image_path", "task_id", "mask_path")
    marker, color, short_name = "o", "#332288", "segment."

    def check_num_classes(self, n: int) -> str | None:
        if n < 2:
            return f"a segmentation task needs num_classes >= 2 (the background counts), got {n}"
        return None

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        return ("mask_path",)

    def parse_label(self, row: Row, num_classes: int) -> Path:
        return row.path("mask_path", "the mask PNG's path")

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        return [str(label)]

    def check_label(self, sample: Sample, image_hw: tuple[int, int], root: Path) -> tuple[list[tuple[str, str]], Any]:
        """The mask exists, decodes (as scoring reads it: `read_mask_grayscale`), is 8-bit grey (`check_mask`: a
        16-bit or colour mask is `mask_format`, its classes read as other values or lost), holds only
        0..num_classes-1 and has its image's size."""
        from usagg.data.fmc_uia import missing_note, rel

        tag = f"task {sample.task_id}:"
        mask_file: Path = sample.label
        if not mask_file.is_file():
            note = missing_note(mask_file, root)
            return [("missing_mask", f"{tag} mask {rel(mask_file, root)} not found{note}")], frozenset()
        try:
            read = check_mask(mask_file)
        except Exception as err:  # PIL raises many types for bad files
            return [
                (
                    "unreadable_mask",
                    f"{tag} mask {rel(mask_file, root)} cannot be decoded ({type(err).__name__}: {err})",
                )
            ], frozenset()
        problems = []
        mask = read.gray
        values = np.unique(mask)
        bad = [int(v) for v in values if v >= sample.num_classes]
        if read.refused is not None:
            problems.append(("mask_format", f"{tag} mask {rel(mask_file, root)} {read.refused}"))
        elif bad:
            problems.append(
                (
                    "mask_values",
                    f"{tag} mask {rel(mask_file, root)} holds values {bad}, but num_classes is "
                    f"{sample.num_classes} (expected 0..{sample.num_classes - 1}); {_values_cause(read.mode, bad)}",
                )
            )
        h, w = image_hw
        if mask.shape != image_hw:
            problems.append(
                (
                    "size_mismatch",
                    f"{tag} mask {rel(mask_file, root)} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                    f"{w}x{h} (width x height); they must match",
                )
            )
        return problems, frozenset(int(v) for v in values)

    def summary_keys(self, sample: Sample, checked: Any) -> list[str]:
        """Classes present per image, plus "empty" for a decoded mask with no foreground (counted, not an error)."""
        if checked is None:
            return []
        keys = [str(c) for c in checked]
        return [*keys, "empty"] if not any(c > 0 for c in checked) and checked else keys

    def summary_text(self, counts: dict[str, int]) -> str:
        pairs = " ".join(f"{k}:{v}" for k, v in counts.items() if k != "empty")
        text = f"images with class {pairs}" if pairs else "-"
        return f"{text}; {counted(counts['empty'], 'empty mask')}" if counts.get("empty") else text

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """uint8 [N, S, S] class maps, nearest-neighbour resized, from the decode cache (a memmap)."""
        from usagg.data import cache

        return cache.load([s.label for s in samples], image_size, cache_dir, "mask").arrays

    def batch_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets.long()

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> TaskHead:
        from usagg.model.heads import DPTSegmentationHead

        return DPTSegmentationHead(
            embed_dim, n_features, task.num_classes, heads.decoder_channels, heads.seg_loss_stride
        )

    def prediction_shape(self, task: TaskSpec, image_size: int) -> PredictionShape:
        """A class map at the model's input size, S x S: `score` resizes it to each image's original size (nearest),
        so a map at any other size would be stretched onto the image rather than refused."""
        return PredictionShape((image_size, image_size), "integer")

    def trivial_predictions(self, task: TaskSpec, image_size: int, train_targets: np.ndarray) -> dict[str, np.ndarray]:
        """The constant masks: empty, and every pixel one foreground class (two classes: the all-foreground mask),
        each mapped back and scored per image like a model's mask (DSC of an empty mask is 1.0 on an empty
        ground truth, 0 elsewhere; of the all-foreground mask 2|G| / (|G| + H·W))."""
        shape = (image_size, image_size)
        out = {"empty mask": np.zeros(shape, dtype=np.int64)}
        for c in range(1, task.num_classes):
            name = "all-foreground mask" if task.num_classes == 2 else f"every pixel class {c}"
            out[name] = np.full(shape, c, dtype=np.int64)
        return out

    def ground_truth(self, sample: Sample) -> np.ndarray:
        """The mask as the challenge's evaluation reads it (`read_mask_grayscale`)."""
        return read_mask_grayscale(sample.label)

    def score(
        self,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """DSC and HD; item scores: per image and class, [N, num_classes - 1] (kind "mean")."""
        wanted = self.wanted(metrics)
        if not items:
            return self.empty_scores(metrics)
        masks = [resize_nearest(np.asarray(p, dtype=np.uint8), it.orig_hw) for p, it in zip(preds, items, strict=True)]
        if writer is not None:
            for it, mask in zip(items, masks, strict=True):
                write_mask(writer, task.id, it.image_path, mask_csv_path(it.sample), mask)
        per_image = segmentation_per_image(masks, [it.gt for it in items], task.num_classes, wanted)
        if writer is not None and task.metric in per_image:
            self.record_item_scores(writer, task, "mean", items, per_image[task.metric])
        return aggregate_per_class(per_image)

    def load_prediction(self, entry: dict[str, Any], folder: Path) -> dict[str, Any]:
        from usagg.data.images import MASK_FORMATS, open_known
        from usagg.safepath import confined

        path = confined(prediction_mask_relpath(entry["mask_path"]), folder, f"{folder}: mask_path")
        with open_known(path, MASK_FORMATS) as im:
            return {**entry, "mask": np.asarray(im, dtype=np.uint8)}


def folder_name(num_classes: int) -> str:
    """The challenge's folder of a segmentation task by class count (Segmentation/Two/...)."""
    return f"Segmentation/{_COUNT_WORDS.get(num_classes, str(num_classes))}"


# --------------------------------------------------------------------------- predictions


def mask_csv_path(sample: Sample) -> str:
    """The CSV's `mask_path` string, rebuilt from the absolute mask path (Sample keeps only the latter)."""
    return Path(os.path.relpath(sample.label, sample.csv_file.parent)).as_posix()


def prediction_mask_relpath(mask_path: str) -> str:
    """Where a predicted mask PNG goes, relative to the predictions folder.

    The challenge strips every ``../`` from the CSV's ``mask_path``; anything
    that would still leave the folder (absolute, ``..``) is refused.
    """
    if not isinstance(mask_path, str) or not mask_path:
        raise ValueError(f"mask_path must be a non-empty CSV string, got {mask_path!r}")
    rel = PurePosixPath(mask_path.replace("../", ""))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.name in ("", "."):
        raise ValueError(f"mask_path {mask_path!r} does not name a file inside the predictions folder")
    return rel.as_posix()


def write_mask(writer: PredictionWriter, task_id: str, image_path: str, mask_path: str, mask: np.ndarray) -> Path:
    """Write one class map, already at the original size, as a uint8 PNG and index it; returns its path."""
    from PIL import Image

    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{task_id}/{image_path}: a mask is a 2-D class map, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{task_id}/{image_path}: mask must hold integer class indices, got {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise ValueError(f"{task_id}/{image_path}: class indices must fit in 0..255")
    rel = prediction_mask_relpath(mask_path)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    writer.add(Segmentation, task_id, image_path, {"mask_path": rel}, files={rel: buf.getvalue()})
    return writer.out_dir / rel


# --------------------------------------------------------------------------- resizing and metrics


def resize_nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label map to ``hw = (height, width)``.

    It reproduces ``cv2.resize(..., INTER_NEAREST)``, which both the challenge's
    baseline (prediction back to original size) and its evaluator (prediction of
    the wrong size) use: source index ``floor(dst * (1 / (dst_size / src_size)))``,
    clamped. It is written out in numpy with the same double-precision
    operations, so OpenCV is not needed. (Pillow's NEAREST samples pixel centres
    and differs by one pixel at some positions.)
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
    return arr[np.ix_(_cv2_nearest_index(in_h, out_h), _cv2_nearest_index(in_w, out_w))]


def _cv2_nearest_index(src: int, dst: int) -> np.ndarray:
    """OpenCV ``resizeNN``: ``min(cvFloor(x * (1. / (double(dst) / src))), src - 1)``."""
    inv = 1.0 / (float(dst) / float(src))
    idx = np.floor(np.arange(dst, dtype=np.float64) * inv).astype(np.int64)
    return np.minimum(idx, src - 1)


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
    from scipy.ndimage import distance_transform_edt  # here: the registry is imported where scipy must not be

    # edt(~B)[p] is the distance from p to the nearest pixel of B (0 inside B).
    a_to_b = float(distance_transform_edt(~b)[a].max())
    b_to_a = float(distance_transform_edt(~a)[b].max())
    return max(a_to_b, b_to_a)


def aggregate_per_class(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Task metrics from per-image, per-class values [N, C]: mean over images per class, then over classes
    (`Segmentation.score` composes it with `segmentation_per_image`).

    Returns each metric, then its per-class values ``{name}_class{c}`` (c from 1, the background unscored).
    """
    by_class = {name: v.mean(axis=0) for name, v in per_image.items()}
    out: dict[str, float] = {name: float(v.mean()) for name, v in by_class.items()}
    for name, v in by_class.items():
        out.update({f"{name}_class{j + 1}": float(x) for j, x in enumerate(v)})
    return out


def segmentation_per_image(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int, metrics: Sequence[str] = ("DSC", "HD")
) -> dict[str, np.ndarray]:
    """DSC and/or HD (as ``metrics`` asks) per image and non-background class: float64 [N, num_classes - 1].

    The challenge's rules per (image, class): DSC both empty 1.0; HD both
    empty 0, exactly one empty the image diagonal. ``preds[i]`` must already be
    at ``gts[i]``'s original resolution (:func:`resize_nearest`): a size mismatch
    is an error rather than a silent resize. ``num_classes`` includes the
    background (class 0), as in the CSV.
    """
    unknown = set(metrics) - {"DSC", "HD"}
    if unknown:
        raise ValueError(f"unknown segmentation metric(s) {sorted(unknown)}; expected DSC, HD")
    if num_classes < 2:
        raise ValueError(f"segmentation needs num_classes >= 2 (background included), got {num_classes}")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted masks for {len(gts)} ground-truth masks")
    if len(gts) == 0:
        raise ValueError("segmentation_per_image needs at least one image")
    classes = range(1, num_classes)
    want_dsc, want_hd = "DSC" in metrics, "HD" in metrics
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
            if want_dsc:
                dsc[i, j] = _dice(a, b)
            if want_hd:
                hd[i, j] = hausdorff_distance(a, b)
    return {name: v for name, v in (("DSC", dsc), ("HD", hd)) if name in metrics}
