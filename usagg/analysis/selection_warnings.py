"""What the jobs' model selection warned of (metrics.json `selection.warnings`), for compare and the report.

A selection split too small to rank epochs (fewer than 20 images), or missing a class, leaves the tested epoch to
noise: a TS baseline kept at an early epoch's all-foreground mask is one outcome (the audit's F3). Each job logs it
in its own log.txt and `usagg run` counts it at its end (usagg/run/notes.py `selection_text`); here it is gathered
per task and cause, with the jobs and paradigms that warned, beside the numbers it qualifies.
"""

from __future__ import annotations

import re

from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.tables import Cellv, Table
from usagg.wording import counted

_TASK = re.compile(r"^task (?P<task>\S+): (?P<cause>.*)$")


def selection_warnings(inp: AnalysisInput) -> dict[tuple[str, str], list[str]]:
    """(task, cause) -> the jobs that warned of it, in job order; a warning naming no task is under task '-'."""
    paradigm = {r.job_id: r.paradigm for r in inp.table.rows}
    out: dict[tuple[str, str], list[str]] = {}
    for job in sorted(inp.selection_warnings, key=lambda j: (paradigm.get(j, ""), j)):
        for warning in inp.selection_warnings[job]:
            m = _TASK.match(warning)
            key = (m["task"], m["cause"]) if m else ("-", warning)
            out.setdefault(key, []).append(job)
    return out


def selection_warnings_table(inp: AnalysisInput) -> Table | None:
    """One row per task and cause: how many jobs warned, under which paradigms; None where no job warned."""
    found = _in_task_order(inp, selection_warnings(inp))
    if not found:
        return None
    paradigm = {r.job_id: r.paradigm for r in inp.table.rows}
    rows: list[list[Cellv]] = []
    for (task, cause), jobs in found.items():
        paradigms = ", ".join(dict.fromkeys(paradigm.get(j, "?") for j in jobs))
        rows.append([task, cause, len(jobs), paradigms])
    return Table(
        "selection_warnings",
        "Warnings of the jobs' model selection",
        ["Task", "Cause", "Jobs", "Paradigms"],
        rows,
        [
            "From each job's metrics.json selection.warnings (and its log.txt): the epoch a job tested "
            "(training.selection: best) was ranked on a selection split that cannot rank epochs reliably, so it may "
            "be an early, degenerate one (a baseline at chance is one sign; the job's history.csv shows the "
            "selection metric per epoch). Raise data.selection_fraction, or test the last epoch (training.selection: "
            "last)."
        ],
    )


def selection_line(inp: AnalysisInput) -> str | None:
    """The report summary's line: the tasks whose jobs warned, how many jobs, and where the table is; None if none."""
    found = _in_task_order(inp, selection_warnings(inp))
    if not found:
        return None
    tasks = list(dict.fromkeys(t for t, _ in found))
    jobs = {j for js in found.values() for j in js}
    return (
        f"**Selection warnings**: {counted(len(jobs), 'job')} warned that the selection split of "
        f"{', '.join(tasks)} cannot rank epochs reliably (causes: Study, warnings of the jobs' model selection)."
    )


def _in_task_order(inp: AnalysisInput, found: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[str]]:
    """The warnings by task in the study's order (a task it does not know last), then by cause."""
    rank = {t: i for i, t in enumerate(inp.task_order)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0])))
