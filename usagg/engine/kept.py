"""A worker's model kept from job to job of the same structure: compiled once, its CUDA graphs recorded once.

A pool worker (usagg/execute/pool.py) runs job after job in one process. Under `execution.accel` compile or
graphs on CUDA the encoder is compiled in place (usagg/engine/accel.py), and inductor's CUDA graphs (graphs)
read the parameters where they were recorded. A new model per job has new parameter tensors: dynamo need
not trace again, but every CUDA graph is recorded again for the new addresses, and each recording stays in
the worker's graph tree beside the earlier jobs' ones. So the worker keeps its last model, and the next job
whose model has the same structure (`model_key`: backbone and its spec, tasks, heads, MoE, accel mode,
device) trains that model with its own initial weights copied into the parameters in place
(`load_state_dict` copies); the compiled code and the recorded graphs serve it as they are.

The job's initial weights are built as before, by `build_model` on the CPU after the job's seed (the same
random draws, the same pretrained file read), so what a job computes does not depend on what the worker ran
before it (tests/test_kept_model.py: a job after another on the kept model ends with the metrics of the same
job on a model of its own, to the last bit). One model is kept per process; a job of another structure
releases it first, so at most one model's memory is held between jobs, and a model whose job failed or was
stopped (out of memory, say) is released, not reused. Eager jobs, the CPU and the step-graphs modes
(which record per job against its new optimiser; compiled-step-graphs' compiled code serves the next job's new
model as it is, dynamo's graphs taking parameters as inputs) keep nothing (`keeps_model`).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import torch

from usagg.engine.accel import AccelMode, accelerate
from usagg.model.m2dino import M2DINO, build_model
from usagg.plan import Job

log = logging.getLogger(__name__)


class _Kept:
    """The process's kept model, the structure it was built for, and whether the job it last served ended (a job
    that failed or was stopped may leave its compiled code or CUDA graphs in any state: its model is not reused)."""

    key: str | None = None
    model: M2DINO | None = None
    ended: bool = False


def model_key(job: Job, mode: AccelMode, device: torch.device) -> str:
    """Everything `build_model` and `accelerate` make a model's structure from (more is harmless: it only keeps a
    model less often)."""
    return json.dumps(
        {
            "model": job.model.model_dump(mode="json"),
            "tasks": [t.model_dump(mode="json") for t in job.tasks],
            "moe": job.moe,
            "accel": mode,
            "device": str(device),
        },
        sort_keys=True,
    )


def keeps_model(mode: AccelMode, device: torch.device) -> bool:
    """Whether a job's model is kept for the next job: when its encoder is compiled (compile, graphs on CUDA)."""
    return device.type == "cuda" and mode in ("compile", "graphs")


def job_model(job: Job, mode: AccelMode, device: torch.device, cache: Path | None = None) -> M2DINO:
    """The model `job` trains on `device` under `mode`, its initial weights built from the job's seed: the kept
    model with those weights copied in where the structure matches, else a new one (kept when `keeps_model`)."""
    fresh = build_model(job.model, job.tasks, job.moe)
    if not keeps_model(mode, device):
        release()
        return accelerate(fresh.to(device), mode, device, cache)
    key = model_key(job, mode, device)
    kept = _Kept.model
    if kept is not None and _Kept.key == key and _Kept.ended:
        _Kept.ended = False
        kept.load_state_dict(fresh.state_dict())  # into the parameters and buffers where they are
        kept.weights_info = dict(fresh.weights_info)
        kept.train(fresh.training)
        for p in kept.parameters():
            p.grad = None
        log.info("the worker's compiled model of the same structure trains this job (its weights copied in)")
        return kept
    release()
    model = accelerate(fresh.to(device), mode, device, cache)
    _Kept.key, _Kept.model, _Kept.ended = key, model, False
    return model


def job_ended(model: M2DINO) -> None:
    """`run_job` calls this when its job has ended normally: its model may serve the next job."""
    if model is _Kept.model:
        _Kept.ended = True


def release() -> None:
    """Drop the kept model (its memory goes back to torch's allocator)."""
    if _Kept.model is None:
        return
    _Kept.key, _Kept.model, _Kept.ended = None, None, False
    gc.collect()


__all__ = ["job_ended", "job_model", "keeps_model", "model_key", "release"]
