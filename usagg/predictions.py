"""A job's predictions in the FMC_UIA challenge submission format, written atomically.

The layout is the challenge's (one JSON file per task type, named by the type:
`TaskType.prediction_file`; segmentation PNGs beside them), so the official
evaluation script can score a job's ``predictions/`` folder as it is, and
:func:`read_predictions` can rescore it later without torch. What goes into an
entry is each type's business (usagg/tasktypes/); this module only collects the
entries, keeps them unique, and writes them reproducibly: keyed by
``(task_id, image_path)``, ``image_path`` being the CSV string unchanged, and
written sorted by that key so the bytes are reproducible.

The writer also collects, per task, what recomputes its primary metric on any
resample of the test images (`PredictionWriter.add_item_scores`): the job writes
it as item_scores.json, the test-set bootstrap's input (usagg/analysis/task_ci.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.atomic import parse_json, read_regular, write_bytes_atomic
from usagg.safepath import confined

if TYPE_CHECKING:
    from usagg.tasktypes.base import TaskType

__all__ = [
    "CONFUSION_METRICS",
    "ITEM_KINDS",
    "ITEM_SCORES_FORMAT",
    "PredictionWriter",
    "as_floats",
    "item_kind_problem",
    "read_predictions",
]

#: Version of the item_scores.json layout (`PredictionWriter.item_scores`).
ITEM_SCORES_FORMAT = 1
#: How per-image values recompute a metric (usagg/analysis/task_ci.py `resampled_metric`): "mean", values
#: [N] or [N, C], the mean over images, then over the other axis (per-class values); "auc", [N, 1 + C], the
#: true class then the class probabilities; "confusion", [N, 2], the true then the predicted class.
ITEM_KINDS = ("mean", "auc", "confusion")
#: The metrics a "confusion" record recomputes from the true and the predicted class alone (the built-in label
#: metrics, `label_metric`); another (a plug-in's QWK) is refused where it is recorded and where it is read.
CONFUSION_METRICS = ("ACC", "F1_macro", "F1_weighted", "MCC")


def item_kind_problem(task_id: str, metric: str, kind: str) -> str | None:
    """Why per-image scores of `kind` cannot recompute `metric` (None where they can): an unknown kind, or a
    "confusion" record of a metric the bootstrap cannot recompute from labels (a plug-in's QWK recorded so killed
    every `compare` of its study, the built-in tasks' analysis with it)."""
    if kind not in ITEM_KINDS:
        return f"item score kind {kind!r} is not one of {', '.join(ITEM_KINDS)}"
    if kind == "confusion" and metric not in CONFUSION_METRICS:
        return (
            f"task {task_id}: item score kind 'confusion' recomputes {', '.join(CONFUSION_METRICS)} from the true "
            f"and predicted classes, not {metric!r}: record 'mean' values where the metric is a mean over images, "
            "or no item scores (the task then has no test-set interval)"
        )
    return None


def as_floats(values: Sequence[float] | np.ndarray) -> list[float]:
    """Numbers as a flat list of Python floats (JSON-ready, full precision)."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _nan_to_none(values: Any) -> Any:
    """Nested lists of floats with nan and inf as None (strict JSON has neither)."""
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return values if math.isfinite(values) else None


def _json_bytes(entries: list[dict[str, Any]]) -> bytes:
    return (json.dumps(entries, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class PredictionWriter:
    """Collects one job's predictions and writes them in the challenge format.

    Use one writer per job (or as a context manager). Files beside the JSON
    (segmentation PNGs) are written as they are added (they are large); the JSON
    files, one per task type with the entries of all its tasks merged, are
    written by :meth:`close`, which replaces any earlier file of the same name.
    """

    def __init__(self, out_dir: Path | str) -> None:
        self.out_dir = Path(out_dir)
        self._types: dict[str, type[TaskType] | TaskType] = {}
        self._entries: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._file_owner: dict[str, tuple[str, str]] = {}
        self._written: dict[str, Path] | None = None
        self._item_scores: dict[str, dict[str, Any]] = {}

    def add(
        self,
        task_type: type[TaskType] | TaskType,
        task_id: str,
        image_path: str,
        fields: dict[str, Any],
        files: dict[str, bytes] | None = None,
    ) -> None:
        """One prediction entry of a task type, and the files it names (relative path -> bytes), written now.

        Refused: a second entry for the same (task, image), a file another
        entry already wrote, non-string keys, a file outside `out_dir` (its name comes from the dataset's CSV).
        """
        self._check_open()
        if not isinstance(task_id, str) or not isinstance(image_path, str):
            raise TypeError("task_id and image_path must be the CSV strings")
        key = (task_id, image_path)
        entries = self._entries.setdefault(task_type.name, {})
        if key in entries:
            raise ValueError(f"duplicate {task_type.name} prediction for task {task_id!r}, image {image_path!r}")
        for rel in files or {}:
            confined(rel, self.out_dir, f"prediction file of task {task_id!r}, image {image_path!r}")
            owner = self._file_owner.get(rel)
            if owner is not None and owner != key:
                raise ValueError(f"{task_id}/{image_path}: file {rel} was already written for {owner[0]}/{owner[1]}")
        self._types[task_type.name] = task_type
        entries[key] = {"image_path": image_path, "task_id": task_id, **fields}
        for rel, data in (files or {}).items():
            self._file_owner[rel] = key
            write_bytes_atomic(self.out_dir / rel, data)

    def add_item_scores(
        self,
        task_id: str,
        metric: str,
        higher_is_better: bool,
        kind: str,
        images: Sequence[str],
        values: Sequence[Any] | np.ndarray,
    ) -> None:
        """What recomputes one task's `metric` on any resample of its test images: one row of `values` per
        image (`ITEM_KINDS` says how), images as the CSV strings in the order they were scored, so the full
        set gives the metric bit for bit. One record per task."""
        self._check_open()
        if not isinstance(task_id, str) or not all(isinstance(i, str) for i in images):
            raise TypeError("task_id and the images must be the CSV strings")
        if task_id in self._item_scores:
            raise ValueError(f"item scores of task {task_id!r} were already added")
        if (why := item_kind_problem(task_id, metric, kind)) is not None:
            raise ValueError(why)
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] != len(images):
            raise ValueError(f"task {task_id}: {len(images)} images but item values of shape {arr.shape}")
        if len(set(images)) != len(images):
            raise ValueError(f"task {task_id}: an image is listed twice in its item scores")
        self._item_scores[task_id] = {
            "metric": str(metric),
            "higher_is_better": bool(higher_is_better),
            "kind": kind,
            "images": list(images),
            "values": _nan_to_none(arr.tolist()),
        }

    def item_scores(self) -> dict[str, Any]:
        """item_scores.json's content: every task's item scores by task id (nan as null); also after close."""
        return {"format": ITEM_SCORES_FORMAT, "tasks": dict(sorted(self._item_scores.items()))}

    def _check_open(self) -> None:
        if self._written is not None:
            raise RuntimeError("PredictionWriter is closed")

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def close(self) -> dict[str, Path]:
        """Write the JSON file of every task type that has entries; returns them by type name. Idempotent."""
        if self._written is not None:
            return dict(self._written)
        written: dict[str, Path] = {}
        for name, entries in self._entries.items():
            path = self.out_dir / self._types[name].prediction_file
            write_bytes_atomic(path, _json_bytes([entries[k] for k in sorted(entries)]))
            written[name] = path
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


def read_predictions(pred_dir: Path | str, *, load_files: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Load a predictions folder back: ``{task_type: [entry, ...]}`` for every registered type.

    Missing files give empty lists. With ``load_files`` each type loads what its
    entries name beside the JSON (segmentation: the PNG as ``"mask"``, uint8).
    Entries keep the written order. A received folder is data: its JSON files are read as the store's are
    (`read_regular`: no link, FIFO or oversized file) and the files they name must stay inside it, links
    followed (`safepath.confined`).
    """
    from usagg.tasktypes import task_types

    root = Path(pred_dir)
    out: dict[str, list[dict[str, Any]]] = {}
    for tt in task_types():
        out[tt.name] = []
        path = root / tt.prediction_file
        if not path.exists():
            continue
        entries = parse_json(read_regular(path))
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of predictions")
        for i, entry in enumerate(entries):
            missing = [k for k in tt.prediction_keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        out[tt.name] = [tt.load_prediction(e, root) for e in entries] if load_files else entries
    return out
