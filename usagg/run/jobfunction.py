"""What the executor runs per job: `run_one` with the engine's device, threads, accel, trackers and plug-ins bound
(`job_function`), and the study's tracker run around a run's jobs (`reachable_tracking`, `end_tracking`).

The device and CPU threads reach the engine as arguments of the job function, never through this process's
environment; a local pool worker is pinned before torch loads, to its GPU or, on the CPU, to its share of the cores
when `execution.threads` is not given (usagg/execute/pool.py)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usagg.execute.base import JobFn
    from usagg.run.studyrun import StudyRun
    from usagg.spec.models import ExecutionSpec, TrackingSpec


def engine_device(execution: ExecutionSpec) -> str | None:
    """The device the jobs' engine uses: cpu when asked for; cuda for cuda or GPU indices; None for auto (the engine
    picks the first visible GPU, else the CPU).

    Local pool workers are pinned to one GPU each, which they see as cuda:0, and a
    Slurm job gets the GPUs Slurm gives it, so "cuda" is right for every GPU setting
    under every executor: a job that asked for a GPU fails where none is visible
    (the engine says so; a Slurm job names its node, usagg/execute/slurm.py) instead
    of training on the CPU.
    """
    if execution.devices == "cpu":
        return "cpu"
    return None if execution.devices == "auto" else "cuda"


def job_function(execution: ExecutionSpec, tracking: TrackingSpec | None = None) -> JobFn:
    """`run_one` with device, threads, accel, trackers and this process's code-registered plug-in modules bound
    (`registry.code_plugins`: a worker imports them first): picklable, so it reaches pool workers and Slurm
    nodes."""
    from usagg.engine.runner import run_one  # torch-free at import: the engine loads inside the call
    from usagg.registry import code_plugins

    return functools.partial(
        run_one,
        device=engine_device(execution),
        threads=execution.threads,
        accel=execution.accel,
        tracking=tracking if tracking is not None and (tracking.tensorboard or tracking.mlflow) else None,
        plugins=tuple(code_plugins()),
    )


def reachable_tracking(tracking: TrackingSpec, study_name: str, store_root: Path) -> TrackingSpec:
    """The study's trackers, MLflow left out when its server cannot be reached (said once, not once per job); the
    study's MLflow run is RUNNING from here until `end_tracking`."""
    if tracking.mlflow is None:
        return tracking
    from usagg.tracking import start_study_run

    if start_study_run(tracking.mlflow, study_name, store_root) is None:
        return tracking.model_copy(update={"mlflow": None})
    return tracking


def end_tracking(run: StudyRun, state: str) -> None:
    """End the study's MLflow run as the run ended: done, failed (a selected job failed, or the run raised) or
    interrupted (usagg/tracking.py `end_study_run`); nothing without MLflow tracking."""
    tracking = run.study.tracking
    if tracking is None or tracking.mlflow is None:
        return
    from usagg.tracking import end_study_run

    end_study_run(tracking.mlflow, run.store.root, state)
