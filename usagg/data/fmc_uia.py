"""Reading the FMC_UIA layout (reference/fmc_uia.md) into `Sample` records.

`scan_split` parses every CSV row and collects row-level problems instead of
stopping, so `usagg data check` can list all of them; `read_split` is the strict
form the engine uses and raises `DataError` on the first problems found.
Nothing here opens an image: file-level checks live in `usagg.data.check`.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import os
import shlex
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from usagg.errors import DataError, UsaggError
from usagg.names import is_plain_name
from usagg.registry import plugin_hint
from usagg.safepath import control_characters, inside
from usagg.tasktypes import find_task_type, get_task_type, task_type_names
from usagg.tasktypes.base import Row, RowError, type_error
from usagg.wording import command, counted

BASE_COLUMNS: tuple[str, ...] = ("image_path", "task_id", "task_name", "num_classes")
#: The most bytes an index CSV may hold, checked before it is read: a million rows of a hundred bytes is 100 MB; a
#: larger file (a link to a disk image, a log) would be read whole into memory.
CSV_LIMIT = 256 * 2**20


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


@dataclass(frozen=True)
class Declared:
    """What a split's rows say a task is (the majority of its rows, as `samples` take it), whether they parse or not:
    the data check compares it between splits (usagg/data/check.py) before the rows' own problems count."""

    task_type: str
    num_classes: int
    csv_file: Path  # where the majority's first row is
    row: int
    rows: dict[str, frozenset[int]]  # every row of the task with a known type: CSV (as `rel` gives it) -> rows


@dataclass
class SplitScan:
    """Everything `scan_split` found: parsed samples per task and the problems."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    task_names: dict[str, str] = field(default_factory=dict)  # task_id -> majority task_name as written
    declared: dict[str, Declared] = field(default_factory=dict)  # task_id -> type and num_classes its rows give
    named: set[str] = field(default_factory=set)  # every task id a row names, its row usable or not


def rel(path: Path, root: Path) -> str:
    """A path as the user knows it: relative to the dataset root when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


#: The first bytes of a macOS AppleDouble file: `._<name>`, the resource fork and attributes of `<name>` that a copy,
#: tar or zip from a Mac (or an SMB or exFAT share) writes beside it on a disk that cannot hold them.
APPLEDOUBLE_MAGIC = b"\x00\x05\x16\x07"


def is_appledouble(path: Path) -> bool:
    """Whether `path` is macOS metadata rather than data: named `._*` and starting with the AppleDouble magic (a
    `._x.csv` of the user's own, without it, is an index CSV like any other)."""
    if not path.name.startswith("._"):
        return False
    try:
        with path.open("rb") as f:
            return f.read(len(APPLEDOUBLE_MAGIC)) == APPLEDOUBLE_MAGIC
    except OSError:
        return False


