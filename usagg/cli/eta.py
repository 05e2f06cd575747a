"""ETAs from measured epoch times, never extrapolated from a job's first seconds (issue 29.7).

A job's start (loading the model, the first epoch decoding images into the cache, CUDA warm-up)
is no guide to the rest: extrapolating from it made a 27-minute job read 7h37m. So a job is
timed between the ends of its epochs' training (the trainer's report with step == steps, which
every executor passes on: usagg/execute/pool.py); the first interval starts once the first
epoch's training has ended, the warm-up left out. Until `STABLE_AFTER` intervals are measured
the ETA is a stated range: around the pace of steps alone (`STEP_SPAN`: selection unmeasured,
the first epoch's steps slowed by decoding) or of one epoch (`EPOCH_SPAN`); from then on one
estimate from the median epoch, which moves only as time passes. A study's ETA adds the jobs'
measured times (finished jobs, running ones' own estimates), never the first seconds of a job: each job
still to run (or running without an estimate of its own) at the mean of the jobs of its kind (`JobKind`:
paradigm, tasks, sweep point; then the same paradigm and tasks at another point), and where none of its
kind is measured yet at the measured jobs' time per task times its tasks, stated as a range
(`OTHER_KIND_SPAN`): the AU jobs' times put on the short TS jobs after them read "~4m05s" for a study that
ended 21 s later.
`stored_eta` is the same rule for `usagg status`, which has the job's history.csv only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usagg.engine.progress import Progress
    from usagg.plan import Job

#: Epochs timed before an ETA is one number; fewer give a range.
STABLE_AFTER = 2
#: The range around an estimate from the pace of steps (no epoch timed): selection time is not in it, and the
#: first epoch's steps also decode images, so the rest may take half to twice as long.
STEP_SPAN = (0.5, 2.0)
#: The range around an estimate from one timed epoch.
EPOCH_SPAN = (0.75, 1.5)
#: The range around a job's time taken from jobs of other kinds, per task: a job's steps grow with its tasks'
#: data, but MoE, heads and selection do not scale so.
OTHER_KIND_SPAN = (0.5, 2.0)


@dataclass(frozen=True)
class JobKind:
    """What a job's time is estimated from: jobs of the same paradigm, number of tasks and sweep point."""

    paradigm: str
    tasks: int
    point: str = ""


def job_kinds(jobs: list[Job], job_ids: list[str]) -> dict[str, JobKind]:
    """The kind of each of `job_ids` among `jobs` (the run's selection; an id not there has none)."""
    from usagg.sweep import points_cell

    by_id = {j.id: j for j in jobs}
    return {
        jid: JobKind(job.paradigm, len(job.tasks), points_cell(job.sweep))
        for jid in job_ids
        if (job := by_id.get(jid)) is not None
    }


#: A job's time as (kind or None where unknown, low, high) seconds: a finished job's (low == high), a running one's.
Sample = tuple[JobKind | None, float, float]


def estimate(kind: JobKind | None, samples: list[Sample]) -> tuple[float, float]:
    """(low, high) seconds of a job of `kind` from the jobs measured (non-empty `samples`): the mean of its kind's,
    else of its paradigm and tasks at another point, else the time per task of every measured job of a known kind
    times its tasks, widened by `OTHER_KIND_SPAN`; the mean of all for a job or samples of unknown kind."""
    if kind is not None:
        for same in (lambda k: k == kind, lambda k: (k.paradigm, k.tasks) == (kind.paradigm, kind.tasks)):
            alike = [(lo, hi) for k, lo, hi in samples if k is not None and same(k)]
            if alike:
                return _mean([lo for lo, _ in alike]), _mean([hi for _, hi in alike])
        per_task = [(lo / max(1, k.tasks), hi / max(1, k.tasks)) for k, lo, hi in samples if k is not None]
        if per_task:
            lo, hi = _mean([lo for lo, _ in per_task]), _mean([hi for _, hi in per_task])
            return lo * kind.tasks * OTHER_KIND_SPAN[0], hi * kind.tasks * OTHER_KIND_SPAN[1]
    return _mean([lo for _, lo, _ in samples]), _mean([hi for _, _, hi in samples])


