"""A run store's locks (`StoreLocks`, a part of `RunStore`): each job's lock (usagg/joblock.py: heartbeat, dead
once its process is, broken for an ended Slurm job), the plan lock that two starting runs take in turn, and the
record each live `usagg run` keeps of itself (`run`, `live_runs`). Whether a job's holder is alive, which notes a
damaged lock, is `RunStore.lock_alive`'s."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from usagg.joblock import DAMAGED_HOLDER, JobLock
from usagg.store.layout import StoreLayout
from usagg.store.links import new_run_record, run_records


class StoreLocks(StoreLayout):
    """The locks of a store: `heartbeat_s` is how often a holder refreshes its lock, `stale_after_s` how long its
    heartbeat may be silent before the holder counts as dead (usagg/joblock.py `JobLock.holder_alive`)."""

    def __init__(self, root: str | os.PathLike[str], heartbeat_s: float, stale_after_s: float) -> None:
        super().__init__(root)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s

    def job_lock(self, job_id: str) -> JobLock:
        """The job's lock (usagg/joblock.py), with this store's heartbeat and staleness."""
        return JobLock(self.paths(job_id).lock, job_id, self.heartbeat_s, self.stale_after_s)

    @contextlib.contextmanager
    def lock(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Hold the job's lock for the `with` block; raise JobLocked if a live process holds it (usagg/joblock.py).

        Taking it removes the half-written temporaries of dead writers in the job's folder. Yields the holder
        info written into the lock.
        """
        with self.job_lock(job_id).held() as holder:
            self._remove_temporaries(job_id)
            yield holder

    def holds_lock(self, job_id: str) -> bool:
        """Whether this thread holds the job's lock right now (taken by `lock` and not broken since)."""
        return self.job_lock(job_id).held_here()

    def _remove_temporaries(self, job_id: str) -> None:
        """Delete half-written temporary files (usagg/atomic.py names them .<name>.*.tmp) of dead writers.

        Called with the job's lock just taken: only the lock holder writes in a job folder, so
        any temporary file there belongs to a writer that was killed.
        """
        for tmp in self.job_dir(job_id).rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def break_slurm_lock(self, job_id: str, slurm_job: str) -> dict[str, Any] | None:
        """Break the job's lock if Slurm job `slurm_job`, which sacct says has ended, holds it (`JobLock.break_slurm`);
        the holder broken, or None."""
        return self.job_lock(job_id).break_slurm(slurm_job)

    def release_own_lock(self, job_id: str) -> bool:
        """Drop the job's lock if this process holds it (before a Slurm requeue: the new run may be elsewhere)."""
        return self.job_lock(job_id).release_own()

    @contextlib.contextmanager
    def plan_lock(self) -> Iterator[None]:
        """Hold the store's plan lock for the block (`plan_lock_file`, a file lock: a second taker waits).

        `usagg run` decides whether its plan may be written (another spec file bound, another run live: usagg/
        run/studyrun.py `StudyRun.init_store`) and writes it under it, so two runs starting together cannot both pass
        that check before either has written.
        """
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.plan_lock_file)):
            yield

    @contextlib.contextmanager
    def run(self, about: dict[str, Any]) -> Iterator[None]:
        """Record, for the block, that this process runs the store: a lock of its own under `runs_dir` (usagg/
        joblock.py's protocol: heartbeat, dead once its process is), its holder info carrying `about` (spec file,
        plan size). Taken under `plan_lock`; the records of runs that died are removed first (`_dead_record`; only
        names of a record's form: usagg/store/links.py `run_records`)."""
        for holder, lock in self._run_locks():
            if holder is not None and self._dead_record(holder, lock):
                with contextlib.suppress(OSError):
                    lock.path.unlink()
        lock = JobLock(new_run_record(self), "usagg run", self.heartbeat_s, self.stale_after_s, about)
        with lock.held():
            yield

    def live_runs(self) -> list[dict[str, Any]]:
        """The holder info of every other process's `usagg run` of this store that is alive (`run`); a pure read."""
        me = (socket.gethostname(), os.getpid())
        return [
            holder
            for holder, lock in self._run_locks()
            if holder and (holder.get("host"), holder.get("pid")) != me and lock.holder_alive(holder)
        ]

    @staticmethod
    def _dead_record(holder: dict[str, Any], lock: JobLock) -> bool:
        """Whether a run's record in .runs/ is a dead run's: a lock record by `JobLock.holder_alive`; one that reads
        as none (empty, cut short by a crash, garbage, unreadable) by its heartbeat alone, silent past
        `stale_after_s`. A live run touches its record every `heartbeat_s`, and one just writing it has a fresh
        mtime, so no live run's record is removed; a crashed one no longer stays to be read by every run."""
        readable = bool(holder) and DAMAGED_HOLDER not in holder
        return not lock.holder_alive(holder if readable else {})

    def _run_locks(self) -> list[tuple[dict[str, Any] | None, JobLock]]:
        locks = [JobLock(p, "usagg run", self.heartbeat_s, self.stale_after_s) for p in run_records(self)]
        return [(lock.holder(), lock) for lock in locks]
