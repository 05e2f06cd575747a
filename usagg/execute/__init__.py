"""Executors: where jobs run (in this process, a pool of workers on local GPUs or the CPU, Slurm via submitit,
plug-ins).

`make_executor(execution, store_root)` builds the one the spec's `execution.executor`
names (usagg/execute/base.py), through the registry in `usagg/execute/registry.py`; all share
`Executor.run(job_ids, fn, on_event=None, on_progress=None) -> {job_id: state}` (`on_progress` hears the
trainer's progress reports where the executor can carry them back). The names below are
imported on first use: the spec imports the registry, which imports this package,
so it must stay import-free (no store, no spec, no torch, no submitit).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usagg.execute.base import EventFn, Executor, JobFn, call_job, make_executor, record_failure
    from usagg.execute.inprocess import InProcessExecutor
    from usagg.execute.local import resolve_devices
    from usagg.execute.pool import PoolExecutor
    from usagg.execute.slurm import SlurmExecutor

_HOME = {
    "EventFn": "base",
    "Executor": "base",
    "JobFn": "base",
    "call_job": "base",
    "record_failure": "base",
    "InProcessExecutor": "inprocess",
    "PoolExecutor": "pool",
    "SlurmExecutor": "slurm",
    "resolve_devices": "local",
    "make_executor": "base",
}

__all__ = [
    "EventFn",
    "Executor",
    "InProcessExecutor",
    "JobFn",
    "PoolExecutor",
    "SlurmExecutor",
    "call_job",
    "make_executor",
    "record_failure",
    "resolve_devices",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