@dataclass(frozen=True)
class Eta:
    """Seconds left: `low` equals `high` once enough is measured, a stated range before."""

    low: float
    high: float

    @property
    def exact(self) -> bool:
        return self.low == self.high


def _spanned(base: float, span: tuple[float, float], since: float) -> Eta:
    """`base` seconds from an instant `since` seconds ago, widened by `span`; never below zero."""
    return Eta(max(0.0, base * span[0] - since), max(0.0, base * span[1] - since))


@dataclass
class JobPace:
    """What one running job's progress reports have shown: when each epoch's training ended, when the next epoch's
    first report came (so selection is timed too), and the pace of its steps."""

    started: float
    epochs: int = 0
    steps: int = 0
    ends: dict[int, float] = field(default_factory=dict)  # epoch -> when its training ended
    resumes: dict[int, float] = field(default_factory=dict)  # epoch -> when its steps began (after selection)
    step_s: float | None = None  # seconds per step, from two reports of one epoch
    at: tuple[int, int, float] | None = None  # (epoch, step, when) of the latest training report
    _first: tuple[int, int, float] | None = None  # the current epoch's first training report

    def report(self, p: Progress, now: float) -> None:
        """Take one report of the trainer (usagg/engine/progress.py)."""
        self.epochs, self.steps = p.epochs, p.steps
        if p.phase != "train":
            return
        if self._first is None or self._first[0] != p.epoch:
            self._first = (p.epoch, p.step, now)
            if p.epoch - 1 in self.ends:  # when its steps began: this report comes after `p.step` of them
                began = now - (self.step_s or 0.0) * p.step
                self.resumes.setdefault(p.epoch, max(began, self.ends[p.epoch - 1]))
        elif p.step > self._first[1]:
            self.step_s = (now - self._first[2]) / (p.step - self._first[1])
        self.at = (p.epoch, p.step, now)
        if p.step >= p.steps:
            self.ends.setdefault(p.epoch, now)

    def epoch_times(self) -> list[float]:
        """Seconds between consecutive ends of training: one epoch's selection and the next one's training."""
        return [t - self.ends[e - 1] for e, t in sorted(self.ends.items()) if e - 1 in self.ends]

    def eta(self, now: float) -> Eta | None:
        """Seconds left in the job's training and selection (None before two reports of an epoch)."""
        timed = self.epoch_times()
        if timed:
            last = max(self.ends)
            selections = [t - self.ends[e - 1] for e, t in self.resumes.items() if e - 1 in self.ends]
            base = statistics.median(timed) * (self.epochs - 1 - last) + (
                statistics.median(selections) if selections else 0.0
            )
            span = (1.0, 1.0) if len(timed) >= STABLE_AFTER else EPOCH_SPAN
            return _spanned(base, span, now - self.ends[last])
        if self.step_s is None or self.at is None:
            return None
        epoch, step, when = self.at
        base = self.step_s * (self.steps - step) + self.step_s * self.steps * (self.epochs - 1 - epoch)
        return _spanned(base, STEP_SPAN, now - when)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass
