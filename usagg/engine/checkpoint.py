"""Resumable checkpoints, written atomically (temporary file, fsync, os.replace).

A checkpoint never exists half-written: a job killed while saving keeps the
previous one. `last.pt` holds everything a resumed job needs to continue as
if never stopped (model, optimiser, scheduler, sampler, RNG states, counters,
best score); `best.pt` holds the selected weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usagg.atomic import write_with


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through the shared atomic writer: a killed job never leaves a torn checkpoint."""
    write_with(path, lambda f: torch.save(obj, f))


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU (weights_only: checkpoints hold tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (CPU and CUDA), as weights_only-loadable data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
