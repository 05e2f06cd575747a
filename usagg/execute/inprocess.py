"""Sequential execution in this process: the CPU default, and the simplest to debug."""

from __future__ import annotations

import sys

from usagg.engine.progress import ProgressFn, with_progress
from usagg.execute.base import EventFn, Executor, JobFn, call_job


class InProcessExecutor(Executor):
    """Runs jobs one after the other in the calling process; an exception fails that job only."""

    name = "inprocess"

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        fn = with_progress(fn, on_progress)  # the caller's sink itself: the job runs in its process
        states: dict[str, str] = {}
        try:
            for job_id in job_ids:
                self._emit(on_event, job_id, "started", {"device": "in-process"})
                state, event, info = call_job(fn, self.store_root, job_id)
                states[job_id] = state
                self._emit(on_event, job_id, event, info)
        finally:
            _release_kept_model()
        return states


def _release_kept_model() -> None:
    """The model a job kept for the next (usagg/engine/kept.py) goes with the run: the caller's process (a notebook,
    the Python API) gets its GPU memory back. Imported only where a job of this process imported it."""
    kept = sys.modules.get("usagg.engine.kept")
    if kept is not None:
        kept.release()
