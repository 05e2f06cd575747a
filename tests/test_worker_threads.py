"""The suite's own thread setting (tests/conftest.py): one torch thread per pytest-xdist worker.

Two OpenMP threads per worker on a two-core machine made the workers spin against each other (a 2-second
test took 233 s beside the CPU gpu-check run), so a worker must not inherit the controller's two threads.
"""

from __future__ import annotations

import os

import pytest
import torch


def test_an_xdist_worker_runs_one_torch_thread_unless_the_user_chose() -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not an xdist worker: a plain pytest keeps two threads")
    if not os.environ.get("USAGG_TEST_THREADS_FROM_CONFTEST") and os.environ.get("OMP_NUM_THREADS") != "1":
        pytest.skip("OMP_NUM_THREADS was set by the user")
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == 1
