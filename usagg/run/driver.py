"""The run driver: `drive` is the one sequence of a run's steps (`StudyRun`: check the data, write the store, run the
jobs to do and each stage a staged paradigm plans after them, rebuild results.csv), each told to a `RunObserver`;
`usagg run` (usagg/cli/runs.py, its observer renders) and `usagg.api.run_study` (through `run_study`) both call
it (nnU-Net v2's run_training() idea: what the command does, as a plain function under it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.run import notes
from usagg.run.jobfunction import end_tracking
from usagg.run.observer import CallbackObserver, RunObserver
from usagg.run.options import CLI_WORDING, Wording
from usagg.run.studyrun import StudyRun

if TYPE_CHECKING:
    from usagg.engine.progress import Progress
    from usagg.execute.base import EventFn
    from usagg.run.result import RunResult
    from usagg.spec.models import Study


def drive(run: StudyRun, observer: RunObserver | None = None) -> RunResult:
    """The one run sequence of `usagg run` and `usagg.api.run_study`: build the executor (`check_executor`: a GPU or
    a Slurm host asked for that is not there), check the data, repair and write the store
    (`RunStore.repair()`, then `init`), run the jobs to do, then each stage a staged paradigm (AG) plans from the
    jobs just done, and rebuild results.csv; each step told to `observer`, the study's MLflow run ended with it
    (`end_tracking`). DataProblems (and other user errors) before anything is written."""
    try:
        return _drive(run, observer or RunObserver())
    finally:
        run.release()  # another `usagg run` may replace the plan from now on


def _drive(run: StudyRun, observer: RunObserver) -> RunResult:
    if run.todo:  # before the data check (seconds to minutes) and the first write: a GPU asked for, sbatch, srun
        run.check_executor()
    with observer.checking_data():
        report = run.check_data(observer.data_progress)
    observer.data_checked(run, report)
    run.init_store()
    observer.store_ready(run)
    for note in (
        notes.collected_text(run),
        run.queued_note,
        notes.elsewhere_text(run),
        run.beside,
        notes.replaced_text(run),
        notes.restart_text(run),
        notes.changed_code_text(run),
        notes.unrecorded_data_text(run),
        notes.no_selection_text(run),
    ):
        if note:
            observer.warning(note)
    if run.todo and run.study.model.weights is None:
        observer.warning(notes.random_init_warning(run.study))
    try:
        _reuse(run, observer)
        _run_todo(run, observer)
        _reuse(run, observer)
        while new := run.next_stage():
            observer.stage_started(run, new)
            if note := notes.affinity_warning(run):
                observer.warning(note)
            _run_todo(run, observer)
            _reuse(run, observer)
        for w in run.waiting:
            observer.waiting(run, w)
        result = run.finish()
        if unfilled := notes.unfilled_text(run):
            observer.warning(unfilled)
        if untrained := notes.untrained_text(run.store, result.states):
            observer.warning(untrained)
        if selection := notes.selection_text(run, result.states):
            observer.warning(selection)
    except BaseException as err:  # the study's tracker run ends with it, then the error goes on
        end_tracking(run, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        if isinstance(err, Exception):  # a run refused or failed after writing the store: `_settle_results`
            _settle_results(run)
        raise
    if not result.ok or not result.unfinished:  # an unfinished study's run stays RUNNING for the run that ends it
        end_tracking(run, "done" if result.ok else "failed")
    observer.finished(run, result)
    return result


def _settle_results(run: StudyRun) -> None:
    """Rebuild results.csv from the done jobs, as `StudyRun.finish` does, for a run that ended in an error once
    `init_store` had written the plan (its workers refused to start in a script without the `__main__` guard,
    usagg/workerstart.py): left as it was, the table read as behind its jobs, so `usagg status` and `compare` saw
    another store than before the run. Ctrl-C is left alone (the user wants out now; the next run rebuilds it), and
    so is an error of the rebuild itself: the run's own error is the one to say."""
    with contextlib.suppress(Exception):
        run.store.rebuild_results()


def _reuse(run: StudyRun, observer: RunObserver) -> None:
    """Fill the twins whose source is done (`StudyRun.reuse_twins`) and say so."""
    filled = run.reuse_twins()
    if filled:
        observer.reused(run, filled)


def _run_todo(run: StudyRun, observer: RunObserver) -> None:
    if run.todo:
        with observer.running(run.todo):
            run.execute(observer.job_event, observer.progress)


def run_study(
    study: Study,
    *,
    paradigms: Sequence[str] = (),
    only: Sequence[str] = (),
    retry_failed: bool = False,
    spec_file: Path | str | None = None,
    force: bool = False,
    observer: RunObserver | None = None,
    on_event: EventFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    wording: Wording = CLI_WORDING,
    as_written: Study | None = None,
) -> RunResult:
    """Check the data, then train and evaluate every selected job not yet done (`drive`); DataProblems on bad data.

    `observer` hears every step; without one, `on_event` and `on_progress` hear the jobs (`CallbackObserver`, which
    also logs each failed job). Errors name the options as `wording` does (`API_WORDING` for `usagg.api`).
    """
    run = StudyRun.prepare(
        study, paradigms, only, retry_failed, spec_file=spec_file, force=force, wording=wording, as_written=as_written
    )
    return drive(run, observer or CallbackObserver(on_event, on_progress))
