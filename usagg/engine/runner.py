"""`run_one(store_root, job_id, *, device, threads)`: one job inside the run store, the function every executor calls.

It holds the job's lock (another live process running it means: leave it
alone), records the state transitions, logs to the job's log file, and turns
any failure into `failed` plus the full traceback as the job's error text, so
one bad job never stops a study. Executors get it as
`functools.partial(run_one, device=..., threads=...)` (see usagg/service.py).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from usagg.store import RunStore

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _JobLog:
    """A file handler on the root logger for the duration of a job (the engine, model and data all log there)."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.setLevel(logging.INFO)
        self.root = logging.getLogger()
        self.old_level = self.root.level

    def __enter__(self) -> logging.Logger:
        self.root.addHandler(self.handler)
        if self.root.level > logging.INFO or self.root.level == logging.NOTSET:
            self.root.setLevel(logging.INFO)
        return logging.getLogger("usagg.engine.runner")

    def __exit__(self, *exc: object) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.old_level)
        self.handler.close()


def run_one(store_root: str, job_id: str, *, device: str | None = None, threads: int | None = None) -> str:
    """Run one job of the store to `done` or `failed` and return that state.

    `device` (cpu | cuda | cuda:N; None: a visible GPU, else the CPU) and
    `threads` (CPU threads; None: torch's choice) go to the engine as given. A
    done job is returned as is (its id carries the hash of every setting, so
    done means done). A job whose lock another live process holds raises
    `JobLocked` untouched (the executors report it as `locked`); every other
    problem is recorded and returned as `failed`, never raised.
    """
    store = RunStore(store_root)
    if store.job_state(job_id) == "done":
        return "done"
    with store.lock(job_id):  # raises JobLocked when a live process holds it
        if store.job_state(job_id) == "done":  # finished by another process between our check and the lock
            return "done"
        return _run_locked(store, job_id, device, threads)


def _run_locked(store: RunStore, job_id: str, device: str | None, threads: int | None) -> str:
    paths = store.paths(job_id)
    paths.folder.mkdir(parents=True, exist_ok=True)
    store.clear_error(job_id)
    store.set_state(job_id, "running")
    with _JobLog(paths.log) as log:
        try:
            from usagg.engine.job import run_job  # torch is imported here, not when the store is read

            job = store.job(job_id)
            store.write_metrics(job_id, run_job(job, paths.folder, device, threads))
        except Exception as err:
            store.write_error(job_id, traceback.format_exc())
            summary = (f"{type(err).__name__}: {err}".strip().splitlines() or ["error"])[0][:300]
            log.error("job failed: %s", summary)
            store.set_state(job_id, "failed", error=summary)
            return "failed"
        except BaseException:
            # Ctrl-C or a cluster's SystemExit: not the job's fault. Back to pending (the next run
            # resumes from the last checkpoint), then let the interruption go on.
            log.warning("job interrupted; it resumes from its last checkpoint when run again")
            store.set_state(job_id, "pending", error="interrupted")
            raise
        log.info("job done: %s", job_id)
    store.set_state(job_id, "done")
    return "done"
