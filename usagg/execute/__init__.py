"""Executors: where jobs run (in this process, one worker per local GPU, Slurm via submitit).

`make_executor(execution, store_root)` picks one from the spec's `execution`
section; all share `Executor.run(job_ids, fn, on_event) -> {job_id: state}`.
submitit is only imported for Slurm, torch only to count GPUs for "auto"/"cuda".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.errors import UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, call_job, record_failure
from usagg.execute.inprocess import InProcessExecutor
from usagg.execute.pool import GpuPoolExecutor
from usagg.spec.models import ExecutionSpec

if TYPE_CHECKING:
    from usagg.execute.slurm import SlurmExecutor

__all__ = [
    "EventFn",
    "Executor",
    "GpuPoolExecutor",
    "InProcessExecutor",
    "JobFn",
    "SlurmExecutor",
    "call_job",
    "make_executor",
    "record_failure",
    "resolve_devices",
]


def _cuda_count() -> int:
    import torch  # lazy: the store and analysis stay torch-free

    return int(torch.cuda.device_count())


def resolve_devices(execution: ExecutionSpec) -> list[int] | None:
    """GPU indices (counting visible devices) the jobs may use, or None for the CPU.

    auto: every visible GPU, else the CPU; cuda: every visible GPU, an error if
    there is none; cpu: None; a list: those indices, checked against what is visible.
    """
    devices = execution.devices
    if devices == "cpu":
        return None
    if devices in ("auto", "cuda"):
        n = _cuda_count()
        if n == 0:
            if devices == "cuda":
                raise UsaggError("execution.devices is 'cuda' but no CUDA device is visible; use 'cpu' or 'auto'")
            return None
        return list(range(n))
    if not devices:
        return None
    if len(set(devices)) != len(devices):
        raise UsaggError(f"execution.devices {devices} lists a device twice")
    n = _cuda_count()
    missing = [d for d in devices if d >= n]
    if missing:
        raise UsaggError(f"execution.devices {devices}: {missing} not visible ({n} CUDA device(s) seen)")
    return list(devices)


def make_executor(execution: ExecutionSpec, store_root: str | Path, cluster: str | None = None) -> Executor:
    """The executor for a spec: Slurm, a GPU pool for several GPUs (or one GPU other than 0), else in-process.

    `cluster` overrides submitit's choice of cluster for a Slurm spec ("local"
    runs the Slurm path as local subprocesses, "debug" in-process).
    """
    if execution.executor == "slurm":
        from usagg.execute.slurm import SlurmExecutor

        return SlurmExecutor(store_root, execution.slurm, cluster=cluster)
    devices = resolve_devices(execution)
    if devices and (len(devices) >= 2 or devices != [0]):
        # one device other than 0 also gets a (one-worker) pool: only a fresh process can be pinned to it
        return GpuPoolExecutor(str(store_root), devices)
    return InProcessExecutor(store_root)


def __getattr__(name: str) -> Any:
    if name == "SlurmExecutor":  # lazy: submitit is an optional dependency
        from usagg.execute.slurm import SlurmExecutor

        return SlurmExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
