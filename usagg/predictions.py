"""A job's predictions in the FMC_UIA challenge submission format, written atomically.

The layout is the challenge's (one JSON file per task type, named by the type:
`TaskType.prediction_file`; segmentation PNGs beside them), so the official
evaluation script can score a job's ``predictions/`` folder as it is, and
:func:`read_predictions` can rescore it later without torch. What goes into an
entry is each type's business (usagg/tasktypes/); this module only collects the
entries, keeps them unique, and writes them reproducibly: keyed by
``(task_id, image_path)``, ``image_path`` being the CSV string unchanged, and
written sorted by that key so the bytes are reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from usagg.tasktypes.base import TaskType

__all__ = ["PredictionWriter", "as_floats", "read_predictions"]


def as_floats(values: Sequence[float] | np.ndarray) -> list[float]:
    """Numbers as a flat list of Python floats (JSON-ready, full precision)."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


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
        entry already wrote, non-string keys.
        """
        self._check_open()
        if not isinstance(task_id, str) or not isinstance(image_path, str):
            raise TypeError("task_id and image_path must be the CSV strings")
        key = (task_id, image_path)
        entries = self._entries.setdefault(task_type.name, {})
        if key in entries:
            raise ValueError(f"duplicate {task_type.name} prediction for task {task_id!r}, image {image_path!r}")
        for rel in files or {}:
            owner = self._file_owner.get(rel)
            if owner is not None and owner != key:
                raise ValueError(f"{task_id}/{image_path}: file {rel} was already written for {owner[0]}/{owner[1]}")
        self._types[task_type.name] = task_type
        entries[key] = {"image_path": image_path, "task_id": task_id, **fields}
        for rel, data in (files or {}).items():
            self._file_owner[rel] = key
            write_bytes_atomic(self.out_dir / rel, data)

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
    Entries keep the written order.
    """
    from usagg.tasktypes import task_types

    root = Path(pred_dir)
    out: dict[str, list[dict[str, Any]]] = {}
    for tt in task_types():
        out[tt.name] = []
        path = root / tt.prediction_file
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of predictions")
        for i, entry in enumerate(entries):
            missing = [k for k in tt.prediction_keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        out[tt.name] = [tt.load_prediction(e, root) for e in entries] if load_files else entries
    return out
