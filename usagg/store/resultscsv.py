"""results.csv, the tidy table rebuilt from the done jobs' metrics.json: one row per (job, task, metric) in
usagg/results_schema.py's columns, then one column per swept spec key, rows in plan order (`results_table`);
`RunStore.rebuild_results` writes it under its lock, `RunStore.current_results` reads it or rebuilds it in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.results_schema import RESULT_COLUMNS
from usagg.sweep import value_text
from usagg.tasktypes import metric_direction

if TYPE_CHECKING:
    from usagg.plan import Job


def metric_entries(metrics: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, Any]]:
    """(task, its entry, metric name, value) for every metric of a job's metrics.json."""
    for task_id, entry in (metrics.get("tasks") or {}).items():
        for name, value in (entry.get("metrics") or {}).items():
            yield task_id, entry, name, value


def results_table(done: Sequence[tuple[Job, dict[str, Any]]], paradigms: Sequence[str]) -> str:
    """results.csv's text from the done jobs and their metrics.json, in plan order: sweep point by sweep point
    (planned point by point), then paradigm in `paradigms`' order, job, task and metric."""
    order = {p: i for i, p in enumerate(paradigms)}
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    swept: dict[str, None] = {}  # the swept keys (usagg/sweep.py), one column each, in the sweep's order
    rank: dict[str, int] = {}  # sweep point -> its place in the plan (planned point by point): rows in that order
    for job, metrics in done:
        groups = {t.id: t.group for t in job.tasks}
        for point in job.sweep or [{}]:  # a job two sweep points share: its rows in both
            swept.update(dict.fromkeys(point))
            p = rank.setdefault(json.dumps(point, sort_keys=True), len(rank))
            for task_id, entry, name, value in metric_entries(metrics):
                hib = metric_direction(name)
                row = {
                    "study": job.study,
                    "job_id": job.id,
                    "paradigm": job.paradigm,
                    "group": groups.get(task_id) or "",
                    "seed": job.seed,
                    "fraction": job.fraction,
                    "task": task_id,
                    "type": entry.get("type", ""),
                    "metric": name,
                    "value": "" if value is None else value,
                    "higher_is_better": "" if hib is None else str(hib),
                    "n_train": entry.get("n_train", ""),
                    "steps": entry.get("steps", ""),
                    **{k: value_text(v) for k, v in point.items()},
                }
                key = (p, order.get(job.paradigm, len(order)), job.paradigm, job.id, task_id, name)
                rows.append((key, row))
    rows.sort(key=lambda kr: kr[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*RESULT_COLUMNS, *swept], lineterminator="\n")
    writer.writeheader()
    writer.writerows(r for _, r in rows)
    return buf.getvalue()


def table_has_rows(path: Path) -> bool:
    """Whether results.csv has a line under its header (a received table without its jobs still reads)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            f.readline()
            return bool(f.readline().strip())
    except OSError:
        return False
