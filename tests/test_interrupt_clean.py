"""A stopped run says one line, never a traceback: each pool worker is signalled once and given time to unwind.

The audit's case: `kill -TERM -<pgid>` (or Ctrl-C) while two pooled jobs trained printed torch's exit hook's
traceback, `SystemExit: 143` raised inside it by a second SIGTERM (the group's, then the pool's stop, which sent
another 0.1 s later). Here a job function stands in for the engine: run_one's contract under a stop (back to
pending, the lock released) and an exit hook that takes a while, as torch's do.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_study import small_study
from usagg.atomic import read_json, write_json_atomic
from usagg.plan import plan
from usagg.signals import _terminated
from usagg.store import RunStore

TESTS_DIR = str(Path(__file__).parent)
#: How long the stand-in for torch's exit hook takes: longer than the 0.1 s after which the pool signalled again.
EXIT_HOOK_S = 1.5


def _slow_exit_hook(done: Path) -> None:
    """An exit hook that takes a while, then leaves a mark: the worker unwound to the end, not killed in it."""
    time.sleep(EXIT_HOOK_S)
    done.write_text("exited\n")


def run_until_stopped(store_root: str, job_id: str) -> str:
    """run_one's contract under a stop: running until interrupted, then back to pending and the lock released."""
    store = RunStore(store_root)
    atexit.register(_slow_exit_hook, store.job_dir(job_id) / "exited.txt")
    with store.lock(job_id):
        try:  # from the first write: a stop may land anywhere after it, as in the engine's runner
            store.set_state(job_id, "running")
            write_json_atomic(store.job_dir(job_id) / "seen.json", {"pid": os.getpid()})
            time.sleep(120)
        except BaseException:
            store.set_state(job_id, "pending", error="interrupted")
            raise
    return "done"


def _two_job_store(tmp_path: Path) -> tuple[RunStore, list[str]]:
    study = small_study("stop", (("a", "classification", 2, "g1"), ("b", "regression", 3, "g2")))
    jobs = plan(study)[:2]
    store = RunStore(tmp_path / "runs" / "stop")
    store.init("name: stop\n", jobs)
    return store, [j.id for j in jobs]


def _pool_run(store: RunStore, ids: list[str]) -> subprocess.Popen[str]:
    """A pool of two CPU workers in a session of its own, its parent as the CLI sets it up: SIGTERM an orderly stop,
    Ctrl-C a KeyboardInterrupt (even when this suite was started with SIGINT ignored, as `make test &` does)."""
    code = (
        "import signal, sys, test_interrupt_clean as t\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "from usagg.execute import PoolExecutor\n"
        "from usagg.signals import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        "try:\n"
        f"    PoolExecutor({str(store.root)!r}, None, 2).run({ids!r}, t.run_until_stopped)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group", "code"),
    [(signal.SIGTERM, True, 143), (signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
    ids=["kill-term-group", "kill-term-parent", "ctrl-c"],
)
def test_a_stopped_pool_prints_no_traceback_and_leaves_its_jobs_to_resume(
    tmp_path: Path, signum: int, to_group: bool, code: int
) -> None:
    store, ids = _two_job_store(tmp_path)
    proc = _pool_run(store, ids)
    deadline = time.monotonic() + 60
    seen = [store.job_dir(j) / "seen.json" for j in ids]
    while not all(p.is_file() for p in seen) and time.monotonic() < deadline:  # both jobs inside their work
        time.sleep(0.05)
    assert [store.job_state(j) for j in ids] == ["running", "running"]
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the pool's parent did not stop within 30 s of the signal")
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert [(store.job_state(j), store.job_record(j)["error"]) for j in ids] == [("pending", "interrupted")] * 2
    assert all(store.job_lock(j).holder() is None for j in ids)
    assert all((store.job_dir(j) / "exited.txt").is_file() for j in ids)  # each worker's exit hook ran to its end
    for pid in (read_json(store.job_dir(j) / "seen.json")["pid"] for j in ids):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_sigterm_handler_acts_once() -> None:
    """The first SIGTERM stops the process; one more while it unwinds is ignored, not raised where it lands."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminated)
        with pytest.raises(SystemExit) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.value.code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # the second: nothing happens
    finally:
        signal.signal(signal.SIGTERM, before)
