"""`usagg run` and `usagg status`: train a study's jobs into its run store, and show where they stand.

A thin layer: options become spec overrides, the run driver (usagg/run/driver.py
`drive`, the one `usagg.api.run_study` calls too) does the work, and this module's
`ConsoleObserver` renders each step (rich tables and progress). torch, the engine
and the data code are imported by the service's steps only, so `import usagg.cli.app`
(and `usagg --help`) stays fast.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from usagg.cli.display import (
    data_check_text,
    duration_text,
    eta_text,
    in_notebook,
    line_console,
    make_display,
    print_table,
    unchanged_text,
)
from usagg.cli.eta import Clock, job_kinds, stored_eta
from usagg.errors import UsaggError
from usagg.run.observer import RunObserver  # light: the service imports its heavy parts where it uses them
from usagg.safepath import printable
from usagg.wording import counted

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console

    from usagg.cli.eta import Eta
    from usagg.data.check import CheckReport
    from usagg.engine.progress import Progress
    from usagg.plan import Job, Waiting
    from usagg.run.checks import DataProblems
    from usagg.run.result import RunResult
    from usagg.run.studyrun import StudyRun
    from usagg.store import RunStore

RUN_HELP = """Train and evaluate a study's jobs (TS, CG, AU, AG and the controls) into its run store, resuming where it
stopped.

Done jobs are skipped; failed ones only with --retry-failed; a job killed mid-way resumes from its last
epoch checkpoint. The weights and the dataset are checked first and training is refused when they have
problems (--dry-run makes the same checks). Several --only selectors of different keys must all match
(--only task=breast_lesion --only TS: one job); of the same key, any. A study name belongs to the spec file
that first ran it: another file of that name that plans other jobs is refused unless --force (a copy that plans
the same jobs runs, and one that only adds jobs to them is bound too); so is a --set or --sweep whose plan would
hide done jobs of the spec file's own (give the variant its own store: --set name=NEW). Exits 1 when a job failed
or the data has problems, 2 on a user error (a bad spec, path or option), 3 when selected jobs were left neither
done nor failed (queued on Slurm, run by another process, waiting for a job of the same settings): the same usagg
run goes on with them.

