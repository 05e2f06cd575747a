"""The run service: what `usagg run` does, as plain functions under the CLI (nnU-Net v2's run_training() idea).

One `StudyRun` goes through the steps of a run: plan and select the jobs
(`prepare`), refuse a dataset with problems (`check_data`), write the run store
(`init_store`), run the jobs through the executor the spec names (`execute`),
and rebuild results.csv (`finish`). `run_study` does them all; the CLI
(usagg/cli/runs.py) calls the steps one by one to render each, and
`usagg.api.run_study` calls `run_study`. Nothing here prints.

The device and CPU threads reach the engine as arguments of the job function
(`job_function`), never through this process's environment; a local pool worker is
pinned before torch loads, to its GPU or, on the CPU, to its share of the cores when
`execution.threads` is not given (usagg/execute/pool.py). Torch-free at import: the
engine, the data check and the executors are imported by the steps that use them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.errors import DataError, UsaggError

if TYPE_CHECKING:
    from usagg.affinity import Affinity
    from usagg.data.check import CheckReport
    from usagg.data.fmc_uia import Problem
    from usagg.engine.progress import Progress
    from usagg.execute.base import EventFn, JobFn
    from usagg.plan import EvidenceFor, Job, Waiting
    from usagg.spec.models import ExecutionSpec, Study, TrackingSpec
    from usagg.store import RunStore

#: Problems listed in a DataProblems message (the CLI lists more, see `usagg data check` for all).
PROBLEMS_IN_MESSAGE = 10


class DataProblems(DataError):
    """The study's tasks (or the whole dataset) have problems, so nothing is trained. Exit code 1.

    `problems` are the blocking ones (default: all of `report`); `report` holds every problem found.
    """

    exit_code = 1

    def __init__(self, report: CheckReport, problems: list[Problem] | None = None) -> None:
        self.report = report
        self.problems = list(report.problems) if problems is None else problems
        head = f"the dataset at {report.root} has {len(self.problems)} problem(s) in this study's tasks"
        lines = [f"{head}; not training:"]
        for p in self.problems[:PROBLEMS_IN_MESSAGE]:
            where = f"{p.where()}: " if p.row else ""
            lines.append(f"  {p.kind} {where}{p.message}")
        if len(self.problems) > PROBLEMS_IN_MESSAGE:
            lines.append(f"  ... and {len(self.problems) - PROBLEMS_IN_MESSAGE} more (usagg data check {report.root})")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- options as spec overrides


def executor_override(name: str, what: str = "--executor") -> str:
    """A spec override choosing a registered executor (UsaggError naming `what` otherwise)."""
    from usagg.execute.registry import executor_names

    names = executor_names()
    if name not in names:
        raise UsaggError(f"{what} {name!r}: choose one of {', '.join(names)}")
    return f"execution.executor={name}"


def devices_override(devices: str | int | Sequence[int], what: str = "--devices") -> str:
    """A spec override of execution.devices from cpu, auto, cuda, GPU indices (0,1) or a list of indices."""
    if isinstance(devices, int):
        ids = [devices]
    elif isinstance(devices, str):
        d = devices.strip()
        if d in ("cpu", "auto", "cuda"):
            return f"execution.devices={d}"
        try:
            ids = [int(x) for x in d.split(",") if x.strip()]
        except ValueError:
            raise UsaggError(f"{what} {devices!r}: give cpu, auto, cuda or GPU indices such as 0 or 0,1") from None
    else:
        ids = [int(x) for x in devices]
    return f"execution.devices=[{', '.join(map(str, ids))}]"


def run_overrides(
    sets: Sequence[str] = (),
    *,
    executor: str | None = None,
    devices: str | int | Sequence[int] | None = None,
    threads: int | None = None,
) -> list[str]:
    """`--set` overrides plus the executor, devices and threads as spec overrides (they never change a job id)."""
    out = list(sets)
    if executor is not None:
        out.append(executor_override(executor))
    if devices is not None:
        out.append(devices_override(devices))
    if threads is not None:
        out.append(f"execution.threads={threads}")
    return out


# --------------------------------------------------------------------------- jobs and store


def store_for(study: Study) -> RunStore:
    """The study's run store, <output_root>/<name>."""
    from usagg.store import RunStore

    return RunStore(Path(study.output_root) / study.name)


