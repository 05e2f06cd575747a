"""Reading the FMC_UIA layout (reference/fmc_uia.md) into `Sample` records.

`scan_split` parses every CSV row and collects row-level problems instead of
stopping, so `usagg data check` can list all of them; `read_split` is the strict
form the engine uses and raises `DataError` on the first problems found.
Nothing here opens an image: file-level checks live in `usagg.data.check`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from usagg.errors import DataError
from usagg.tasktypes import TASK_TYPES

BASE_COLUMNS: tuple[str, ...] = ("image_path", "task_id", "task_name", "num_classes")
BOX_COLUMNS: tuple[str, ...] = ("x_min", "y_min", "x_max", "y_max")
#: Extra columns each task type needs (regression: point_1_xy .. point_K_xy, checked per row).
TYPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "segmentation": ("mask_path",),
    "classification": ("mask",),
    "detection": BOX_COLUMNS,
    "regression": ("point_1_xy",),
}

Box = tuple[float, float, float, float]
Points = tuple[tuple[float, float], ...]
Label = Union[Path, int, Box, Points]  # noqa: UP007 (runtime alias on py3.10)


@dataclass(frozen=True)
class Sample:
    """One CSV row: an image of one task and its label (pixels, original resolution)."""

    task_id: str
    task_type: str
    num_classes: int
    image_path: str  # the CSV string: predictions are keyed by it
    image_file: Path  # absolute
    label: Label
    csv_file: Path
    row: int  # 1-based data row (the header is not counted; file line = row + 1)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located by CSV file and row where it has one."""

    kind: str
    message: str
    csv_file: str | None = None
    row: int | None = None

    def where(self) -> str:
        if self.csv_file is None:
            return ""
        return self.csv_file if self.row is None else f"{self.csv_file} row {self.row} (line {self.row + 1})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "csv_file": self.csv_file, "row": self.row, "message": self.message}


@dataclass
class SplitScan:
    """Everything `scan_split` found: parsed samples per task and the problems."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    task_names: dict[str, str] = field(default_factory=dict)  # task_id -> majority task_name as written


class _RowError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def rel(path: Path, root: Path) -> str:
    """A path as the user knows it: relative to the dataset root when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def csv_files(root: Path, split: str) -> list[Path]:
    """The split's index CSVs, sorted; DataError when the folder or the CSVs are missing."""
    folder = Path(root) / split / "csv_files"
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist: an FMC_UIA dataset keeps its index CSVs in <root>/{split}/csv_files/ "
            f"(root {root}). Check the dataset root, or generate data with `usagg synth`."
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no .csv files: expected one or more index CSVs for the {split} split.")
    return files


def resolve_inside(root: Path, csv_dir: Path, value: str) -> Path:
    """Resolve a CSV path relative to csv_files/; raise _RowError when it leaves the dataset root."""
    path = Path(os.path.normpath(csv_dir / value.strip()))
    if path != root and root not in path.parents:
        raise _RowError("path_outside_root", f"path {value!r} resolves to {path}, outside the dataset root {root}")
    return path


def task_type_of(task_name: str) -> str | None:
    name = task_name.strip().lower()
    return name if name in TASK_TYPES else None


