"""`usagg data check`: every problem in an FMC_UIA dataset, each named by CSV file and row.

Row-level problems (columns, labels, paths, duplicates, inconsistent tasks) come
from `fmc_uia.scan_split`; this module adds the ones that need the files
(missing, unreadable, mask values and sizes, boxes outside the image), a
per-task summary, what a task's labels show only together (the type's `check_task`: coordinates
written as fractions of the image size), leakage between train and val (usagg/data/leakage.py: hashed
from the same decode as the file checks), a warning per task whose train split lacks a class (the
type's `train_split_warning`) or whose val split will not score as usual (`test_split_warning`), or
whose 16-bit images hold 14-bit data or less (`low_bit_depth`), and, given the study's tasks, what the
study expects but the data lacks. `usagg run` calls `check_dataset` before training. Given a cache
root, what the file checks and the leakage search found is kept for the next check, which then
decodes only the samples whose row or files changed (usagg/data/checkcache.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usagg.data.checkcache import CheckCache, leak_key, sample_key
from usagg.data.fmc_uia import (
    Declared,
    Problem,
    Sample,
    SplitScan,
    Where,
    csv_files,
    macos_note,
    missing_note,
    rel,
    require_root,
    scan_split,
)
from usagg.data.images import as_read, open_known, wide_max
from usagg.data.leakage import (
    DEFAULT_NEAR_THRESHOLD,
    HASH_WORDS,
    Entry,
    Fingerprint,
    LeakResult,
    find_leaks,
    fingerprint,
)
from usagg.data.taskids import stray_ids, stray_problem
from usagg.errors import DataError
from usagg.spec.models import TaskSpec
from usagg.tasktypes import get_task_type
from usagg.wording import counted, row_ranges

SPLITS: tuple[str, ...] = ("train", "val")


@dataclass
class TaskSummary:
    """What one task looks like on disk, over the checked splits."""

    task_id: str
    type: str
    num_classes: int
    task_name: str
    images: dict[str, int] = field(default_factory=dict)  # split -> images
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (H, W) -> images of that size
    labels: dict[str, int] = field(default_factory=dict)  # class/label -> count (type-dependent meaning)
    split_labels: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> `labels` of that split

    @property
    def min_hw(self) -> tuple[int, int] | None:
        """The smallest image by area: a size some image has (a per-axis minimum of 120x90 and 90x120 was not)."""
        return min(self.sizes, key=_area, default=None)

    @property
    def max_hw(self) -> tuple[int, int] | None:
        """The largest image by area."""
        return max(self.sizes, key=_area, default=None)

    def size_range(self) -> str:
        """ "160x160", or the smallest and largest image with the count of sizes: "90x120 .. 160x200 (4 sizes)"."""
        if self.min_hw is None or self.max_hw is None:
            return "-"
        lo, hi = _wh(self.min_hw), _wh(self.max_hw)
        return lo if len(self.sizes) == 1 else f"{lo} .. {hi} ({len(self.sizes)} sizes)"

    def label_text(self) -> str:
        """Short label distribution, as the task type summarises it (class counts, boxes, points, ...), per split
        when there are two: a class missing from train alone hid in the sum of both."""
        summary = get_task_type(self.type).summary_text
        if len(self.split_labels) < 2:
            return summary(self.labels)
        return " | ".join(f"{split}: {summary(counts)}" for split, counts in self.split_labels.items())

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "type": self.type,
            "num_classes": self.num_classes,
            "task_name": self.task_name,
            "images": self.images,
            "min_wh": None if self.min_hw is None else [self.min_hw[1], self.min_hw[0]],
            "max_wh": None if self.max_hw is None else [self.max_hw[1], self.max_hw[0]],
            "sizes": len(self.sizes),
            "labels": self.labels,
            "labels_by_split": self.split_labels,
        }


def _area(hw: tuple[int, int]) -> tuple[int, int, int]:
    """Order of image sizes: by area, then width (120x90 before 90x120, both 10,800 px)."""
    return hw[0] * hw[1], hw[1], hw[0]


def _wh(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


@dataclass
class CheckReport:
    """The outcome of a check: problems (empty means usable) and a summary per task."""

    root: Path
    splits: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)
    tasks: dict[str, TaskSummary] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)  # reported, never blocking (e.g. `leakage: warn`)
    leakage: dict[str, int] = field(default_factory=dict)  # leak kind -> rows found
    decoded: int = 0  # samples whose image (and mask) this check opened
    kept: int = 0  # samples whose findings an earlier check kept (usagg/data/checkcache.py), not opened again

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "splits": list(self.splits),
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
            "leakage": self.leakage,
            "tasks": {t: s.to_dict() for t, s in self.tasks.items()},
            "images": {"decoded": self.decoded, "kept": self.kept},
        }


#: Row problems of one kind in one CSV from which the report shows them as one entry (`grouped`): two, as
#: docs/real-data.md promises (3 keypoints_json rows of one CSV were 3 entries when grouping started at 4).
GROUP_FROM = 2


@dataclass(frozen=True)
class ProblemGroup:
    """Row problems of one kind in one CSV, shown as one entry with a count, the rows and an example: a CSV written
    on Windows has the same problem in each of its 3,000 rows, and a line per row buried the one cause."""

    problems: tuple[Problem, ...]

    @property
    def kind(self) -> str:
        return self.problems[0].kind

    def where(self) -> str:
        rows = [p.row for p in self.problems if p.row is not None]
        return f"{self.problems[0].csv_file} rows {row_ranges(rows)} ({len(rows):,} rows)"

    @property
    def message(self) -> str:
        first = self.problems[0]
        return f"e.g. row {first.row} (line {(first.row or 0) + 1}): {first.message}"


def grouped(problems: Sequence[Problem], at_least: int = GROUP_FROM) -> list[Problem | ProblemGroup]:
    """`problems` in their order, those of one kind with a row in one CSV as one `ProblemGroup` (at its first
    problem's place) when there are `at_least` of them; fewer stay one entry each. What a text report shows:
    the JSON report keeps every row."""
    counts = Counter((p.csv_file, p.kind) for p in problems if p.row is not None)
    groups: dict[tuple[str | None, str], list[Problem]] = {}
    out: list[Problem | ProblemGroup | tuple[str | None, str]] = []
    for p in problems:
        key = (p.csv_file, p.kind)
        if p.row is None or counts[key] < at_least:
            out.append(p)
            continue
        if key not in groups:
            out.append(key)
        groups.setdefault(key, []).append(p)
    return [ProblemGroup(tuple(groups[e])) if isinstance(e, tuple) else e for e in out]


@dataclass
class _FileResult:
    """What the file checks found for one sample; a record of it is what usagg/data/checkcache.py keeps."""

    problems: list[Problem]
    hw: tuple[int, int] | None
    label_keys: tuple[str, ...] = ()
    fp: Fingerprint | None = None
    wide_max: int | None = None  # a 16-bit grayscale image's largest value (images.py `wide_max`)

    def record(self) -> dict:
        return {
            "problems": [_problem_record(p) for p in self.problems],
            "hw": None if self.hw is None else list(self.hw),
            "label_keys": list(self.label_keys),
            "fp": None
            if self.fp is None
            else [self.fp.exact.hex(), self.fp.dhash.tobytes().hex(), self.fp.clear.tobytes().hex()],
            "wide_max": self.wide_max,
        }

    @classmethod
    def from_record(cls, record: dict) -> _FileResult:
        """The result a record holds; KeyError, TypeError, ValueError or IndexError for one that is not such a
        record."""
        fp, hw = record["fp"], record["hw"]
        hashes = [] if fp is None else [np.frombuffer(bytes.fromhex(h), np.uint64) for h in fp[1:3]]
        if any(h.size != HASH_WORDS for h in hashes) or (fp is not None and len(hashes) != 2):
            raise ValueError(f"hashes of {[h.size for h in hashes]} words")
        return cls(
            [_problem(r) for r in record["problems"]],
            None if hw is None else (int(hw[0]), int(hw[1])),
            tuple(str(k) for k in record["label_keys"]),
            None if fp is None else Fingerprint(bytes.fromhex(fp[0]), *hashes),
            None if record["wide_max"] is None else int(record["wide_max"]),
        )


def _problem_record(p: Problem) -> list:
    return [p.kind, p.message, p.csv_file, p.row, list(p.tasks)]


def _problem(record: list) -> Problem:
    kind, message, csv_file, row, tasks = record
    return Problem(str(kind), str(message), csv_file, row, tuple(tasks))


def _leak_record(leaks: LeakResult) -> dict:
    return {
        "problems": [_problem_record(p) for p in leaks.problems],
        "warnings": [_problem_record(p) for p in leaks.warnings],
        "counts": leaks.counts,
    }


def _leaks_from(record: dict) -> LeakResult:
    counts = {str(k): int(v) for k, v in record["counts"].items()}
    return LeakResult([_problem(r) for r in record["problems"]], [_problem(r) for r in record["warnings"]], counts)


def _check_files(s: Sample, root: Path) -> _FileResult:
    """Open the image (and mask) of one sample; report what is wrong with them."""
    where: Where = {"csv_file": rel(s.csv_file, root), "row": s.row}
    tag = f"task {s.task_id}:"
    tt = get_task_type(s.task_type)
    if not s.image_file.is_file():
        note = missing_note(s.image_file, root)
        problem = Problem("missing_image", f"{tag} image {s.image_path!r} not found ({s.image_file}){note}", **where)
        return _FileResult([problem], None, tuple(tt.summary_keys(s, None)))
    try:
        with open_known(s.image_file) as raw:
            raw.load()
            depth = wide_max(raw)
            im = as_read(raw, s.image_file)  # 16-bit at its depth and upright, as the scoring's OpenCV reads it
            hw = (im.height, im.width)
            try:
                fp: Fingerprint | None = fingerprint(im)
            except Exception:  # an exotic pixel mode PIL cannot make grayscale: no leakage check for it
                fp = None
    except Exception as err:  # PIL raises many types for bad files
        msg = f"{tag} image {s.image_path!r} cannot be decoded ({type(err).__name__}: {err})"
        return _FileResult([Problem("unreadable_image", msg, **where)], None, tuple(tt.summary_keys(s, None)))
    found, checked = tt.check_label(s, hw, root)
    problems = [Problem(kind, message, **where) for kind, message in found]
    return _FileResult(problems, hw, tuple(tt.summary_keys(s, checked)), fp, depth)


def check_dataset(
    root: Path,
    tasks: Sequence[TaskSpec] | None = None,
    splits: Sequence[str] = SPLITS,
    leakage: str = "error",
    near_duplicate_threshold: float = DEFAULT_NEAR_THRESHOLD,
    test_carve: tuple[float, int] | None = None,
    cache: Path | None = None,
    on_progress: CheckProgress | None = None,
) -> CheckReport:
    """Check the dataset at `root`; with the study's `tasks`, also what the study expects of it.

    `leakage` and `near_duplicate_threshold` are the spec's `data.leakage` and
    `data.near_duplicate_threshold`: near duplicates between train and val are problems
    ("error"), warnings ("warn") or not searched ("off"); same files and exact copies are
    always problems. `test_carve` = (data.test_fraction, data.split_seed) searches leakage
    between the test rows carved from train (data.test_split=train) and the rest instead.
    `cache`: a cache root (usagg/cachedir.py) where the file checks' findings are kept, so a sample
    whose row and files are unchanged is not decoded again (usagg/data/checkcache.py); None checks
    every file. `on_progress(split, checked, images)` hears the file checks as they go.
    """
    given, root = Path(root), Path(os.path.abspath(root))
    require_root(root)
    refuse_a_split(given, root, "usagg data check", split_option=True)
    checks = _FileChecks(root, None if cache is None else CheckCache(cache, root), on_progress)
    try:
        return _check(root, tasks, splits, leakage, near_duplicate_threshold, test_carve, checks)
    finally:
        checks.close()


def split_of(root: Path) -> str | None:
    """The split `root` is, when it is one folder of a dataset root rather than the root: it holds csv_files/ (and
    no split), and is named as a split or has one beside it."""
    if not (root / "csv_files").is_dir() or any((root / s).is_dir() for s in SPLITS):
        return None
    beside = any((root.parent / s / "csv_files").is_dir() for s in SPLITS if s != root.name)
    return root.name if root.name in SPLITS or beside else None


def refuse_a_split(given: Path, root: Path, command: str | None = None, *, split_option: bool = False) -> None:
    """DataError naming the dataset root when `root` is one of its split folders: read as a root, it was two
    missing splits and an empty table (`usagg data check`), or no CSVs (`usagg data catalog`, a study's data.root).
    `given` is the path as typed and `command` the one that reads a dataset root, so the fix shown is one the user
    can run (None: the root alone, for a spec's data.root); `split_option` offers --split for this split only."""
    split = split_of(root)
    if split is None:
        return
    parent = root.parent if given.is_absolute() else Path(os.path.relpath(root.parent))
    fix = parent.as_posix() if command is None else f"{command} {shlex.quote(parent.as_posix())}"
    if split_option:
        fix += f" (add --split {shlex.quote(split)} to check this split only)"
    raise DataError(
        f"{given} looks like the {split} split of {parent}, not a dataset root: it holds csv_files/ itself, where a "
        f"root holds train/ and val/ with csv_files/ inside. Give the dataset root: {fix}."
    )


def _check(
    root: Path,
    tasks: Sequence[TaskSpec] | None,
    splits: Sequence[str],
    leakage: str,
    near_duplicate_threshold: float,
    test_carve: tuple[float, int] | None,
    checks: _FileChecks,
) -> CheckReport:
    report = CheckReport(root=root, splits=tuple(splits))
    scans = _scan_splits(root, splits, report)
    note = macos_note(root, splits)  # what every reader of the splits skipped, said once
    if note:
        report.warnings.append(Problem("macos_metadata", note))
    study = None if tasks is None else {t.id for t in tasks}
    strays = stray_ids(scans, study)
    for stray in strays:  # a likely typo is a problem of the task meant; any other stray a study lacks, a warning
        (report.problems if stray.typo else report.warnings).append(stray_problem(stray, study))
    report.problems.extend(_type_conflicts(scans, tasks, root))
    report.problems.extend(_split_coverage(scans, root, {s.task_id for s in strays}))
    entries: list[Entry] = []
    for split, scan in scans.items():
        report.problems.extend(scan.problems)
        checks.start(split, sum(len(samples) for samples in scan.samples.values()))
        for task_id, samples in scan.samples.items():
            if not samples:
                continue
            s0 = samples[0]
            summary = report.tasks.setdefault(
                task_id, TaskSummary(task_id, s0.task_type, s0.num_classes, scan.task_names.get(task_id, ""))
            )
            summary.images[split] = len(samples)
            results = _add_file_results(report, summary, samples, split, entries, checks)
            ours = tasks is None or any(t.id == task_id for t in tasks)  # a study hears of its own tasks' warnings
            _check_task(report, samples, results, split, root, ours)
    if test_carve is not None:
        entries = _carve(entries, *test_carve)
    leaks = checks.leaks(entries, leakage, near_duplicate_threshold, CARVED if test_carve is not None else "val")
    report.problems.extend(leaks.problems)
    report.warnings.extend(leaks.warnings)
    report.leakage = leaks.counts
    for summary in report.tasks.values():
        summary.labels = _label_order(summary.labels)
        summary.split_labels = {split: _label_order(counts) for split, counts in summary.split_labels.items()}
    if tasks is not None:
        _check_against_spec(report, tasks)
    report.problems.sort(key=lambda p: (p.csv_file is not None, p.csv_file or "", p.row or 0))
    report.warnings.sort(key=lambda p: (p.csv_file is not None, p.csv_file or "", p.row or 0))
    report.decoded, report.kept = checks.decoded, checks.kept
    return report


def _label_order(counts: dict[str, int]) -> dict[str, int]:
    """Label keys in a stable order: shorter first ("2" before "10"), then as text."""
    return dict(sorted(counts.items(), key=lambda kv: (len(kv[0]), kv[0])))


def _scan_splits(root: Path, splits: Sequence[str], report: CheckReport) -> dict[str, SplitScan]:
    """Each split's rows (`scan_split`); a split without its csv_files/ is a problem of its own, and not scanned."""
    scans: dict[str, SplitScan] = {}
    for split in splits:
        try:
            csv_files(root, split)
        except DataError as err:
            report.problems.append(Problem("missing_split", str(err)))
            continue
        scans[split] = scan_split(root, split)
    return scans


def _declared_text(d: Declared) -> str:
    return f"{d.task_type} with num_classes {d.num_classes}"


def _type_conflicts(scans: dict[str, SplitScan], tasks: Sequence[TaskSpec] | None, root: Path) -> list[Problem]:
    """One problem per task whose splits declare different types or num_classes, naming both CSVs.

    The split that disagrees with the reference (the study's declaration where a split matches it, else the
    split whose rows read as their declared type, else the first split) is left out of the check: its rows'
    own problems (every row lacking the columns of the type it wrongly declares) only repeat the cause.
    """
    study = {t.id: (t.type, t.num_classes) for t in tasks or ()}
    problems: list[Problem] = []
    for task_id in sorted({t for scan in scans.values() for t in scan.declared}):
        declared = {split: scan.declared[task_id] for split, scan in scans.items() if task_id in scan.declared}
        if len({(d.task_type, d.num_classes) for d in declared.values()}) < 2:
            continue
        ref_split, basis = _reference_split(task_id, declared, scans, study.get(task_id))
        for split, d in declared.items():
            if (d.task_type, d.num_classes) != (declared[ref_split].task_type, declared[ref_split].num_classes):
                problems.append(_conflict(task_id, split, ref_split, declared, basis, scans, root))
                _leave_out(scans[split], task_id)
    return problems


def _reference_split(
    task_id: str, declared: dict[str, Declared], scans: dict[str, SplitScan], study: tuple[str, int] | None
) -> tuple[str, str]:
    """(the split whose declaration the task keeps, why: "study", "rows" or "first")."""
    matching = [s for s, d in declared.items() if (d.task_type, d.num_classes) == study]
    if matching:
        return matching[0], "study"
    reading = [s for s in declared if scans[s].samples.get(task_id)]
    if len(reading) == 1:
        return reading[0], "rows"
    return next(iter(declared)), "first"


def _conflict(
    task_id: str,
    split: str,
    ref_split: str,
    declared: dict[str, Declared],
    basis: str,
    scans: dict[str, SplitScan],
    root: Path,
) -> Problem:
    """The problem of a task `split` declares otherwise than `ref_split`, with what to correct where."""
    odd, ref = declared[split], declared[ref_split]
    odd_csv, ref_csv = rel(odd.csv_file, root), rel(ref.csv_file, root)
    n_rows = sum(len(rows) for rows in odd.rows.values())
    head = (
        f"task {task_id} is {_declared_text(odd)} in {odd_csv} but {_declared_text(ref)} in {ref_csv}; "
        "a task has one type (task_name) and num_classes in every split"
    )
    if basis == "study":
        fix = f"the study declares {_declared_text(ref)}: correct task_name and num_classes in {odd_csv}"
    elif basis == "rows":
        first = _first_problem(scans[split], odd)
        why = f" (row {first.row}: {first.message})" if first is not None and first.row is not None else ""
        fix = (
            f"its {split} rows do not read as {odd.task_type}{why} and its {ref_split} rows read as "
            f"{ref.task_type}: correct task_name and num_classes in {odd_csv}"
        )
    else:
        fix = f"make task_name and num_classes of {odd_csv} and {ref_csv} agree"
    rows = f"its {counted(n_rows, split + ' row')} {'is' if n_rows == 1 else 'are'} not checked until then"
    return Problem("split_mismatch", f"{head}. {fix[0].upper()}{fix[1:]} ({rows}).", odd_csv, odd.row)


def _first_problem(scan: SplitScan, d: Declared) -> Problem | None:
    """The first problem of the rows `d` covers."""
    return next((p for p in scan.problems if p.row is not None and p.row in d.rows.get(p.csv_file or "", ())), None)


def _leave_out(scan: SplitScan, task_id: str) -> None:
    """Drop a task's samples and its rows' problems from `scan`: its declaration conflicts with another split's."""
    rows = scan.declared[task_id].rows
    scan.samples.pop(task_id, None)
    scan.problems = [p for p in scan.problems if p.row is None or p.row not in rows.get(p.csv_file or "", ())]


def _split_coverage(scans: dict[str, SplitScan], root: Path, strays: set[str]) -> list[Problem]:
    """A problem per task that has rows in one checked split and none in another: `usagg run` (data.test_split: val)
    trains on train/ and tests on val/, so it refuses such a task; checking one split (--split) asks for none. Not for
    `strays` (usagg/data/taskids.py), named as ids the study lacks: advice to add their rows misled."""
    problems: list[Problem] = []
    for split, scan in scans.items():
        for task_id in sorted({t for other in scans.values() for t in other.named} - scan.named - strays):
            has = next(s for s, other in scans.items() if task_id in other.named)
            problem = _missing_in_split(task_id, split, has, scans, root)
            if problem is not None:
                problems.append(problem)
    return problems


def _missing_in_split(task_id: str, split: str, has: str, scans: dict[str, SplitScan], root: Path) -> Problem | None:
    """Task `task_id` has rows in split `has` and none in `split`; None when a problem with the CSV it would be in
    (a header without rows, an unreadable file) already says so."""
    d = scans[has].declared.get(task_id)
    name = d.csv_file.name if d is not None else f"{task_id}.csv"
    expected = Path(split) / "csv_files" / name
    if any(p.row is None and p.csv_file == str(expected) for p in scans[split].problems):
        return None
    where = f" in {rel(d.csv_file, root)}" if d is not None else ""
    count = counted(sum(len(r) for r in d.rows.values()), "row") if d is not None else "rows"
    state = "lists no row of it" if (root / expected).is_file() else "does not exist"
    need = (
        "val/ is the test split of a study (data.test_split: val), so `usagg run` refuses a task without val rows"
        if split == "val"
        else "a task is trained on its train/ rows, so `usagg run` refuses a task without them"
    )
    return Problem(
        "task_missing_in_split",
        f"task {task_id} has {count}{where} but none in {split}/csv_files/ ({expected} {state}): {need}. Add the "
        f"task's {split} rows to {expected}, or leave the task out of the study"
        + (
            " (a study with data.test_split: train needs no val rows: check it with --split train)."
            if split == "val"
            else "."
        ),
    )


#: The split name of train rows that data.test_split=train holds out as test.
CARVED = "test carved from train"


def _carve(entries: list[Entry], fraction: float, split_seed: int) -> list[Entry]:
    """Train entries relabelled CARVED where the jobs' test carve (usagg/data/splits.py) takes them."""
    from usagg.data.splits import carve_test

    by_task: dict[str, list[Entry]] = {}
    for e in entries:
        if e.split == "train":
            by_task.setdefault(e.sample.task_id, []).append(e)
    carved: set[int] = set()
    for task_id, task_entries in by_task.items():
        test, _ = carve_test([e.sample for e in task_entries], fraction, split_seed, task_id)
        carved.update(id(s) for s in test)
    return [Entry(CARVED, e.sample, e.fp) if id(e.sample) in carved else e for e in entries]


def _check_task(
    report: CheckReport, samples: list[Sample], results: list[_FileResult], split: str, root: Path, warn: bool
) -> None:
    """What one split of a task shows only taken together: its type's `check_task` problems, and with `warn` the
    split's warnings (`_warn_split`, `_warn_low_bits`)."""
    s0 = samples[0]
    found = get_task_type(s0.task_type).check_task(samples, [r.hw for r in results], root)
    report.problems.extend(Problem(kind, message, rel(s0.csv_file, root)) for kind, message in found)
    if warn:
        _warn_split(report, s0.task_id, samples, split, root)
        _warn_low_bits(report, samples, results, split, root)


def _warn_split(report: CheckReport, task_id: str, samples: list[Sample], split: str, root: Path) -> None:
    """The train split, which a task's labels must cover (`train_coverage`), and the val split, scored as the test
    split (`val_scoring`: a task whose metrics will not be the usual numbers there)."""
    s0 = samples[0]
    tt = get_task_type(s0.task_type)
    if split == "train":
        kind, note = "train_coverage", tt.train_split_warning(samples, s0.num_classes)
    elif split == "val":
        kind, note = "val_scoring", tt.test_split_warning(samples, s0.num_classes)
    else:
        return
    if note is not None:
        report.warnings.append(Problem(kind, f"task {task_id}: the {split} split has {note}", rel(s0.csv_file, root)))


#: The largest value of a 16-bit image that leaves the high byte's top two bits unused: 14-bit data or less (a
#: scanner's or DICOM export's 12, 13 or 14 bits) reads as 0..63 at most by that byte, a quarter of the grey range.
#: 15-bit data (0..127) is not warned of: a true 16-bit image of dark content may have no value above 32767.
LOW_BITS_MAX = (1 << 14) - 1


def _warn_low_bits(
    report: CheckReport, samples: list[Sample], results: list[_FileResult], split: str, root: Path
) -> None:
    """One warning for the 16-bit images of a task's split that hold no value above LOW_BITS_MAX: read by their
    high byte, as OpenCV reads them, 12-bit data is 0..15 (almost black) and 14-bit data 0..63, a dim image whose
    lost contrast the model never sees. Named by the widest such image's bits, the range they read as and the
    rescaling for that depth."""
    low = [(s, r.wide_max) for s, r in zip(samples, results, strict=True) if r.wide_max is not None]
    low = [(s, m) for s, m in low if m <= LOW_BITS_MAX]
    if not low:
        return
    first, top = low[0][0], max(m for _, m in low)
    bits = max(top.bit_length(), 1)
    high = top >> 8
    dim = "almost black" if high < 16 else f"{round(100 * (high + 1) / 256)} % of the grey range"
    report.warnings.append(
        Problem(
            "low_bit_depth",
            f"task {first.task_id}: {len(low)} of its {len(samples)} {split} images (e.g. row {first.row}, "
            f"{first.image_path!r}) are 16-bit with no value above {(1 << bits) - 1} (at most {top}): {bits}-bit "
            f"data or less. usagg reads a 16-bit image as the challenge's OpenCV does, by its high byte, so these "
            f"read as 0..{high} of 0..255, {dim}. Rescale them to 8 bits before training "
            f"(value * 255 // {(1 << bits) - 1} for {bits}-bit data), or to the full 16-bit range "
            f"(value * {1 << (16 - bits)})",
            rel(first.csv_file, root),
        )
    )


#: Hears the file checks as they go: (split, images of the split checked so far, images of the split).
CheckProgress = Callable[[str, int, int], None]
PROGRESS_EVERY = 64  # images between two reports


class _FileChecks:
    """The file checks of one `check_dataset`: a thread pool over the samples, the findings kept between checks
    (`known`, usagg/data/checkcache.py) with each checked sample's key, and the progress told."""

    def __init__(self, root: Path, known: CheckCache | None, on_progress: CheckProgress | None) -> None:
        self.root = root
        self.known = known
        self.on_progress = on_progress
        self.keys: dict[int, str] = {}  # id(sample) -> its key in `known`
        self.pool = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)))
        self.split, self.done, self.total = "", 0, 0
        self.decoded, self.kept = 0, 0  # samples opened, samples whose kept findings served

    def start(self, split: str, images: int) -> None:
        self.split, self.done, self.total = split, 0, images
        self._tell()

    def _tell(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.split, self.done, self.total)

    def _checked(self, results: Iterator[_FileResult]) -> list[_FileResult]:
        """The results as they come, told every PROGRESS_EVERY images and at the end."""
        out = []
        for r in results:
            out.append(r)
            self.done += 1
            if self.done % PROGRESS_EVERY == 0:
                self._tell()
        self._tell()
        return out

    def results(self, samples: list[Sample]) -> list[_FileResult]:
        """Each sample's file checks: what `known` kept for an unchanged sample, else the check itself (then
        kept)."""
        check = functools.partial(_check_files, root=self.root)
        if self.known is None:
            self.decoded += len(samples)
            return self._checked(self.pool.map(check, samples))
        sample_keys = list(self.pool.map(sample_key, samples))
        self.keys.update((id(s), k) for s, k in zip(samples, sample_keys, strict=True))
        results: list[_FileResult | None] = [None] * len(samples)
        for i, result in self._kept(sample_keys):
            results[i] = result
        todo = [i for i, r in enumerate(results) if r is None]
        self.done += len(samples) - len(todo)
        self.kept += len(samples) - len(todo)
        self.decoded += len(todo)
        fresh = self._checked(self.pool.map(check, [samples[i] for i in todo]))
        for i, r in zip(todo, fresh, strict=True):
            results[i] = r
        self.known.put("found", {sample_keys[i]: r.record() for i, r in zip(todo, fresh, strict=True)})
        return [r for r in results if r is not None]

    def _kept(self, keys: list[str]) -> Iterator[tuple[int, _FileResult]]:
        """(index, result) for every key whose record `known` holds and that reads as a result."""
        assert self.known is not None
        records = self.known.get("found", keys)
        for i, key in enumerate(keys):
            record = records.get(key)
            if record is not None:
                with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
                    yield i, _FileResult.from_record(record)

    def leaks(self, entries: list[Entry], mode: str, threshold: float, test: str) -> LeakResult:
        """`find_leaks`, or what it found before for the same entries (each sample's key and split) and
        settings."""
        if self.known is None or any(id(e.sample) not in self.keys for e in entries):
            return find_leaks(entries, self.root, mode, threshold, test=test)
        key = leak_key([(e.split, self.keys[id(e.sample)]) for e in entries], mode, threshold, test)
        record = self.known.get("leaks", [key]).get(key)
        if record is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                return _leaks_from(record)
        leaks = find_leaks(entries, self.root, mode, threshold, test=test)
        self.known.put("leaks", {key: _leak_record(leaks)})
        return leaks

    def close(self) -> None:
        self.pool.shutdown()
        if self.known is not None:
            self.known.close()


