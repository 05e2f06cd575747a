"""results.csv, the tidy table rebuilt from the done jobs' metrics.json: one row per (job, task, metric) in
usagg/results_schema.py's columns, then one column per swept spec key, rows in plan order (`results_table`); the
store's side of it: the table of a store's done jobs (`done_results_text`), written under its lock
(`rebuild_results`), behind when older than what it is derived from (`newest_source_ns`), and why a store has none to
read (`check_finished`). `RunStore` calls them; `RunStore.current_results` reads it or rebuilds it in memory."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.atomic import write_text_atomic
from usagg.errors import UsaggError
from usagg.paradigms import paradigm_names
from usagg.results_schema import RESULT_COLUMNS
from usagg.store.damage import checked_metrics
from usagg.sweep import value_text
from usagg.tasktypes import metric_direction
from usagg.wording import command, counted

if TYPE_CHECKING:
    from usagg.plan import Job
    from usagg.store import RunStore


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


def newest_source_ns(store: RunStore) -> int | None:
    """The newest modification time (ns) of what results.csv is derived from: plan.json, the jobs folder (a job
    folder made or deleted), each job folder (a file in it made or deleted: a metrics.json removed), its
    job.json (the state) and its metrics.json; None when there is none of them."""
    sources = [store.plan_json, store.jobs_dir]
    for job_id in store.job_folders():
        paths = store.paths(job_id)
        sources += [paths.folder, paths.record, paths.metrics]
    times = []
    for path in sources:
        try:
            times.append(path.stat().st_mtime_ns)
        except OSError:  # not there (a job not finished), or gone since it was listed
            continue
    return max(times, default=None)


def rebuild_results(store: RunStore) -> Path:
    """`RunStore.rebuild_results`: write results.csv from the metrics.json of every done job of the current plan
    (jobs of a paradigm that is not compared, such as AG's affinity probe, are left out).

    Reading the jobs and writing the table happen under `results_lock_file` (a file lock: a second writer
    waits), so the last writer read after the one before it wrote: two runs finishing together can no longer
    leave the table of the one that read first, dated after the job it lacks. A job that finishes while the
    table is read (its files newer than the newest read, `newest_source_ns`) leaves the table dated before it,
    so it reads as behind (`results_behind`) and the analysis rebuilds from the jobs until that job's run
    writes the table again.
    """
    from filelock import FileLock

    store.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store.results_lock_file)):
        read_from = newest_source_ns(store)
        path = write_text_atomic(store.results_csv, store.results_text())
        newest = newest_source_ns(store)
        if read_from is not None and newest is not None and newest > read_from:
            os.utime(path, ns=(read_from - 1, read_from - 1))  # older than what changed while it was read
    return path


def done_results_text(store: RunStore) -> str:
    """`RunStore.results_text`: what results.csv holds when it is rebuilt from the done jobs (`rebuild_results`;
    `repair` compares)."""
    paradigms = paradigm_names()  # the compared ones: a job of another (AG's affinity probe) has no rows
    done = []
    for job in store.jobs():
        if store.job_state(job.id) != "done" or job.paradigm not in paradigms:
            continue
        metrics, why = checked_metrics(store.paths(job.id).metrics)
        if metrics is None:
            path = store.paths(job.id).metrics
            raise UsaggError(
                f"job {job.id} is done but {path} is damaged ({why}): `{store.repair_command}` sets it "
                "aside and sends the job back to pending, then `usagg run` evaluates it again"
                if why
                else f"job {job.id} is done but has no {path}: `{store.repair_command}` sends it back to pending"
            )
        done.append((job, metrics))
    return results_table(done, paradigms)


def check_finished(store: RunStore, reader: str = "usagg compare") -> None:
    """`RunStore.check_finished`: UsaggError where no job has finished (no jobs/*/metrics.json) and results.csv is
    missing or holds a header alone (a run whose every job failed writes that): what the planned jobs are doing and
    what to run instead (`usagg status`, `--retry-failed`), then `reader` once a job is done. The analysis commands
    ask before reading; "the table has a header but no rows" said none of it."""
    if any(store.paths(jid).metrics.is_file() for jid in store.job_folders()) or table_has_rows(store.results_csv):
        return
    what = (
        "no finished job (jobs/*/metrics.json), and its results.csv holds a header but no rows"
        if store.results_csv.is_file()
        else "no results.csv and no finished job (jobs/*/metrics.json) to build it from"
    )
    raise UsaggError(f"{store.root} has {what}{_none_finished_text(store, reader)}")


def _none_finished_text(store: RunStore, reader: str) -> str:
    """What the planned jobs are doing when none has finished (a run's first job still training, `compare`
    right after `usagg run`, a run whose every job failed): their states counted, where to follow them, how to
    run the failed ones again; "" without a readable plan."""
    try:
        states = Counter(store.display_state(jid) for jid in store.job_ids())
    except UsaggError:  # a damaged plan.json or record: the error as it was
        return ""
    if not states:
        return ""
    order = ("running", "interrupted", "pending", "failed")
    counts = ", ".join(f"{n} {state}" for state in order if (n := states.get(state)))
    status = command("usagg", "status", store.root)
    if not states.get("failed"):
        follow = f"`{status}` shows their progress"
    else:
        specs = store.spec_files()
        spec: str | Path = Path(specs[0]) if specs else "STUDY.yaml"
        retry = command("usagg", "run", spec, "--retry-failed")
        follow = (
            f"`{status}` shows each failed job's error, and `{retry}` (`run_study(..., retry_failed=True)`) runs "
            f"{'it' if states['failed'] == 1 else 'them'} again"
        )
    return (
        f": of its {counted(sum(states.values()), 'planned job')} {counts}, none finished yet. {follow}; "
        f"`{reader}` once a job is done"
    )
