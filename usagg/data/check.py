"""`usagg data check`: every problem in an FMC_UIA dataset, each named by CSV file and row.

Row-level problems (columns, labels, paths, duplicates, inconsistent tasks) come
from `fmc_uia.scan_split`; this module adds the ones that need the files
(missing, unreadable, mask values and sizes, boxes outside the image), a
per-task summary, and, given the study's tasks, what the study expects but the
data lacks. `usagg run` calls `check_dataset` before training.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from usagg.data.cache import read_mask
from usagg.data.fmc_uia import Problem, Sample, csv_files, rel, scan_split
from usagg.errors import DataError
from usagg.spec.models import TaskSpec

SPLITS: tuple[str, ...] = ("train", "val")


@dataclass
class TaskSummary:
    """What one task looks like on disk, over the checked splits."""

    task_id: str
    type: str
    num_classes: int
    task_name: str
    images: dict[str, int] = field(default_factory=dict)  # split -> images
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    labels: dict[str, int] = field(default_factory=dict)  # class/label -> count (type-dependent meaning)

    def size_range(self) -> str:
        if self.min_hw is None or self.max_hw is None:
            return "-"
        lo, hi = f"{self.min_hw[1]}x{self.min_hw[0]}", f"{self.max_hw[1]}x{self.max_hw[0]}"
        return lo if lo == hi else f"{lo} .. {hi}"

    def label_text(self) -> str:
        """Short label distribution: class counts, images containing each mask class, boxes or points."""
        pairs = " ".join(f"{k}:{v}" for k, v in self.labels.items())
        if self.type == "segmentation":
            return f"images with class {pairs}" if pairs else "-"
        if self.type == "classification":
            return pairs or "-"
        return ", ".join(f"{v} x {k}" for k, v in self.labels.items()) or "-"

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "type": self.type,
            "num_classes": self.num_classes,
            "task_name": self.task_name,
            "images": self.images,
            "min_wh": None if self.min_hw is None else [self.min_hw[1], self.min_hw[0]],
            "max_wh": None if self.max_hw is None else [self.max_hw[1], self.max_hw[0]],
            "labels": self.labels,
        }


@dataclass
class CheckReport:
    """The outcome of a check: problems (empty means usable) and a summary per task."""

    root: Path
    splits: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)
    tasks: dict[str, TaskSummary] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "splits": list(self.splits),
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "tasks": {t: s.to_dict() for t, s in self.tasks.items()},
        }

    def raise_if_problems(self, limit: int = 5) -> None:
        """For `usagg run`: a DataError listing the first problems."""
        if self.ok:
            return
        shown = "; ".join(f"{p.where()}: {p.message}" if p.row else p.message for p in self.problems[:limit])
        more = f" (and {len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        raise DataError(
            f"the dataset at {self.root} has {len(self.problems)} problem(s): {shown}{more}. "
            f"Run `usagg data check {self.root}` for the full list."
        )


@dataclass
class _FileResult:
    problems: list[Problem]
    hw: tuple[int, int] | None
    mask_classes: frozenset[int] = frozenset()


def _check_files(s: Sample, root: Path) -> _FileResult:
    """Open the image (and mask) of one sample; report what is wrong with them."""
    where = {"csv_file": rel(s.csv_file, root), "row": s.row}
    tag = f"task {s.task_id}:"
    if not s.image_file.is_file():
        return _FileResult(
            [Problem("missing_image", f"{tag} image {s.image_path!r} not found ({s.image_file})", **where)], None
        )
    try:
        with Image.open(s.image_file) as im:
            im.load()
            hw = (im.height, im.width)
    except Exception as err:  # PIL raises many types for bad files
        msg = f"{tag} image {s.image_path!r} cannot be decoded ({type(err).__name__}: {err})"
        return _FileResult([Problem("unreadable_image", msg, **where)], None)
    problems: list[Problem] = []
    classes: frozenset[int] = frozenset()
    h, w = hw
    if s.task_type == "segmentation":
        mask_file: Path = s.label  # type: ignore[assignment]
        if not mask_file.is_file():
            problems.append(Problem("missing_mask", f"{tag} mask {rel(mask_file, root)} not found", **where))
        else:
            try:
                mask = read_mask(mask_file)
            except Exception as err:
                problems.append(
                    Problem(
                        "unreadable_mask",
                        f"{tag} mask {rel(mask_file, root)} cannot be decoded ({type(err).__name__}: {err})",
                        **where,
                    )
                )
            else:
                values = np.unique(mask)
                classes = frozenset(int(v) for v in values)
                bad = [int(v) for v in values if v >= s.num_classes]
                if bad:
                    problems.append(
                        Problem(
                            "mask_values",
                            f"{tag} mask {rel(mask_file, root)} holds values {bad}, but num_classes is "
                            f"{s.num_classes} (expected 0..{s.num_classes - 1})",
                            **where,
                        )
                    )
                if mask.shape != hw:
                    problems.append(
                        Problem(
                            "size_mismatch",
                            f"{tag} mask {rel(mask_file, root)} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                            f"{w}x{h} (width x height); they must match",
                            **where,
                        )
                    )
    elif s.task_type == "detection":
        x0, y0, x1, y1 = s.label  # type: ignore[misc]
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            problems.append(
                Problem(
                    "box_outside",
                    f"{tag} box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] leaves the {w}x{h} image "
                    f"(expected 0 <= x <= {w}, 0 <= y <= {h})",
                    **where,
                )
            )
    return _FileResult(problems, hw, classes)


def check_dataset(root: Path, tasks: Sequence[TaskSpec] | None = None, splits: Sequence[str] = SPLITS) -> CheckReport:
    """Check the dataset at `root`; with the study's `tasks`, also what the study expects of it."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError(
            f"dataset root {root} does not exist or is not a folder; expected the FMC_UIA layout (train/, val/)"
        )
    report = CheckReport(root=root, splits=tuple(splits))
    for split in splits:
        try:
            csv_files(root, split)
        except DataError as err:
            report.problems.append(Problem("missing_split", str(err)))
            continue
        scan = scan_split(root, split)
        report.problems.extend(scan.problems)
        for task_id, samples in scan.samples.items():
            if not samples:
                continue
            s0 = samples[0]
            summary = report.tasks.setdefault(
                task_id, TaskSummary(task_id, s0.task_type, s0.num_classes, scan.task_names.get(task_id, ""))
            )
            summary.images[split] = len(samples)
            if (summary.type, summary.num_classes) != (s0.task_type, s0.num_classes):
                report.problems.append(
                    Problem(
                        "split_mismatch",
                        f"task {task_id} is {s0.task_type} with num_classes {s0.num_classes} in {split} but "
                        f"{summary.type} with num_classes {summary.num_classes} in the other split",
                        rel(s0.csv_file, root),
                        s0.row,
                    )
                )
                continue
            _add_file_results(report, summary, samples, root)
    for summary in report.tasks.values():
        summary.labels = dict(sorted(summary.labels.items(), key=lambda kv: (len(kv[0]), kv[0])))
    if tasks is not None:
        _check_against_spec(report, tasks)
    report.problems.sort(key=lambda p: (p.csv_file is not None, p.csv_file or "", p.row or 0))
    return report