def _add_file_results(
    report: CheckReport,
    summary: TaskSummary,
    samples: list[Sample],
    split: str,
    entries: list[Entry],
    checks: _FileChecks,
) -> list[_FileResult]:
    """The samples' file checks into `report` (problems), `summary` (sizes, labels) and `entries`; returns them."""
    results = checks.results(samples)
    labels: Counter[str] = Counter()
    for s, r in zip(samples, results, strict=True):
        entries.append(Entry(split, s, r.fp))
        report.problems.extend(r.problems)
        if r.hw is not None:
            summary.sizes[r.hw] += 1
        labels.update(r.label_keys)
    summary.split_labels[split] = dict(labels)
    summary.labels = dict(Counter(summary.labels) + labels)
    return results


def _check_against_spec(report: CheckReport, tasks: Sequence[TaskSpec]) -> None:
    for t in tasks:
        found = report.tasks.get(t.id)
        if found is not None and (found.type, found.num_classes) != (t.type, t.num_classes):
            report.problems.append(
                Problem(
                    "spec_mismatch",
                    f"the study declares task {t.id} as {t.type} with num_classes {t.num_classes}, but the data "
                    f"has {found.type} with num_classes {found.num_classes}",
                )
            )
    missing = [t.id for t in tasks if t.id not in report.tasks]
    if missing:  # one problem for them all: the list of the tasks found, said once (23 times for 23 tasks before)
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        which = f"task {shown} has" if len(missing) == 1 else f"tasks {shown} ({len(missing)} of {len(tasks)}) have"
        report.problems.append(
            Problem(
                "task_missing",
                f"the study's {which} no rows in the {'/'.join(report.splits)} CSVs of {report.root} "
                f"(tasks found: {', '.join(sorted(report.tasks)) or 'none'})",
            )
        )
