"""Shared test settings: no network, few threads, a private cache, CUDA tests skipped without a GPU."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (`make test` runs one worker per core) each worker keeps to one thread, so the
# workers share the cores instead of fighting over them; a plain `pytest` keeps two.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Memoised analysis outputs and decode caches go to a throw-away folder, never the user's ~/.cache/usagg.
_CACHE = tempfile.TemporaryDirectory(prefix="usagg-test-cache-")
os.environ["USAGG_CACHE"] = _CACHE.name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `cuda` when torch sees no CUDA device (`make test` runs everywhere)."""
    cuda = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in cuda:
        item.add_marker(skip)
