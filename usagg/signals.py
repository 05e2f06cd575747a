"""SIGTERM as an orderly stop, and Ctrl-C left to the process that started the workers.

SIGTERM is what Slurm and most schedulers send before they kill a process. Its handler raises
SystemExit(143), which the job runner (usagg/engine/runner.py) treats like Ctrl-C: the running job
goes back to pending with its last checkpoint and its lock released. The CLI and every local pool
worker install it. It acts once: a process stopping ignores the SIGTERMs that follow.

Ctrl-C reaches every process of the terminal's foreground group, workers included. A worker that
took it mid-task printed a traceback (pool workers) or left its pool waiting on it forever (the
synthetic benchmark's renderers), so workers ignore SIGINT and the parent, the one process that
knows what is running, stops them: the pool by SIGTERM (the job goes back to pending), the
renderers by terminating them. `sigint_held` covers a worker's start-up, before it can ignore SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

#: Linux's prctl option naming the signal a process gets when the one that started it dies.
_PR_SET_PDEATHSIG = 1


def stop_with_parent(parent_pid: int) -> None:
    """SIGTERM to this worker when `parent_pid`, the process that started it, dies (Linux's PR_SET_PDEATHSIG; nothing
    elsewhere): a `usagg run` killed with kill -9 left its pool workers training their jobs to the end, hours of
    CPU after the operator stopped it (the ops audit). SIGTERM is the orderly stop (`exit_on_sigterm`: the job back
    to pending with its checkpoint), so install that first. A parent already gone sends it at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl to be had: the worker ends with its job, as before
        return
    if os.getppid() != parent_pid:  # it died before the call: the signal will never come
        os.kill(os.getpid(), signal.SIGTERM)


def _terminated(signum: int, frame: object) -> None:
    """The first SIGTERM starts the orderly stop; later ones are ignored while this process unwinds. A second one
    comes soon enough (`kill` of the whole group, then the pool's own stop of its workers), and raised again it lands
    anywhere: in the job's way back to pending, or in an exit hook (torch's), as a traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Install the handler in this process (main thread only, as signal handlers must be)."""
    signal.signal(signal.SIGTERM, _terminated)


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Block SIGINT in this thread while it starts workers: a worker inherits the block, so a Ctrl-C during its
    start-up (its imports, before `leave_sigint_to_parent`) waits instead of raising in it. This process still
    gets the Ctrl-C: another of its threads takes it, or it arrives when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def leave_sigint_to_parent() -> None:
    """In a worker (main thread): ignore Ctrl-C, dropping one held since its start (`sigint_held`); the parent
    stops the worker instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