class Clock:
    """The running jobs' paces, the finished jobs' times and the job counter of one `usagg run`.

    Each job gets its number once, when it starts (or ends without having started: a locked job), so
    `job 2/10` is the same job from its start line to its end line. A local pool runs several jobs at
    once (usagg/execute/pool.py): the study's ETA divides the work left by the most jobs seen running
    together. `kinds` are the run's jobs' kinds, for estimating each from its own kind (`estimate`); a job
    without one counts at the mean of all. `now` is the clock read (tests pass their own).
    """

    n_jobs: int
    now: Callable[[], float] = time.monotonic
    kinds: dict[str, JobKind] = field(default_factory=dict)
    running: dict[str, JobPace] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    finished_kinds: list[JobKind | None] = field(default_factory=list)  # the kind of each of `durations`
    ended: int = 0
    parallel: int = 1  # most jobs seen running at once

    def number(self, job_id: str) -> int:
        """The job's number in this run, given at its first event."""
        return self.numbers.setdefault(job_id, len(self.numbers) + 1)

    def add_jobs(self, n: int, kinds: dict[str, JobKind] | None = None) -> None:
        """A staged paradigm planned `n` more jobs to run (usagg/run/driver.py `drive`), of `kinds`: the counter
        goes on."""
        self.n_jobs += n
        self.kinds.update(kinds or {})

    def started(self, job_id: str) -> int:
        self.running[job_id] = JobPace(self.now())
        self.parallel = max(self.parallel, len(self.running))
        return self.number(job_id)

    def finished(self, job_id: str, *, trained: bool = True) -> float | None:
        """The job's time (None for one that never started here, or `trained` False: one another process holds,
        left to it, whose seconds here say nothing of a job's time and stay out of the study's ETA)."""
        self.number(job_id)
        self.ended += 1
        pace = self.running.pop(job_id, None)
        if pace is None or not trained:
            return None
        took = self.now() - pace.started
        self.durations.append(took)
        self.finished_kinds.append(self.kinds.get(job_id))
        return took

    def progress(self, p: Progress) -> bool:
        """Take a report; False for one of a job not running (a late report of a job already ended)."""
        pace = self.running.get(p.job_id)
        if pace is None:
            return False
        pace.report(p, self.now())
        return True

    def job_eta(self, job_id: str) -> Eta | None:
        pace = self.running.get(job_id)
        return None if pace is None else pace.eta(self.now())

    def study_eta(self) -> Eta | None:
        """Seconds left in the study from the jobs' measured times (the finished jobs' and the running jobs' own
        estimates, elapsed plus ETA): a job without its own estimate, or still to run, at `estimate` of its kind;
        None while no job has either."""
        now = self.now()
        left = {jid: pace.eta(now) for jid, pace in self.running.items()}
        samples: list[Sample] = [(k, d, d) for k, d in zip(self.finished_kinds, self.durations, strict=True)]
        for jid, eta in left.items():
            if eta is not None:
                elapsed = now - self.running[jid].started
                samples.append((self.kinds.get(jid), elapsed + eta.low, elapsed + eta.high))
        if not samples:
            return None
        running_low: list[float] = []
        running_high: list[float] = []
        for jid, eta in left.items():
            if eta is None:
                elapsed = now - self.running[jid].started
                per_low, per_high = estimate(self.kinds.get(jid), samples)
                eta = Eta(max(0.0, per_low - elapsed), max(0.0, per_high - elapsed))
            running_low.append(eta.low)
            running_high.append(eta.high)
        pending = [k for jid, k in self.kinds.items() if jid not in self.numbers]
        unknown = max(0, self.n_jobs - len(self.numbers) - len(pending))  # jobs of no known kind: the mean of all
        waiting = [estimate(k, samples) for k in pending] + [estimate(None, samples)] * unknown
        low = max([*running_low, (sum(running_low) + sum(lo for lo, _ in waiting)) / self.parallel])
        high = max([*running_high, (sum(running_high) + sum(hi for _, hi in waiting)) / self.parallel])
        return Eta(low, high)


def stored_eta(done: int, start_epoch: int, epochs: int, started: float, written: float, now: float) -> Eta | None:
    """A running job's ETA from its store alone (`usagg status`): `done` epochs in history.csv, `start_epoch` of
    them there when this attempt started at `started`, the last written at `written` (times in seconds since the
    epoch). Its epoch time includes this attempt's start-up, so it leans long; a range until `STABLE_AFTER`
    epochs of this attempt; None before one."""
    timed = done - start_epoch
    if timed <= 0 or done >= epochs or written < started:
        return None
    span = (1.0, 1.0) if timed >= STABLE_AFTER else EPOCH_SPAN
    return _spanned((written - started) / timed * (epochs - done), span, now - written)