class StoreEvidence:
    """What a staged planner reads of its needed jobs (usagg/paradigms.py `Evidence`), from the run store."""

    def __init__(self, store: RunStore, jobs: list[Job]) -> None:
        self.store = store
        self.jobs = jobs

    def affinity(self) -> Affinity:
        """The mean of the jobs' affinity.json; a file missing, damaged or of another job is a UsaggError."""
        from usagg.affinity import check_source, mean_affinity, read_affinity

        found = []
        for j in self.jobs:
            path = self.store.paths(j.id).affinity
            if not path.is_file():
                raise UsaggError(
                    f"job {j.id} is done but {path} is missing, so AG cannot group its tasks; delete the folder "
                    f"{path.parent} and run the study again to measure it"
                )
            aff = read_affinity(path)
            check_source(aff, path, j.id, j.hash, j.task_ids)
            found.append(aff)
        return mean_affinity(found)


def store_evidence(store: RunStore) -> EvidenceFor:
    """Evidence of jobs once every one of them is done in `store` (None before)."""

    def evidence_for(jobs: list[Job]) -> StoreEvidence | None:
        if not jobs or not store.exists() or any(store.job_state(j.id) != "done" for j in jobs):
            return None
        return StoreEvidence(store, jobs)

    return evidence_for


def waiting_selected(waiting: Waiting, paradigms: Sequence[str], only: Sequence[str]) -> bool:
    """Whether a selection (`--paradigm`, `--only`) takes a paradigm still waiting for its needed jobs."""
    from fnmatch import fnmatchcase

    if not paradigms and not only:
        return True
    if waiting.paradigm in paradigms:
        return True
    for sel in only:
        key, pattern = parse_selector(sel)
        if key in (None, "paradigm") and fnmatchcase(waiting.paradigm, pattern):
            return True
    return False


#: `--only KEY:PATTERN` keys and what of a job they match (each PATTERN may be a glob such as 'fetal_*').
SELECTOR_KEYS = ("id", "task", "group", "paradigm")


def _selector_values(job: Job, key: str) -> list[str]:
    if key == "id":
        return [job.id]
    if key == "task":
        return job.task_ids
    if key == "group":  # the group the job stands for: its task's (TS), its own (CG); none for AU
        return [job.group] if job.group else []
    return [job.paradigm]


def parse_selector(selector: str) -> tuple[str | None, str]:
    """(KEY, PATTERN) of a KEY:PATTERN or KEY=PATTERN selector with a known KEY, else (None, the whole selector)."""
    for sep in (":", "="):
        key, found, pattern = selector.partition(sep)
        if found and key in SELECTOR_KEYS:
            return key, pattern
    return None, selector


def job_matches(job: Job, selector: str) -> bool:
    """Whether `selector` picks `job`: KEY:PATTERN or KEY=PATTERN (id, task, group, paradigm), or a bare PATTERN
    for any of them; a bare pattern with a '-' also matches the job ids it begins (`TS-breast`).

    Patterns are shell globs (fnmatch, case-sensitive), so `--only 'TS-breast*'`, `--only fetal_head`
    (every job that trains it), `--only task=breast_lesion` or `--only group:Fetal` select without copying
    a hashed id.
    """
    from fnmatch import fnmatchcase

    key, pattern = parse_selector(selector)
    if key is not None:
        return any(fnmatchcase(v, pattern) for v in _selector_values(job, key))
    values = [v for k in SELECTOR_KEYS for v in _selector_values(job, k)]
    prefix = "-" in selector and job.id.startswith(selector)  # TS-breast: an id begins <paradigm>-<name>
    return prefix or any(fnmatchcase(v, selector) for v in values)


