"""What a run leaves its caller (`RunResult`): the store, each selected job's final state and error, and the
results table; `usagg run` turns it into its exit code, `usagg.api.run_study` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usagg.data.fmc_uia import Problem


@dataclass(frozen=True)
class RunResult:
    """What a run left: where its store is, each selected job's final state, and the results table.

    `store_root` and `results_csv` are absolute (`StudyRun.finish`), so they still lead to the store after the
    caller (a notebook) changes its current folder."""

    store_root: Path
    states: dict[str, str]
    results_csv: Path
    #: Problems of tasks the study does not train (they did not block it; see `StudyRun.check_data`).
    data_warnings: list[Problem] = field(default_factory=list)
    #: Each failed job's error, one line (its job.json `error`; the traceback is in jobs/<id>/error.txt).
    errors: dict[str, str] = field(default_factory=dict)
    #: Selected jobs not done that an earlier `usagg run` submitted to Slurm and sacct still lists, job id -> Slurm
    #: job id: the run did not finish them (and planned no stage after them); the next `usagg run` collects them.
    queued: dict[str, str] = field(default_factory=dict)

    #: Jobs that ended failed in this run although the store could not record it (a full disk at their job.json),
    #: job id -> the error the executor reported: the store still says running or pending, so the next `usagg run`
    #: resumes them from their last checkpoint.
    unrecorded: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [jid for jid, s in self.states.items() if s == "failed"]

    @property
    def ok(self) -> bool:
        """True when no selected job failed (recorded or not); `unfinished` says whether every one is done."""
        return not self.failed and not self.unrecorded

    @property
    def unfinished(self) -> list[str]:
        """Selected jobs neither done nor failed when the run ended, `unrecorded` ones aside: an earlier run's Slurm
        job still has them (`queued`), another live process runs them (their lock is held), or they wait for a job
        of the same settings that is not done. Not failed, but the study is not finished: `usagg run` exits 3."""
        return [jid for jid, s in self.states.items() if s not in ("done", "failed") and jid not in self.unrecorded]
