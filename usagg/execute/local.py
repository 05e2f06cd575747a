"""The "local" executor: in this process, or a pool of workers on the GPUs or the CPU, from `execution.devices`,
`jobs_per_gpu` and `cpu_jobs`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.errors import UsaggError
from usagg.execute.base import Executor
from usagg.execute.inprocess import InProcessExecutor
from usagg.execute.pool import PoolExecutor, cpu_workers, default_cpu_threads
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.spec.models import ExecutionSpec


def cuda_device_count() -> int:
    """CUDA devices this process sees (torch imported here: the store and analysis stay torch-free)."""
    import torch

    return int(torch.cuda.device_count())


def resolve_devices(execution: ExecutionSpec) -> list[int] | None:
    """GPU indices (counting visible devices) the jobs may use, or None for the CPU.

    auto: every visible GPU, else the CPU; cuda: every visible GPU, an error if
    there is none; cpu: None; a list: those indices, checked against what is visible.
    """
    devices = execution.devices
    if devices == "cpu":
        return None
    if isinstance(devices, str):  # auto or cuda
        n = cuda_device_count()
        if n == 0:
            if devices == "cuda":
                raise UsaggError("execution.devices is 'cuda' but no CUDA device is visible; use 'cpu' or 'auto'")
            return None
        return list(range(n))
    if not devices:
        return None
    if len(set(devices)) != len(devices):
        raise UsaggError(f"execution.devices {devices} lists a device twice")
    n = cuda_device_count()
    missing = [d for d in devices if d >= n]
    if missing:
        raise UsaggError(
            f"execution.devices {devices}: {missing} not visible ({counted(n, 'CUDA device')} seen); {_fix(n)}"
        )
    return list(devices)


def _fix(visible: int) -> str:
    """What to give instead when listed GPUs are not there: the CPU, every visible GPU, or the indices there are. A
    set CUDA_VISIBLE_DEVICES is named: it hides the others and renumbers the rest from 0, which indices count."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    hides = (
        f"; CUDA_VISIBLE_DEVICES={mask!r} hides the others and renumbers the rest from 0" if mask is not None else ""
    )
    how = "(`--devices` on the command line, `device=` in usagg.api, `execution.devices` in the spec)"
    if visible == 0:
        return f"use devices cpu or auto (every visible GPU, else the CPU) {how}{hides}"
    indices = ",".join(str(i) for i in range(visible))
    return f"use devices auto (every visible GPU), {indices} or cpu {how}{hides}"


def make_local_executor(execution: ExecutionSpec, store_root: str | Path) -> Executor:
    """A pool on the GPUs for several GPUs, one GPU other than 0 or several jobs per GPU; a pool on the CPU when
    `cpu_jobs` allows several jobs at once (explicit, or auto with cores for several); else in-process.

    A CPU pool given a single job runs it in this process (usagg/execute/pool.py): a worker would only add its start.
    """
    devices = resolve_devices(execution)
    if devices and (devices != [0] or execution.jobs_per_gpu != 1):
        # one device other than 0 also gets a pool: only a fresh process can be pinned to it
        return PoolExecutor(str(store_root), devices, execution.jobs_per_gpu, accel=execution.accel)
    if devices is None and cpu_workers(execution.cpu_jobs, threads=execution.threads) > 1:
        return PoolExecutor(str(store_root), None, execution.cpu_jobs, threads=execution.threads)
    if devices is None:
        return InProcessExecutor(store_root, threads=default_cpu_threads(execution.cpu_jobs, execution.threads))
    return InProcessExecutor(store_root)
