"""How `usagg run` shows a study while it runs: rich on a terminal, plain lines in a log, or quiet.

A terminal gets rich's live display (the jobs bar and a row per running job with its epoch, loss,
img/s and ETAs). Off a terminal (`usagg run ... > log.txt`, every CI log) rich cannot redraw, so
`PlainDisplay` prints one line per job event and one per epoch (or per progress report with
`--verbose`, at most every `every_s` seconds otherwise), each line whole. `--quiet` prints only
failures. Each job keeps the number it got when it started (`job 2/10` from its start line to its end
line) and ETAs come from measured epoch times, a stated range until two epochs are timed
(usagg/cli/eta.py). Job events come from every executor; epoch progress (`ConsoleObserver.progress`, the run's
sink, passed down to each job) from jobs run in this process and, forwarded by their workers, from a local pool's
jobs (usagg/engine/progress.py), so only
Slurm runs show job lines alone. A job's start line names its device: the pool's event names it; the in-process
executor's cannot, so that line waits for the job's own start report (phase "start"). A job that resumed from its
checkpoint says from which epoch (phase "resume"; a line above the bars on a terminal), and one whose last.pt was
not resumed that it starts over from epoch 1, why, and where the file is kept (phase "restart", a warning). Once
per run, whatever the number of jobs it applies to, come the line of an `execution.accel` mode that falls back on
the device and the line of a Slurm submission (`Notices`). `print_table` prints a CLI table whole in a log, the
same way.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from usagg.cli.eta import Clock, Eta
from usagg.wording import counted

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.table import Table

    from usagg.engine.progress import Progress

#: Widest line a table printed off a terminal may take: wide enough for any real table, yet bounded.
LOG_TABLE_MAX_WIDTH = 1000
#: On a terminal narrower than a table, its id columns fold, down to ID_MIN_WIDTH, before a line of the other
#: columns of up to ITEM_WIDTH (a metric 'task: AUC 0.8125') folds.
ID_MIN_WIDTH = 12
ITEM_WIDTH = 40


def line_console(stderr: bool = False, highlight: bool = True) -> Console:
    """A console whose lines stay whole off a terminal (a log, a pipe: nobody can widen the window, so a sentence
    or path broken at 80 columns stays broken); a terminal wraps as usual."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=highlight)
    console.soft_wrap = not console.is_terminal
    return console


def print_table(console: Console, table: Table, *, fold_ids: bool = False) -> None:
    """Print a rich table without breaking an id across lines where nobody can widen the window.

    Give id columns `no_wrap=True`. Off a terminal (a pipe, a CI log) rich assumes 80 columns (or
    $COLUMNS) and would fold `fetal_head_biometry` into three lines that no search finds: the table
    gets its natural width instead, a long line being harmless in a log. On a terminal the table
    takes the terminal's width: a task id, what a reader scans a table by, stays whole and the other
    columns fold; with `fold_ids` (the tables of jobs, whose hashed ids a terminal can be widened to
    read) the ids fold first so that a 'task: AUC 0.8125' item is not cut (`_ids_fold_first`).
    """
    if console.is_terminal and not console.is_dumb_terminal:
        console.print(_ids_fold_first(console, table) if fold_ids else table)
        return
    natural = _natural_width(console, table)
    width = console.width  # off a terminal a fixed number ($COLUMNS or 80): restoring it changes nothing
    console.width = max(width, natural)  # print(width=...) cannot exceed the console's width
    try:
        console.print(table)
    finally:
        console.width = width