def _index_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the index CSVs in `folder`, the macOS metadata files among its `.csv` files), each sorted."""
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    metadata = [p for p in found if is_appledouble(p)]
    return [p for p in found if p not in metadata], metadata


def require_root(root: Path) -> None:
    """DataError unless `root` is a folder: what `usagg data check` and `usagg data catalog` say of a mistyped root
    (the catalog said "no index CSVs in train/csv_files/ or val/csv_files/", as of an empty folder)."""
    if not Path(root).is_dir():
        raise DataError(
            f"dataset root {root} does not exist or is not a folder; expected the FMC_UIA layout (train/, val/)"
        )


def csv_files(root: Path, split: str) -> list[Path]:
    """The split's index CSVs, sorted, macOS metadata files (`is_appledouble`) left out: every reader of a split
    (the data check, the catalog, the jobs' `read_split`) takes its CSVs from here. DataError when the folder or the
    CSVs are missing."""
    folder = Path(root) / split / "csv_files"
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist: an FMC_UIA dataset keeps its index CSVs in <root>/{split}/csv_files/ "
            f"(root {root}). Check the dataset root, or generate data with `usagg synth`."
        )
    if not inside(folder, root):
        raise DataError(
            f"{folder} leads through a symbolic link to {os.path.realpath(folder)}, outside the dataset root {root}: "
            "copy the index CSVs into the root (a dataset must hold its own files)"
        )
    files, metadata = _index_entries(folder)
    if not files:
        only = f" (only {counted(len(metadata), 'macOS metadata file')}, ._*, ignored)" if metadata else ""
        raise DataError(f"{folder} holds no .csv files{only}: expected one or more index CSVs for the {split} split.")
    return files


def macos_note(root: Path, splits: Sequence[str]) -> str:
    """What to say, once per dataset root, of the macOS metadata files beside its index CSVs that every reader
    skips ('' when there are none): read as CSVs they were "UTF-16 text" to convert, one problem per file."""
    found = [
        p
        for split in splits
        if (Path(root) / split / "csv_files").is_dir()
        for p in _index_entries(Path(root) / split / "csv_files")[1]
    ]
    if not found:
        return ""
    return (
        f"{counted(len(found), 'macOS metadata file')} (._*) ignored beside the index CSVs (e.g. "
        f"{rel(found[0], Path(root))}); `find {shlex.quote(str(root))} -name '._*' -delete` removes them"
    )


def _read_csv(path: Path, root: Path) -> tuple[list[str], list[dict]]:
    """The header's column names and the rows of one index CSV; DataError when it is no comma-separated UTF-8 CSV
    (a spreadsheet's ';' or tab-separated save included: `foreign_separator`)."""
    try:
        reader = csv.DictReader(io.StringIO(_utf8_text(path, root), newline=""))
        records = list(reader)
        columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, csv.Error) as err:
        raise DataError(f"{rel(path, root)} cannot be read as a CSV file: {err}") from None
    refusal = foreign_separator(rel(path, root), columns, BASE_COLUMNS)
    if refusal:
        raise DataError(f"{refusal}; every FMC_UIA CSV needs the columns {', '.join(BASE_COLUMNS)}")
    records = [{(k or "").strip(): v for k, v in r.items() if k is not None} for r in records]
    return columns, records


def _utf8_text(path: Path, root: Path) -> str:
    """The CSV's text (a UTF-8 BOM dropped); DataError naming the line and byte that are not UTF-8, which a
    spreadsheet's "CSV" save in a Windows or Latin-1 encoding writes for every non-ASCII letter, or saying the file
    is UTF-16 (whose byte-order mark read as Windows-1252 sent the user to a conversion that made it worse)."""
    with path.open("rb") as f:
        data = f.read(CSV_LIMIT + 1)  # bounded: a link inside the root can still name a huge file there
    if len(data) > CSV_LIMIT:
        raise DataError(
            f"{rel(path, root)} holds more than {CSV_LIMIT:,} bytes, more than an index CSV may: a CSV of a million "
            "rows is about 100 MB, so this is no index CSV (move it out of csv_files/), or split it into several"
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:256]:
        raise DataError(
            f"{rel(path, root)} is UTF-16 text (a UTF-16 byte-order mark, or NUL bytes between its letters), as "
            "Excel's \"Unicode Text\" save or PowerShell's Out-File write it, and usagg reads CSVs as UTF-8: save the "
            'file as "CSV UTF-8" (Excel: Save As > CSV UTF-8 (Comma delimited)) or convert it, e.g. '
            "`iconv -f utf-16 -t utf-8 old.csv > new.csv`"
        )
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = body[err.start : err.start + 1]
        line = body.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{rel(path, root)} is not UTF-8 text: line {line} has the byte 0x{bad.hex()} "
            f'({bad.decode("cp1252", "replace")!r} in Windows-1252), as a spreadsheet\'s "CSV" save in a Windows or '
            "Latin-1 encoding writes a non-ASCII letter, and usagg reads CSVs as UTF-8: "
            'save the file as "CSV UTF-8" (Excel: Save As > CSV UTF-8 (Comma delimited)) or convert it, e.g. '
            "`iconv -f cp1252 -t utf-8 old.csv > new.csv`"
        ) from None


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


class _CsvRow(NamedTuple):
    """One data row of an index CSV, with the file it came from and that file's columns."""

    path: Path
    row: int
    record: dict
    columns: list[str]
    folder: Path  # the CSV's folder, where its relative paths start


class _Shape(NamedTuple):
    """What a task's rows hold given its majority type and num_classes, looked up once per task, not per row."""

    task_type: Any  # the TaskType
    required: tuple[str, ...]  # columns a row needs
    label_columns: tuple[str, ...]  # the label's cells, as written (duplicates compare them)


class _TaskRow(NamedTuple):
    """A row whose task id, type and num_classes read."""

    csv: _CsvRow
    task_type: str
    num_classes: int


