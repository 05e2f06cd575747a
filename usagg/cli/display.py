"""How `usagg run` shows a study while it runs: rich on a terminal, plain lines in a log, or quiet.

A terminal gets rich's live display (the jobs bar and a row per running job with its epoch, loss,
img/s and ETAs). Off a terminal (`usagg run ... > log.txt`, every CI log) rich cannot redraw, so
`PlainDisplay` prints one line per job event and one per epoch (or per progress report with
`--verbose`, at most every `every_s` seconds otherwise), each line whole. `--quiet` prints only
failures. Job events come from every executor; epoch progress from jobs run in this process
and, forwarded by their workers, from a local pool's jobs (usagg/engine/progress.py), so only
Slurm runs show job lines alone. `print_table` prints a CLI table whole in a log, the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from usagg.engine.progress import Progress

#: Widest line a table printed off a terminal may take: wide enough for any real table, yet bounded.
LOG_TABLE_MAX_WIDTH = 1000


def print_table(console: Console, table: Table) -> None:
    """Print a rich table without breaking an id across lines where nobody can widen the window.

    On a terminal the table takes the terminal's width (give id columns `no_wrap=True`, so other
    columns fold first). Off one (a pipe, a CI log) rich assumes 80 columns (or $COLUMNS) and
    would fold `fetal_head_biometry` into three lines that no search finds: the table gets its
    natural width instead, a long line being harmless in a log.
    """
    if console.is_terminal and not console.is_dumb_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update(max_width=LOG_TABLE_MAX_WIDTH), table).maximum
    width = console.width  # off a terminal a fixed number ($COLUMNS or 80): restoring it changes nothing
    console.width = max(width, natural)  # print(width=...) cannot exceed the console's width
    try:
        console.print(table)
    finally:
        console.width = width


def duration_text(seconds: float | None) -> str:
    """A short duration: 4.2s, 3m05s, 1h02m ('' for None)."""
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


@dataclass
class Clock:
    """Elapsed times and ETAs of the running jobs and of the study (from the jobs finished so far).

    A local pool runs several jobs at once (usagg/execute/pool.py): the study's ETA divides the work left by
    the most jobs seen running together.
    """

    n_jobs: int
    start: float = field(default_factory=time.monotonic)
    job_start: dict[str, float] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    begun: int = 0  # jobs started so far
    ended: int = 0
    parallel: int = 1  # most jobs seen running at once
    fraction: dict[str, float] = field(default_factory=dict)  # share done of each running job (its last report)

    def started(self, job_id: str) -> None:
        self.job_start[job_id] = time.monotonic()
        self.fraction[job_id] = 0.0
        self.begun += 1
        self.parallel = max(self.parallel, len(self.job_start))

    def finished(self, job_id: str) -> float | None:
        self.ended += 1
        self.fraction.pop(job_id, None)
        begun = self.job_start.pop(job_id, None)
        if begun is None:
            return None
        took = time.monotonic() - begun
        self.durations.append(took)
        return took

    def job_eta(self, job_id: str, done: int, total: int) -> float | None:
        """Seconds left in a running job, from its own pace (None before the first step)."""
        begun = self.job_start.get(job_id)
        if begun is not None:
            self.fraction[job_id] = done / total if total else 0.0
        if begun is None or done <= 0:
            return None
        return (time.monotonic() - begun) * (total - done) / done

    def study_eta(self) -> float | None:
        """Seconds left in the study: the mean job time so far times the jobs left, over the jobs run at once
        (None before any job ended)."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        left = self.n_jobs - self.ended - sum(self.fraction.values())
        return max(0.0, mean * left / self.parallel)


def progress_text(p: Progress, clock: Clock) -> str:
    """'epoch 3/20 step 12/40 loss 0.4123 85.2 img/s, job eta 1m20s, study eta ~6m05s'."""
    total = max(1, p.epochs * p.steps)
    text = f"epoch {p.epoch + 1}/{p.epochs} step {p.step}/{p.steps}"
    if p.phase != "train":
        text += f" [{p.phase}]"
    if p.loss is not None:
        text += f" loss {p.loss:.4f}"
    if p.images_per_s:
        text += f" {p.images_per_s:.1f} img/s"
    eta = clock.job_eta(p.job_id, p.epoch * p.steps + p.step, total)
    if eta is not None:
        text += f", job eta {duration_text(eta)}"
    study = clock.study_eta()
    if study is not None:
        text += f", study eta ~{duration_text(study)}"
    return text


