"""Where and how a job computes: device, autocast precision, threads and determinism.

The device comes from the environment, not the Job, because the same Job runs
unchanged in-process, in a GPU-pool worker (which sets CUDA_VISIBLE_DEVICES)
or on a Slurm node: `USAGG_DEVICE` (cpu | cuda | cuda:N; default cuda when
visible, else cpu) and `USAGG_THREADS` (CPU threads) are set by `usagg run`.
"""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from usagg.errors import UsaggError

DEVICE_ENV = "USAGG_DEVICE"
THREADS_ENV = "USAGG_THREADS"


@dataclass(frozen=True)
class Compute:
    """A resolved device and precision for one job."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32

    @property
    def precision(self) -> str:
        return "fp32" if self.amp_dtype is None else "bf16"

    def autocast(self) -> AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def resolve_device(name: str | None = None) -> torch.device:
    """The job's device: `name`, else $USAGG_DEVICE, else the first visible GPU, else the CPU."""
    name = name or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsaggError(f"device {name!r} was asked for but no CUDA device is visible; use --devices cpu")
    return dev


def resolve_compute(precision: str, device: torch.device) -> Compute:
    """auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU is honoured (slow but allowed)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return Compute(device, None)
    return Compute(device, torch.bfloat16)


def set_threads() -> None:
    """Apply $USAGG_THREADS (CPU threads per job) when set."""
    n = os.environ.get(THREADS_ENV)
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