def _add_file_results(report: CheckReport, summary: TaskSummary, samples: list[Sample], root: Path) -> None:
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda s: _check_files(s, root), samples))
    labels: Counter[str] = Counter(summary.labels)
    for s, r in zip(samples, results, strict=True):
        report.problems.extend(r.problems)
        if r.hw is not None:
            summary.min_hw = (
                r.hw if summary.min_hw is None else (min(summary.min_hw[0], r.hw[0]), min(summary.min_hw[1], r.hw[1]))
            )
            summary.max_hw = (
                r.hw if summary.max_hw is None else (max(summary.max_hw[0], r.hw[0]), max(summary.max_hw[1], r.hw[1]))
            )
        if s.task_type == "classification":
            labels[str(s.label)] += 1
        elif s.task_type == "segmentation":
            for c in r.mask_classes:
                labels[str(c)] += 1
        elif s.task_type == "regression":
            labels[f"{len(s.label)} points"] += 1  # type: ignore[arg-type]
        else:
            labels["1 box"] += 1
    summary.labels = dict(labels)


def _check_against_spec(report: CheckReport, tasks: Sequence[TaskSpec]) -> None:
    for t in tasks:
        found = report.tasks.get(t.id)
        if found is None:
            report.problems.append(
                Problem(
                    "task_missing",
                    f"the study's task {t.id} has no rows in the {'/'.join(report.splits)} CSVs of {report.root} "
                    f"(tasks found: {', '.join(sorted(report.tasks)) or 'none'})",
                )
            )
        elif (found.type, found.num_classes) != (t.type, t.num_classes):
            report.problems.append(
                Problem(
                    "spec_mismatch",
                    f"the study declares task {t.id} as {t.type} with num_classes {t.num_classes}, but the data "
                    f"has {found.type} with num_classes {found.num_classes}",
                )
            )
