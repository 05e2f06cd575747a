"""A process-wide progress listener, so the CLI can show epoch, step, loss and images/s of the running job.

Executors only pass `(store_root, job_id)` to `run_one`; the in-process
executor runs it in the CLI's own process, so the CLI registers a listener
here and the trainer reports to it. A local pool worker's listener sends the
reports to the parent, which reports them here in turn (usagg/execute/pool.py),
so several jobs may report at once. In Slurm jobs no listener is set and
reporting costs one attribute lookup. No torch import: the CLI uses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Progress:
    """One progress report from the trainer."""

    job_id: str
    phase: str  # "train" | "select" | "test" | "done"
    epoch: int
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    loss: float | None = None
    images_per_s: float | None = None


Listener = Callable[[Progress], None]
_listener: Listener | None = None


def report(p: Progress) -> None:
    """Send a report to the listener, if any; a listener error must never kill a job."""
    if _listener is not None:
        with contextlib.suppress(Exception):  # display problems are not training problems
            _listener(p)


@contextmanager
def listening(fn: Listener) -> Iterator[None]:
    """Install `fn` as the listener for the duration of the block."""
    global _listener
    old, _listener = _listener, fn
    try:
        yield
    finally:
        _listener = old
