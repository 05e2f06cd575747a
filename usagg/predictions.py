"""A job's predictions in the FMC_UIA challenge submission format, written atomically.

The layout is the challenge's (``reference/fmc_uia.md``, "Prediction files"),
so the official evaluation script can score a job's ``predictions/`` folder
as it is, and :func:`read_predictions` can rescore it later without torch:

- ``classification_predictions.json``: ``{image_path, task_id, predicted_class, predicted_probs}``
- ``detection_predictions.json``: ``{image_path, task_id, bbox_normalized, bbox_pixels}``
- ``regression_predictions.json``: ``{image_path, task_id, predicted_points_normalized, predicted_points_pixels}``
- segmentation: one uint8 PNG per image at the CSV's ``mask_path`` with ``../``
  removed (as the challenge's script does), original size, pixel = class index.

One extra file, ``segmentation_index.json`` (``{image_path, task_id,
mask_path}``, ``mask_path`` relative to the folder), is usagg's own: the
challenge pairs PNGs with images through its CSVs, rescoring from the folder
alone needs the pairing written down. The evaluator ignores it.

Entries are keyed by ``(task_id, image_path)``, ``image_path`` being the CSV
string unchanged, and written sorted by that key so the bytes are reproducible.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import numpy as np

from usagg.atomic import write_bytes_atomic

__all__ = [
    "FILENAMES",
    "SEGMENTATION_INDEX",
    "PredictionWriter",
    "box_to_pixels",
    "points_to_pixels",
    "prediction_mask_relpath",
    "read_predictions",
]

#: Challenge file name per task type (segmentation has PNGs instead, plus usagg's index).
FILENAMES: dict[str, str] = {
    "classification": "classification_predictions.json",
    "detection": "detection_predictions.json",
    "regression": "regression_predictions.json",
}
SEGMENTATION_INDEX = "segmentation_index.json"

#: Keys of each entry, in the order they are written.
ENTRY_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("image_path", "task_id", "predicted_class", "predicted_probs"),
    "detection": ("image_path", "task_id", "bbox_normalized", "bbox_pixels"),
    "regression": ("image_path", "task_id", "predicted_points_normalized", "predicted_points_pixels"),
    "segmentation": ("image_path", "task_id", "mask_path"),
}


# --------------------------------------------------------------------------- conversions shared with scoring


def box_to_pixels(box_normalized: Sequence[float] | np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` in 0..1 (clipped there) to float64 pixels: x times width, y times height.

    The engine should score the box this returns, so the metric and the
    written ``bbox_pixels`` are the same numbers.
    """
    box = np.asarray(box_normalized, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"a box is 4 finite numbers [x1, y1, x2, y2], got {box_normalized!r}")
    h, w = _hw(orig_hw)
    box = np.clip(box, 0.0, 1.0)
    return box * np.array([w, h, w, h], dtype=np.float64)


def points_to_pixels(points_normalized: Sequence[float] | np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """``[K, 2]`` (or flat ``[2K]``) normalised xy to ``[K, 2]`` float64 pixels; not clipped.

    Keypoints may legitimately sit at or past the border, so unlike boxes they
    are converted as predicted (the baseline does the same).
    """
    pts = np.asarray(points_normalized, dtype=np.float64)
    if pts.size == 0 or pts.size % 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"keypoints are K finite (x, y) pairs, got shape {pts.shape}")
    h, w = _hw(orig_hw)
    return pts.reshape(-1, 2) * np.array([w, h], dtype=np.float64)


def prediction_mask_relpath(mask_path: str) -> str:
    """Where a segmentation PNG goes, relative to the predictions folder.

    The challenge strips every ``../`` from the CSV's ``mask_path``; anything
    that would still leave the folder (absolute, ``..``) is refused.
    """
    if not isinstance(mask_path, str) or not mask_path:
        raise ValueError(f"mask_path must be a non-empty CSV string, got {mask_path!r}")
    rel = PurePosixPath(mask_path.replace("../", ""))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.name in ("", "."):
        raise ValueError(f"mask_path {mask_path!r} does not name a file inside the predictions folder")
    return rel.as_posix()


def _hw(orig_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in orig_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"original size (height, width) must be positive, got {orig_hw!r}")
    return h, w


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# --------------------------------------------------------------------------- atomic files


