"""Sequential execution in this process: the CPU default, and the simplest to debug."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from usagg.engine.progress import ProgressFn, with_progress
from usagg.execute.base import EventFn, Executor, JobFn, call_job


class InProcessExecutor(Executor):
    """Runs jobs one after the other in the calling process; an exception fails that job only. `threads`: the torch
    CPU threads its jobs run on (the local executor's `default_cpu_threads` for CPU jobs, so a job run here trains
    as it would in a pool worker), restored when the run ends; None leaves torch's count as it is."""

    name = "inprocess"

    def __init__(self, store_root: str | Path, threads: int | None = None) -> None:
        super().__init__(store_root)
        self.threads = threads

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        fn = with_progress(fn, on_progress)  # the caller's sink itself: the job runs in its process
        states: dict[str, str] = {}
        started: dict[str, Any] = {"device": "in-process"}
        with _torch_threads(self.threads):
            if self.threads is not None:
                started = {"device": "cpu", "threads": self.threads}
            try:
                for job_id in job_ids:
                    said = functools.partial(self._emit, on_event, job_id, "started", started)  # once its lock is ours
                    state, event, info = call_job(fn, self.store_root, job_id, said)
                    states[job_id] = state
                    self._emit(on_event, job_id, event, info)
            finally:
                _release_kept_model()
        return states


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `threads` for the block and put back after (the caller may be a notebook
    or the Python API); nothing, and no torch import, without a count."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _release_kept_model() -> None:
    """The model a job kept for the next (usagg/engine/kept.py) goes with the run: the caller's process (a notebook,
    the Python API) gets its GPU memory back. Imported only where a job of this process imported it."""
    kept = sys.modules.get("usagg.engine.kept")
    if kept is not None:
        kept.release()
