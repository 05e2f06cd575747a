"""The real `usagg` entry point run in-process, as the CLI tests share it.

`main()` sets process-wide state meant for a process of its own: the SIGTERM handler
(usagg/signals.py), environment defaults, torch's thread count and deterministic mode,
the global random generators. In pytest that state would outlive the test (a CI cancel's
SIGTERM would then fail whichever test runs), so `run_cli` puts all of it back.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from usagg.cli.app import main


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Restore what an in-process `main()` may change in this process once the block ends."""
    handler = signal.getsignal(signal.SIGTERM)
    environ = dict(os.environ)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


def run_cli(
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: int | None = 250,
) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `usagg ARGS`; `columns` is the terminal width rich lays out for."""
    monkeypatch.setattr(sys, "argv", ["usagg", *args])
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    with process_state_kept(), pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def error_paragraph(out: str) -> str:
    """A refusal as the house prints it: one paragraph starting 'error:', no traceback; its words joined by single
    spaces (rich wraps them at the terminal's width)."""
    assert out.startswith("error:") and "Traceback" not in out, out
    return " ".join(out.split())
