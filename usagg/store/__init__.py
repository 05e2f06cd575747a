"""The run store: one folder per study, the only state of a study.

Resuming, `usagg status` and the analysis all read it, so every file is
written atomically (temporary file in the same folder, fsync, rename) and a
crash never leaves a half-written file behind. It is safe on a shared file
system: two `usagg run` processes, on one host or on several, never run the
same job (see `RunStore.lock`).

The files and where they live: usagg/store/layout.py. `RunStore` holds the state; its parts are a module each,
below it: the locks (`locks`), job.json (`records`), plan.json (`planfile`), results.csv (`resultscsv`), a
checkpoint's layout (`checkpoints`), what is damaged (`damage`) and the one repairing writer (`repair`), a job
filled from its twin (`reuse`), no planted links (`links`), the Slurm records (`slurmrecord`) and the spec files
bound to the store (`specfiles`).

Job states: pending -> running -> done | failed (a failed or interrupted job
goes back to running when run again). For display, `RunStore.display_state`
adds "interrupted": state running but the lock holder is dead or gone.

Reads are pure: `job_record`, `metrics`, `job_state`, ... never write; a damaged file
(unreadable, the wrong schema, a checksum that no longer matches) is noted in `repairs`
and read as the store would rebuild it. `RunStore.repair()` (`usagg repair`, and the
start of `usagg run`) is the one step that sets damaged files aside and rebuilds them;
besides it only `init` (new records) and `set_state` (the state machine) write job.json,
each under the job's lock, `set_state` as a compare-and-set. A job id ends with a hash of every
setting that changes its result, so changing the spec makes new job folders
and leaves old ones (and their results) untouched; `plan.json` and
`results.csv` describe the current plan only.

`results.csv` columns: usagg/results_schema.py `RESULT_COLUMNS` (study, job_id, paradigm, group, seed, ...,
n_train, steps), then one column per swept spec key (`is_sweep_column`: the key's value at the row's sweep point).
`group` is the task's clinical group, `higher_is_better` is `True` or `False`, an undefined value is empty.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usagg.affinity import Affinity, check_source, mean_affinity, measuring_jobs, read_affinity
from usagg.atomic import read_regular, set_aside, write_json_atomic, write_json_checked, write_text_atomic
from usagg.errors import DataError, UsaggError
from usagg.joblock import DAMAGED_HOLDER, JobLocked
from usagg.jobmetrics import JobMetrics
from usagg.plan import Job, weights_key
from usagg.safepath import check_component, confined
from usagg.store import resultscsv
from usagg.store.checkpoints import CHECKPOINT_FORMAT, checkpoint_layout
from usagg.store.damage import checked_metrics
from usagg.store.locks import StoreLocks
from usagg.store.planfile import check_job_ids, raw_plan, read_plan
from usagg.store.records import (
    STATES,
    WEIGHTS_KEY,
    new_record,
    note_running,
    read_record_file,
    rebuilt_state,
    write_state,
)
from usagg.store.repair import repair_store
from usagg.store.reuse import fill_from
from usagg.store.slurmrecord import SlurmRecords
from usagg.store.specfiles import SpecFiles
from usagg.wording import command


class RunStore(StoreLocks, SlurmRecords, SpecFiles):
    """One study's folder: plan, job states, job files and the results table; where each file lives is its
    `StoreLayout` (usagg/store/layout.py), its locks `StoreLocks`, its Slurm records `SlurmRecords` and the spec
    files bound to it `SpecFiles`."""

    def __init__(
        self, root: str | os.PathLike[str], *, heartbeat_s: float = 30.0, stale_after_s: float = 600.0
    ) -> None:
        super().__init__(root, heartbeat_s, stale_after_s)
        #: Damaged files found by reads and the repairs `repair` made, one sentence each: the CLI prints them.
        self.repairs: list[str] = []
        #: Those of `repairs` that `repair` could not mend (a damaged plan.json, a record with no plan to rebuild it).
        self.unrepaired: list[str] = []

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ----- what a damage note names

    @property
    def repair_command(self) -> str:
        """`usagg repair` of this store as a user pastes it (shell-quoted: a store folder's name is data)."""
        return command("usagg", "repair", self.root)

    # ----- study

    def exists(self) -> bool:
        """Whether the store was initialised (it has a plan)."""
        return self.plan_json.is_file()

    def init(self, study_yaml: str, jobs: list[Job]) -> None:
        """Write the spec, the plan and a job.json per job, keeping the state of jobs already there.

        A job already in the store keeps its state, timings and results (its Job
        settings are refreshed: only settings outside the hash can differ); a
        new id gets a new pending folder; folders of jobs no longer planned stay.
        Every job.json write happens under that job's lock, so a runner that holds
        it is the record's only writer: a job whose live runner holds the lock is
        left alone (its settings are refreshed by a later `init`), and a done job
        can never be written back to an older state by a slow concurrent `init`.
        """
        ids = [j.id for j in jobs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise UsaggError(f"the plan has duplicate job ids {dup}")
        self.write_study(study_yaml)
        for job in jobs:
            path = self.paths(job.id).record
            dump = job.model_dump(mode="json")
            weights = weights_key(job.model.weights, job.data.cache_dir)  # as hashed into the id: cached, not re-read
            if path.is_file():
                record, why = self.read_record(job.id)
                if record is None:
                    self._damaged(path, str(why))  # `repair` sets it aside and rebuilds it; never overwritten here
                    continue
                if record.get("job") == dump and record.get(WEIGHTS_KEY) == weights:
                    continue  # nothing to refresh: no write, no lock
            try:
                with self.lock(job.id):
                    if path.is_file():
                        record, why = self.read_record(job.id)
                        if record is None:
                            continue  # damaged meanwhile: left to `repair`
                        record["job"] = dump
                    else:
                        record = new_record(dump, "pending")
                    record[WEIGHTS_KEY] = weights
                    write_json_atomic(path, record)
            except JobLocked:
                continue  # a live runner owns this job's record
        self.write_plan([j.model_dump(mode="json") for j in jobs])

    def read_record(self, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(job.json, None) for an intact record, (None, why) for a damaged one; UsaggError when there is none. Notes
        nothing (`job_record` is the read that notes a damaged record and reads it as `repair` will rebuild it)."""
        try:
            return read_record_file(self.paths(job_id).record)
        except FileNotFoundError:
            raise UsaggError(f"job {job_id} is not in the run store {self.root}") from None

    def write_study(self, study_yaml: str) -> None:
        """Write study.yaml (the resolved spec as run)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.study_yaml, study_yaml)

    def write_plan(self, records: list[dict[str, Any]]) -> None:
        """Write plan.json from Job dumps (`init` does this; the analysis simulator writes its own records)."""
        write_json_atomic(self.plan_json, records)

    def stored_study(self) -> dict[str, Any]:
        """study.yaml as a mapping ({} when there is none), read by the spec's YAML reader and its errors.

        A received store is data: a study.yaml that is a link leading outside the store is an UnsafePath
        (usagg/safepath.py), never read, since its settings (tracking URI, cache_dir, analysis) steer what follows.
        """
        path = confined(self.study_yaml.name, self.root, f"{self.study_yaml} (the study a run store holds)")
        if not path.is_file():
            return {}
        from usagg.spec.load import read_yaml  # lazy: reading a store needs no spec models

        return read_yaml(path, what="stored study")

    def planned_count(self) -> int | None:
        """How many jobs plan.json lists, None when it is missing or unreadable (the analysis only counts them).

        A plan listing a job id twice is the damage `jobs` reports (usagg/store/planfile.py `check_job_ids`): it would
        be counted twice."""
        plan = raw_plan(self.plan_json)
        if plan is None:  # missing, unreadable, or not the list of jobs a plan is
            return None
        check_job_ids(self.plan_json, (r.get("id") for r in plan if isinstance(r, dict)))
        return len(plan)

    def study_affinity(self) -> Affinity | None:
        """The study's affinity as AG used it: the mean over the measuring jobs of plan.json that wrote their
        affinity.json (checked against the job: another spec's file is refused); None when none did. The file's
        format and the averaging are usagg/affinity.py's; which jobs, and where their files are, the store's.
        A plan listing a job id twice is refused (usagg/store/planfile.py `check_job_ids`): a measuring job would be
        averaged in twice."""
        records = raw_plan(self.plan_json)  # a FIFO, a link, too large or too deep: no affinity
        if records is None:
            return None
        entries = [r for r in records if isinstance(r, dict)]  # an entry that is no mapping is no measuring job
        check_job_ids(self.plan_json, (r.get("id") for r in entries))
        found = []
        for r in measuring_jobs(entries):
            path = self.paths(check_component(r["id"], f"{self.plan_json}, job id")).affinity
            if path.is_file():
                aff = read_affinity(path)
                check_source(aff, path, r["id"], r["hash"], [t["id"] for t in r["tasks"]])
                found.append(aff)
        return mean_affinity(found) if found else None

    def jobs(self) -> list[Job]:
        """The jobs of the current plan, in plan order."""
        self.require()
        return read_plan(self.plan_json)

    def require(self) -> None:
        """UsaggError where the store has no plan yet (`exists`): none at all, or a folder a `usagg run` is still
        starting in (its record in .runs/ is there a moment before plan.json: `usagg status` then said only "no run
        store", while the run's files were already there)."""
        if self.exists():
            return
        starting = (
            " yet: a `usagg run` starting there is writing it, look again in a moment"
            if self.runs_dir.is_dir() and self.live_runs()
            else ""
        )
        raise UsaggError(f"no run store at {self.root} (no plan.json{starting}): run `usagg run STUDY` first")

    def job_ids(self) -> list[str]:
        """Ids of the current plan, in plan order."""
        return [j.id for j in self.jobs()]

    def job_folders(self) -> list[str]:
        """Ids of every job folder, planned or not, sorted (old hashes keep their folders)."""
        if not self.jobs_dir.is_dir():
            return []
        return sorted(d.name for d in self.jobs_dir.iterdir() if d.is_dir())

    def job(self, job_id: str) -> Job:
        """The Job of a job folder (also for folders no longer in the plan)."""
        return Job.model_validate(self.job_record(job_id)["job"])

    def has_job(self, job_id: str) -> bool:
        """Whether the store holds a record (job.json) for this id."""
        return self.paths(job_id).record.is_file()

    def job_record(self, job_id: str) -> dict[str, Any]:
        """job.json as a dict: job, state, attempts, started, finished, duration_s, host, pid, error.

        A pure read. A damaged job.json (not JSON, not an object, no valid state, a field of the wrong type) is noted in
        `repairs` and read as `repair` will rebuild it from the plan: done when the job's
        metrics.json is intact, else pending.
        """
        record, why = self.read_record(job_id)
        if record is not None:
            return record
        path = self.paths(job_id).record
        job = self._planned(job_id)
        if job is None:
            raise UsaggError(f"{path} is damaged ({why}) and job {job_id} is not in {self.plan_json} to rebuild it")
        self._damaged(path, str(why))
        return new_record(job.model_dump(mode="json"), rebuilt_state(self.paths(job_id)))

    def _planned(self, job_id: str) -> Job | None:
        """The Job of the current plan with this id, None when the plan lacks it or is unreadable."""
        try:
            return next((j for j in self.jobs() if j.id == job_id), None)
        except UsaggError:
            return None

    def _damaged(self, path: Path, why: str, fix: str = "sets it aside and rebuilds it") -> None:
        """Note a damaged file found by a read (left in place: `repair` is the writer)."""
        note = f"{path} is damaged ({why}); `{self.repair_command}` (or the next `usagg run`) {fix}"
        if note not in self.repairs:
            self.repairs.append(note)

    def set_aside(self, path: Path, why: str) -> Path:
        """Move a damaged file to <name>.damaged (numbered when taken) and note the repair; returns the new path."""
        aside = set_aside(path)
        self.repairs.append(f"{path} was damaged ({why}); set aside as {aside.name}")
        return aside

    # ----- repair

    def repair(self, jobs: Sequence[Job] | None = None) -> list[str]:
        """Set aside every damaged file of every job folder and rebuild what it held, and results.csv where it is no
        results table or says other than the done jobs (usagg/store/repair.py `repair_store`, the store's one
        repairing writer); returns the repairs made, also added to `repairs` (what could not be mended to
        `unrepaired` too). `jobs`: the plan to rebuild records from (default: plan.json)."""
        return repair_store(self, jobs)

    def results_behind(self) -> bool:
        """Whether results.csv predates what it is derived from (`newest_source_ns`): stale, where a table newer
        than all of it that says otherwise was changed by other hands. The one freshness rule of the table: `repair`
        rewrites a table only behind, and `current_results` (the analysis, `usagg.api.load_results`) reads the
        jobs instead."""
        newest = resultscsv.newest_source_ns(self)
        return newest is not None and newest > self.results_csv.stat().st_mtime_ns

    def job_state(self, job_id: str) -> str:
        """pending | running | done | failed, as job.json says; pending for a job without a folder."""
        path = self.paths(job_id).record
        if not path.is_file():
            return "pending"
        return str(self.job_record(job_id)["state"])

    def display_state(self, job_id: str) -> str:
        """The state to show: `job_state`, but "interrupted" for a running job whose lock holder is not alive."""
        state = self.job_state(job_id)
        if state == "running" and not self.lock_alive(job_id):
            return "interrupted"
        return state

    def states(self) -> dict[str, str]:
        """State of every job of the current plan."""
        return {jid: self.job_state(jid) for jid in self.job_ids()}

    def set_state(
        self, job_id: str, state: str, *, expect: tuple[str, ...] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Rewrite job.json with a new state, keeping the timings consistent; returns the record.

        running: started now, attempts + 1, host and pid recorded, the epochs history.csv
        holds kept as start_epoch (`usagg status` times this attempt's), finish and
        error cleared; done / failed: finished now and duration since started.
        `expect`: compare-and-set, the record is rewritten only from one of these states
        (StateConflict otherwise, nothing written), so a writer that lost a race never
        turns a done job back. `extra` keys (error, message, ...) are stored as given.
        The write happens under the job's lock: the caller's (a runner) or one taken for it
        (JobLocked when a live process holds it). A damaged record is never written over:
        UsaggError naming it and `usagg repair`.
        """
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}; one of {', '.join(STATES)}")
        if self.holds_lock(job_id):
            return write_state(self, job_id, state, expect, extra)
        with self.lock(job_id):
            return write_state(self, job_id, state, expect, extra)

    def note_device(self, job_id: str, device: str) -> None:
        """Record where a running job computes ('cuda:1 (NVIDIA H100 80GB HBM3)'), so `usagg status` can say which
        card each job is on; the job's runner calls it under the job's lock once the job has chosen its device.
        A record that is no longer running (or is damaged) is left as it is."""
        note_running(self, job_id, "device", device)

    def note_restart(self, job_id: str, why: str) -> None:
        """Record why a running job's last.pt was not resumed and where it is kept (usagg/engine/checkpointing.py:
        damaged, another layout, other frozen weights), so `usagg status` says the job started over from epoch 1,
        which its log alone said; as `note_device`, by the job's runner."""
        note_running(self, job_id, "restarted", why)

    # ----- job files

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        """metrics.json of a job (without its checksum), None when it has none.

        A pure read. A damaged one (not JSON, not an object, a value changed after it was
        written, so that it no longer matches its checksum, or content JobMetrics refuses) is
        noted in `repairs` and read as None; `repair` sets it aside and sends a done job back to pending.
        """
        data, why = checked_metrics(self.paths(job_id).metrics)
        if why is not None:
            self._damaged(self.paths(job_id).metrics, why)
        return data

    def job_metrics(self, job_id: str) -> JobMetrics | None:
        """metrics.json of a job as a typed JobMetrics, None when it has none; DataError naming the file and what
        is wrong with it when it is damaged or malformed (the analysis reads results, so it must not skip one)."""
        data, why = checked_metrics(self.paths(job_id).metrics)
        if why is not None:
            path = self.paths(job_id).metrics
            raise DataError(
                f"{path} is damaged ({why}); `{self.repair_command}` sets it aside and sends the job back to "
                "pending, then `usagg run` evaluates it again"
            )
        return None if data is None else JobMetrics.model_validate(data)

    def write_metrics(self, job_id: str, metrics: dict[str, Any]) -> Path:
        """Write metrics.json (the engine's result for the job) with the checksum `metrics` verifies."""
        return write_json_checked(self.paths(job_id).metrics, metrics)

    def reuse(self, job_id: str, source_id: str) -> bool:
        """Fill a job from a done job of the same hash instead of training it again (usagg/store/reuse.py
        `fill_from`): under the job's lock (JobLocked while a live process holds it), done with `reused_from` in
        job.json. False when the job is done already (another run filled it)."""
        return fill_from(self, job_id, source_id)

    def error_text(self, job_id: str) -> str | None:
        """error.txt (the traceback of the last failed attempt), None when there is none."""
        path = self.paths(job_id).error
        try:
            return read_regular(path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as err:  # a link or a FIFO planted at its name: never read through (usagg/atomic.py)
            return f"{path} is not a file usagg wrote ({err.strerror})"

    def write_error(self, job_id: str, text: str) -> Path:
        """Write error.txt for a failed attempt (the job folder is created if needed)."""
        return write_text_atomic(self.paths(job_id).error, text)

    def clear_error(self, job_id: str) -> None:
        """Remove the previous attempt's error.txt (a new attempt starts)."""
        self.paths(job_id).error.unlink(missing_ok=True)

    def has_checkpoint(self, job_id: str) -> bool:
        """Whether a killed attempt left a checkpoint to resume from."""
        return self.paths(job_id).last_checkpoint.is_file()

    def unresumable_layout(self, job_id: str) -> int | None:
        """The layout of the job's last.pt where this usagg cannot resume it (an older usagg's, `CHECKPOINT_FORMAT`),
        else None (none there, this layout, or unreadable here). A pure read: the job's run sets it aside."""
        path = self.paths(job_id).last_checkpoint
        layout = checkpoint_layout(path) if path.is_file() else None
        return layout if layout is not None and layout != CHECKPOINT_FORMAT else None

    def damaged_checkpoint(self, job_id: str) -> bool:
        """Whether the job's last.pt is there but its layout cannot be read (not a checkpoint, cut short): the job's
        run sets it aside as last.pt.damaged and starts over from epoch 1. A pure read, torch-free."""
        path = self.paths(job_id).last_checkpoint
        return path.is_file() and checkpoint_layout(path) is None

    def epochs_done(self, job_id: str) -> tuple[int, float | None]:
        """(the epochs history.csv holds, when it was written: the end of the last, in seconds since the epoch);
        (0, None) without a readable one. A pure read for `usagg status` (a damaged file is `repair`'s to name)."""
        path = self.paths(job_id).history
        try:
            written = path.stat().st_mtime
            rows = csv.DictReader(io.StringIO(read_regular(path).decode("utf-8")))
            return max((int(float(r["epoch"])) for r in rows), default=0), written
        except (OSError, ValueError, KeyError, TypeError, OverflowError, csv.Error):  # int(inf): OverflowError
            return 0, None

    # ----- locks

    def lock_alive(self, job_id: str) -> bool:
        """Whether a live process holds the job's lock (the answer `status`, `plan` and lock breaking share)."""
        lock = self.job_lock(job_id)
        holder = lock.holder()
        if holder and DAMAGED_HOLDER in holder:
            self._damaged(lock.path, str(holder[DAMAGED_HOLDER]), "breaks it (no process holds it)")
        return holder is not None and lock.holder_alive(holder)

    # ----- results

    def rebuild_results(self) -> Path:
        """Write results.csv from the metrics.json of every done job of the current plan, under its lock, dated
        before a job that finished while it was read (usagg/store/resultscsv.py `rebuild_results`)."""
        return resultscsv.rebuild_results(self)

    def results_text(self) -> str:
        """What results.csv holds when it is rebuilt from the done jobs (`rebuild_results`; `repair` compares)."""
        return resultscsv.done_results_text(self)

    def current_results(self, reader: str = "usagg compare") -> str | None:
        """None when results.csv is current; else the text it would hold rebuilt from the jobs (it is missing, or
        behind them: older than plan.json, a job.json or metrics.json, or a job folder made or deleted since,
        `results_behind`). A pure read: `compare` or `load_results` on a store received from elsewhere (read-only,
        perhaps) writes nothing into it. UsaggError when there is neither a results.csv nor a finished job to build
        one from (`check_finished`; `reader` is the command the message sends the user back to). A header-only table
        (every job failed) reads as the empty table: `load_results` returns it with `RunResult.failed` beside it; the
        analysis commands refuse it by asking `check_finished` first."""
        if not self.results_csv.is_file():
            self.check_finished(reader)
            return self.results_text()
        return self.results_text() if self.results_behind() else None

    def check_finished(self, reader: str = "usagg compare") -> None:
        """UsaggError where no job has finished and results.csv is missing or holds a header alone: what the
        planned jobs are doing and what to run instead, then `reader` (usagg/store/resultscsv.py `check_finished`)."""
        resultscsv.check_finished(self, reader)

    def mark_results_fresh(self) -> None:
        """Date results.csv after everything it is derived from (`newest_source_ns`), so `current_results` keeps
        it (a table written by other means)."""
        newest = resultscsv.newest_source_ns(self)
        if newest is not None:
            later = newest + 1_000_000_000
            os.utime(self.results_csv, ns=(later, later))

    # ----- finding stores

    @classmethod
    def latest(cls, output_root: Path | str) -> RunStore:
        """The most recently modified study under `output_root` (a folder with plan.json)."""
        output_root = Path(output_root)
        candidates = []
        if output_root.is_dir():
            for d in output_root.iterdir():
                store = cls(d)
                if d.is_dir() and store.exists():
                    candidates.append((max(d.stat().st_mtime, store.plan_json.stat().st_mtime), d.name, d))
        if not candidates:
            raise UsaggError(f"no run store under {output_root}/ (no <study>/plan.json): run `usagg run STUDY` first")
        return cls(max(candidates)[2])