def scan_split(root: Path, split: str) -> SplitScan:
    """Parse every row of the split's CSVs; collect row problems instead of raising.

    A task's type and num_classes are its rows' majority, so one odd row is
    reported as the odd one. Rows with problems are left out of `samples`.
    """
    root = Path(os.path.abspath(root))
    scan = SplitScan()
    by_task = _task_rows(_read_rows(root, split, scan), root, scan)
    real_dirs: dict[str, str] = {}  # one scan's resolved folders (tasktypes.base.resolve_inside)
    for task_id, entries in by_task.items():
        _scan_task(task_id, entries, root, scan, real_dirs)
    scan.problems.sort(key=lambda p: (p.csv_file or "", p.row or 0))
    return scan


def _read_rows(root: Path, split: str, scan: SplitScan) -> list[_CsvRow]:
    """Every data row of the split's CSVs; a CSV that cannot be read as an index (its name, encoding, header) is
    a problem in `scan` and gives no row."""
    rows: list[_CsvRow] = []
    for path in csv_files(root, split):
        columns_records = _read_index(path, split, root, scan)
        if columns_records is not None:
            columns, records = columns_records
            folder = path.parent  # once per CSV: a Path built per row cost a fifth of a 50,000-row scan
            rows.extend(_CsvRow(path, i, record, columns, folder) for i, record in enumerate(records, start=1))
    return rows


def _read_index(path: Path, split: str, root: Path, scan: SplitScan) -> tuple[list[str], list[dict]] | None:
    """The columns and rows of one index CSV, or None after adding the problem that keeps it from being read."""
    if control_characters(path.name):  # no csv_file: the name would reach every line that places a problem
        scan.problems.append(
            Problem(
                "control_character",
                f"the {split} CSV {path.name!r} has control characters in its name "
                f"({', '.join(control_characters(path.name))}): rename it to printable text",
            )
        )
        return None
    where = rel(path, root)
    if not inside(path, root):  # read, its first line would be shown in a problem: a link to a secret
        scan.problems.append(
            Problem(
                "path_outside_root",
                f"{where} leads through a symbolic link to {os.path.realpath(path)}, outside the dataset root {root}; "
                "copy the file into the root (a dataset must hold its own files)",
                where,
            )
        )
        return None
    try:
        columns, records = _read_csv(path, root)
    except DataError as err:
        scan.problems.append(Problem("unreadable_csv", str(err), where))
        return None
    header = [repr(c) for c in columns if control_characters(c)]
    if header:
        scan.problems.append(
            Problem(
                "control_character",
                f"{where} has control characters in its header ({', '.join(header)}): column names "
                "must be printable text on one line",
                where,
            )
        )
        return None
    missing = [c for c in BASE_COLUMNS if c not in columns]
    if missing:
        scan.problems.append(
            Problem(
                "missing_column",
                f"{where} lacks the column(s) {', '.join(missing)}; every FMC_UIA CSV needs "
                f"{', '.join(BASE_COLUMNS)} (it has: {', '.join(columns) or 'no header'})",
                where,
            )
        )
        return None
    if not records:
        scan.problems.append(
            Problem(
                "empty_csv",
                f"{where} has a header but no rows; every index CSV lists at least one image "
                f"(a task without {split} images cannot be trained or scored): fill it or remove the file",
                where,
            )
        )
    return columns, records


def _task_rows(rows: list[_CsvRow], root: Path, scan: SplitScan) -> dict[str, list[_TaskRow]]:
    """The rows by task id, each with its type and num_classes; a row where one of them does not read is a problem
    in `scan`. Each task_name spelling is looked up once per scan."""
    by_task: dict[str, list[_TaskRow]] = {}
    types: dict[str, Any] = {}  # task_name as written -> its task type (or None)
    for r in rows:
        found = _task_row(r, root, types, scan)
        if isinstance(found, Problem):
            scan.problems.append(found)
        else:
            by_task.setdefault(found[0], []).append(found[1])
    return by_task


