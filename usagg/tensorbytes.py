"""A tensor's bytes for a digest: on the host, contiguous, read in place (no copy, no torch operator call).

Checkpoint checksums (usagg/engine/checkpoint.py) and the fingerprints of frozen weights (there and in the
trunk key, usagg/model/trunk.py) read every tensor of a model. `Tensor.numpy` dispatches a detach per tensor and
`tobytes` copies it (the frozen half of dinov3_base is 170 MB); DLPack hands numpy the tensor's own memory
without either (issue 24 counts torch operator calls: 2,292 per extra epoch of bench_ops' study were the
checksum's). Same bytes, so every digest made the earlier way still matches.
"""

from __future__ import annotations

import numpy as np
import torch


def on_host(t: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """`t` detached (only where it needs it: a detach is an operator call), on the CPU and contiguous; `t` itself
    when it already is, unless `copy` (one operator call: a copy training cannot change any more)."""
    return (t.detach() if t.requires_grad else t).to("cpu", copy=copy).contiguous()


def tensor_memory(t: torch.Tensor) -> memoryview:
    """A contiguous CPU tensor's own memory as flat bytes, no copy; through DLPack where numpy can read the dtype,
    through torch for dtypes numpy lacks (bfloat16)."""
    try:
        return np.from_dlpack(t).reshape(-1).view(np.uint8).data
    except (TypeError, RuntimeError, BufferError):
        return t.reshape(-1).view(torch.uint8).numpy().data


__all__ = ["on_host", "tensor_memory"]