def _json_bytes(entries: list[dict[str, Any]]) -> bytes:
    return (json.dumps(entries, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- writer


class PredictionWriter:
    """Collects one job's predictions and writes them in the challenge format.

    Use one writer per job (or as a context manager). Segmentation PNGs are
    written as they are added (they are large); the JSON files, one per task
    type with the entries of all its tasks merged, are written by
    :meth:`close`, which replaces any earlier file of the same name.
    """

    def __init__(self, out_dir: Path | str) -> None:
        self.out_dir = Path(out_dir)
        self._entries: dict[str, dict[tuple[str, str], dict[str, Any]]] = {t: {} for t in ENTRY_KEYS}
        self._mask_files: dict[str, tuple[str, str]] = {}
        self._written: dict[str, Path] | None = None

    # -- adding

    def add_classification(self, task_id: str, image_path: str, probs: Sequence[float] | np.ndarray) -> None:
        """Class probabilities ``[C]``; the predicted class is their argmax."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.size < 2 or not np.all(np.isfinite(p)):
            raise ValueError(f"{task_id}/{image_path}: probs must be C >= 2 finite numbers, got {probs!r}")
        self._add(
            "classification",
            task_id,
            image_path,
            {"predicted_class": int(np.argmax(p)), "predicted_probs": _floats(p)},
        )

    def add_detection(
        self, task_id: str, image_path: str, box_normalized: Sequence[float] | np.ndarray, orig_hw: tuple[int, int]
    ) -> None:
        """One box ``[x1, y1, x2, y2]`` in 0..1 (clipped) and the image's original ``(height, width)``."""
        box = np.clip(np.asarray(box_normalized, dtype=np.float64).reshape(-1), 0.0, 1.0)
        pixels = box_to_pixels(box, orig_hw)
        self._add("detection", task_id, image_path, {"bbox_normalized": _floats(box), "bbox_pixels": _floats(pixels)})

    def add_regression(
        self,
        task_id: str,
        image_path: str,
        points_normalized: Sequence[float] | np.ndarray,
        orig_hw: tuple[int, int],
    ) -> None:
        """Keypoints ``[K, 2]`` (or flat) in normalised xy and the original ``(height, width)``."""
        pixels = points_to_pixels(points_normalized, orig_hw)
        self._add(
            "regression",
            task_id,
            image_path,
            {
                "predicted_points_normalized": _floats(np.asarray(points_normalized, dtype=np.float64)),
                "predicted_points_pixels": _floats(pixels),
            },
        )

    def add_segmentation(self, task_id: str, image_path: str, mask_path: str, mask: np.ndarray) -> Path:
        """Write one class map, already at the original size, as a uint8 PNG; returns its path.

        ``mask_path`` is the CSV string; the file goes to
        :func:`prediction_mask_relpath` under the folder.
        """
        self._check_open()
        arr = np.asarray(mask)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"{task_id}/{image_path}: a mask is a 2-D class map, got shape {arr.shape}")
        if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{task_id}/{image_path}: mask must hold integer class indices, got {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"{task_id}/{image_path}: class indices must fit in 0..255")
        rel = prediction_mask_relpath(mask_path)
        owner = self._mask_files.get(rel)
        if owner is not None and owner != (task_id, image_path):
            raise ValueError(f"{task_id}/{image_path}: mask file {rel} was already written for {owner[0]}/{owner[1]}")
        self._add("segmentation", task_id, image_path, {"mask_path": rel})
        self._mask_files[rel] = (task_id, image_path)
        target = self.out_dir / rel
        write_bytes_atomic(target, _png_bytes(np.ascontiguousarray(arr, dtype=np.uint8)))
        return target

    def _add(self, task_type: str, task_id: str, image_path: str, fields: dict[str, Any]) -> None:
        self._check_open()
        if not isinstance(task_id, str) or not isinstance(image_path, str):
            raise TypeError("task_id and image_path must be the CSV strings")
        key = (task_id, image_path)
        if key in self._entries[task_type]:
            raise ValueError(f"duplicate {task_type} prediction for task {task_id!r}, image {image_path!r}")
        self._entries[task_type][key] = {"image_path": image_path, "task_id": task_id, **fields}

    def _check_open(self) -> None:
        if self._written is not None:
            raise RuntimeError("PredictionWriter is closed")

    # -- finishing

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def close(self) -> dict[str, Path]:
        """Write the JSON file of every task type that has entries; returns them by type. Idempotent."""
        if self._written is not None:
            return dict(self._written)
        written: dict[str, Path] = {}
        for task_type, entries in self._entries.items():
            if not entries:
                continue
            name = SEGMENTATION_INDEX if task_type == "segmentation" else FILENAMES[task_type]
            path = self.out_dir / name
            write_bytes_atomic(path, _json_bytes([entries[k] for k in sorted(entries)]))
            written[task_type] = path
        self._written = written
        return dict(written)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A failed job must not leave JSON files that look complete.
        if exc_type is None:
            self.close()


# --------------------------------------------------------------------------- reading back


def read_predictions(pred_dir: Path | str, *, load_masks: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Load a predictions folder back: ``{task_type: [entry, ...]}`` for all four types.

    Missing files give empty lists. Segmentation entries come from
    ``segmentation_index.json`` (folders without it, e.g. from other tools,
    have no pairing to read) and carry the PNG as ``"mask"`` (uint8 array)
    when ``load_masks``. Entries keep the written order.
    """
    root = Path(pred_dir)
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in ENTRY_KEYS}
    for task_type, name in (*FILENAMES.items(), ("segmentation", SEGMENTATION_INDEX)):
        path = root / name
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of predictions")
        for i, entry in enumerate(entries):
            missing = [k for k in ENTRY_KEYS[task_type] if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        out[task_type] = entries
    if load_masks:
        from PIL import Image

        for entry in out["segmentation"]:
            rel = prediction_mask_relpath(entry["mask_path"])
            with Image.open(root / rel) as im:
                entry["mask"] = np.asarray(im, dtype=np.uint8)
    return out
