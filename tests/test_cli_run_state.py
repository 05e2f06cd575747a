"""tests/cli_run.py runs `main()` in-process: the process-wide state main() sets must not outlive the call."""

from __future__ import annotations

import os
import random
import signal

import pytest
import torch

from tests.cli_run import process_state_kept, run_cli
from usagg.signals import _terminated


def _sentinel(signum: int, frame: object) -> None:
    """A handler no usagg code installs."""


def test_the_sigterm_handler_main_installs_is_taken_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.signal(signal.SIGTERM, _sentinel)
    try:
        code, out = run_cli(["--help"], monkeypatch, capsys)
        assert code == 0 and "registry" in out
        assert signal.getsignal(signal.SIGTERM) is _sentinel  # not usagg's _terminated: a CI cancel stays pytest's
    finally:
        signal.signal(signal.SIGTERM, before)


def test_process_state_kept_restores_what_a_run_changes() -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    handler = signal.getsignal(signal.SIGTERM)
    draw = random.Random()
    draw.setstate(random.getstate())
    expected = draw.random()
    assert "USAGG_H7_PROBE" not in os.environ
    with process_state_kept():
        signal.signal(signal.SIGTERM, _terminated)
        torch.set_num_threads(1 if threads != 1 else 2)
        torch.use_deterministic_algorithms(not deterministic)
        os.environ["USAGG_H7_PROBE"] = "1"
        random.seed(7)
        torch.manual_seed(7)
    assert signal.getsignal(signal.SIGTERM) is handler
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() is deterministic
    assert "USAGG_H7_PROBE" not in os.environ
    assert random.random() == expected  # the generator is where it was, not reseeded
