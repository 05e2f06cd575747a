"""history.csv, a job's training history as a table: one row per epoch and task (the file format, torch-free).

The trainer's history entries (usagg/engine/trainer.py) hold per epoch the optimised loss,
each task's own loss, MoE auxiliary loss and optimiser steps, and the selection score and
metrics. `history_rows` flattens them; `write_history` rewrites history.csv atomically from the
whole history (so a resumed job's file is complete too): the engine's `HistoryCsv` callback
(usagg/engine/history.py) after every epoch, and `RunStore.repair` from the history metrics.json
keeps. `history_damage` is its schema check (the store's repair and `usagg.api.load_history`,
which reads the file for jobs that have not finished). Here, not in the engine, so the store and
the API read and mend the file without importing the engine.
"""

from __future__ import annotations

import ast
import csv
import errno
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usagg.atomic import read_regular, write_text_atomic

#: history.csv's columns, then select_<METRIC> for every selection metric of the job's tasks.
HISTORY_CSV_COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "task",
    "loss",
    "aux_loss",
    "task_steps",
    "job_loss",
    "select_score",
    "select_loss",
)


#: What `history_damage` says of a history.csv an older usagg wrote (476ee14 and before put the whole task -> loss
#: mapping's repr in every row's select_loss): no damage, `RunStore.repair` rewrites it from metrics.json in place.
OLDER_LAYOUT = "written by an older usagg, select_loss as a dict"


def _loss_mapping(cell: str) -> bool:
    """Whether a select_loss cell is the repr of a task -> loss mapping, as an older usagg wrote it (`OLDER_LAYOUT`);
    read as a literal, never evaluated."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()
    )


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


def history_rows(history: Sequence[dict[str, Any]], task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (epoch, task) of the job, in epoch then task order; missing values are empty."""
    rows = []
    for entry in history:
        select = entry.get("select") or {}
        for task in task_ids:
            row = {
                "epoch": entry["epoch"],
                "step": entry.get("step"),
                "task": task,
                "loss": (entry.get("task_loss") or {}).get(task),
                "aux_loss": (entry.get("task_aux_loss") or {}).get(task),
                "task_steps": (entry.get("task_steps") or {}).get(task),
                "job_loss": entry.get("loss"),
                "select_score": entry.get("select_score"),
                "select_loss": (entry.get("select_loss") or {}).get(task),  # task -> loss in metrics.json
            }
            for name, value in (select.get(task) or {}).items():
                row[f"select_{name}"] = value
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def write_history(path: Path, history: Sequence[dict[str, Any]], task_ids: Sequence[str]) -> Path:
    """Rewrite history.csv atomically from the whole history (readers never see half a file)."""
    rows = history_rows(history, task_ids)
    extra = sorted({k for r in rows for k in r} - set(HISTORY_CSV_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*HISTORY_CSV_COLUMNS, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def history_damage(path: Path) -> str | None:
    """Why history.csv is not a table `write_history` wrote (header, cells per row, numbers), None when it is or
    when there is none; `OLDER_LAYOUT` for an older usagg's table that is whole but for its select_loss cells."""
    try:
        rows = list(csv.reader(io.StringIO(read_regular(path).decode("utf-8"))))  # a planted link: damage
    except FileNotFoundError:
        return None
    except OSError as err:  # EINVAL: a link, FIFO or folder at its name (usagg/atomic.py `read_regular`)
        return str(err.strerror) if err.errno == errno.EINVAL else f"not a readable CSV ({type(err).__name__})"
    except (ValueError, csv.Error) as err:  # UnicodeDecodeError is a ValueError; NUL bytes a csv.Error
        return f"not a readable CSV ({type(err).__name__})"
    n = len(HISTORY_CSV_COLUMNS)
    if not rows or tuple(rows[0][:n]) != HISTORY_CSV_COLUMNS:
        return f"its header is not {', '.join(HISTORY_CSV_COLUMNS)}, ..."
    task, select_loss = HISTORY_CSV_COLUMNS.index("task"), HISTORY_CSV_COLUMNS.index("select_loss")
    older = False
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            return f"line {line} has {len(row)} cells, the header {len(rows[0])}"
        for col, cell in enumerate(row):
            if col == task or cell == "":
                continue
            if col == select_loss and cell.startswith("{") and _loss_mapping(cell):
                older = True
                continue
            try:
                finite = math.isfinite(float(cell))
            except ValueError:
                return f"line {line}, column {rows[0][col]}: {cell[:20]!r} is not a number"
            if not finite:  # `_cell` writes a missing or non-finite value as an empty cell
                return f"line {line}, column {rows[0][col]}: {cell[:20]!r} is not a finite number"
    return OLDER_LAYOUT if older else None
