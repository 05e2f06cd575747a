"""What the trainer reports while a job runs (epoch, step, loss, images/s), and the sink type that carries it.

There is no process-wide listener: whoever runs a job passes its sink down explicitly
(`Executor.run(..., on_progress)` -> `run_one(progress=...)` -> `run_job` -> `Trainer` ->
`ProgressReporter`, usagg/engine/callbacks.py). The in-process executor hands the caller's
sink itself; a local pool worker hands a sink that sends each report over its pipe and the
parent hands it to the caller's sink (usagg/execute/pool.py); a Slurm job gets none. A job's
first report (phase "start", `run_job`) names the device it resolved and, where `execution.accel`
cannot run as asked there, the fallback's line: an executor's `started` event comes before the job
resolves its device, so it cannot say. A job that resumed from its checkpoint then says from which epoch (phase
"resume", `epoch` the epochs the checkpoint held: the start report comes before the checkpoint is read), and one
whose last.pt could not be resumed (damaged, another layout, other frozen weights) why, and where the file is kept
(phase "restart": it starts over from epoch 1; the runner writes it into job.json for `usagg status`). A
training report's `images_per_s` is the epoch's so far: its training steps only, the affinity measurements among
them left out (usagg/engine/callbacks.py `ProgressReporter`). No torch import: the CLI uses it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Progress:
    """One progress report from the trainer."""

    job_id: str
    phase: str  # "start" | "resume" | "restart" | "train" | "select" | "test" | "done"
    epoch: int  # the running epoch, from 0 ("resume": the epochs done, where training goes on)
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    loss: float | None = None
    images_per_s: float | None = None  # "train": the epoch's training images per second so far, affinity left out
    device: str | None = None  # phase "start": where the job runs, "cuda:0 (NVIDIA H100)" or "cpu (2 threads)"
    accel_note: str | None = None  # phase "start": the accel mode's fallback on that device (None: runs as asked)
    restart: str | None = None  # phase "restart": why the job's last.pt was not resumed, where it is kept


ProgressFn = Callable[[Progress], None]


def send(sink: ProgressFn | None, p: Progress) -> None:
    """Hand a report to `sink`, if any; a sink's error must never kill a job or a run (display problems are not
    training problems)."""
    if sink is not None:
        with contextlib.suppress(Exception):
            sink(p)


def with_progress(fn: Callable[..., str], sink: ProgressFn | None) -> Callable[..., str]:
    """A job function (`fn(store_root, job_id)`) that hands `sink` to `run_one` as `progress=`; `fn` itself when
    there is no sink, so job functions that take no sink still run where nobody listens."""
    return fn if sink is None else functools.partial(fn, progress=sink)