def _number(record: dict, column: str, kind: str) -> float:
    raw = (record.get(column) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise _RowError(kind, f"column {column} is {raw!r}, expected a number") from None
    if not math.isfinite(value):
        raise _RowError(kind, f"column {column} is {raw!r}, expected a finite number")
    return value


def _integer(record: dict, column: str, kind: str) -> int:
    value = _number(record, column, kind)
    if value != int(value):
        raise _RowError(kind, f"column {column} is {record.get(column)!r}, expected an integer")
    return int(value)


def _points(record: dict, num_classes: int) -> Points:
    """point_1_xy..point_K_xy as JSON "[x, y]"; exactly K non-empty columns."""
    filled = sorted(
        (int(c[len("point_") : -len("_xy")]), c)
        for c, v in record.items()
        if c and c.startswith("point_") and c.endswith("_xy") and c[6:-3].isdigit() and (v or "").strip()
    )
    points = []
    for _, column in filled:
        raw = record[column].strip()
        try:
            value = json.loads(raw)
            x, y = (float(v) for v in value)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError
        except (ValueError, TypeError):
            raise _RowError(
                "keypoints_json", f'column {column} is {raw!r}, expected a JSON pair like "[120.5, 88]"'
            ) from None
        points.append((x, y))
    numbers = [n for n, _ in filled]
    if numbers != list(range(1, num_classes + 1)):
        given = ", ".join(c for _, c in filled) or "none"
        raise _RowError(
            "keypoints_count",
            f"expected {num_classes} keypoints (num_classes) in point_1_xy..point_{num_classes}_xy, found {given}",
        )
    return tuple(points)


def _label(task_type: str, record: dict, num_classes: int, root: Path, csv_dir: Path) -> Label:
    if task_type == "segmentation":
        raw = (record.get("mask_path") or "").strip()
        if not raw:
            raise _RowError("missing_value", "column mask_path is empty, expected the mask PNG's path")
        return resolve_inside(root, csv_dir, raw)
    if task_type == "classification":
        label = _integer(record, "mask", "bad_value")
        if not 0 <= label < num_classes:
            raise _RowError("label_out_of_range", f"class label {label} is outside 0..{num_classes - 1} (num_classes)")
        return label
    if task_type == "detection":
        box = tuple(_number(record, c, "bad_value") for c in BOX_COLUMNS)
        if box[0] >= box[2] or box[1] >= box[3]:
            raise _RowError("bad_box", f"box {list(box)} needs x_min < x_max and y_min < y_max")
        return box  # type: ignore[return-value]
    return _points(record, num_classes)


def _read_csv(path: Path, root: Path) -> tuple[list[str], list[dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            records = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{rel(path, root)} cannot be read as a CSV file: {err}") from None
    records = [{(k or "").strip(): v for k, v in r.items() if k is not None} for r in records]
    return columns, records


def _majority(values: list) -> object:
    """Most common value; ties go to the first seen (Counter keeps insertion order)."""
    return Counter(values).most_common(1)[0][0]


def scan_split(root: Path, split: str) -> SplitScan:
    """Parse every row of the split's CSVs; collect row problems instead of raising.

    A task's type and num_classes are its rows' majority, so one odd row is
    reported as the odd one. Rows with problems are left out of `samples`.
    """
    root = Path(os.path.abspath(root))
    scan = SplitScan()
    rows: list[tuple[Path, int, dict, list[str]]] = []
    for path in csv_files(root, split):
        try:
            columns, records = _read_csv(path, root)
        except DataError as err:
            scan.problems.append(Problem("unreadable_csv", str(err), rel(path, root)))
            continue
        missing = [c for c in BASE_COLUMNS if c not in columns]
        if missing:
            scan.problems.append(
                Problem(
                    "missing_column",
                    f"{rel(path, root)} lacks the column(s) {', '.join(missing)}; every FMC_UIA CSV needs "
                    f"{', '.join(BASE_COLUMNS)} (it has: {', '.join(columns) or 'no header'})",
                    rel(path, root),
                )
            )
            continue
        rows.extend((path, i, record, columns) for i, record in enumerate(records, start=1))

    def problem(kind: str, message: str, path: Path, row: int) -> None:
        scan.problems.append(Problem(kind, message, rel(path, root), row))

    by_task: dict[str, list[tuple[Path, int, dict, list[str], str, int]]] = {}
    for path, row, record, columns in rows:
        task_id = (record.get("task_id") or "").strip()
        if not task_id:
            problem("missing_value", "column task_id is empty", path, row)
            continue
        task_type = task_type_of(record.get("task_name") or "")
        if task_type is None:
            problem(
                "bad_task_name",
                f"task_name {record.get('task_name')!r} is not one of {', '.join(TASK_TYPES)} (any case)",
                path,
                row,
            )
            continue
        try:
            num_classes = _integer(record, "num_classes", "bad_value")
            if num_classes < 1:
                raise _RowError("bad_value", f"num_classes is {num_classes}, expected an integer >= 1")
        except _RowError as err:
            problem(err.kind, str(err), path, row)
            continue
        by_task.setdefault(task_id, []).append((path, row, record, columns, task_type, num_classes))

    for task_id, entries in by_task.items():
        major_type = _majority([e[4] for e in entries])
        major_k = _majority([e[5] for e in entries if e[4] == major_type])
        first = next(e for e in entries if e[4] == major_type and e[5] == major_k)
        scan.task_names[task_id] = first[2]["task_name"].strip()
        seen: dict[str, tuple[Path, int]] = {}
        samples = scan.samples.setdefault(task_id, [])
        for path, row, record, columns, task_type, k in entries:
            where_first = f"{rel(first[0], root)} row {first[1]}"
            if task_type != major_type:
                problem(
                    "task_name_mismatch",
                    f"task {task_id} has task_name {record['task_name'].strip()!r} here but "
                    f"{first[2]['task_name'].strip()!r} in its other rows (e.g. {where_first})",
                    path,
                    row,
                )
                continue
            if k != major_k:
                problem(
                    "num_classes_mismatch",
                    f"task {task_id} has num_classes {k} here but {major_k} in its other rows (e.g. {where_first})",
                    path,
                    row,
                )
                continue
            missing = [c for c in TYPE_COLUMNS[task_type] if c not in columns]
            if missing:
                problem(
                    "missing_column",
                    f"a {task_type} row needs the column(s) {', '.join(missing)}, which this CSV lacks",
                    path,
                    row,
                )
                continue
            image_path = (record.get("image_path") or "").strip()
            try:
                if not image_path:
                    raise _RowError("missing_value", "column image_path is empty")
                image_file = resolve_inside(root, path.parent, image_path)
                label = _label(task_type, record, k, root, path.parent)
            except _RowError as err:
                problem(err.kind, f"task {task_id}: {err}", path, row)
                continue
            if image_path in seen:
                p0, r0 = seen[image_path]
                problem(
                    "duplicate_row",
                    f"task {task_id} lists image {image_path!r} again (first at {rel(p0, root)} row {r0}); "
                    "each image may appear once per task",
                    path,
                    row,
                )
                continue
            seen[image_path] = (path, row)
            samples.append(Sample(task_id, task_type, k, image_path, image_file, label, path, row))
    scan.problems.sort(key=lambda p: (p.csv_file or "", p.row or 0))
    return scan


def read_split(root: Path, split: str) -> dict[str, list[Sample]]:
    """task_id -> samples in CSV order; DataError naming file and row on any row problem."""
    scan = scan_split(root, split)
    if scan.problems:
        shown = "; ".join(f"{p.where()}: {p.message}" if p.row else p.message for p in scan.problems[:5])
        more = f" (and {len(scan.problems) - 5} more)" if len(scan.problems) > 5 else ""
        raise DataError(
            f"the {split} split of {root} has {len(scan.problems)} problem(s): {shown}{more}. "
            f"Run `usagg data check {root}` for the full list."
        )
    return {t: s for t, s in scan.samples.items() if s}