def _task_row(r: _CsvRow, root: Path, types: dict[str, Any], scan: SplitScan) -> tuple[str, _TaskRow] | Problem:
    """(task id, the row typed) or the row's problem; a task id that reads is added to `scan.named`."""

    def problem(kind: str, message: str) -> Problem:  # placed only then: a `rel` per row cost a third of the scan
        return Problem(kind, message, rel(r.path, root), r.row)

    if not any(isinstance(v, str) and v.strip() for v in r.record.values()):
        return problem(
            "empty_row",
            f"row {r.row} is empty (only separators, as a spreadsheet leaves below its data): delete it",
        )
    controlled = _control_cells(r.record)
    if controlled:
        return problem("control_character", controlled)
    task_id = (r.record.get("task_id") or "").strip()
    if not task_id:
        return problem("missing_value", "column task_id is empty")
    if not is_plain_name(task_id):
        return problem(
            "bad_task_id",
            f"task_id {task_id!r} is not a name a study can give a task (ASCII letters, digits, '_', '.', '-', "
            "starting with a letter or digit, at most 80 characters), so no spec could name this task: "
            "rename it in the CSVs",
        )
    scan.named.add(task_id)
    name = r.record.get("task_name") or ""
    found = types[name] if name in types else types.setdefault(name, find_task_type(name))
    if found is None:
        return problem(
            "bad_task_name",
            f"task_name {r.record.get('task_name')!r} is not one of {', '.join(task_type_names())} (any case)"
            + plugin_hint("How to add a task type"),
        )
    try:
        num_classes = Row(r.record, root, r.folder).integer("num_classes")
        if num_classes < 1:
            raise RowError("bad_value", f"num_classes is {num_classes}, expected an integer >= 1")
    except RowError as err:
        return problem(err.kind, str(err))
    return task_id, _TaskRow(r, found.name, num_classes)


def _scan_task(task_id: str, entries: list[_TaskRow], root: Path, scan: SplitScan, real_dirs: dict[str, str]) -> None:
    """One task's rows into `scan`: its declared type (the majority), then each row as a sample or a problem."""
    major_type = _majority([e.task_type for e in entries])
    major_k = _majority([e.num_classes for e in entries if e.task_type == major_type])
    first = next(e for e in entries if e.task_type == major_type and e.num_classes == major_k)
    scan.task_names[task_id] = first.csv.record["task_name"].strip()
    scan.declared[task_id] = Declared(
        first.task_type, first.num_classes, first.csv.path, first.csv.row, _rows_by_csv(entries, root)
    )
    samples = scan.samples.setdefault(task_id, [])
    where_first = f"{rel(first.csv.path, root)} row {first.csv.row}"
    tt = get_task_type(first.task_type)
    if (why := tt.check_num_classes(first.num_classes)) is not None:  # as a spec's TaskSpec is checked; said once
        message = f"task {task_id} declares num_classes {first.num_classes} in its rows: {why}"
        scan.problems.append(Problem("bad_value", message, rel(first.csv.path, root), first.csv.row))
        return
    shape = _Shape(tt, tuple(tt.required_columns(first.num_classes)), tuple(tt.csv_columns(first.num_classes)))
    duplicates = _Duplicates(root)
    for e in entries:
        found = _odd_declaration(task_id, e, first, where_first) or _row_sample(
            task_id, e, shape, root, real_dirs, duplicates
        )
        if isinstance(found, Sample):
            samples.append(found)
        else:
            scan.problems.append(Problem(found[0], found[1], rel(e.csv.path, root), e.csv.row))


def _row_sample(
    task_id: str, e: _TaskRow, shape: _Shape, root: Path, real_dirs: dict[str, str], duplicates: _Duplicates
) -> Sample | tuple[str, str]:
    """The row's sample, or (kind, message) of its problem (a repeated image included)."""
    found = _sample(task_id, e, shape, root, real_dirs)
    return duplicates.check(*found) if isinstance(found[0], Sample) else found


def _rows_by_csv(entries: list[_TaskRow], root: Path) -> dict[str, frozenset[int]]:
    """CSV (as `rel` names it) -> the rows of `entries` in it."""
    rows: dict[Path, set[int]] = {}
    for e in entries:
        rows.setdefault(e.csv.path, set()).add(e.csv.row)
    return {rel(path, root): frozenset(numbers) for path, numbers in rows.items()}


def _odd_declaration(task_id: str, e: _TaskRow, first: _TaskRow, where_first: str) -> tuple[str, str] | None:
    """(kind, message) when the row's task_name or num_classes is not its task's majority."""
    if e.task_type != first.task_type:
        return (
            "task_name_mismatch",
            f"task {task_id} has task_name {e.csv.record['task_name'].strip()!r} here but "
            f"{first.csv.record['task_name'].strip()!r} in its other rows (e.g. {where_first})",
        )
    if e.num_classes != first.num_classes:
        return (
            "num_classes_mismatch",
            f"task {task_id} has num_classes {e.num_classes} here but {first.num_classes} in its other rows "
            f"(e.g. {where_first})",
        )
    return None


