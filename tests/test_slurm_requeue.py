"""Jobs Slurm kills outright, requeues or runs in an order, against the fake cluster of tests/test_slurm_cluster.py.

A job Slurm kills (out of memory, pre-empted, past its time without the warning signal) never releases its lock,
whose fresh heartbeat from another host reads as alive for 10 minutes: the requeued element, the run that collects
the element and the next submission must each know the holder is dead, and an element that finds its job held by a
live process must not end as a success. The array starts the largest jobs first, as the local pool does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from submitit.core.utils import FailedJobError

from tests import test_slurm_cluster
from tests.test_executors import make_store as make_mixed_store
from tests.test_slurm_cluster import FakeCluster, executor_for, job_done, make_store
from usagg.joblock import JobLocked
from usagg.store import RunStore

#: The fake cluster on PATH (tests/test_slurm_cluster.py); it submits one job as a plain job, id `first_id`, no `_0`.
cluster = test_slurm_cluster.cluster
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is the login node's `usagg run`, whatever runs the tests."""
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def plant_lock(store: RunStore, job_id: str, host: str = "node01", slurm: dict[str, Any] | None = None) -> None:
    """A lock as a process on `host` (in Slurm job `slurm`) left it, its heartbeat fresh, the job running."""
    info: dict[str, Any] = {
        "host": host,
        "pid": 4242,
        "started": "2025-01-01T00:00:00+00:00",
        "token": uuid.uuid4().hex,
    }
    if slurm is not None:
        info["slurm"] = slurm
    store.set_state(job_id, "running")
    store.paths(job_id).lock.write_text(json.dumps(info))


def as_element(monkeypatch: pytest.MonkeyPatch, element: str, restarts: int | None) -> None:
    array, index = element.split("_")
    monkeypatch.setenv("SLURM_JOB_ID", "9999")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", array)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", index)
    if restarts is not None:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))


# --------------------------------------------------------------------------- the lock knows Slurm's one instance


def test_a_requeued_element_breaks_the_lock_its_killed_run_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], slurm={"job": "7_0", "restart": 0})
    plant_lock(store, ids[1], slurm={"job": "7_1", "restart": 0})  # another element: its own job, alive
    as_element(monkeypatch, "7_0", restarts=1)
    with store.lock(ids[0]) as holder:  # the run Slurm killed is gone: its lock does not stop the requeue
        assert holder["slurm"] == {"job": "7_0", "restart": 1} and holder["host"] == socket.gethostname()
    with pytest.raises(JobLocked, match=r"node01 pid 4242, Slurm job 7_1"):
        store.lock(ids[1]).__enter__()