def _natural_width(console: Console, renderable: Any) -> int:
    """The width a table or cell takes when nothing folds it (at most LOG_TABLE_MAX_WIDTH)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(max_width=LOG_TABLE_MAX_WIDTH), renderable).maximum


def _ids_fold_first(console: Console, table: Table) -> Table:
    """The table as a terminal narrower than it shows it best: the other columns' lines of up to ITEM_WIDTH ('task:
    AUC 0.8125', one per line) stay whole, the id columns (`no_wrap`) folding for them, down to ID_MIN_WIDTH;
    longer lines (an error's sentence) fold at their words first.

    rich keeps a no_wrap column whole and narrows the others, at 80 columns to a width that cuts a task name in
    two ('thyroid_malignancy' / ': AUC 0.4'). On a terminal the window can be widened to read an id whole again; a
    log cannot, so `print_table` leaves piped tables alone. The table itself is not changed (a copy is shown).
    """
    excess = _natural_width(console, table) - console.width
    natural = [max(_natural_width(console, cell) for cell in (c.header, *c.cells)) for c in table.columns]
    for column, width in zip(table.columns, natural, strict=True):
        if not column.no_wrap and excess > 0:  # what it gives up before a line of up to ITEM_WIDTH folds
            excess -= width - max(_item_width(console, cell) for cell in (column.header, *column.cells))
    if excess <= 0:
        return table
    shown = copy.copy(table)
    shown.columns = [copy.copy(column) for column in table.columns]
    for column, whole in zip(shown.columns, natural, strict=True):
        if column.no_wrap and excess > 0:
            narrower = max(min(whole, ID_MIN_WIDTH), whole - excess)
            excess -= whole - narrower
            column.no_wrap, column.overflow, column.max_width = False, "fold", narrower
    return shown


def _item_width(console: Console, cell: Any) -> int:
    """A cell's widest line of up to ITEM_WIDTH (0 for a cell of another kind than text: rich lays it out)."""
    from rich.text import Text

    text = console.render_str(cell) if isinstance(cell, str) else cell
    if not isinstance(text, Text):
        return 0
    return max((line.cell_len for line in text.split() if line.cell_len <= ITEM_WIDTH), default=0)


def data_check_text(split: str, checked: int, images: int) -> str:
    """The data check's spinner text: a first check of a large dataset decodes every image (minutes on a laptop),
    a later one decodes only what changed (usagg/data/checkcache.py)."""
    return f"checking the dataset: {split} images {checked:,} of {images:,} ..."


@contextmanager
def data_check_spinner() -> Iterator[Callable[[str, int, int], None]]:
    """A spinner on stderr (stdout stays the command's output, `--json` included) over a data check; yields the
    check's `on_progress`, which counts the images in it."""
    from rich.console import Console

    with Console(stderr=True).status("checking the dataset ...") as status:
        yield lambda split, checked, images: status.update(data_check_text(split, checked, images))


def unchanged_text(report: Any) -> str:
    """How much of a data check's report comes from findings kept by earlier checks (usagg/data/checkcache.py)."""
    total = report.kept + report.decoded
    return (
        f"{report.kept:,} of {total:,} images unchanged since an earlier check, not decoded again "
        "(`usagg data check --recheck` decodes them)"
    )


def duration_text(seconds: float | None) -> str:
    """A short duration: 4.2s, 3m05s, 1h02m ('' for None, or anything else than a finite number: it may come from
    a received store's job.json)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def eta_text(eta: Eta) -> str:
    """'~4m10s' for an estimate, '3-6 min' for a stated range, 'finishing' when nothing measured is left."""
    if eta.high <= 0:
        return "finishing"
    if eta.exact:
        return f"~{duration_text(eta.low)}"
    if eta.high < 120:
        return f"{math.floor(eta.low)}-{math.ceil(eta.high)} s"
    if eta.high < 2 * 3600:
        return f"{math.floor(eta.low / 60)}-{math.ceil(eta.high / 60)} min"
    return f"{eta.low / 3600:.1f}-{eta.high / 3600:.1f} h"


def progress_text(p: Progress, clock: Clock) -> str:
    """'epoch 3/20 step 12/40 loss 0.4123 85.2 img/s, job eta 3-6 min, study eta ~1h05m'."""
    text = f"epoch {p.epoch + 1}/{p.epochs} step {p.step}/{p.steps}"
    if p.phase != "train":
        text += f" [{p.phase}]"
    if p.loss is not None:
        text += f" loss {p.loss:.4f}"
    if p.images_per_s:
        text += f" {p.images_per_s:.1f} img/s"
    eta = clock.job_eta(p.job_id)
    if eta is not None:
        text += f", job eta {eta_text(eta)}"
    study = clock.study_eta()
    if study is not None:
        text += f", study eta {eta_text(study)}"
    return text


def resume_text(p: Progress) -> str:
    """'resumed from epoch 3/20': the epochs the job's checkpoint held, so a resumed job is not taken for a fresh
    start (its log.txt names the file)."""
    return f"resumed from epoch {p.epoch}/{p.epochs}"


def restart_note(p: Progress) -> str:
    """'warning: JOB starts over from epoch 1: last.pt is damaged (...), kept as last.pt.damaged': said where the
    job starts, not only in its log.txt (usagg/engine/checkpointing.py `Checkpointing.restart`)."""
    return f"warning: {p.job_id} starts over from epoch 1: {p.restart}"


#: The device the in-process executor's `started` event names (usagg/execute/inprocess.py): not a device, so the
#: start line waits for the job's start report, which names the one it resolved.
IN_PROCESS = "in-process"


def event_device(info: dict[str, Any]) -> str | None:
    """Where a `started` event's job runs (usagg/execute/base.py): a pool's GPU index ('cuda:1') or 'cpu' with its
    threads, a start report's text as it is; None where the executor does not know (`IN_PROCESS`, nothing)."""
    device = info.get("device")
    if isinstance(device, int) and not isinstance(device, bool):
        return f"cuda:{device}"
    if not isinstance(device, str) or device in ("", IN_PROCESS):
        return None
    threads = info.get("threads")
    if device == "cpu" and isinstance(threads, int) and not isinstance(threads, bool):
        return f"cpu ({counted(threads, 'thread')})"
    return device


def event_text(job_id: str, event: str, info: dict[str, Any], took: float | None) -> str:
    """One whole line for a job event: started (on its device where known), finished (state, time), failed (the
    error's first line), locked (running elsewhere: the process holding its lock, usagg/joblock.py)."""
    if event == "started":
        where = event_device(info)
        return f"{job_id} started" + (f" on {where}" if where else "")
    if event == "locked":
        from usagg.joblock import describe_holder

        holder = info.get("holder")
        held = f" (held by {describe_holder(holder)})" if isinstance(holder, dict) and holder else ""
        return f"{job_id} running elsewhere{held}: left to that process"
    if event == "finished" and info.get("elsewhere"):
        return f"{job_id} done by another process: nothing trained here"
    text = f"{job_id} {info.get('state', event)}"
    if took is not None:
        text += f" in {duration_text(took)}"
    if event == "failed" and info.get("error"):
        text += f": {info['error']}"
    return text


def slurm_ids(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """(array id, Slurm job id) of a `submitted` event: `slurm_job_id` ('1001_0', an array's first task), or
    `slurm_id` and `array_id` where the executor names them; None for what it does not say."""
    job = next((info[k] for k in ("slurm_id", "slurm_job_id") if info.get(k) not in (None, "")), None)
    array = info.get("array_id")
    if array in (None, "") and isinstance(job, str) and "_" in job:
        array = job.split("_", 1)[0]
    return (None if array in (None, "") else str(array)), (None if job is None else str(job))


class Notices:
    """What a run says once, however many jobs share it: an accel mode's fallback (every job on the device falls
    back alike), a Slurm array's submission (one event per job, all at once)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.said: set[str] = set()

    def _once(self, key: str) -> bool:
        new = key not in self.said
        self.said.add(key)
        return new

    def accel(self, p: Progress) -> str | None:
        """The start report's fallback line, the first time it comes."""
        note = p.accel_note
        return f"warning: {note}" if note and self._once(f"accel {note}") else None

    def submitted(self, job_id: str, info: dict[str, Any]) -> str | None:
        """One line per submission: an array's first job names it and its jobs (those of this run not yet seen: an
        executor submits all it got at once); a job outside an array has a line of its own."""
        array, slurm_job = slurm_ids(info)
        if array is not None:
            if not self._once(f"array {array}"):
                return None
            left = self.clock.n_jobs - len(self.clock.numbers)
            jobs = f" {counted(left, 'job')}" if left > 0 else ""
            return f"submitted{jobs} to Slurm as array {array}"
        return f"submitted {job_id} to Slurm as job {slurm_job}" if slurm_job else f"{job_id} submitted"


#: The terminal width from which a running job's row holds everything on one line (its id and device, the bar,
#: its epoch, loss, speed and both ETAs); narrower ones get two lines a job.
WIDE = 160


class RichDisplay:
    """rich progress: the jobs bar and a row per running job with its epoch, step, loss, img/s and ETAs (terminal
    only)."""

    def __init__(self, console: Console, clock: Clock | int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        self.console = console
        self.clock = Clock(clock) if isinstance(clock, int) else clock
        n_jobs = self.clock.n_jobs
        if console.width >= WIDE:  # a row per job: id, bar, steps, its epoch, loss, speed and ETAs, elapsed
            columns: tuple[Any, ...] = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
            )
        else:  # two lines a job, wrapped, never cut: at 80 columns one line kept neither the id nor the ETAs
            info = Column(overflow="fold", ratio=1)
            columns = (TextColumn("{task.description}{task.fields[info]}", table_column=info), BarColumn(12))
            columns += (MofNCompleteColumn(),)
        self.wide = console.width >= WIDE
        self.progress = Progress(*columns, TimeElapsedColumn(), console=console, transient=False, expand=not self.wide)
        self.jobs = self.progress.add_task("jobs", total=n_jobs, completed=self.clock.ended, info="")
        self.rows: dict[str, Any] = {}  # running job id -> its row (rich's task id)
        self.notices = Notices(self.clock)
        self.unnamed: set[str] = set()  # running jobs whose device only their start report names

    def _info(self, text: str) -> str:
        """A row's progress text as its layout shows it: a column of its own, or a second line under the id."""
        return text if self.wide or not text else f"\n  {text}"

    def __enter__(self) -> RichDisplay:
        self.progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, error, trace)

    def _row(self, job_id: str) -> Any:
        if job_id not in self.rows:
            self.rows[job_id] = self.progress.add_task(job_id, total=1, info=self._info("starting"))
        return self.rows[job_id]

    def _say(self, text: str | None, style: str = "") -> None:
        """A whole line above the bars, never cut to the bar's width."""
        from rich.markup import escape

        if text:
            line = f"[{style}]{escape(text)}[/]" if style else escape(text)
            self.progress.console.print(line, soft_wrap=True, highlight=False)

    def _started_on(self, job_id: str, where: str) -> None:
        """The running job's row names its device."""
        self.progress.update(self._row(job_id), description=f"{job_id} on {where}")

    def on_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "submitted":
            self._say(self.notices.submitted(job_id, info))
            return
        if event == "note":
            self._say(str(info.get("text") or ""))
            return
        if event == "started":
            self.clock.started(job_id)
            self._row(job_id)
            where = event_device(info)
            if where:
                self._started_on(job_id, where)
            else:
                self.unnamed.add(job_id)
            return
        if event not in ("finished", "failed", "locked"):
            return
        took = self.clock.finished(job_id, trained=event != "locked" and not info.get("elsewhere"))
        self.progress.update(self.jobs, total=self.clock.n_jobs, completed=self.clock.ended)
        self.unnamed.discard(job_id)
        if job_id in self.rows:
            self.progress.remove_task(self.rows.pop(job_id))
        if event in ("failed", "locked") or info.get("elsewhere"):  # a job done elsewhere: said, never timed
            self._say(event_text(job_id, event, info, took), "red" if event == "failed" else "yellow")
        study = self.clock.study_eta()
        self.progress.update(self.jobs, info=self._info(f"study eta {eta_text(study)}" if study is not None else ""))

    def on_progress(self, p: Progress) -> None:
        if p.phase == "start":
            self._say(self.notices.accel(p), "yellow")
            if p.job_id in self.unnamed and p.device:  # a pool's event named the GPU as the run sees it: kept
                self.unnamed.discard(p.job_id)
                self._started_on(p.job_id, p.device)
            return
        if not self.clock.progress(p):
            return  # a late report of a job already ended
        if p.phase == "restart":
            self._say(restart_note(p), "yellow")
            return
        if p.phase == "resume":
            self._say(f"{p.job_id} {resume_text(p)}")
            done, info = p.epoch * p.steps, self._info(resume_text(p))
            self.progress.update(self._row(p.job_id), total=max(1, p.epochs * p.steps), completed=done, info=info)
            return
        self.progress.update(
            self._row(p.job_id),
            total=max(1, p.epochs * p.steps),
            completed=p.epoch * p.steps + p.step,
            info=self._info(progress_text(p, self.clock)),
        )


class PlainDisplay:
    """One whole line per job event and per epoch, for logs: nothing redraws, nothing is cut.

    `verbose` prints every progress report; otherwise an epoch's line comes when its
    training part ends, and mid-epoch lines at most every `every_s` seconds. `quiet`
    prints failed jobs only.
    """

    def __init__(self, console: Console, clock: Clock | int, *, verbose: bool = False, quiet: bool = False) -> None:
        self.console = console
        self.clock = Clock(clock) if isinstance(clock, int) else clock
        self.verbose = verbose
        self.quiet = quiet
        self.every_s = 30.0
        self._last_line = 0.0
        self.notices = Notices(self.clock)
        self.unnamed: dict[str, int] = {}  # started job -> its number, its start line waiting for the device

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, text: str) -> None:
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", soft_wrap=True, highlight=False, markup=False)
        self._last_line = time.monotonic()

    def _start_line(self, job_id: str, number: int, info: dict[str, Any]) -> None:
        self._line(f"job {number}/{self.clock.n_jobs}: {event_text(job_id, 'started', info, None)}")

    def _unnamed_start(self, job_id: str, where: str | None = None) -> None:
        """The start line that waited for the job's start report: with its device, or without (the job ended, or
        reported its epochs, first: a job function that sends no start report)."""
        number = self.unnamed.pop(job_id, None)
        if number is not None:
            self._start_line(job_id, number, {"device": where})

    def on_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "submitted":
            text = self.notices.submitted(job_id, info)
            if text and not self.quiet:
                self._line(text)
            return
        if event == "note":
            if info.get("text") and not self.quiet:
                self._line(str(info["text"]))
            return
        if event == "started":
            number = self.clock.started(job_id)
            if self.quiet:
                return
            if info.get("device") == IN_PROCESS:
                self.unnamed[job_id] = number
            else:
                self._start_line(job_id, number, info)
            return
        if event not in ("finished", "failed", "locked"):
            return
        if event == "locked":  # never started here: its start line, where it waits, is not said
            self.unnamed.pop(job_id, None)
        self._unnamed_start(job_id)
        took = self.clock.finished(job_id, trained=event != "locked" and not info.get("elsewhere"))
        if self.quiet and event != "failed":
            return
        clock = self.clock
        text = f"job {clock.number(job_id)}/{clock.n_jobs}: {event_text(job_id, event, info, took)}"
        if event != "failed":  # a failure's line ends with its error, whole
            study = clock.study_eta()
            eta = f", study eta {eta_text(study)}" if study is not None and clock.ended < clock.n_jobs else ""
            text += f" ({clock.ended}/{clock.n_jobs} ended{eta})"
        self._line(text)

    def on_progress(self, p: Progress) -> None:
        if p.phase == "start":
            self._unnamed_start(p.job_id, p.device)
            note = self.notices.accel(p)
            if note:
                self._line(note)
            return
        self._unnamed_start(p.job_id)
        if not self.clock.progress(p) or self.quiet:
            return  # a late report of a job already ended, or nothing but failures shown
        if p.phase == "restart":
            self._line(restart_note(p))
            return
        if p.phase == "resume":
            self._line(f"{p.job_id} {resume_text(p)}")
            return
        text = progress_text(p, self.clock)
        epoch_end = p.phase == "train" and p.step == p.steps
        due = time.monotonic() - self._last_line >= self.every_s
        if self.verbose or epoch_end or due:
            self._line(f"{p.job_id} {text}")


#: Set by Jupyter's kernel launcher in the kernel's environment, so every process a notebook starts inherits it.
JUPYTER_MARK = "JPY_PARENT_PID"


def in_notebook() -> bool:
    """Whether this process runs under a Jupyter kernel (`!usagg run ...` in a cell, or the kernel itself).

    ipykernel runs a cell's `!command` under a pseudo-terminal with FORCE_COLOR=1 and TERM=xterm-color,
    so rich takes it for a terminal and starts its live display, but the cell's output keeps every
    redraw: the cursor-up codes pile up into a flood of repeated bars."""
    import os

    return JUPYTER_MARK in os.environ


def make_display(console: Console, clock: Clock | int, *, verbose: bool, quiet: bool) -> RichDisplay | PlainDisplay:
    """Rich on an interactive terminal (unless quiet), plain lines otherwise, and in a Jupyter notebook's cell,
    which cannot redraw (`in_notebook`); `clock` (or a new one for that many jobs) goes on across the stages of
    one run, so its job counter never starts again."""
    if console.is_terminal and not quiet and not console.is_dumb_terminal and not in_notebook():
        return RichDisplay(console, clock)
    return PlainDisplay(console, clock, verbose=verbose, quiet=quiet)