#: Fewest training images a task may have in a job: batch statistics (the heads' normalisation) need two.
MIN_TRAIN = 2


def select_jobs(
    jobs: list[Job], paradigms: Sequence[str] = (), only: Sequence[str] = (), waiting: Sequence[Waiting] = ()
) -> list[Job]:
    """The planned jobs narrowed to `paradigms` and to those any `only` selector picks (see `job_matches`).

    A selected paradigm still `waiting` brings the jobs it needs. A paradigm or selector that picks
    nothing is a user error listing what exists.
    """
    if not paradigms and not only:
        return list(jobs)
    needs = {jid for w in waiting if waiting_selected(w, paradigms, only) for jid in w.needs}
    pulled = [j for j in jobs if j.id in needs]
    waiting_names = {w.paradigm for w in waiting}
    paradigms = [p for p in paradigms if p not in waiting_names]
    only = [sel for sel in only if not any(waiting_selected(w, (), [sel]) for w in waiting)]
    if not paradigms and not only:  # only waiting paradigms were asked for: the jobs they need
        return pulled
    selected = _select(jobs, paradigms, only)
    return selected + [j for j in pulled if j not in selected]


def _select(jobs: list[Job], paradigms: Sequence[str], only: Sequence[str]) -> list[Job]:
    if paradigms:
        known = sorted({j.paradigm for j in jobs})
        bad = [p for p in paradigms if p not in known]
        if bad:
            raise UsaggError(f"--paradigm {', '.join(bad)}: this study plans {', '.join(known)}")
        jobs = [j for j in jobs if j.paradigm in paradigms]
    if only:
        bad = [sel for sel in only if not any(job_matches(j, sel) for j in jobs)]
        if bad:
            tasks = sorted({t for j in jobs for t in j.task_ids})
            groups = sorted({g for j in jobs for g in _selector_values(j, "group")})
            raise UsaggError(
                f"--only {', '.join(bad)} matches no job of this selection. A selector is a job id or its beginning, "
                "a task, a group or a paradigm, or KEY:PATTERN / KEY=PATTERN with KEY one of id, task, group, "
                "paradigm (globs such as "
                f"'TS-*' work). Jobs: {', '.join(j.id for j in jobs) or 'none'}; tasks: {', '.join(tasks)}; "
                f"groups: {', '.join(groups) or 'none'}; paradigms: {', '.join(sorted({j.paradigm for j in jobs}))}"
            )
        jobs = [j for j in jobs if any(job_matches(j, sel) for sel in only)]
    return jobs


def engine_device(execution: ExecutionSpec) -> str | None:
    """The device the jobs' engine uses: cpu when asked for; cuda for local GPUs; else None (the engine picks).

    Local pool workers are pinned to one GPU each, which they see as cuda:0, so
    "cuda" is right for every local GPU setting; "auto", and GPUs under an
    executor that places jobs itself (Slurm), leave the choice to the engine on
    the node (the first visible GPU, else the CPU).
    """
    if execution.devices == "cpu":
        return "cpu"
    if execution.executor != "local" or execution.devices == "auto":
        return None
    return "cuda"


def job_function(execution: ExecutionSpec, tracking: TrackingSpec | None = None) -> JobFn:
    """`run_one` with device, threads, accel and trackers bound: picklable, so it reaches pool workers and Slurm
    nodes."""
    from usagg.engine.runner import run_one  # torch-free at import: the engine loads inside the call

    return functools.partial(
        run_one,
        device=engine_device(execution),
        threads=execution.threads,
        accel=execution.accel,
        tracking=tracking if tracking is not None and (tracking.tensorboard or tracking.mlflow) else None,
    )


