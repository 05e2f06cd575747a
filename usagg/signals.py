"""SIGTERM as an orderly stop: what Slurm and most schedulers send before they kill a process.

The handler raises SystemExit(143), which the job runner (usagg/engine/runner.py) treats like
Ctrl-C: the running job goes back to pending with its last checkpoint and its lock released.
The CLI and every local pool worker install it.
"""

from __future__ import annotations

import signal


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Install the handler in this process (main thread only, as signal handlers must be)."""
    signal.signal(signal.SIGTERM, _terminated)
