"""The run store's one repairing writer (`RunStore.repair`: `usagg repair`, and the start of `usagg run`): every
damaged file of every job folder (usagg/store/damage.py) set aside and rebuilt under the job's lock, and results.csv
rebuilt where it is no results table or says other than the done jobs do. Reads never repair."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from usagg.atomic import read_regular, write_json_atomic
from usagg.errors import UsaggError
from usagg.historycsv import OLDER_LAYOUT, write_history
from usagg.joblock import JobLocked
from usagg.store.damage import checked_metrics, job_problems, results_damage
from usagg.store.records import new_record, rebuilt_state

if TYPE_CHECKING:
    from usagg.plan import Job
    from usagg.store import RunStore


def repair_store(store: RunStore, jobs: Sequence[Job] | None = None) -> list[str]:
    """Set aside every damaged file of every job folder and rebuild what it held; returns the repairs made.

    The store's one repairing writer (`usagg repair`, and the start of `usagg run`), per job
    under its lock (a job a live process runs is left to that process): a lock file that
    is not a lock record is broken; a damaged job.json is set aside and rebuilt from the
    plan (done when metrics.json is intact, else pending); a damaged metrics.json or
    item_scores.json is set aside and its done job goes back to pending (the next run
    evaluates it anew); a damaged history.csv is set aside and written again from the
    history metrics.json keeps; a results.csv that is no results table is set aside and rebuilt from the done
    jobs. `jobs`: the plan to rebuild records from (default: plan.json). The repairs are also added to
    `repairs`, and what could not be mended to `unrepaired` too.
    """
    store.check_no_links()  # before the first write: no planted link is written, appended or pruned through
    if jobs is None:
        try:
            jobs = store.jobs() if store.exists() else []
        except UsaggError as err:  # a damaged plan.json: records cannot be rebuilt, the rest can
            store.repairs.append(str(err))
            store.unrepaired.append(str(err))
            jobs = []
    plans = {j.id: j for j in jobs}
    made: list[str] = []
    for job_id in store.job_folders():
        problems = job_problems(store, job_id)
        if not problems:
            continue
        before = len(store.repairs)
        try:
            with store.lock(job_id):  # taking it breaks a damaged lock file
                lock = store.paths(job_id).lock
                if lock in problems:
                    store.repairs.append(f"{lock} was damaged ({problems[lock]}); broken")
                _repair_job(store, job_id, plans.get(job_id))
        except JobLocked:
            continue  # its live runner is the job's writer; a later repair looks again
        made += [note for note in store.repairs[before:] if note not in store.unrepaired]
    return made + _remove_stale_temporaries(store) + _repair_results(store)


#: A temporary file of the store's own folder older than this has no live writer: an atomic write of study.yaml,
#: specs.json, plan.json or results.csv takes well under a second.
STALE_TEMPORARY_S = 600.0


def _remove_stale_temporaries(store: RunStore) -> list[str]:
    """Delete the half-written temporary files (usagg/atomic.py's .<name>.*.tmp) a killed writer left in the store's
    own folder, older than `STALE_TEMPORARY_S`: a job folder's are removed when its lock is taken, these stayed
    for good (the ops audit found .results.csv.*.tmp after later runs and a `usagg repair` "nothing damaged")."""
    now, gone = time.time(), []
    for tmp in sorted(store.root.glob(".*.tmp")):
        with contextlib.suppress(OSError):
            if tmp.is_file() and not tmp.is_symlink() and now - tmp.lstat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()
                gone.append(tmp.name)
    if not gone:
        return []
    note = f"removed {len(gone)} temporary file(s) a killed writer left in {store.root}: {', '.join(gone)}"
    store.repairs.append(note)
    return [note]


def _repair_results(store: RunStore) -> list[str]:
    """results.csv set aside and rebuilt from the done jobs when it is not a results table at all (no CSV text,
    or a header without the columns, usagg/results_schema.py) or says other than they do (a cut row, a job
    missing, rows of a job that is no longer done): it is derived from the jobs, so nothing is lost, and the old
    one stays beside it (`*.damaged`). A table that is only behind (a job done, a record or the plan written
    since it was, as every run leaves it until its end, and a stage of AG starts before that) is no damage: it
    is rebuilt without a word. Nothing is written while a damaged plan.json names no jobs."""
    why = results_damage(store.results_csv)
    if why is None and store.results_csv.is_file():
        try:
            fresh = store.results_text()
        except UsaggError:  # a damaged plan.json: `repair` has said so; the next `usagg run` rebuilds both
            return []
        if fresh == read_regular(store.results_csv).decode("utf-8", errors="replace"):
            return []
        if store.results_behind():
            store.rebuild_results()  # under its lock, dated by what it read
            return []
        why = "it no longer says what the done jobs' metrics.json do"
    if why is None:
        return []
    store.set_aside(store.results_csv, why)
    note = store.repairs[-1]
    try:
        store.rebuild_results()
    except UsaggError:  # a damaged plan.json: the next `usagg run` writes the plan and the table
        store.repairs[-1] = note + "; `usagg run` writes it again"
    else:
        store.repairs[-1] = note + " and rebuilt from the done jobs"
    return [store.repairs[-1]]


def _repair_job(store: RunStore, job_id: str, job: Job | None) -> None:
    """Repair one job folder; the caller holds its lock."""
    paths = store.paths(job_id)
    problems = job_problems(store, job_id)  # again, under the lock
    for path in (paths.metrics, paths.item_scores):
        if path in problems and path.is_file():
            store.set_aside(path, problems[path])
        elif path in problems:  # nothing to set aside (a done job's metrics.json missing): said, then mended
            store.repairs.append(f"{path} is {problems[path]}")
    rerun = paths.metrics in problems or paths.item_scores in problems
    if paths.record in problems:
        if job is None:
            left = (
                f"{paths.record} is damaged ({problems[paths.record]}) and job {job_id} is not in the plan to "
                "rebuild it: left as it is (`usagg run` with the study that planned it rebuilds it)"
            )
            store.repairs.append(left)
            store.unrepaired.append(left)
            return
        store.set_aside(paths.record, problems[paths.record])
        state = "pending" if rerun else rebuilt_state(paths)
        write_json_atomic(paths.record, new_record(job.model_dump(mode="json"), state))
        store.repairs[-1] += f" and rebuilt from the plan as {state}"
    elif rerun and store.job_state(job_id) == "done":
        store.set_state(job_id, "pending", expect=("done",), error=None)
        store.repairs[-1] += "; the job is pending again (the next `usagg run` evaluates it anew)"
    if paths.history in problems:
        metrics, _ = checked_metrics(paths.metrics)
        history = metrics.get("history") if metrics is not None else None
        if problems[paths.history] == OLDER_LAYOUT and isinstance(history, list):  # not damage: said as it is
            write_history(paths.history, history, store.job(job_id).task_ids)
            store.repairs.append(f"{paths.history} was {OLDER_LAYOUT}; rewritten from metrics.json")
            return
        store.set_aside(paths.history, problems[paths.history])
        if isinstance(history, list):
            write_history(paths.history, history, store.job(job_id).task_ids)
            store.repairs[-1] += " and written again from metrics.json"
        else:
            store.repairs[-1] += "; the job's next epoch writes it again"
