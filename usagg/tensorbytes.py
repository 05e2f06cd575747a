"""A tensor's bytes for a digest: on the host, contiguous, read in place (no copy, no torch operator call).

Checkpoint checksums (usagg/engine/checkpoint.py) and the fingerprints of frozen weights (there and in the
trunk key, usagg/model/trunk.py) read every tensor of a model, each through `feed_tensor`. `Tensor.numpy`
dispatches a detach per tensor and `tobytes` copies it (the frozen half of dinov3_base is 170 MB); DLPack hands
numpy the tensor's own memory without either (issue 24 counts torch operator calls: 2,292 per extra epoch of
bench_ops' study were the checksum's). Same bytes, so every digest made the earlier way still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

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


class Hasher(Protocol):
    """What `feed_tensor` writes to: a hashlib object, or any checksum with the same `update`."""

    def update(self, data: bytes | memoryview, /) -> None: ...


def feed_tensor(h: Hasher, t: torch.Tensor, header: str, name: str = "") -> None:
    """Feed `h` the tensor's header, then its bytes read in place (none for an empty tensor).

    `header` is a format string of `name`, `dtype` and `shape` (a tuple): each digest keeps its own, so the
    fingerprints stored in checkpoints and trunk keys stay what they were."""
    t = on_host(t)
    h.update(header.format(name=name, dtype=t.dtype, shape=tuple(t.shape)).encode())
    if t.numel():
        h.update(tensor_memory(t))


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]], header: str) -> str:
    """Hex sha256 of named tensors in the order given, each fed by `feed_tensor` with `header`."""
    h = hashlib.sha256()
    for name, t in named:
        feed_tensor(h, t, header, name)
    return h.hexdigest()


__all__ = ["Hasher", "feed_tensor", "on_host", "tensor_memory", "tensors_sha256"]