def _sample(
    task_id: str, e: _TaskRow, shape: _Shape, root: Path, real_dirs: dict[str, str]
) -> tuple[Sample, tuple[str, ...]] | tuple[str, str]:
    """(the row's sample, its label cells as written) or (kind, message) of its problem: a column its type needs,
    a path or label that does not read, a path written with Windows separators."""
    record, k = e.csv.record, e.num_classes
    missing = [c for c in shape.required if c not in e.csv.columns]
    if missing:
        return "missing_column", f"a {e.task_type} row needs the column(s) {', '.join(missing)}, which this CSV lacks"
    try:
        cells = Row(record, root, e.csv.folder, real_dirs)
        image_file = cells.path("image_path", "the image's path")
        label = _parsed(shape, cells, task_id, e)
    except RowError as err:
        return err.kind, f"task {task_id}: {err}"
    windows = _windows_path(record, ("image_path", *shape.label_columns), e.csv.folder)
    if windows:
        return "windows_path", f"task {task_id}: {windows}"
    label_cells = tuple((record.get(c) or "").strip() for c in shape.label_columns)
    image_path = record["image_path"]  # unpadded: `Row.path` refuses padding
    return Sample(task_id, e.task_type, k, image_path, image_file, label, e.csv.path, e.csv.row), label_cells


def _parsed(shape: _Shape, cells: Row, task_id: str, e: _TaskRow) -> Any:
    """The row's label by its type's `parse_label`; a RowError is the row's problem, any other error the type's
    bug: one paragraph naming the type, its module, the task and the row (a plug-in's KeyError was a traceback
    through `usagg data check`, where `score` and the head's errors are named so)."""
    try:
        return shape.task_type.parse_label(cells, e.num_classes)
    except RowError:
        raise
    except Exception as err:
        raise UsaggError(
            f"{type_error(shape.task_type, task_id, 'parse_label()', err)} reading {e.csv.path} row {e.csv.row}: "
            "a bug of the type, not of the data (a row it cannot read is a RowError(kind, message); docs/"
            "internals.md, 'How to add a task type')"
        ) from err


def _windows_path(record: dict, columns: Sequence[str], folder: Path) -> str:
    """Why a path cell written with Windows '\\' separators names no file ('' when none does).

    '\\' is no separator on Linux but part of a file name, so the challenge's evaluation run there (it joins the
    cell to the CSV's folder as written) would not find the file; usagg reads it the same way rather than guess.
    A cell that names an existing file as written is left alone, as is one with no '\\'.
    """
    for column in columns:
        value = record.get(column) or ""
        if "\\" not in value or os.path.lexists(os.path.join(folder, value)):
            continue
        posix = value.replace("\\", "/")
        if os.path.isfile(os.path.normpath(os.path.join(folder, posix))):
            found = f"the file is there as '{posix}', so the CSV was written on Windows: write its paths with '/'"
        else:
            found = f"no file is there as '{posix}' either: write its paths with '/' and check that the file exists"
        # quoted as written: a repr would double every '\\' the user sees once in the CSV
        return (
            f"{column} '{value}' uses Windows '\\' separators, which Linux (and the challenge's evaluation run on "
            f"it) reads as part of a file name, not a folder; {found}"
        )
    return ""


def missing_note(path: Path, root: Path) -> str:
    """What to add to "not found" for a file whose name is there spelt otherwise ('' when none is): in another
    Unicode normalisation (`unicode_note`), else in other letter case (`case_note`). Looked for only once a file is
    missing, each folder listed once (`_entries`)."""
    return unicode_note(path, root) or case_note(path, root)


def missing_twins(path: Path) -> tuple[str | None, str | None]:
    """The files `missing_note` names for a missing `path` (its twin in another Unicode normalisation, in other
    letter case; None for none): what the note depends on besides `path`, so the data check's kept findings are
    keyed by it (usagg/data/checkcache.py `sample_key`) and a twin renamed since is seen at the next check."""
    nfc = None if str(path).isascii() else _twin(path, "NFC")
    case = _twin(path, "casefold")
    return (None if nfc is None else str(nfc)), (None if case is None else str(case))