def reachable_tracking(tracking: TrackingSpec, study_name: str, store_root: Path) -> TrackingSpec:
    """The study's trackers, MLflow left out when its server cannot be reached (said once, not once per job)."""
    if tracking.mlflow is None:
        return tracking
    from usagg.tracking import study_parent_run

    if study_parent_run(tracking.mlflow, study_name, store_root) is None:
        return tracking.model_copy(update={"mlflow": None})
    return tracking


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class RunResult:
    """What a run left: where its store is, each selected job's final state, and the results table."""

    store_root: Path
    states: dict[str, str]
    results_csv: Path
    #: Problems of tasks the study does not train (they did not block it; see `StudyRun.check_data`).
    data_warnings: list[Problem] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [jid for jid, s in self.states.items() if s == "failed"]

    @property
    def ok(self) -> bool:
        """True when no selected job failed."""
        return not self.failed


@dataclass
class StudyRun:
    """One `usagg run` of a study, step by step; `prepare` changes nothing on disk."""

    study: Study
    all_jobs: list[Job]
    jobs: list[Job]
    store: RunStore
    states: dict[str, str]  # job_state of each selected job when prepared
    retry_failed: bool = False
    todo: list[str] = field(default_factory=list)
    #: Problems of tasks outside the study found by `check_data` (never blocking; the CLI lists them).
    data_warnings: list[Problem] = field(default_factory=list)

    #: Staged paradigms still waiting for the jobs they need (usagg/plan.py `Waiting`).
    waiting: list[Waiting] = field(default_factory=list)
    paradigms: tuple[str, ...] = ()
    only: tuple[str, ...] = ()

    @classmethod
    def prepare(
        cls, study: Study, paradigms: Sequence[str] = (), only: Sequence[str] = (), retry_failed: bool = False
    ) -> StudyRun:
        """Plan the study as far as the run store's results allow, select jobs and decide what is to run: not
        done, and not failed unless retried."""
        from usagg.plan import plan_stages

        store = store_for(study)
        planned = plan_stages(study, store_evidence(store))
        jobs = select_jobs(planned.jobs, paradigms, only, planned.waiting)
        run = cls(study, planned.jobs, jobs, store, {}, retry_failed)
        run.waiting = [w for w in planned.waiting if waiting_selected(w, paradigms, only)]
        run.paradigms, run.only = tuple(paradigms), tuple(only)
        run._decide()
        return run

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
        chosen = select_jobs(new, [p for p in self.paradigms if p in ready], self._only_for(new))
        self.jobs += chosen
        self.init_store()
        ids = {j.id for j in chosen}
        self.todo = [jid for jid in self.todo if jid in ids]  # earlier stages' jobs had their turn
        return chosen

    def _only_for(self, new: list[Job]) -> list[str]:
        """The `--only` selectors that pick any of the new jobs (the ones naming the paradigm itself included)."""
        return [sel for sel in self.only if any(job_matches(j, sel) for j in new)]

    def _decide(self) -> None:
        """Read each selected job's state; to do: not done, and not failed unless retried."""
        self.states = {j.id: self.store.job_state(j.id) for j in self.jobs}
        self.todo = [
            jid for jid, state in self.states.items() if state != "done" and (state != "failed" or self.retry_failed)
        ]

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
            return "resume" if self.store.has_checkpoint(job_id) else "run"
        return "skip (failed; --retry-failed)" if self.states[job_id] == "failed" else "skip (done)"

    def check_data(self) -> CheckReport:
        """Check the weights file, then the dataset the jobs will read (generating the synthetic one on first use).

        A `model.weights` that would not load into the backbone raises UsaggError (exit 2) before
        anything is written (usagg/model/weights_check.py `check_weights`). Problems of the study's tasks,
        and dataset-wide ones, raise DataProblems; those of other tasks in the same data root land in
        `data_warnings` (one bad row elsewhere must not block every subset study).
        """
        from usagg.data.check import check_dataset
        from usagg.data.scope import split_by_scope
        from usagg.data.source import dataset_root

        if self.study.model.weights is not None:
            from usagg.model.weights_check import check_weights

            check_weights(self.study.model.weights, self.study.model.backbone)
        data = self.study.data
        splits = ("train", "val") if data.test_split == "val" else ("train",)
        report = check_dataset(
            dataset_root(data),
            self.study.tasks,
            splits=splits,
            leakage=data.leakage,
            near_duplicate_threshold=data.near_duplicate_threshold,
            test_carve=None if data.test_split == "val" else (data.test_fraction, data.split_seed),
        )
        blocking, self.data_warnings = split_by_scope(report, [t.id for t in self.study.tasks])
        self.data_warnings += report.warnings  # `data.leakage: warn`: near duplicates reported, never blocking
        if blocking:
            raise DataProblems(report, blocking)
        self._check_split_sizes(dataset_root(data))
        return report

    def _check_split_sizes(self, root: Path) -> None:
        """Every task keeps at least MIN_TRAIN training images at every fraction (a batch of one image cannot
        train: batch statistics need two), and one selection image when a selection split is asked for."""
        from usagg.data.splits import make_splits

        short = []
        for fraction in self.study.fractions:
            for task_id, sp in make_splits(self.study.data, root, self.study.tasks, fraction, 0).items():
                if len(sp.train) < MIN_TRAIN:
                    short.append(f"{task_id} has {len(sp.train)} training image(s) at fraction {fraction:g}")
                if self.study.data.selection_fraction > 0 and not sp.select:
                    short.append(f"{task_id} has no selection image")
        if short:
            raise UsaggError(
                f"data.selection_fraction {self.study.data.selection_fraction:g} and fractions "
                f"{[float(f) for f in self.study.fractions]} leave too little data: {'; '.join(short[:6])}"
                + (f" (and {len(short) - 6} more)" if len(short) > 6 else "")
                + f". Every task needs at least {MIN_TRAIN} training images; raise the fractions or lower "
                "data.selection_fraction (0 turns selection off)."
            )

    def init_store(self) -> None:
        """Write the resolved spec, the plan and a record per job (existing jobs keep their state).

        The first step that writes, so damaged job records and metrics are repaired here
        (set aside, rebuilt: usagg/store.py) and a job whose metrics were damaged runs again.
        """
        from usagg.spec.load import dump_study

        self.store.repair(self.all_jobs)  # sets damaged files aside, rebuilds them: usagg/store.py
        self.store.init(dump_study(self.study), self.all_jobs)
        self._decide()  # a later stage brings jobs not read yet
        for job_id in self.done:
            self.store.metrics(job_id)  # a damaged metrics.json sends its job back to pending
        self._decide()

    def execute(
        self,
        on_event: EventFn | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        **executor_options: Any,
    ) -> dict[str, str]:
        """Run the jobs to do through the spec's executor; returns job id -> state as the executor saw it.

        `on_event(job_id, event, info)` hears started / finished / failed / locked
        (usagg/execute/base.py); `on_progress` hears the running job's epoch and
        step (in-process jobs only). `executor_options` go to the executor's factory.
        """
        if not self.todo:
            return {}
        from usagg.engine import progress
        from usagg.execute.registry import make_executor

        executor = make_executor(self.study.execution, self.store.root, **executor_options)
        tracking = reachable_tracking(self.study.tracking, self.study.name, self.store.root)
        fn = job_function(self.study.execution, tracking)
        if on_progress is None:
            return executor.run(self.todo, fn, on_event)
        with progress.listening(on_progress):
            return executor.run(self.todo, fn, on_event)

    def finish(self) -> RunResult:
        """Rebuild results.csv from every done job and read the selected jobs' final states."""
        csv_path = self.store.rebuild_results()
        states = {j.id: self.store.job_state(j.id) for j in self.jobs}
        return RunResult(self.store.root, states, csv_path, list(self.data_warnings))


def run_study(
    study: Study,
    *,
    paradigms: Sequence[str] = (),
    only: Sequence[str] = (),
    retry_failed: bool = False,
    on_event: EventFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Check the data, then train and evaluate every selected job not yet done; DataProblems on bad data."""
    run = StudyRun.prepare(study, paradigms, only, retry_failed)
    run.check_data()
    run.init_store()
    run.execute(on_event, on_progress)
    while run.next_stage():  # a staged paradigm (AG) planned from the jobs just done
        run.execute(on_event, on_progress)
    return run.finish()
