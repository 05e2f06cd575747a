"""Which task a data problem belongs to: a study is blocked only by its own tasks' problems (issue 13.4).

One bad row in a task a study does not train must not block it (on the 27-task FMC_UIA
set it blocked every subset study). `usagg run` (usagg/run/studyrun.py `StudyRun.check_data`)
splits `usagg data check`'s problems with `split_by_scope`; the strict reader the engine
uses can do the same (see usagg/data/splits.py `make_splits`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usagg.data.check import CheckReport
    from usagg.data.fmc_uia import Problem

_TASK_PREFIX = re.compile(r"^(?:the study's )?task '?([^\s:']+)'?[\s:]")


class ProblemTasks:
    """Finds the task a data problem belongs to, so a study is blocked only by its own tasks' problems.

    A problem with a CSV row is placed by that row's `task_id` column, read from the CSV
    itself (robust to any message wording; usagg/data/fmc_uia.py numbers rows from 1, header
    excluded); one without a row by its message's "task <id>" prefix. None means the task is
    unknown (an empty task_id, an unreadable CSV, a dataset-wide problem): such problems block.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._rows: dict[str, list[str] | None] = {}

    def _task_ids(self, csv_file: str) -> list[str] | None:
        if csv_file not in self._rows:
            path = Path(csv_file) if Path(csv_file).is_absolute() else self.root / csv_file
            try:
                with path.open(newline="", encoding="utf-8-sig") as fh:
                    reader = csv.DictReader(fh)
                    key = next((k for k in reader.fieldnames or [] if k.strip() == "task_id"), None)
                    self._rows[csv_file] = None if key is None else [(r.get(key) or "").strip() for r in reader]
            except (OSError, UnicodeDecodeError, csv.Error):
                self._rows[csv_file] = None
        return self._rows[csv_file]

    def task_of(self, problem: Problem) -> str | None:
        """The task id of `problem`, or None when it cannot be told (then it concerns the whole dataset)."""
        if problem.csv_file is not None and problem.row is not None:
            ids = self._task_ids(problem.csv_file)
            if ids is not None and 1 <= problem.row <= len(ids) and ids[problem.row - 1]:
                return ids[problem.row - 1]
        m = _TASK_PREFIX.match(problem.message)
        return m.group(1) if m else None


def split_by_scope(report: CheckReport, task_ids: Sequence[str]) -> tuple[list[Problem], list[Problem]]:
    """(problems that block a study of `task_ids`, problems of other tasks: warnings only).

    Dataset-wide problems and those whose task cannot be told block. A problem that spans
    tasks (a test image that is another task's training image) blocks only a study that
    trains all of them: training one of them alone never sees the other's images.
    """
    finder = ProblemTasks(report.root)
    wanted = set(task_ids)
    blocking: list[Problem] = []
    others: list[Problem] = []
    for p in report.problems:
        if p.tasks:
            (blocking if wanted.issuperset(p.tasks) else others).append(p)
            continue
        task = finder.task_of(p)
        (others if task is not None and task not in wanted else blocking).append(p)
    return blocking, others