Examples:

  usagg run studies/demo.yaml

  usagg run studies/demo.yaml --paradigm TS

  usagg run studies/demo.yaml --set training.epochs=2 --set name=demo-quick

  (a variant in a store of its own, runs/demo-quick: the demo's stays as it is)

  usagg run studies/fmc_uia.yaml --executor slurm

  usagg run studies/demo.yaml --only 'AU-*' --retry-failed

  (the job ids: usagg plan studies/demo.yaml)

  usagg run studies/demo.yaml --only task=fetal_head --only 'CG-*'

  (the CG job that trains fetal_head)

  usagg run studies/demo.yaml --dry-run
"""

STATUS_HELP = """Show each job of a run store: state, duration and primary metrics (the error for failed jobs).

Examples:

  usagg status                 (the most recently modified study under runs/)

  usagg status runs/demo

  usagg status runs/demo --json
"""

#: Tasks shown per job in the summary's metrics column before eliding the rest.
MAX_TASKS_SHOWN = 4


# --------------------------------------------------------------------------- rendering (no torch)


def _primary_text(store: RunStore, job_id: str) -> str:
    """'task: METRIC value' per task from the job's metrics ('' when there are none)."""
    try:
        metrics = store.metrics(job_id)
    except UsaggError:
        return "(unreadable metrics.json)"
    parts = []
    for task_id, entry in ((metrics or {}).get("tasks") or {}).items():
        name = entry.get("primary")
        value = (entry.get("metrics") or {}).get(name)
        if name is None:  # a metrics.json written by other means, without the primary metric's name
            parts.append(f"{task_id}: —")
            continue
        parts.append(f"{task_id}: {name} {'n/a' if value is None else f'{value:.4g}'}")
    if len(parts) > MAX_TASKS_SHOWN:
        parts = [*parts[:MAX_TASKS_SHOWN], f"... (+{len(parts) - MAX_TASKS_SHOWN} tasks)"]
    return "\n".join(parts)


def _job_device(store: RunStore, job_id: str, record: dict[str, Any], state: str) -> str | None:
    """Where the job ran or runs: its attempt's device from job.json ('cuda:1 (NVIDIA H100 80GB HBM3)'), else, for a
    job done before that was recorded, metrics.json's ('cuda:1'); None while it has not chosen one."""
    device = record.get("device")
    if isinstance(device, str) and device:
        return device
    if state != "done":
        return None
    try:
        training = (store.metrics(job_id) or {}).get("training")
    except UsaggError:
        return None
    found = training.get("device") if isinstance(training, dict) else None
    return found if isinstance(found, str) and found else None


def _summary_table(store: RunStore, job_ids: list[str], title: str) -> Any:
    """One row per job: state (with the job's device under it once it has chosen one: a column of its own cost a
    60-column terminal its metrics' words), duration and its primary metrics, an error's first line or where a
    running job is, and under them, where its attempt's last.pt was not resumed, that it started over and why
    (`restart_line`)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(printable(title)), show_lines=False)
    table.add_column("job", overflow="fold", no_wrap=True)  # the id whole, so a log can be searched for it
    for col in ("state", "duration", "primary metrics"):
        table.add_column(col, overflow="fold")  # fold, never cut: an error's first line is shown whole
    queued = {j: sid for j in job_ids if store.display_state(j) == "pending" and (sid := store.queued_on_slurm(j))}
    if queued:  # one sacct call for all of them (submitit imported only where a run used Slurm)
        from usagg.execute.slurm import queue_states

        queued = queue_states(store, queued)
    for jid in job_ids:
        record = store.job_record(jid) if store.has_job(jid) else {}
        state = store.display_state(jid)
        detail = _primary_text(store, jid) if state == "done" else ""
        duration = duration_text(record.get("duration_s"))
        attempts = record.get("attempts")
        if duration and state == "done" and isinstance(attempts, int) and attempts > 1:  # duration_s: the last one's
            duration += f"\n[dim]last of {attempts} attempts[/]"
        if state == "failed" and record.get("error"):
            line = escape(printable(_error_line(store, jid, record["error"])))
            path = store.paths(jid).error
            detail = f"[red]{line}[/]" + (f"\n[dim]{escape(printable(str(path)))}[/]" if path.is_file() else "")
        elif state == "running":
            where = _running_progress(store, jid, record)
            duration = duration_text(where.elapsed_s)
            detail = where.text()
        elif state == "pending" and jid in queued:  # submitted, not collected: sacct's state, its log once started
            detail = escape(printable(queued[jid]))
        else:
            detail = escape(printable(detail))  # task and metric names from metrics.json: data, not instructions
        restarted = restart_line(record)
        if restarted:
            line = f"[yellow]{escape(printable(restarted))}[/]"
            detail = f"{detail}\n{line}" if detail else line
        device = _job_device(store, jid, record, state) if state in ("done", "running", "failed") else None
        card = f"\n[dim]{escape(printable(device.split(' (')[0]))}[/]" if device else ""  # the card's name: --json
        table.add_row(escape(jid), _state_text(state) + card, duration, detail)
    return table


def restart_line(record: dict[str, Any]) -> str | None:
    """'started over from epoch 1: last.pt is damaged (...), kept as last.pt.damaged' for a job whose last attempt
    did not resume its last.pt (job.json's `restarted`, `RunStore.note_restart`), else None."""
    why = record.get("restarted")
    return f"started over from epoch 1: {why}" if isinstance(why, str) and why else None


@dataclass(frozen=True)
class RunningJob:
    """Where a running job is, from its store (`usagg status`): the epoch it trains (1-based), of how many, the
    seconds since this attempt started and the ETA (usagg/cli/eta.py `stored_eta`)."""

    epoch: int
    epochs: int
    elapsed_s: float | None
    eta: Eta | None

    def text(self) -> str:
        """'epoch 3/20, ETA ~4m10s' ('testing' once every epoch is done)."""
        if self.epoch > self.epochs:
            return f"epoch {self.epochs}/{self.epochs}, testing"
        return f"epoch {self.epoch}/{self.epochs}" + (f", ETA {eta_text(self.eta)}" if self.eta is not None else "")


def _running_progress(store: RunStore, job_id: str, record: dict[str, Any]) -> RunningJob:
    """A running job's epoch, elapsed time and ETA from its history.csv and job.json (`RunStore.epochs_done`)."""
    import time
    from datetime import datetime

    done, written = store.epochs_done(job_id)
    # the record's own fields are checked by the store (a bad one is damage); its Job's settings are not
    training = record["job"].get("training")
    epochs = training.get("epochs") if isinstance(training, dict) else None
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else 0
    started = record.get("started")
    begun = datetime.fromisoformat(started).timestamp() if isinstance(started, str) else None
    # a record from before start_epoch was kept: only a first attempt is known to start at epoch 0
    first = record.get("start_epoch", 0 if int(record.get("attempts") or 0) <= 1 else None)
    now = time.time()
    eta = None
    if begun is not None and written is not None and first is not None:
        eta = stored_eta(done, int(first), epochs, begun, written, now)
    return RunningJob(done + 1, epochs, None if begun is None else max(0.0, now - begun), eta)


def _error_line(store: RunStore, job_id: str, summary: str) -> str:
    """The failed job's error message, its first line whole, from error.txt.

    The store keeps a one-line summary cut at `ERROR_CHARS` (usagg/engine/runner.py,
    usagg/execute/base.py `summarize_error`); the line of error.txt it was cut from is
    shown instead, so a long message is never cut in `status` or the run summary. A longer
    summary was not written by usagg (a received store): only what usagg would keep of it is used.
    """
    from usagg.store.records import ERROR_CHARS

    summary = summary[:ERROR_CHARS]
    text = store.error_text(job_id)
    stem = summary[:-3] if summary.endswith("...") else summary
    if text and stem:
        for line in text.splitlines():
            line = line.strip()
            i = line.find(stem)
            # the traceback may name the exception with its module (usagg.errors.DataError: ...)
            if i == 0 or (i > 0 and line[i - 1] == "." and " " not in line[:i]):
                return line[i:]
    return summary


def _state_text(state: str) -> str:
    colour = {"done": "green", "failed": "red", "running": "yellow", "pending": "dim", "interrupted": "magenta"}
    return f"[{colour.get(state, 'white')}]{state}[/]"


def print_data_problems(console: Console, err: DataProblems) -> None:
    """List a dataset's problems (the first 50) and say that nothing is trained."""
    from rich.markup import escape

    from usagg.cli.data import print_problems

    report = err.report
    root = escape(printable(str(report.root)))
    console.print(
        f"[bold red]the dataset at {root} has {counted(len(err.problems), 'problem')} in this study's tasks:[/]"
    )
    print_problems(err.problems, console, report.root, limit=PROBLEM_ENTRIES)
    console.print("not training: fix the data (or the study's tasks) first")


#: Entries of a dataset's problems `usagg run` and `validate` print (rows of one kind in one CSV are one entry).
PROBLEM_ENTRIES = 50


def _print_repairs(console: Console, store: RunStore) -> None:
    """Damaged store files found (and set aside when repaired), each named, then forgotten."""
    from rich.markup import escape

    for note in store.repairs:
        console.print(f"[bold yellow]damaged:[/] {escape(printable(note))}", soft_wrap=True, highlight=False)
    store.repairs.clear()


def print_data_warnings(console: Console, warnings: list[Any], report: CheckReport) -> None:
    """The data check's warnings (a train split without a class, a val split that will not score as usual, near
    duplicates under `leakage: warn`), then problems of tasks this study does not train: never a block."""
    from usagg.cli.data import print_problems

    checked = [w for w in warnings if w in report.warnings]
    others = [w for w in warnings if w not in report.warnings]
    if checked:
        console.print(f"[bold yellow]warning:[/] {counted(len(checked), 'data warning')} (not blocking):")
        print_problems(checked, console, report.root, limit=PROBLEM_ENTRIES)
    if others:
        console.print(
            f"[bold yellow]warning:[/] {counted(len(others), 'problem')} in tasks this study does not train "
            "(not blocking; fix them before a study that trains those tasks):"
        )
        print_problems(others, console, report.root, limit=PROBLEM_ENTRIES)


# --------------------------------------------------------------------------- commands


class ConsoleObserver(RunObserver):
    """The run as `usagg run` shows it (usagg/run/observer.py `RunObserver`): a line per step, the live display
    while jobs run (usagg/cli/display.py), the summary table at the end. `quiet` keeps failures, warnings
    and the results path."""

    def __init__(self, console: Console, *, verbose: bool = False, quiet: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.quiet = quiet
        self.display: Any = None
        self.status: Any = None  # the data check's spinner
        self.clock: Clock | None = None  # one job counter and study ETA for every stage of the run
        self.jobs: list[Job] = []  # the run's selected jobs, whose kinds the study ETA estimates from

    def say(self, *objects: Any) -> None:
        if not self.quiet:
            self.console.print(*objects)

    def checking_data(self) -> Any:
        if in_notebook():  # a spinner's redraws pile up in a cell's output (`in_notebook`): the result lines only
            return nullcontext()
        self.status = self.console.status("preparing and checking the dataset ...")
        return self.status

    def data_progress(self, split: str, checked: int, images: int) -> None:
        if self.status is not None:
            self.status.update(data_check_text(split, checked, images))

    def data_checked(self, run: StudyRun, report: CheckReport) -> None:
        from rich.markup import escape

        root = escape(printable(str(report.root)))
        print_data_warnings(self.console, run.data_warnings, report)
        self.say(
            f"dataset {root}: [green]no problems in this study's tasks[/] "
            f"({len(run.study.tasks)} of {counted(len(report.tasks), 'task')})"
            + (f"; {unchanged_text(report)}" if report.kept else "")
        )

    def store_ready(self, run: StudyRun) -> None:
        from rich.markup import escape

        store, skipped = run.store, run.skipped_failed
        self.jobs = run.jobs
        _print_repairs(self.console, store)
        self.say(
            f"study [bold]{escape(run.study.name)}[/]: {counted(len(run.jobs), 'job')} selected, "
            f"{len(run.todo)} to run, {len(run.done)} done"
            + (f", {len(run.twins)} to reuse a job of the same settings" if run.twins else "")
            + (f", {len(skipped)} failed skipped (use --retry-failed)" if skipped else "")
            + f"; store {escape(printable(str(store.root)))}"
        )

    def warning(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[bold yellow]warning:[/] {escape(printable(message))}")

    def reused(self, run: StudyRun, job_ids: list[str]) -> None:
        for jid in job_ids:
            source = run.store.job_record(jid).get("reused_from")
            self.say(f"{jid}: [green]done[/], the result of {source} (the same settings: one training, not two)")

    def stage_started(self, run: StudyRun, jobs: list[Job]) -> None:
        if self.clock is not None:
            self.clock.add_jobs(len(run.todo), job_kinds(jobs, run.todo))
        self.say(
            f"stage: {', '.join(sorted({j.paradigm for j in jobs}))} planned from the jobs just done: "
            f"{counted(len(jobs), 'job')} ({', '.join(j.id for j in jobs)}), {len(run.todo)} to run"
        )

    @contextmanager
    def running(self, todo: list[str]) -> Iterator[None]:
        if self.clock is None:
            self.clock = Clock(len(todo), kinds=job_kinds(self.jobs, todo))
        with make_display(self.console, self.clock, verbose=self.verbose, quiet=self.quiet) as display:
            self.display = display
            try:
                yield
            finally:
                self.display = None

    def job_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if self.display is not None:
            self.display.on_event(job_id, event, info)

    def progress(self, p: Progress) -> None:
        if self.display is not None:
            self.display.on_progress(p)

    def waiting(self, run: StudyRun, waiting: Waiting) -> None:
        states = ", ".join(f"{jid} {run.store.display_state(jid)}" for jid in waiting.needs)
        self.console.print(f"[yellow]{waiting.paradigm} not planned[/]: it waits for {states}")

    def finished(self, run: StudyRun, result: RunResult) -> None:
        from rich.markup import escape

        store = run.store
        _print_repairs(self.console, store)
        if not self.quiet:
            summary = _summary_table(store, list(result.states), f"{run.study.name}: {store.root}")
            print_table(self.console, summary, fold_ids=True)
        self.console.print(f"results: {escape(printable(str(result.results_csv)))}")


def _check_data(console: Console, job_run: StudyRun, observer: ConsoleObserver | None) -> None:
    """The data check of `run`, also for `--dry-run` (same checks, same exit codes, same warnings): problems
    listed, exit 1."""
    from usagg.run.checks import DataProblems

    try:
        if observer is None:
            report = job_run.check_data()
            print_data_warnings(console, job_run.data_warnings, report)
        else:
            with observer.checking_data():
                report = job_run.check_data(observer.data_progress)
            observer.data_checked(job_run, report)
    except DataProblems as err:
        print_data_problems(console, err)
        raise typer.Exit(1) from None


def run(
    study_file: Path = typer.Argument(..., metavar="STUDY.yaml", help="The study spec."),
    paradigm: list[str] = typer.Option(
        [],
        "--paradigm",
        help="Run only these of the study's paradigms (repeatable): TS, CG, AU, AG or a control (TSM, AUD, CGD); "
        "`usagg registry` lists every registered paradigm, plug-ins' too.",
    ),
    only: list[str] = typer.Option(
        [],
        "--only",
        help="Run only the jobs selectors pick (repeatable; different keys AND, the same key OR): a job id or its "
        "beginning up to a '-' (TS-fetal_head), a task, group or paradigm, or KEY=PATTERN with KEY "
        "id|task|group|paradigm; globs work ('TS-breast*', task=fetal_*). `usagg plan --only` shows the selection.",
    ),
    executor: str | None = typer.Option(
        None, "--executor", help="A registered executor: local, slurm, ... (default: the spec's)."
    ),
    devices: str | None = typer.Option(None, "--devices", help="cpu, auto, cuda, or GPU indices like 0,1."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed jobs again."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the weights and data as a run does, then show what would run; write nothing."
    ),
    no_data_check: bool = typer.Option(
        False, "--no-data-check", help="With --dry-run: skip the weights and data checks (it says so)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Run into a store another spec file of the same study name made, keeping that study's jobs (compare "
        "then needs one result per task, paradigm, fraction and seed: add seeds or paradigms this way, not a "
        "changed setting; while another usagg run trains the store, one that would replace its jobs is refused); "
        "or let a --set or --sweep replace the plan of the spec's own store (the done jobs it hides stay on disk).",
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Override a spec value, e.g. --set training.epochs=5 (paths: from the current folder)."
    ),
    sweeps: list[str] = typer.Option(
        [],
        "--sweep",
        help="Sweep a setting, KEY=V1,V2 (values YAML): the study runs at each value, crossed with the other "
        "--sweep keys and the spec's `sweep:`; e.g. --sweep training.lr_encoder=1e-4,5e-4.",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the jobs as a JSON list."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Off a terminal: a line per progress report."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only failures, warnings and the results path."),
) -> None:

    from usagg.run.checks import DataProblems
    from usagg.run.driver import drive
    from usagg.run.options import as_written, run_overrides
    from usagg.run.studyrun import StudyRun
    from usagg.spec.load import load_study, sweep_override

    console = line_console()
    swept = [sweep_override(s) for s in sweeps]
    study = load_study(study_file, run_overrides([*sets, *swept], executor=executor, devices=devices))
    written = as_written(study_file, [*sets, *swept])
    job_run = StudyRun.prepare(
        study, paradigm, only, retry_failed, spec_file=study_file, force=force, as_written=written
    )
    if as_json and not dry_run:
        raise UsaggError("--json goes with --dry-run (a run prints progress; `usagg status --json` gives the states)")
    if no_data_check and not dry_run:
        raise UsaggError("--no-data-check goes with --dry-run (a run always checks the weights and the data first)")
    if quiet and verbose:
        raise UsaggError("--quiet and --verbose contradict each other: give one (or neither for the live display)")
    if dry_run:
        _dry_run(console, job_run, as_json=as_json, check=not no_data_check)
        return
    observer = ConsoleObserver(console, verbose=verbose, quiet=quiet)
    try:
        result = drive(job_run, observer)
    except DataProblems as err:
        print_data_problems(console, err)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # the jobs it stopped are pending again, each with its last checkpoint
        console.print(f"[yellow]interrupted[/]; {_resumes(job_run)}")
        raise typer.Exit(130) from None
    except SystemExit as stop:  # SIGTERM (usagg/signals.py): the same orderly stop as Ctrl-C
        if stop.code == 143:
            console.print(f"[yellow]stopped (SIGTERM)[/]; {_resumes(job_run)}")
        raise
    if result.unrecorded:
        console.print(_unrecorded_text(result))
    if result.failed:
        from rich.markup import escape

        console.print(
            f"[bold red]{counted(len(result.failed), 'job')} failed[/]; see jobs/<id>/error.txt under "
            f"{escape(printable(str(result.store_root)))}"
        )
    if result.failed or result.unrecorded:
        raise typer.Exit(1)
    # `usagg run && usagg report` must not report a study whose jobs still wait on the cluster or run elsewhere
    if result.queued:
        n = len(result.queued)
        listed = ", ".join(f"{jid} ({sid})" for jid, sid in list(result.queued.items())[:4]) + (", ..." * (n > 4))
        console.print(
            f"[yellow]not finished[/]: {counted(n, 'job')} an earlier `usagg run` submitted still "
            f"{'waits' if n == 1 else 'wait'} on Slurm ({listed}); run the same `usagg run` again once "
            f"{'it ends' if n == 1 else 'they end'}: it collects what they trained and plans what follows them"
        )
        raise typer.Exit(UNFINISHED_EXIT)
    if result.unfinished:
        n = len(result.unfinished)
        listed = ", ".join(f"{jid} ({result.states[jid]})" for jid in result.unfinished[:4]) + (", ..." * (n > 4))
        console.print(
            f"[yellow]not finished[/]: {counted(n, 'job')} neither done nor failed as this run ends ({listed}): "
            "another process runs them, or they wait for a job of the same settings that is not done (`usagg "
            "status` shows where each is); run the same `usagg run` again once that one ends"
        )
        raise typer.Exit(UNFINISHED_EXIT)


def _unrecorded_text(result: RunResult) -> str:
    """The closing line for jobs that failed where the store could not record it (`RunResult.unrecorded`): the
    error that stopped them (a full disk at job.json), not "another process runs them"."""
    from rich.markup import escape

    n = len(result.unrecorded)
    job_id, error = next(iter(result.unrecorded.items()))
    return (
        f"[bold red]{counted(n, 'job')} failed and the store could not record it[/] ({escape(printable(job_id))}: "
        f"{escape(printable(error))}); the store says {'it' if n == 1 else 'they'} did not finish, so once that is "
        f"fixed the same `usagg run` resumes {'it' if n == 1 else 'them'} from the last checkpoint"
    )


#: What a stopped run says: how to go on.
RESUMES = "the same `usagg run` command resumes: done jobs are kept, the stopped ones go on from their last checkpoint"
#: What a stopped run under Slurm says: stopping the submitting process stops no job on the cluster.
RESUMES_SLURM = (
    "the jobs submitted to Slurm go on there (`usagg status` shows them; `scancel` stops them); the same "
    "`usagg run` command collects them once they end and runs what is left"
)
#: `usagg run`'s exit status when selected jobs are neither done nor failed as it ends (still queued on Slurm from an
#: earlier run, run by another process, waiting for a twin): not finished, not failed.
UNFINISHED_EXIT = 3


def _resumes(job_run: StudyRun) -> str:
    return RESUMES_SLURM if job_run.study.execution.executor == "slurm" else RESUMES


def _dry_run(console: Console, job_run: StudyRun, *, as_json: bool, check: bool) -> None:
    """What `run --dry-run` prints: the same weights and data checks as a run (or one line saying they were not
    made), then the jobs and what a run would do to each."""
    from rich.console import Console
    from rich.markup import escape

    from usagg.run import notes
    from usagg.run.checks import check_model_weights, data_not_checkable

    note = Console(stderr=True) if as_json else console  # --json keeps stdout for the JSON list
    if check and job_run.todo:  # the devices and the executor a run would use (a GPU asked for, sbatch), as it does
        job_run.check_executor()  # before the data check
    reason = data_not_checkable(job_run.study) if check else None
    if not check:
        note.print("[yellow]not checked[/]: the weights and the data (--no-data-check)", highlight=False)
    elif reason is None:
        _check_data(note, job_run, None)
    else:
        check_model_weights(job_run.study)
        note.print(f"[yellow]data not checked[/]: {escape(printable(reason))}", soft_wrap=True, highlight=False)
    job_run.refresh()  # the states as they are now, after the checks: another run may have started or ended jobs
    for warning in (
        notes.replaced_text(job_run),
        notes.restart_text(job_run),
        notes.unrecorded_data_text(job_run),
        notes.no_selection_text(job_run),
    ):
        if warning:
            note.print(f"[bold yellow]warning:[/] {escape(printable(warning))}", soft_wrap=True, highlight=False)
    if as_json:
        typer.echo(json.dumps(_dry_run_rows(job_run), indent=1))
    else:
        _print_dry_run(console, job_run)
        _print_repairs(console, job_run.store)
    if job_run.study.execution.executor == "slurm" and job_run.todo:  # what the cluster would be asked for
        from usagg.execute.slurm import submission_text

        text = submission_text(job_run.study.execution, len(job_run.todo), bool(job_run.waiting))
        note.print(escape(printable(text)), soft_wrap=True, highlight=False)


def _dry_run_rows(job_run: StudyRun) -> list[dict[str, Any]]:
    """What `run --dry-run --json` prints: one object per selected job."""
    return [
        {
            "job_id": j.id,
            "paradigm": j.paradigm,
            "tasks": j.task_ids,
            "moe": j.moe,
            "fraction": j.fraction,
            "seed": j.seed,
            "state": job_run.shown_state(j.id),
            "action": job_run.action(j.id),
            "reuses": job_run.twins.get(j.id),
            "sweep": j.sweep,  # the sweep points the job belongs to ([] without a sweep), as `usagg plan --json`
        }
        for j in job_run.jobs
    ] + [
        {"job_id": None, "paradigm": w.paradigm, "state": "waiting", "action": "plan later", "needs": list(w.needs)}
        for w in job_run.waiting
    ]


def _status_rows(store: RunStore, job_ids: list[str]) -> list[dict[str, Any]]:
    """What `status --json` prints: state, timings, primary metrics and the error of every job."""
    rows = []
    for jid in job_ids:
        record = store.job_record(jid) if store.has_job(jid) else {}
        state = store.display_state(jid)
        row: dict[str, Any] = {"job_id": jid, "state": state, "duration_s": record.get("duration_s")}
        row["device"] = _job_device(store, jid, record, state) if state in ("done", "running", "failed") else None
        row["restarted"] = record.get("restarted")  # why its attempt's last.pt was not resumed (`restart_line`)
        if state == "done":
            try:
                tasks = (store.metrics(jid) or {}).get("tasks") or {}
            except UsaggError:
                tasks = {}
            row["primary"] = {
                t: {"metric": e.get("primary"), "value": (e.get("metrics") or {}).get(e.get("primary"))}
                for t, e in tasks.items()
            }
        if state == "failed" and record.get("error"):
            row["error"] = _error_line(store, jid, record["error"])
            row["error_file"] = str(store.paths(jid).error)
        if state == "running":
            where = _running_progress(store, jid, record)
            eta = None if where.eta is None else [round(where.eta.low, 1), round(where.eta.high, 1)]
            row.update(epoch=where.epoch, epochs=where.epochs, elapsed_s=where.elapsed_s, eta_s=eta)
        rows.append(row)
    return rows


def _standard_json(value: Any) -> Any:
    """`value` with every non-finite number as None: `status --json` prints standard JSON, which has no NaN or
    Infinity (a metric may be NaN; `json.loads` of a received store reads Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _standard_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_standard_json(v) for v in value]
    return value


def _print_dry_run(console: Console, job_run: StudyRun) -> None:
    from rich.markup import escape
    from rich.table import Table

    from usagg.sweep import points_cell

    store, jobs = job_run.store, job_run.jobs
    swept = bool(job_run.study.sweep)  # the sweep point column as `usagg plan` shows it: two points' jobs told apart
    root = escape(printable(str(store.root)))
    table = Table(title=f"dry run: {len(job_run.todo)} of {counted(len(jobs), 'job')} would run (store {root})")
    for col in ("job", "paradigm", "tasks", "moe", *(["sweep point"] if swept else []), "state", "action"):
        table.add_column(col, overflow="fold", no_wrap=col == "job")
    for j in jobs:
        tasks = ", ".join(j.task_ids) if len(j.task_ids) <= 4 else f"{len(j.task_ids)} tasks"  # as `usagg plan` shows
        table.add_row(
            escape(j.id),
            j.paradigm,
            escape(tasks),
            "yes" if j.moe else "no",
            *([escape(points_cell(j.sweep))] if swept else []),
            job_run.shown_state(j.id),
            job_run.action(j.id),
        )
    for w in job_run.waiting:
        when = f"planned once {', '.join(w.needs)} {'is' if len(w.needs) == 1 else 'are'} done"
        table.add_row(f"{w.paradigm}-*", w.paradigm, when, "yes", *([""] if swept else []), "waiting", "")
    print_table(console, table)
    for twin, source in job_run.twins.items():  # whole ids, a line each: a table column would cut them
        console.print(f"reuse: {twin} takes the result of {source} (the same settings: one training)", soft_wrap=True)


def status(
    run_dir: Path | None = typer.Argument(
        None, metavar="RUN_DIR", help="A run store (runs/<study>); default: the latest under runs/."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the jobs as a JSON list (state, metrics, error)."),
) -> None:
    from rich.console import Console

    from usagg.analysis.inputs import check_registered
    from usagg.store import RunStore

    store = RunStore.latest("runs") if run_dir is None else RunStore(run_dir)
    store.require()
    check_registered(store)  # a plug-in's type or paradigm not loaded: named, not "plan.json is damaged"
    ids = store.job_ids()
    if as_json:
        typer.echo(json.dumps(_standard_json(_status_rows(store, ids)), indent=1, allow_nan=False))
        return
    console = Console()
    print_table(console, _summary_table(store, ids, f"{store.root}"), fold_ids=True)
    _print_repairs(console, store)
    counts = Counter(store.display_state(jid) for jid in ids)
    line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if counts.get("interrupted"):
        interrupted = [jid for jid in ids if store.display_state(jid) == "interrupted"]
        line += f" (interrupted: their process is gone; {_resume_text(store, interrupted)})"
    stopped = [jid for jid in ids if store.display_state(jid) == "pending" and store.has_checkpoint(jid)]
    if stopped:  # stopped in order (Ctrl-C, SIGTERM): pending again with its last.pt, resumed as an interrupted one
        line += f" ({counted(len(stopped), 'pending job')} stopped with a checkpoint: {_resume_text(store, stopped)})"
    console.print(line)


def _resume_text(store: RunStore, ids: list[str]) -> str:
    """What `usagg run` does to jobs with a last.pt (interrupted ones, and pending ones a stopped run left): resumes
    them, save those whose last.pt an older usagg wrote in a layout this one cannot resume
    (`RunStore.unresumable_layout`) or is damaged (`RunStore.damaged_checkpoint`), which start over from epoch 1."""
    layouts = {jid: layout for jid in ids if (layout := store.unresumable_layout(jid)) is not None}
    damaged = [jid for jid in ids if store.damaged_checkpoint(jid)]
    if not layouts and not damaged:
        return "`usagg run` resumes them"
    over = len(layouts) + len(damaged)
    resumed = f"resumes {len(ids) - over} and " if len(ids) > over else ""
    which = ", ".join(str(v) for v in sorted(set(layouts.values())))
    parts = [(len(layouts), f"last.pt was written by an older usagg (layout {which}), which this one cannot resume")]
    parts = [p for p in [*parts, (len(damaged), "last.pt is damaged")] if p[0]]
    their = {True: "its", False: "their"}
    if len(parts) == 1:
        why = f"{their[over == 1]} {parts[0][1]}"
    else:
        why = "; ".join(f"{counted(n, 'job')}: {their[n == 1]} {text}" for n, text in parts)
    return f"`usagg run` {resumed}starts {over} over from epoch 1: {why}"


def register(app: typer.Typer) -> None:
    """Add `run` and `status`."""
    app.command("run", help=RUN_HELP, no_args_is_help=True)(run)
    app.command("status", help=STATUS_HELP)(status)