def event_text(job_id: str, event: str, info: dict[str, Any], took: float | None) -> str:
    """One whole line for a job event: started, finished (state, time), failed (the error's first line)."""
    if event == "started":
        return f"{job_id} started"
    text = f"{job_id} {info.get('state', event)}"
    if took is not None:
        text += f" in {duration_text(took)}"
    if event == "failed" and info.get("error"):
        text += f": {info['error']}"
    return text


class RichDisplay:
    """rich progress: the jobs bar and a row per running job with its epoch, step, loss, img/s and ETAs (terminal
    only)."""

    def __init__(self, console: Console, n_jobs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.clock = Clock(n_jobs)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.jobs = self.progress.add_task("jobs", total=n_jobs, info="")
        self.rows: dict[str, Any] = {}  # running job id -> its row (rich's task id)

    def __enter__(self) -> RichDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def _row(self, job_id: str) -> Any:
        if job_id not in self.rows:
            self.rows[job_id] = self.progress.add_task(job_id, total=1, info="starting")
        return self.rows[job_id]

    def on_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        from rich.markup import escape

        if event == "started":
            self.clock.started(job_id)
            self._row(job_id)
            return
        if event not in ("finished", "failed", "locked"):
            return
        took = self.clock.finished(job_id)
        self.progress.advance(self.jobs)
        if job_id in self.rows:
            self.progress.remove_task(self.rows.pop(job_id))
        if event == "failed":  # a whole line above the bars, never cut to the bar's width
            line = f"[red]{escape(event_text(job_id, event, info, took))}[/]"
            self.progress.console.print(line, soft_wrap=True, highlight=False)
        study = self.clock.study_eta()
        self.progress.update(self.jobs, info=f"study eta ~{duration_text(study)}" if study is not None else "")

    def on_progress(self, p: Progress) -> None:
        if p.job_id not in self.clock.job_start:
            return  # a late report of a job already ended
        self.progress.update(
            self._row(p.job_id),
            total=max(1, p.epochs * p.steps),
            completed=p.epoch * p.steps + p.step,
            info=progress_text(p, self.clock),
        )


class PlainDisplay:
    """One whole line per job event and per epoch, for logs: nothing redraws, nothing is cut.

    `verbose` prints every progress report; otherwise an epoch's line comes when its
    training part ends, and mid-epoch lines at most every `every_s` seconds. `quiet`
    prints failed jobs only.
    """

    def __init__(self, console: Console, n_jobs: int, *, verbose: bool = False, quiet: bool = False) -> None:
        self.console = console
        self.clock = Clock(n_jobs)
        self.verbose = verbose
        self.quiet = quiet
        self.every_s = 30.0
        self._last_line = 0.0

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, text: str) -> None:
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", soft_wrap=True, highlight=False, markup=False)
        self._last_line = time.monotonic()

    def on_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "started":
            self.clock.started(job_id)
            if not self.quiet:
                self._line(f"job {self.clock.begun}/{self.clock.n_jobs}: {event_text(job_id, event, info, None)}")
            return
        if event not in ("finished", "failed", "locked"):
            return
        took = self.clock.finished(job_id)
        if self.quiet and event != "failed":
            return
        text = f"job {self.clock.ended}/{self.clock.n_jobs}: {event_text(job_id, event, info, took)}"
        study = self.clock.study_eta()
        if study is not None and self.clock.ended < self.clock.n_jobs:
            text += f" (study eta ~{duration_text(study)})"
        self._line(text)

    def on_progress(self, p: Progress) -> None:
        text = progress_text(p, self.clock)  # keeps the clock's view of the running job current
        if self.quiet:
            return
        epoch_end = p.phase == "train" and p.step == p.steps
        due = time.monotonic() - self._last_line >= self.every_s
        if self.verbose or epoch_end or due:
            self._line(f"{p.job_id} {text}")


def make_display(console: Console, n_jobs: int, *, verbose: bool, quiet: bool) -> RichDisplay | PlainDisplay:
    """Rich on an interactive terminal (unless quiet), plain lines otherwise."""
    if console.is_terminal and not quiet and not console.is_dumb_terminal:
        return RichDisplay(console, n_jobs)
    return PlainDisplay(console, n_jobs, verbose=verbose, quiet=quiet)