def unicode_note(path: Path, root: Path) -> str:
    """What to add to "not found" when a file whose path differs from `path` only in Unicode normalisation exists
    ('' when none does): a dataset exported on a Mac names its files decomposed (NFD: 'a' + U+0308), a CSV written by
    a spreadsheet composed (NFC: U+00E4); the two print alike, but Linux, and the challenge's evaluation on it,
    compare names byte for byte."""
    if str(path).isascii():
        return ""
    twin = _twin(path, "NFC")
    if twin is None:
        return ""
    ours, theirs = next((a, b) for a, b in zip(path.parts, twin.parts, strict=True) if a != b)
    file_nfd = unicodedata.is_normalized("NFC", ours)  # the CSV's name is NFC, so the file's is the other form
    forms = ("composed (NFC)", "decomposed (NFD, as macOS writes names)")
    csv_form, file_form = forms if file_nfd else forms[::-1]
    fix = (
        f"rename the files to NFC, e.g. `convmv -f utf8 -t utf8 --nfc -r --notest {shlex.quote(str(root))}`"
        if file_nfd
        else "write the CSV's paths composed (NFC), as the files are named, e.g. `convmv`'s NFC or "
        "Python's unicodedata.normalize('NFC', ...) over the CSV text"
    )
    return (
        f"; a file whose name differs only in Unicode normalisation is there ({rel(twin, root)}): the CSV writes "
        f"{ours!a}, {csv_form}, the disk has {theirs!a}, {file_form}, and Linux compares names byte for "
        f"byte: {fix}"
    )


def case_note(path: Path, root: Path) -> str:
    """What to add to "not found" when a file whose path differs from `path` only in letter case exists ('' when
    none does): a CSV written on a case-insensitive disk (Windows, macOS) says `Images/x.JPG` where the files are
    `images/x.jpg`, which those systems open and Linux does not."""
    twin = _twin(path, "casefold")
    if twin is None:
        return ""
    return (
        f"; a file differing only in letter case is there: {rel(twin, root)}; Linux and the challenge's evaluation "
        "compare names exactly: fix the CSV or rename the file"
    )


def _twin(path: Path, form: str) -> Path | None:
    """The existing file whose path differs from `path` only where its names read the same in `form` ("NFC":
    Unicode normalisation; "casefold": letter case), None when there is none."""
    found = Path(path.anchor)
    for part in path.parts[1:]:
        if os.path.lexists(found / part):
            found = found / part
            continue
        try:
            with _LISTING:  # the check's threads missing files of one folder at once: still one listing
                entry = _entries(str(found), os.stat(found).st_mtime_ns, form).get(_spelt(part, form))
        except OSError:
            return None
        if entry is None:
            return None
        found = found / entry
    return found if found != path and found.is_file() else None


def _spelt(name: str, form: str) -> str:
    return unicodedata.normalize("NFC", name) if form == "NFC" else name.casefold()


_LISTING = threading.Lock()


@functools.lru_cache(maxsize=32)
def _entries(folder: str, mtime_ns: int, form: str) -> dict[str, str]:
    """A folder's entries by their `form` (`_spelt`), the first in sorted order where two read the same; cached by
    the folder's mtime, so every missing row of a folder of thousands of images costs one listing."""
    out: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        out.setdefault(_spelt(entry, form), entry)
    return out


class _Duplicates:
    """The images a task's rows listed so far, to tell a repeated row (same label) from a conflicting one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, tuple[Path, int, tuple[str, ...]]] = {}

    def check(self, sample: Sample, label_cells: tuple[str, ...]) -> Sample | tuple[str, str]:
        """`sample` when its image is new to the task, else (kind, message) naming the first row."""
        first = self.seen.get(sample.image_path)
        if first is None:
            self.seen[sample.image_path] = (sample.csv_file, sample.row, label_cells)
            return sample
        p0, r0, cells0 = first
        if cells0 != label_cells:
            return (
                "conflicting_duplicate",
                f"task {sample.task_id} lists image {sample.image_path!r} again with a different label "
                f"({', '.join(label_cells)} here, {', '.join(cells0)} at {rel(p0, self.root)} row {r0}); "
                "each image may appear once per task: keep the right label",
            )
        return (
            "duplicate_row",
            f"task {sample.task_id} lists image {sample.image_path!r} again with the same label (first at "
            f"{rel(p0, self.root)} row {r0}); each image may appear once per task",
        )


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
