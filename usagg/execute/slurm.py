"""Slurm through submitit: one job array per `usagg run`, requeued on pre-emption or time-out.

Each array element calls `SlurmJobCall(fn)(store_root, job_id)` on a node.
The call is `submitit.helpers.Checkpointable`: when Slurm pre-empts the job or
its time runs out, submitit calls `checkpoint`, which releases the job's lock
(the requeued run may land on another host) and resubmits the very same call;
the engine resumes from its own `checkpoints/last.pt`, so nothing else needs
saving. Requeues after time-outs are capped by `SlurmSpec.max_requeue`.
submitit's files (sbatch script, pickles, stdout/stderr) go to a folder of their own per submission,
`<store>/slurm/<date-time>-<random>/` (`<slurm job id>_<task>_log.out` / `.err`), made empty for it: submitit
reads a `<job id>_..._result.pkl` it finds there as the job's result, by unpickling it, so a store received from
elsewhere (or copied from a cluster whose job ids overlap) must never give it one. Tests pass `cluster="local"` to
run the same path as local subprocesses.
"""

from __future__ import annotations

import shutil
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from usagg.engine.progress import ProgressFn
from usagg.errors import UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, call_job, record_failure
from usagg.safepath import check_component, check_text, no_links
from usagg.spec.models import ExecutionSpec, SlurmSpec
from usagg.store import RunStore, submitit_link


class SlurmJobCall(Checkpointable):
    """The callable each array element runs: fn with failure recording, requeued as is."""

    def __init__(self, fn: JobFn) -> None:
        self.fn = fn

    def __call__(self, store_root: str, job_id: str) -> tuple[str, str, dict[str, Any]]:
        return call_job(self.fn, store_root, job_id)

    def checkpoint(self, store_root: str, job_id: str) -> DelayedSubmission:
        """Free the job's lock for the requeued run, then resubmit the same call (the engine resumes)."""
        try:
            RunStore(store_root).release_own_lock(job_id)
        except Exception:
            traceback.print_exc()
        return DelayedSubmission(self, store_root, job_id)


def slurm_parameters(slurm: SlurmSpec, name: str) -> dict[str, Any]:
    """AutoExecutor parameters from the spec (None values mean 'cluster default')."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.time_min,
        "gpus_per_node": slurm.gpus_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_partition": slurm.partition,
        "slurm_account": slurm.account,
        "slurm_qos": slurm.qos,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    if slurm.additional:
        params["slurm_additional_parameters"] = dict(slurm.additional)
    return params


class SlurmExecutor(Executor):
    """Submits the jobs as one Slurm array and waits for them (Ctrl-C stops waiting, not the jobs)."""

    name = "slurm"

    def __init__(
        self,
        store_root: str | Path,
        slurm: SlurmSpec,
        *,
        cluster: str | None = None,
        poll_s: float = 2.0,
        results_timeout_s: float | None = None,
    ) -> None:
        """`results_timeout_s`: how long to wait for a finished job's result file to appear
        (submitit's default, 15 s, allows for a slow shared file system; only a crashed job waits it out)."""
        super().__init__(store_root)
        self.slurm = slurm
        self.cluster = cluster
        self.poll_s = poll_s
        self.results_timeout_s = results_timeout_s
        self.folder = no_links(  # no planted link; submitit's own links to its scripts are its
            RunStore(self.store_root).slurm_dir, f"{self.store_root}: slurm/", submitit_link
        )

    def make_submitit_executor(self) -> submitit.AutoExecutor:
        """The configured submitit executor (separate so its parameters can be checked without a cluster), writing
        into a new, empty folder of its own under slurm/ (see the module docstring: no pickle it did not write)."""
        folder, name = self.checked_names()
        folder = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=False)  # new: nothing planted or left from another cluster is in it
        cluster = self.cluster or submitit.AutoExecutor.which()
        kwargs: dict[str, Any] = {}
        if cluster in ("slurm", "local"):
            kwargs[f"{cluster}_max_num_timeout"] = self.slurm.max_requeue
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster, **kwargs)
        ex.update_parameters(**slurm_parameters(self.slurm, name))
        return ex

    def checked_names(self) -> tuple[Path, str]:
        """The folder and job name submitit writes into `#SBATCH` lines, checked again right before submitting
        (the spec checks `output_root` and the study name; this is defence in depth): a newline there would
        start a new line of the batch script, which runs on submission."""
        check_text(str(self.folder), "Slurm executor, log folder (#SBATCH --output/--error)")
        name = f"usagg-{Path(self.store_root).name}"
        check_component(name, "Slurm executor, job name (#SBATCH --job-name)")
        return self.folder, name

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        """Submit an array job; `on_progress` is not heard: a Slurm job has no channel back but its result."""
        states: dict[str, str] = {}
        if not job_ids:
            return states
        ex = self.make_submitit_executor()
        call = SlurmJobCall(fn)
        jobs = ex.map_array(call, [self.store_root] * len(job_ids), job_ids)
        pending = dict(zip(job_ids, jobs, strict=True))
        if self.results_timeout_s is not None:
            for job in jobs:
                # submitit declares its class default as the int 15; it compares the value with elapsed seconds
                job._results_timeout_s = self.results_timeout_s  # type: ignore[assignment]
        for job_id, job in pending.items():
            self._emit(on_event, job_id, "submitted", {"slurm_job_id": job.job_id})
        while pending:
            for job_id, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[job_id]
                state, event, info = self._outcome(job_id, job)
                states[job_id] = state
                self._emit(on_event, job_id, event, info)
            if pending:
                time.sleep(self.poll_s)
        return states

    def _outcome(self, job_id: str, job: Any) -> tuple[str, str, dict[str, Any]]:
        """The call's answer, or a recorded failure when the Slurm job itself failed or was killed."""
        try:
            state, event, info = job.result()
            return state, event, {**info, "slurm_job_id": job.job_id}
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError: crash, kill, out of requeues
            detail = str(e).strip()
            error = f"Slurm job {job.job_id} did not complete ({type(e).__name__}):\n{detail}"
            summary = (
                f"Slurm job {job.job_id} did not complete ({type(e).__name__}, state {job.state}); "
                f"see {job.paths.stderr}"
            )
            try:
                summary = record_failure(self.store_root, job_id, error, summary=summary)
            except Exception:
                traceback.print_exc()
                summary = error.splitlines()[0]
            return "failed", "failed", {"state": "failed", "error": summary, "slurm_job_id": job.job_id}


def make_slurm_executor(
    execution: ExecutionSpec, store_root: str | Path, *, cluster: str | None = None
) -> SlurmExecutor:
    """The "slurm" executor (usagg/execute/registry.py); `cluster` overrides submitit's choice
    ("local" runs the Slurm path as local subprocesses, "debug" in-process).

    Without `cluster`, Slurm's `sbatch` must be on PATH: submitit would otherwise quietly
    run the jobs on this host, which is not what `executor: slurm` asks for.
    """
    if cluster is None and shutil.which("sbatch") is None:
        raise UsaggError(
            "execution.executor is slurm, but this host has no `sbatch` on PATH (not a Slurm login node?). "
            "Run from a node that can submit Slurm jobs, or use --executor local to run here."
        )
    return SlurmExecutor(store_root, execution.slurm, cluster=cluster)
