"""A pool worker stops when the `usagg run` that started it is killed (kill -9, the out-of-memory killer): it
kept training its job to the end, hours of CPU after the operator stopped the run (the ops audit). The worker
gets SIGTERM (Linux's PR_SET_PDEATHSIG, usagg/signals.py `stop_with_parent`), the orderly stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: The worker: the orderly SIGTERM handler, then `stop_with_parent`, then a long wait; how it ended, in a file.
WORKER = """
import os, sys, time
from usagg.signals import exit_on_sigterm, stop_with_parent
exit_on_sigterm()
stop_with_parent(os.getppid())
open(sys.argv[1] + ".ready", "w").close()
try:
    time.sleep(60)
except SystemExit as stop:
    open(sys.argv[1], "w").write(str(stop.code))
    raise
"""
#: The parent: starts the worker, says its pid, waits for it (as a pool does for its workers).
PARENT = """
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(worker.pid, flush=True)
worker.wait()
"""


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_ends_in_order_when_its_parent_is_killed(tmp_path: Path) -> None:
    said = tmp_path / "ended"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER, str(said)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while not Path(f"{said}.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(f"{said}.ready").exists()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(worker, 10), "the worker kept running after its parent was killed"
    assert said.read_text() == "143"  # SystemExit(128 + SIGTERM): the job runner's orderly stop
