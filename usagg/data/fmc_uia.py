"""Reading the FMC_UIA layout (reference/fmc_uia.md) into `Sample` records.

`scan_split` parses every CSV row and collects row-level problems instead of
stopping, so `usagg data check` can list all of them; `read_split` is the strict
form the engine uses and raises `DataError` on the first problems found.
Nothing here opens an image: file-level checks live in `usagg.data.check`.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from usagg.errors import DataError
from usagg.names import is_plain_name
from usagg.safepath import control_characters
from usagg.tasktypes import find_task_type, get_task_type, task_type_names
from usagg.tasktypes.base import Row, RowError
from usagg.wording import command, counted

BASE_COLUMNS: tuple[str, ...] = ("image_path", "task_id", "task_name", "num_classes")


@dataclass(frozen=True)
class Sample:
    """One CSV row: an image of one task and its label (pixels, original resolution)."""

    task_id: str
    task_type: str
    num_classes: int
    image_path: str  # the CSV string: predictions are keyed by it
    image_file: Path  # absolute
    label: Any  # the task type's label in original-image pixels (usagg/tasktypes/)
    csv_file: Path
    row: int  # 1-based data row (the header is not counted; file line = row + 1)


class Where(TypedDict):
    """A sample's place, spread into `Problem(kind, message, **where)`."""

    csv_file: str
    row: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located by CSV file and row where it has one."""

    kind: str
    message: str
    csv_file: str | None = None
    row: int | None = None
    #: Every task the problem involves when it spans two (a leak from another task's training image):
    #: it then concerns only a study that trains all of them (usagg/data/scope.py).
    tasks: tuple[str, ...] = ()

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


def _read_csv(path: Path, root: Path) -> tuple[list[str], list[dict]]:
    """The header's column names and the rows of one index CSV; DataError when it is no comma-separated UTF-8 CSV
    (a spreadsheet's ';' or tab-separated save included: `foreign_separator`)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            records = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{rel(path, root)} cannot be read as a CSV file: {err}") from None
    refusal = foreign_separator(rel(path, root), columns, BASE_COLUMNS)
    if refusal:
        raise DataError(f"{refusal}; every FMC_UIA CSV needs the columns {', '.join(BASE_COLUMNS)}")
    records = [{(k or "").strip(): v for k, v in r.items() if k is not None} for r in records]
    return columns, records


#: The separators a spreadsheet saves "CSV" or text with instead of commas, and how a message names them.
_FOREIGN_SEPARATORS = {
    ";": "';' (as a spreadsheet in some locales saves CSV)",
    "\t": "tabs (as a spreadsheet saves tab-separated text)",
}


def foreign_separator(name: str, header: Sequence[str], expected: Sequence[str]) -> str:
    """Why a CSV whose header, read with commas, is names joined by ';' or tabs is refused ('' when it is not).

    A file re-saved by a spreadsheet in a locale with a decimal comma is separated by ';' and writes 0.81 as
    "0,81". Reading the ';' is unambiguous when the header's names are the expected ones, but its numbers are not
    ("1,000" is one or a thousand), so usagg refuses the file with what to do rather than guess half of it: one
    save as comma-separated UTF-8 CSV. Recognised when splitting the header at the separator finds more expected
    columns (two at least) than the commas did, so a comma-separated file with a ';' in one name is read as it is.
    """
    joined = ",".join(header)
    found = sum(c in header for c in expected)
    for separator, what in _FOREIGN_SEPARATORS.items():
        names = [n.strip().strip('"').strip() for n in joined.split(separator)]
        if sum(c in names for c in expected) > max(1, found):
            return (
                f"{name} is separated by {what}; usagg reads comma-separated files: save it as CSV with commas "
                "(UTF-8), numbers with a decimal point (0.81, not 0,81)"
            )
    return ""


def _majority(values: list) -> object:
    """Most common value; ties go to the first seen (Counter keeps insertion order)."""
    return Counter(values).most_common(1)[0][0]


def _control_cells(record: dict) -> str:
    """Why a row's cells hold control characters ('' when none does): an escape sequence in a task id or a path
    would reach the terminal through every table and message that shows it, and a newline would break the
    one-line problems and the catalog lines written from it."""
    bad = [
        f"column {column} ({value!r}: {', '.join(control_characters(value))})"
        for column, value in record.items()
        if isinstance(value, str) and not value.isprintable() and control_characters(value)  # isprintable: fast
    ]
    return f"control characters in {'; '.join(bad)}: every cell must be printable text on one line" if bad else ""


def scan_split(root: Path, split: str) -> SplitScan:
    """Parse every row of the split's CSVs; collect row problems instead of raising.

    A task's type and num_classes are its rows' majority, so one odd row is
    reported as the odd one. Rows with problems are left out of `samples`.
    """
    root = Path(os.path.abspath(root))
    scan = SplitScan()
    rows: list[tuple[Path, int, dict, list[str]]] = []
    real_dirs: dict[str, str] = {}  # one scan's resolved folders (tasktypes.base.resolve_inside)
    for path in csv_files(root, split):
        if control_characters(path.name):  # no csv_file: the name would reach every line that places a problem
            scan.problems.append(
                Problem(
                    "control_character",
                    f"the {split} CSV {path.name!r} has control characters in its name "
                    f"({', '.join(control_characters(path.name))}): rename it to printable text",
                )
            )
            continue
        try:
            columns, records = _read_csv(path, root)
        except DataError as err:
            scan.problems.append(Problem("unreadable_csv", str(err), rel(path, root)))
            continue
        header = [repr(c) for c in columns if control_characters(c)]
        if header:
            scan.problems.append(
                Problem(
                    "control_character",
                    f"{rel(path, root)} has control characters in its header ({', '.join(header)}): column names "
                    "must be printable text on one line",
                    rel(path, root),
                )
            )
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
        if not records:
            scan.problems.append(
                Problem(
                    "empty_csv",
                    f"{rel(path, root)} has a header but no rows; every index CSV lists at least one image "
                    f"(a task without {split} images cannot be trained or scored): fill it or remove the file",
                    rel(path, root),
                )
            )
        rows.extend((path, i, record, columns) for i, record in enumerate(records, start=1))

    def problem(kind: str, message: str, path: Path, row: int) -> None:
        scan.problems.append(Problem(kind, message, rel(path, root), row))

    by_task: dict[str, list[tuple[Path, int, dict, list[str], str, int]]] = {}
    types: dict[str, Any] = {}  # task_name as written -> its task type (or None), looked up once per scan
    folders: dict[Path, Path] = {}  # a CSV -> its folder, where its relative paths start
    for path, row, record, columns in rows:
        controlled = _control_cells(record)
        if controlled:
            problem("control_character", controlled, path, row)
            continue
        task_id = (record.get("task_id") or "").strip()
        if not task_id:
            problem("missing_value", "column task_id is empty", path, row)
            continue
        if not is_plain_name(task_id):
            problem(
                "bad_task_id",
                f"task_id {task_id!r} is not a name a study can give a task (letters, digits, '_', '.', '-', "
                "starting with a letter or digit, at most 80 characters), so no spec could name this task: "
                "rename it in the CSVs",
                path,
                row,
            )
            continue
        name = record.get("task_name") or ""
        found = types[name] if name in types else types.setdefault(name, find_task_type(name))
        if found is None:
            problem(
                "bad_task_name",
                f"task_name {record.get('task_name')!r} is not one of {', '.join(task_type_names())} (any case)",
                path,
                row,
            )
            continue
        task_type = found.name
        try:
            folder = folders.get(path) or folders.setdefault(path, path.parent)
            num_classes = Row(record, root, folder).integer("num_classes")
            if num_classes < 1:
                raise RowError("bad_value", f"num_classes is {num_classes}, expected an integer >= 1")
        except RowError as err:
            problem(err.kind, str(err), path, row)
            continue
        by_task.setdefault(task_id, []).append((path, row, record, columns, task_type, num_classes))

    for task_id, entries in by_task.items():
        major_type = _majority([e[4] for e in entries])
        major_k = _majority([e[5] for e in entries if e[4] == major_type])
        first = next(e for e in entries if e[4] == major_type and e[5] == major_k)
        scan.task_names[task_id] = first[2]["task_name"].strip()
        seen: dict[str, tuple[Path, int, tuple[str, ...]]] = {}
        samples = scan.samples.setdefault(task_id, [])
        where_first = f"{rel(first[0], root)} row {first[1]}"
        for path, row, record, columns, task_type, k in entries:
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
            tt = get_task_type(task_type)
            missing = [c for c in tt.required_columns(k) if c not in columns]
            if missing:
                problem(
                    "missing_column",
                    f"a {task_type} row needs the column(s) {', '.join(missing)}, which this CSV lacks",
                    path,
                    row,
                )
                continue
            cells = Row(record, root, folders[path], real_dirs)
            try:
                image_file = cells.path("image_path", "the image's path")
                label = tt.parse_label(cells, k)
            except RowError as err:
                problem(err.kind, f"task {task_id}: {err}", path, row)
                continue
            image_path = record["image_path"]  # unpadded: `Row.path` refuses padding
            label_cells = tuple((record.get(c) or "").strip() for c in tt.csv_columns(k))
            if image_path in seen:
                p0, r0, cells0 = seen[image_path]
                if cells0 != label_cells:
                    problem(
                        "conflicting_duplicate",
                        f"task {task_id} lists image {image_path!r} again with a different label "
                        f"({', '.join(label_cells)} here, {', '.join(cells0)} at {rel(p0, root)} row {r0}); "
                        "each image may appear once per task: keep the right label",
                        path,
                        row,
                    )
                    continue
                problem(
                    "duplicate_row",
                    f"task {task_id} lists image {image_path!r} again with the same label (first at "
                    f"{rel(p0, root)} row {r0}); each image may appear once per task",
                    path,
                    row,
                )
                continue
            seen[image_path] = (path, row, label_cells)
            samples.append(Sample(task_id, task_type, k, image_path, image_file, label, path, row))
    scan.problems.sort(key=lambda p: (p.csv_file or "", p.row or 0))
    return scan


def read_split(root: Path, split: str, task_ids: Collection[str] | None = None) -> dict[str, list[Sample]]:
    """task_id -> samples in CSV order; DataError naming file and row on a row problem.

    With `task_ids`, only problems of those tasks (and those whose task cannot be told) count: a
    bad row of a task a job does not train never stops it (usagg/data/scope.py places problems).
    """
    from usagg.data.scope import ProblemTasks

    scan = scan_split(root, split)
    problems = scan.problems
    if task_ids is not None:
        place = ProblemTasks(Path(os.path.abspath(root)))
        problems = [p for p in problems if place.task_of(p) in (*task_ids, None)]
    if problems:
        shown = "; ".join(f"{p.where()}: {p.message}" if p.row else p.message for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(
            f"the {split} split of {root} has {counted(len(problems), 'problem')}: {shown}{more}. "
            f"Run `{command('usagg', 'data', 'check', Path(root))}` for the full list."
        )
    return {t: s for t, s in scan.samples.items() if s}
