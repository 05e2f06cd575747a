"""One `usagg run` of a study, step by step (`StudyRun`): plan and select the jobs (`prepare`, which changes nothing
on disk), refuse a dataset with problems (`check_data`), repair and write the run store (`init_store`:
`RunStore.repair()`, then `RunStore.init`), run the jobs through the executor the spec names (`execute`), plan the
stages a staged paradigm (AG) waits for (`next_stage`), and rebuild results.csv (`finish`). Messages name the run's
options as the caller knows them (`Wording`: `--only` for the CLI, `only=` for the API)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from usagg.errors import UsaggError
from usagg.run.checks import check_model_weights, check_study_data
from usagg.run.datarecords import changed_data_text, changed_generator_text, recorded_data, recorded_generator
from usagg.run.evidence import store_evidence
from usagg.run.gate import PlanGate
from usagg.run.jobfunction import job_function, reachable_tracking
from usagg.run.options import CLI_WORDING, Wording
from usagg.run.result import RunResult
from usagg.run.selection import Selection, make_selection
from usagg.run.stores import store_for

if TYPE_CHECKING:
    from usagg.data.check import CheckProgress, CheckReport
    from usagg.data.fmc_uia import Problem
    from usagg.data.splits import TaskRows
    from usagg.engine.progress import Progress
    from usagg.execute.base import EventFn, Executor
    from usagg.execute.slurm import QueueCheck
    from usagg.plan import Job, Waiting
    from usagg.spec.models import Study, TrackingSpec
    from usagg.store import RunStore


#: How many times `StudyRun._read` reads a job's record and lock where another process changed them meanwhile: each
#: change is one step of a live run (lock taken, running, done, lock let go), so a few reads see it settle.
READS = 4


@dataclass
class StudyRun:
    """One `usagg run` of a study, step by step; `prepare` changes nothing on disk."""

    study: Study
    all_jobs: list[Job]
    jobs: list[Job]
    store: RunStore
    states: dict[str, str]  # the state each selected job is acted on as (`_state`)
    retry_failed: bool = False
    todo: list[str] = field(default_factory=list)
    #: Problems of tasks outside the study found by `check_data` (never blocking; the CLI lists them).
    data_warnings: list[Problem] = field(default_factory=list)

    #: Staged paradigms still waiting for the jobs they need (usagg/plan.py `Waiting`).
    waiting: list[Waiting] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    #: The spec file run (absolute), bound to the store by `init_store`; None for a study given as an object.
    spec_file: Path | None = None
    #: Jobs of the store's plan that other spec files of the same name planned (kept after `--force`).
    kept: list[Job] = field(default_factory=list)
    #: Jobs to do that reuse another job's result instead of training (`_twins`), job id -> the job it reuses.
    twins: dict[str, str] = field(default_factory=dict)
    #: Done jobs of the stored plan that this plan (the same spec file edited, or a `--set`) no longer lists: kept on
    #: disk, out of status and compare until the spec runs as it was (`replaced_text`).
    replaced_done: list[str] = field(default_factory=list)
    #: Done jobs of the plan whose splits.json recorded no fingerprint of their data (an older usagg's), found by
    #: `check_done_data`: unchecked, so `unrecorded_data_text` warns where new jobs train beside them.
    unrecorded_data: list[str] = field(default_factory=list)
    #: The ids the spec file plans as it is written, without this run's overrides (`prepare`'s `as_written`); None
    #: where the run has none: a plan whose overrides hide done jobs of these is refused unless `force`.
    written_ids: frozenset[str] | None = None
    #: How `init_store` records the spec file: "add" it to the files bound to the store, "replace" them (every
    #: bound file is gone: this one takes the study over), or "none" (a file of the same plan as the bound one).
    binding: Literal["add", "replace", "none"] = "add"
    #: Selected jobs still queued on Slurm from an earlier `usagg run`, job id -> Slurm job id (`_still_queued`):
    #: not submitted again; `queued_note` says so.
    queued: dict[str, str] = field(default_factory=dict)
    queued_note: str | None = None
    #: Selected jobs whose element an earlier `usagg run` submitted and sacct lists as ended in a failed state
    #: (OUT_OF_MEMORY, TIMEOUT, ...) while no run waited for it, job id -> (element, state): `init_store` records
    #: each failed (`collect_slurm_failures`), so it waits for `--retry-failed` instead of failing again unseen.
    slurm_failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The failures `collect_slurm_failures` recorded, job id -> the one-line error (`collected_text`).
    collected: dict[str, str] = field(default_factory=dict)
    #: Selected jobs another live process is running (their lock held), job id -> the holder in words: left to it,
    #: as queued ones are, never counted as run or timed here (`_read`).
    elsewhere: dict[str, str] = field(default_factory=dict)
    #: The warning for a plan that adds jobs to the one another spec file's live run trains (`_check_live_plan_kept`).
    beside: str | None = None
    #: The spec's executor, built by `check_executor` before the store is written and used by `execute`.
    executor: Executor | None = field(default=None, init=False, repr=False)
    #: Jobs the executor reported failed, job id -> the error it reported (`execute`): where the store does not say
    #: failed, the state could not be written (`RunResult.unrecorded`).
    reported_failed: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    #: The trackers the jobs feed, reached once a run (`live_tracking`): an MLflow server that is down warns once.
    _tracking: TrackingSpec | None = field(default=None, init=False, repr=False)
    _tracking_reached: bool = field(default=False, init=False, repr=False)
    #: How errors name the options: `usagg run`'s flags, or `usagg.api.run_study`'s arguments.
    wording: Wording = CLI_WORDING
    #: `--force`: bind this spec file beside another of the same study name (`PlanGate.bind`).
    force: bool = False
    #: This run's record in the store (`RunStore.run`), held from the first `init_store` until `release`.
    _running: contextlib.ExitStack | None = field(default=None, init=False, repr=False)
    #: The store as `_bind` decided from it (`PlanGate.view`): `init_store` decides again if it changed.
    _seen: tuple[object, ...] = field(default=(), init=False, repr=False)

    @classmethod
    def prepare(
        cls,
        study: Study,
        paradigms: Sequence[str] = (),
        only: Sequence[str] = (),
        retry_failed: bool = False,
        *,
        spec_file: Path | str | None = None,
        force: bool = False,
        wording: Wording = CLI_WORDING,
        as_written: Study | None = None,
    ) -> StudyRun:
        """Plan the study as far as the run store's results allow, select jobs and decide what is to run: not
        done, and not failed unless retried. A store run from another spec file with another plan is refused
        unless `force` (usagg/run/gate.py `PlanGate.bind`), and so is a plan whose overrides (`--set`, `--sweep`)
        hide done jobs that `as_written`, the study as its spec file holds it, plans. Errors name the options as
        `wording` does."""
        from usagg.plan import plan_stages

        store = store_for(study)
        evidence = store_evidence(store)
        planned = plan_stages(study, evidence)
        selection = make_selection(planned.jobs, paradigms, only, planned.waiting, wording)
        jobs = selection.pick(planned.jobs, planned.waiting)
        run = cls(study, planned.jobs, jobs, store, {}, retry_failed, selection=selection, wording=wording, force=force)
        run.waiting = [w for w in planned.waiting if selection.takes_waiting(w)]
        run.spec_file = None if spec_file is None else Path(spec_file).resolve()
        if as_written is not None:
            run.written_ids = frozenset(j.id for j in plan_stages(as_written, evidence).jobs)
        run._gate.check_no_store_elsewhere()
        run.kept = run._bind(force)
        run._check_live_plan_kept()
        run._decide()
        return run

    @property
    def _gate(self) -> PlanGate:
        """Whether this run's plan may be written into its store, and how its spec file is bound there."""
        return PlanGate(self.study, self.store, self.spec_file, self.wording)

    def _bind(self, force: bool) -> list[Job]:
        """Decide how `init_store` binds the spec file (`binding`) and which done jobs the plan hides
        (`replaced_done`), from the store as it is now (`_seen`); the jobs of other spec files kept (`PlanGate.bind`,
        which refuses a plan that would hide another file's jobs, or done jobs its spec file plans as written)."""
        self.binding, self.replaced_done, self._seen = "add", [], self._gate.view()
        binding = self._gate.bind(self.all_jobs, self.written_ids, force)
        self.binding, self.replaced_done = binding.how, binding.replaced_done
        return binding.kept

    def _check_live_plan_kept(self) -> None:
        """Refuse a plan that would drop or replace jobs another live process runs (`PlanGate.check_live_plan_kept`);
        `beside` says where it adds jobs beside another spec file's live run."""
        self.beside = None  # none, too, where the gate refuses
        self.beside = self._gate.check_live_plan_kept(self.all_jobs + self.kept)

    def next_stage(self) -> list[Job]:
        """Plan what the waiting paradigms can plan now that jobs are done; their new jobs join the run (the store
        records them) and are returned (empty when nothing new could be planned)."""
        from usagg.plan import plan_stages

        if not self.waiting:
            return []
        planned = plan_stages(self.study, store_evidence(self.store))
        known = {j.id for j in self.all_jobs}
        ready = {w.paradigm for w in self.waiting} - {w.paradigm for w in planned.waiting}
        new = [j for j in planned.jobs if j.id not in known and j.paradigm in ready]
        self.waiting = [w for w in self.waiting if w.paradigm not in ready]
        if not new:
            return []
        self.all_jobs = planned.jobs
        chosen = [j for j in new if self.selection.takes(j)]
        self.jobs += chosen
        self.init_store()
        ids = {j.id for j in chosen}
        self.todo = [jid for jid in self.todo if jid in ids]  # earlier stages' jobs had their turn
        for jid, source in list(self.twins.items()):  # a new job whose source is an earlier stage's left job trains
            if jid in ids and source not in self.todo and self.store.job_state(source) != "done":
                del self.twins[jid]
                self.todo.append(jid)
        return chosen

    def _state(self, job_id: str) -> str:
        """The state a run acts on, the one decision of `run` and `--dry-run`: the job's state, but pending for a
        done job whose metrics.json is damaged (`init_store`'s `RunStore.repair()` sets it aside and the run
        evaluates the job anew; a dry run never calls it and says so)."""
        state = self.store.job_state(job_id)
        if state == "done" and self.store.paths(job_id).metrics.is_file() and self.store.metrics(job_id) is None:
            return "pending"
        return state

    def _decide(self) -> None:
        """Read each selected job's state and lock (`_read`); to do: not done, not failed unless retried, not still
        queued on Slurm from an earlier `usagg run` (`_still_queued`), and not run by another live process
        (`elsewhere`)."""
        self.states, self.elsewhere = {}, {}
        for job in self.jobs:
            self.states[job.id], holder = self._read(job.id)
            if holder is not None:
                self.elsewhere[job.id] = holder
        check = self._still_queued()
        self.queued, self.queued_note = check.queued, check.note
        self.slurm_failed = check.failed
        self.states.update(dict.fromkeys(self.slurm_failed, "failed"))  # recorded by `init_store`: not run again
        self.todo = [
            jid
            for jid, state in self.states.items()
            if state != "done"
            and (state != "failed" or self.retry_failed)
            and jid not in self.queued
            and jid not in self.elsewhere
        ]
        self.twins = self._twins()
        self.todo = [jid for jid in self.todo if jid not in self.twins]

    def _read(self, job_id: str) -> tuple[str, str | None]:
        """The job's state (`_state`) and, where it is not done and a live process other than this one holds its
        lock (usagg/joblock.py), that holder in words, read as one: another `usagg run` trains the job, so this run
        leaves it to it (`--dry-run` says skip), as it leaves jobs queued on Slurm; one whose holder dies before
        this run ends is interrupted, and the next run resumes it. A job whose record still says pending counts too:
        a run takes the lock first and records running after it. The record is read before and after the lock, and
        all of it again (`READS` times at most) where the record changed between: a job the live run finished while
        its lock was read showed "interrupted, run" (its record read running, its lock then free)."""
        from usagg.joblock import describe_holder

        for _ in range(READS):
            before = self._state(job_id)
            alive = before != "done" and self.store.lock_alive(job_id) and not self.store.holds_lock(job_id)
            holder = self.store.job_lock(job_id).holder() if alive else None  # None: let go since read alive
            after = self._state(job_id)
            if after == before and (holder is not None or not alive):
                break
        if after == "done":
            return after, None
        return after, None if holder is None else describe_holder(holder)

    def refresh(self) -> None:
        """Read every selected job's state again and decide anew (`_decide`): `run --dry-run` shows its table after
        the data check, seconds after `prepare` read the store, and a job another run started or finished meanwhile
        read "running, resume" or "done, skip (running elsewhere)"."""
        self._decide()

    def shown_state(self, job_id: str) -> str:
        """The state `run --dry-run` shows beside the action, from the same reading (`_decide`): running for a job
        another live process holds, interrupted for a running one whose holder is gone, else the state acted on."""
        if job_id in self.elsewhere:
            return "running"
        state = self.states[job_id]
        return "interrupted" if state == "running" else state

    def _twins(self) -> dict[str, str]:
        """Jobs to do whose hash another job of the plan shares (a CG job of a one-task group and TSM on that task;
        CGD's and TS's): one training, so each reuses one source, `reuse_twins` filling it once that one is done.
        The source: a done job of the hash, else one still queued on Slurm, else one to do that has begun (its
        checkpoint or a running record kept), else the first to do."""
        by_hash: dict[str, list[str]] = {}
        for j in self.all_jobs:
            by_hash.setdefault(j.hash, []).append(j.id)
        out: dict[str, str] = {}
        todo = set(self.todo)
        for ids in by_hash.values():
            if len(ids) < 2 or not todo & set(ids):
                continue
            source = min(ids, key=lambda jid: (self._source_rank(jid, todo), ids.index(jid)))
            out.update({jid: source for jid in ids if jid != source and jid in todo})
        return out

    def _source_rank(self, job_id: str, todo: set[str]) -> int:
        """How fit a job of a hash is to be the one trained (lower first): done, queued on Slurm or running
        elsewhere, begun (a running
        record or a checkpoint kept), to do; a job none of those (failed, not retried) is never chosen."""
        state = self.store.job_state(job_id)
        if state == "done":
            return 0
        if job_id in self.queued or job_id in self.elsewhere:
            return 1
        if job_id not in todo:
            return 4
        return 2 if state == "running" or self.store.has_checkpoint(job_id) else 3

    def reuse_twins(self) -> list[str]:
        """Fill every twin whose source is done now (`RunStore.reuse`); the ids filled. A twin whose source is not
        done (failed, stopped, queued), or that another process holds, stays to do (`unfilled_text`)."""
        from usagg.joblock import JobLocked
        from usagg.store.records import StateConflict

        filled = []
        for jid, source in list(self.twins.items()):
            if self.store.job_state(source) != "done":
                continue
            try:
                if self.store.reuse(jid, source):
                    filled.append(jid)
            except (JobLocked, StateConflict):
                continue  # another `usagg run` holds or just filled it: said at the end if still not done
            del self.twins[jid]
        tracking = self.live_tracking() if filled else None
        if tracking is not None:
            from usagg.tracking import track_reused

            for jid in filled:
                track_reused(tracking, self.store.job(jid), self.store.root, self.store.metrics(jid) or {})
        return filled

    def _still_queued(self) -> QueueCheck:
        """Jobs not done that a `usagg run` submitted to Slurm and stopped waiting for (Ctrl-C, a lost login) whose
        element Slurm still has, job id -> Slurm job id, and a note saying so; submitting them again would train
        each twice. Also those whose element ended failed meanwhile (`QueueCheck.failed`). Only under the slurm
        executor (another one runs them here: the job lock keeps the two apart)."""
        from usagg.execute.slurm import QueueCheck

        if self.study.execution.executor != "slurm":
            return QueueCheck({}, None, {})
        recorded = {
            jid: sid
            for jid, state in self.states.items()
            if state != "done" and (sid := self.store.queued_on_slurm(jid))
        }
        if not recorded:
            return QueueCheck({}, None, {})
        from usagg.execute.slurm import still_queued

        return still_queued(self.store, recorded)

    def collect_slurm_failures(self) -> None:
        """Record each job of `slurm_failed` failed with its Slurm state and the setting to change, as a run that
        waited would have (`SlurmExecutor._outcome`), and drop its Slurm record: else the next run submitted it
        again with the same settings, unseen (a login lost every night: submit, out of memory, submit). A job
        whose lock a live process still holds is left to it, its record kept for the run after."""
        from usagg.execute.base import record_failure
        from usagg.execute.slurm import break_ended_locks, not_completed
        from usagg.store.records import ERROR_CHARS

        if not self.slurm_failed:
            return
        break_ended_locks(self.store, self.slurm_failed)
        for jid, (element, state) in self.slurm_failed.items():
            what = f"{not_completed(element, state, self.study.execution.slurm)}, while no `usagg run` waited for it"
            summary = record_failure(self.store.root, jid, what, summary=what[:ERROR_CHARS])
            if self.store.job_state(jid) == "failed":
                self.store.forget_slurm_job(jid)
                self.collected[jid] = summary

    @property
    def skipped_failed(self) -> list[str]:
        """Failed jobs left alone (no retry_failed)."""
        return [j.id for j in self.jobs if self.states[j.id] == "failed" and not self.retry_failed]

    @property
    def done(self) -> list[str]:
        return [j.id for j in self.jobs if self.states[j.id] == "done"]

    def action(self, job_id: str) -> str:
        """What running would do to a selected job: run, resume (a checkpoint is there), or skip and why."""
        if job_id in self.todo:
            if (layout := self.store.unresumable_layout(job_id)) is not None:
                return f"restart (last.pt of layout {layout})"  # `restart_text`
            if self.store.damaged_checkpoint(job_id):
                return "restart (last.pt damaged)"
            return "resume" if self.store.has_checkpoint(job_id) else "run"
        if job_id in self.twins:
            return "reuse"  # the result of `twins[job_id]`, the same settings: one training
        if job_id in self.queued:
            return f"skip (queued on Slurm as {self.queued[job_id]})"
        if job_id in self.elsewhere:
            return f"skip (running elsewhere: {self.elsewhere[job_id]})"
        return "skip (failed; --retry-failed)" if self.states[job_id] == "failed" else "skip (done)"

    def check_data(self, on_progress: CheckProgress | None = None) -> CheckReport:
        """Check the weights file, then the dataset the jobs will read (`check_model_weights`, `check_study_data`).

        Problems of the study's tasks, and dataset-wide ones, raise DataProblems; those of other
        tasks in the same data root land in `data_warnings` (one bad row elsewhere must not block
        every subset study). A run with jobs to do first checks that it can write the cache folder
        (usagg/cachedir.py `check_writable`): a read-only one is one paragraph, not every job failing at its first
        lock.
        """
        if self.todo:
            from usagg.cachedir import cache_root, check_writable

            check_writable(cache_root(self.study.data.cache_dir))
        check_model_weights(self.study)
        report, self.data_warnings, rows = check_study_data(self.study, on_progress)
        self.check_done_data(report.root, rows)
        return report

    def check_done_data(self, root: Path, rows: TaskRows | None = None) -> None:
        """UsaggError before anything is written where done jobs of this plan read other data than the jobs to run
        will: other rows than the data at `root` holds now, or the synthetic benchmark of another generator version
        (the fingerprints their splits.json recorded, usagg/data/splits.py `rows_fingerprints`): a study pointed at a
        corrected or larger copy of its data, or continued after an upgrade that changed the benchmark, would
        otherwise keep the old results as done and compare them with new ones. Done jobs that recorded none (an
        older usagg's) cannot be checked: `unrecorded_data` lists them for `unrecorded_data_text`."""
        from usagg.data.splits import read_rows, rows_fingerprints, synthetic_generator

        recorded = recorded_data(self.store, [job.id for job in self.all_jobs])
        self.unrecorded_data = [jid for jid, prints in recorded.items() if not prints]  # none, or from before them
        if not any(recorded.values()):
            return
        rows = rows if rows is not None else read_rows(self.study.data, root, self.study.tasks)
        generator = synthetic_generator(self.study.data)
        now = rows_fingerprints(rows, root, self.study.tasks, generator)
        changed: dict[str, Any] = {}  # task -> the rows a job recorded
        jobs, generators = [], {}  # the jobs of other rows; job id -> the other generator it recorded
        for jid, prints in recorded.items():
            was = {v for p in prints.values() if (v := recorded_generator(p)) is not None}
            if generator is not None and was - {generator}:
                generators[jid] = min(was - {generator})
                continue
            differ = {t: p for t, p in prints.items() if t in now and p["sha256"] != now[t]["sha256"]}
            if differ:
                jobs.append(jid)
                for t, p in differ.items():
                    changed.setdefault(t, p)
        if generators:
            raise UsaggError(changed_generator_text(self.study.name, generators, generator or 0, self.wording))
        if jobs:
            raise UsaggError(changed_data_text(self.study.name, root, jobs, changed, now))

    def init_store(self) -> None:
        """Write the resolved spec, the plan and a record per job (existing jobs keep their state), and bind the
        spec file to the store.

        The first step that writes. It calls `RunStore.repair()` first, the store's one repairing writer
        (damaged job records and metrics set aside and rebuilt, usagg/store/repair.py; reads never repair), so a job
        whose metrics were damaged runs again.
        """
        from usagg.spec.load import dump_study

        with self.store.plan_lock():  # the checks below and the writes they allow: one `usagg run` at a time
            if self._running is None:  # this run's first plan: checked again now that no other run can write one
                if self._gate.view() != self._seen:  # another run bound or planned since `prepare`
                    self.kept = self._bind(self.force)
                self._check_live_plan_kept()
                self._running = contextlib.ExitStack()
                about = {"spec": None if self.spec_file is None else str(self.spec_file), "jobs": len(self.all_jobs)}
                self._running.enter_context(self.store.run(about))
            elif self._gate.view() != self._seen:  # a later stage: what another run added meanwhile stays planned
                self.kept += self._gate.added_elsewhere(self.all_jobs + self.kept)
            self.store.repairs.clear()  # notes of damage seen while preparing: the repairs below replace them
            ours = {j.id for j in self.all_jobs}
            self.kept = [j for j in self.kept if j.id not in ours]  # a later stage may plan what another file did
            self.store.repair(self.all_jobs + self.kept)  # damaged files set aside and rebuilt: usagg/store/repair.py
            self.store.init(dump_study(self.study), self.all_jobs + self.kept)
            self.collect_slurm_failures()
            if self.spec_file is not None and self.binding != "none":
                self.store.add_spec_file(self.spec_file, replace=self.binding == "replace")
            self._seen = self._gate.view()  # as this run left it
        self._decide()  # after `repair()`: a job whose metrics were damaged is pending again

    def release(self) -> None:
        """End this run's record in the store (`RunStore.run`, taken by the first `init_store`): another `usagg run`
        may then replace the plan. `drive` calls it at its end; a second call does nothing."""
        if self._running is not None:
            self._running.close()
            self._running = None

    def execute(
        self,
        on_event: EventFn | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        **executor_options: Any,
    ) -> dict[str, str]:
        """Run the jobs to do through the spec's executor; returns job id -> state as the executor saw it.

        `on_event(job_id, event, info)` hears started / finished / failed / locked
        (usagg/execute/base.py); `on_progress` hears the running jobs' epochs and
        steps (in-process and local pool jobs: the executor passes it down to `run_one`).
        `executor_options` go to the executor's factory.
        """
        if not self.todo:
            return {}
        executor = self.check_executor(**executor_options)
        fn = job_function(self.study.execution, self.live_tracking())

        def heard(job_id: str, event: str, info: dict[str, Any]) -> None:
            if event == "failed":
                self.reported_failed[job_id] = str(info.get("error") or "the job reported failure")
            if on_event is not None:
                on_event(job_id, event, info)

        from usagg.execute.base import run_checked

        return run_checked(executor, self.study.execution.executor, self.todo, fn, heard, on_progress)

    def live_tracking(self) -> TrackingSpec | None:
        """The spec's trackers with an unreachable MLflow left out (`reachable_tracking`), asked once a run: the
        study's MLflow run is RUNNING from then until `end_tracking`. None when the spec tracks nothing."""
        tracking = self.study.tracking
        if tracking is None or not (tracking.tensorboard or tracking.mlflow):
            return None
        if not self._tracking_reached:
            self._tracking = reachable_tracking(tracking, self.study.name, self.store.root)
            self._tracking_reached = True
        return self._tracking

    def check_executor(self, **executor_options: Any) -> Executor:
        """The spec's executor, built once: `drive` builds it before the store is written, so `devices: cuda`
        without a visible GPU, a device index that is not visible or `executor: slurm` without sbatch is a
        UsaggError that leaves no half-made store behind (which later commands would take as the latest study)."""
        if self.executor is None:
            from usagg.execute.base import make_executor

            self.executor = make_executor(self.study.execution, self.store.root, **executor_options)
        return self.executor

    def finish(self) -> RunResult:
        """Rebuild results.csv from every done job and read the selected jobs' final states (and the failed ones'
        errors); the paths absolute."""
        csv_path = self.store.rebuild_results()
        states = {j.id: self.store.job_state(j.id) for j in self.jobs}
        errors = {jid: self.error(jid) for jid, state in states.items() if state == "failed"}
        queued = {jid: sid for jid, sid in self.queued.items() if states.get(jid) != "done"}
        unrecorded = {jid: e for jid, e in self.reported_failed.items() if states.get(jid) not in ("done", "failed")}
        return RunResult(
            self.store.root.resolve(), states, csv_path.resolve(), list(self.data_warnings), errors, queued, unrecorded
        )

    def error(self, job_id: str) -> str:
        """A failed job's error, one line, as its job.json records it (the traceback: its error.txt)."""
        summary = self.store.job_record(job_id).get("error")
        if isinstance(summary, str) and summary.strip():
            return summary.strip()
        return f"no error recorded (see {self.store.paths(job_id).log})"