def test_a_live_holder_of_the_same_slurm_run_on_this_host_keeps_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same restart count counts as an earlier run only from another host; here the process probe answers."""
    store, ids = make_store(tmp_path)
    as_element(monkeypatch, "7_0", restarts=None)
    with store.lock(ids[0]):
        pass
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "token": "t", "slurm": {"job": "7_0", "restart": 0}}
    store.paths(ids[0]).lock.write_text(json.dumps(holder))  # a live process (our parent) of this very Slurm run
    assert store.lock_alive(ids[0])
    plant_lock(store, ids[1], host="node01", slurm={"job": "7_0", "restart": 0})  # another host: an earlier run
    assert not store.lock_alive(ids[1])


# --------------------------------------------------------------------------- the submitting side


def killed_on_node01(store_root: str, job_id: str, **_: Any) -> str:
    """A job killed outright (SIGKILL, as Slurm's OOM killer or pre-emption does) on host node01, mid-training."""
    socket.gethostname = lambda: "node01"  # the lock says it was taken on another host than the login node
    store = RunStore(store_root)
    with store.lock(job_id):
        store.set_state(job_id, "running")
        os.kill(os.getpid(), signal.SIGKILL)
    return "done"


@pytest.mark.slow
def test_a_killed_element_is_recorded_failed_and_its_lock_broken(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_store(tmp_path)
    states = executor_for(store, results_timeout_s=0).run(ids[:1], killed_on_node01)
    assert states == {ids[0]: "failed"} and cluster.state(str(cluster.first_id)) == "FAILED"
    assert store.job_lock(ids[0]).holder() is None  # Slurm says the element ended: its lock is no one's
    record = store.job_record(ids[0])
    assert record["state"] == "failed" and "state FAILED" in record["error"]  # status tells the truth; exit 1
    assert "did not complete" in (store.error_text(ids[0]) or "")


@pytest.mark.slow
def test_a_job_whose_last_element_ended_is_submitted_with_its_lock_broken(tmp_path: Path, cluster: FakeCluster) -> None:
    """A `usagg run` that stopped before collecting leaves the killed element's lock; the next submission breaks it."""
    store, ids = make_store(tmp_path)
    earlier = f"{cluster.first_id + 500}_3"
    cluster.set_state(earlier, "OUT_OF_MEMORY")
    plant_lock(store, ids[0], slurm={"job": earlier, "restart": 0})
    plant_lock(store, ids[1], slurm={"job": f"{cluster.first_id + 500}_4", "restart": 0})  # sacct lists it not
    assert executor_for(store).run(ids[:1], job_done) == {ids[0]: "done"}
    assert store.job_lock(ids[1]).holder() is not None


@pytest.mark.slow
def test_a_requeued_element_trains_the_job_its_killed_run_held(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], slurm={"job": str(cluster.first_id), "restart": 0})  # its run before the requeue
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the fake's elements inherit it: the first requeue
    assert executor_for(store).run(ids[:1], job_done) == {ids[0]: "done"}


@pytest.mark.slow
def test_an_element_finding_its_job_held_by_a_live_process_fails_naming_both(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], host="node09")  # a live `usagg run` on node09, outside Slurm
    events: list[tuple[str, str, dict[str, Any]]] = []
    states = executor_for(store).run(ids[:1], job_done, lambda *e: events.append(e))
    element = str(cluster.first_id)
    assert states == {ids[0]: "failed"}
    deadline = time.monotonic() + 20  # the result file comes before the node's process has exited
    while cluster.state(element) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.state(element) == "FAILED"  # a non-zero exit on the node
    (error,) = [info["error"] for _, event, info in events if event == "failed"]
    assert error.startswith(f"Slurm job {element} did not run job {ids[0]}: a live process holds its lock (node09 pid")
    assert store.job_state(ids[0]) == "running" and store.job_lock(ids[0]).holder() is not None  # left to node09


# --------------------------------------------------------------------------- the array's order


def test_the_array_submits_the_largest_jobs_first_as_the_pool_starts_them(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_mixed_store(tmp_path, ["ok"] * 6)  # 3 TS, CG of 2 and 1 tasks, AU of 3, in plan order
    order: dict[str, int] = {}

    def on_event(job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "submitted":
            order[job_id] = int(info["slurm_job_id"].rpartition("_")[2])

    cluster.plan(**{f"_{i}": "FAILED" for i in range(6)})
    executor_for(store).run(ids, job_done, on_event)
    assert sorted(order, key=order.__getitem__) == [ids[5], ids[3], ids[4], ids[0], ids[1], ids[2]]


# --------------------------------------------------------------------------- submitit gave up requeueing


def test_timed_out_too_many_times_names_the_time_settings(tmp_path: Path) -> None:
    """submitit's last requeue answers an error, and sacct says COMPLETED: the time-out hint must still come."""
    store, ids = make_store(tmp_path)
    trace = "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times."

    def result() -> Any:
        raise FailedJobError(f"Job (task=0) failed during processing with trace:\n---\n{trace}\n---\n")

    missing = SimpleNamespace(exists=lambda: True)
    job = SimpleNamespace(job_id="1_0", state="COMPLETED", paths=SimpleNamespace(result_pickle=missing, stderr="e"))
    job.done, job.result, job._results_timeout_s = (lambda: True), result, 15
    state, event, info = executor_for(store)._collect(ids[0], job)
    assert (state, event) == ("failed", "failed")
    said = "state COMPLETED after more time-outs than max_requeue allows: ran out of time: raise execution.slurm"
    assert said in info["error"] and "time_min (now 5) or max_requeue (now 3)" in info["error"]
