"""What a run tells whoever watches it: `RunObserver`, told every step by `drive` (usagg/cli/runs.py renders it), and
`CallbackObserver`, the API's, which passes job events and progress to two callables and logs warnings and failed
jobs. Nothing else in the run service prints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.data.check import CheckReport
    from usagg.engine.progress import Progress
    from usagg.execute.base import EventFn
    from usagg.plan import Job, Waiting
    from usagg.run.result import RunResult
    from usagg.run.studyrun import StudyRun

log = logging.getLogger(__name__)


class RunObserver:
    """What a run tells whoever watches it (usagg/cli/runs.py renders it; the API passes job events and progress
    to its callbacks). Every method does nothing here: an observer overrides what it shows."""

    def checking_data(self) -> AbstractContextManager[object]:
        """Around the data check (the CLI shows a spinner)."""
        return nullcontext()

    def data_progress(self, split: str, checked: int, images: int) -> None:
        """The data check's file checks so far: `checked` of the split's `images`."""

    def data_checked(self, run: StudyRun, report: CheckReport) -> None:
        """The data has no problems in the study's tasks (`run.data_warnings`: those of other tasks)."""

    def store_ready(self, run: StudyRun) -> None:
        """The store is written: `run.jobs` selected, `run.todo` to run, and in `run.store.repairs` what
        `RunStore.repair()` set aside and rebuilt."""

    def warning(self, message: str) -> None:
        """Something the user should know before the results (plain text, one paragraph)."""

    def stage_started(self, run: StudyRun, jobs: list[Job]) -> None:
        """A staged paradigm was planned from the jobs just done: `jobs` join the run (`run.todo` of them run)."""

    def reused(self, run: StudyRun, job_ids: list[str]) -> None:
        """Jobs filled from a done job of the same hash instead of training (`StudyRun.reuse_twins`)."""

    def running(self, todo: list[str]) -> AbstractContextManager[object]:
        """Around one executor call running `todo` (the CLI's live display)."""
        return nullcontext()

    def job_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        """A job started, finished, failed or was locked (usagg/execute/base.py)."""

    def progress(self, p: Progress) -> None:
        """The running job's epoch and step (in-process and local pool jobs): the run's progress sink, which the
        executor passes down to each job (usagg/engine/progress.py)."""

    def waiting(self, run: StudyRun, waiting: Waiting) -> None:
        """A staged paradigm is still not planned at the end: it waits for `waiting.needs`."""

    def finished(self, run: StudyRun, result: RunResult) -> None:
        """The run ended; `result` holds the selected jobs' states and results.csv."""


class CallbackObserver(RunObserver):
    """Job events and progress to two callables (`usagg.api.run_study`'s on_event and on_progress); warnings, each
    failed job (with its error) and the failed jobs a run skips to this module's logger (`usagg.run.observer`, under
    the `usagg` logger), so a notebook without callbacks still hears of a failure (Python prints warnings on stderr
    where logging is not set up). `usagg run` renders with its own observer (usagg/cli/runs.py), never this one, so
    nothing is said twice."""

    def __init__(self, on_event: EventFn | None = None, on_progress: Callable[[Progress], None] | None = None):
        self.on_event = on_event
        self.on_progress = on_progress
        self.run: StudyRun | None = None

    def warning(self, message: str) -> None:
        log.warning("%s", message)

    def store_ready(self, run: StudyRun) -> None:
        self.run = run
        skipped = run.skipped_failed
        if skipped:
            log.warning(
                "%s failed in an earlier run and %s skipped (retry_failed=True runs %s again): %s",
                counted(len(skipped), "job"),
                "is" if len(skipped) == 1 else "are",
                "it" if len(skipped) == 1 else "them",
                "; ".join(f"{jid}: {run.error(jid)}" for jid in skipped),
            )

    def job_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "failed":
            where = f" (traceback: {self.run.store.paths(job_id).error})" if self.run is not None else ""
            log.warning("job %s failed: %s%s", job_id, info.get("error") or "no error recorded", where)
        if self.on_event is not None:
            self.on_event(job_id, event, info)

    def progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def reused(self, run: StudyRun, job_ids: list[str]) -> None:
        """A reused job ends as a trained one does for `on_event`: 'finished', done, with the job it reuses."""
        for jid in job_ids:
            source = run.store.job_record(jid).get("reused_from")
            log.info("job %s: the result of %s (the same settings)", jid, source)
            if self.on_event is not None:
                self.on_event(jid, "finished", {"state": "done", "reused_from": source})
