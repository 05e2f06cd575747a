"""Where and how a job computes: device, autocast precision, threads and determinism.

The device and threads are arguments of `run_one`, not settings of the Job,
because the same Job runs unchanged in-process, in a GPU-pool worker (which
sees its one GPU as cuda:0) or on a Slurm node: the run service
(usagg/run/jobfunction.py) passes them, and the executors carry them to the workers in
the job function.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from usagg.errors import UsaggError


@dataclass(frozen=True)
class Compute:
    """A resolved device and precision for one job."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32

    @property
    def precision(self) -> str:
        return "fp32" if self.amp_dtype is None else "bf16"

    def autocast(self, cache: bool = True) -> AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32). `cache=False` inside a CUDA graph being recorded:
        autocast's cache of cast weights would outlive the recording (torch's CUDA-graph notes)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, cache_enabled=cache)


def resolve_device(name: str | None = None) -> torch.device:
    """The job's device: `name` (cpu | cuda | cuda:N), else the first visible GPU, else the CPU."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsaggError(f"device {name!r} was asked for but no CUDA device is visible; use --devices cpu")
    return dev


def resolve_compute(precision: str, device: torch.device) -> Compute:
    """auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU is honoured (slow but allowed)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return Compute(device, None)
    return Compute(device, torch.bfloat16)


def set_threads(n: int | None) -> None:
    """Use `n` CPU threads for this job's torch ops; None keeps torch's choice."""
    if n:
        torch.set_num_threads(int(n))


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed python, numpy and torch, and ask for deterministic kernels.

    On CPU this makes a seed give bit-identical metrics. On CUDA cuDNN is made
    deterministic, but the global deterministic mode stays off: bf16 autocast is
    not bit-reproducible anyway and some deterministic CUDA kernels are slow.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` itself (not what it wraps) is the GPU out of memory: torch.OutOfMemoryError (the caching
    allocator), or a torch.AcceleratorError (torch 2.8 and later) saying so, the CUDA runtime's own allocations.
    usagg/engine/runner.py `gpu_memory_error` asks it along an error's chain, and usagg/engine/step.py to fail a
    step-graph recording that ran out of memory rather than run the step eagerly."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    accelerator = getattr(torch, "AcceleratorError", None)
    return accelerator is not None and isinstance(err, accelerator) and "out of memory" in str(err)
