"""Jobs Slurm kills outright, requeues or runs in an order, against the fake cluster of tests/test_slurm_cluster.py.

A job Slurm kills (out of memory, pre-empted, past its time without the warning signal) never releases its lock,
whose fresh heartbeat from another host reads as alive for 10 minutes: the requeued element, the run that collects
the element and the next submission must each know the holder is dead, and an element that finds its job held by a
live process reports it running elsewhere, not failed. The array starts the largest jobs first, as the local pool does.
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
from usagg import joblock
from usagg.execute.slurm import still_queued
from usagg.joblock import ELEMENT_ENV, JobLocked
from usagg.store import RunStore

#: The fake cluster on PATH (tests/test_slurm_cluster.py); it submits one job as a plain job, id `first_id`, no `_0`.
cluster = test_slurm_cluster.cluster
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", ELEMENT_ENV)
#: Older than a lock's `slurm_evidence_s` (3 heartbeats of 30 s): the killed holder has stopped beating.
SILENT_S = 120.0


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is the login node's `usagg run`, whatever runs the tests."""
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def plant_lock(
    store: RunStore, job_id: str, host: str = "node01", slurm: dict[str, Any] | None = None, silent_s: float = 0.0
) -> None:
    """A lock as a process on `host` (in Slurm job `slurm`) left it, its last heartbeat `silent_s` ago (fresh: 0),
    the job running."""
    info: dict[str, Any] = {
        "host": host,
        "pid": 4242,
        "started": "2025-01-01T00:00:00+00:00",
        "token": uuid.uuid4().hex,
    }
    if slurm is not None:
        info["slurm"] = slurm
    store.set_state(job_id, "running")
    lock = store.paths(job_id).lock
    lock.write_text(json.dumps(info))
    beat = time.time() - silent_s
    os.utime(lock, (beat, beat))


def as_element(monkeypatch: pytest.MonkeyPatch, element: str, restarts: int | None) -> None:
    array, index = element.split("_")
    monkeypatch.setenv("SLURM_JOB_ID", "9999")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", array)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", index)
    if restarts is not None:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
    monkeypatch.setenv(ELEMENT_ENV, element)  # what SlurmJobCall sets on the node


# --------------------------------------------------------------------------- the lock knows Slurm's one instance


def test_a_requeued_element_breaks_the_lock_its_killed_run_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], slurm={"job": "7_0", "restart": 0}, silent_s=SILENT_S)
    plant_lock(store, ids[1], slurm={"job": "7_1", "restart": 0}, silent_s=SILENT_S)  # another element: alive
    as_element(monkeypatch, "7_0", restarts=1)
    with store.lock(ids[0]) as holder:  # the run Slurm killed is gone: its lock does not stop the requeue
        assert holder["slurm"] == {"job": "7_0", "restart": 1} and holder["host"] == socket.gethostname()
    with pytest.raises(JobLocked, match=r"node01 pid 4242, Slurm job 7_1"):
        store.lock(ids[1]).__enter__()


def test_an_earlier_run_still_beating_keeps_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node Slurm failed (NODE_FAIL) may still run and reach the shared file system: the requeued run's word is
    taken only once the holder's heartbeat has been silent for 3 beats."""
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], slurm={"job": "7_0", "restart": 0}, silent_s=10.0)
    as_element(monkeypatch, "7_0", restarts=1)
    assert store.lock_alive(ids[0])
    beat = time.time() - SILENT_S
    os.utime(store.paths(ids[0]).lock, (beat, beat))
    assert not store.lock_alive(ids[0])


def test_the_same_slurm_job_on_another_host_is_no_earlier_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An salloc shell on the login node and an `srun` on a compute node share SLURM_JOB_ID and restart count: the
    same count is never an earlier run, on any host, however long ago it beat (within stale_after_s)."""
    store, ids = make_store(tmp_path)
    as_element(monkeypatch, "7_0", restarts=None)
    plant_lock(store, ids[1], host="node01", slurm={"job": "7_0", "restart": 0}, silent_s=SILENT_S)
    assert store.lock_alive(ids[1])


def test_a_run_in_an_allocation_that_is_no_element_claims_no_slurm_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`usagg run --executor local` in an salloc shell has SLURM_JOB_ID but is no array element: its locks name no
    Slurm job, and it takes no other holder for its own earlier run."""
    store, ids = make_store(tmp_path)
    as_element(monkeypatch, "7_0", restarts=1)
    monkeypatch.delenv(ELEMENT_ENV)
    plant_lock(store, ids[1], slurm={"job": "7_0", "restart": 0}, silent_s=SILENT_S)
    assert store.lock_alive(ids[1])
    with store.lock(ids[0]) as holder:
        assert "slurm" not in holder


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
def test_a_killed_element_is_recorded_failed_and_its_lock_broken(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run collecting the element waits until the dead holder's heartbeat has been silent long enough (3 beats
    of 30 s; here 0.1 beat, 3 s), then breaks its lock and records the failure."""
    monkeypatch.setattr(joblock, "SLURM_EVIDENCE_BEATS", 0.1)
    store, ids = make_store(tmp_path)
    states = executor_for(store, results_timeout_s=0).run(ids[:1], killed_on_node01)
    assert states == {ids[0]: "failed"} and cluster.state(str(cluster.first_id)) == "FAILED"
    assert store.job_lock(ids[0]).holder() is None  # Slurm says the element ended: its lock is no one's
    record = store.job_record(ids[0])
    assert record["state"] == "failed" and "state FAILED" in record["error"]  # status tells the truth; exit 1
    assert "did not complete" in (store.error_text(ids[0]) or "")


def test_an_element_killed_seconds_ago_is_left_for_later_not_slept_on(tmp_path: Path, cluster: FakeCluster) -> None:
    """The run collecting a killed element slept until its lock's heartbeat fell silent (90 s on a cluster) before
    looking at the next element, once per killed element: now the element waits in the queue of those to collect,
    the others collected meanwhile, and is recorded failed, its lock broken, once the heartbeat is silent."""
    store, ids = make_store(tmp_path)
    element = f"{cluster.first_id + 500}_0"
    cluster.set_state(element, "OUT_OF_MEMORY")
    plant_lock(store, ids[0], slurm={"job": element, "restart": 0})  # its last beat a moment ago
    no_result = SimpleNamespace(exists=lambda: False)
    job = SimpleNamespace(job_id=element, state="OUT_OF_MEMORY", paths=SimpleNamespace(result_pickle=no_result))
    job.done, job._results_timeout_s, job.paths.stderr = (lambda: True), 15, tmp_path / "e"

    def result() -> Any:
        raise FailedJobError("Job (task=0) failed: killed")

    job.result = result
    executor = executor_for(store)
    started = time.monotonic()
    assert executor._collect(ids[0], job) is None and time.monotonic() - started < 5  # no sleep: asked again later
    beat = time.time() - SILENT_S
    os.utime(store.paths(ids[0]).lock, (beat, beat))
    state, event, info = executor._collect(ids[0], job)
    assert (state, event) == ("failed", "failed") and "state OUT_OF_MEMORY" in info["error"]
    assert store.job_lock(ids[0]).holder() is None and store.job_state(ids[0]) == "failed"


@pytest.mark.slow
def test_a_job_whose_last_element_ended_is_submitted_with_its_lock_broken(tmp_path: Path, cluster: FakeCluster) -> None:
    """A `usagg run` that stopped before collecting leaves the killed element's lock; the next submission breaks it."""
    store, ids = make_store(tmp_path)
    earlier = f"{cluster.first_id + 500}_3"
    cluster.set_state(earlier, "OUT_OF_MEMORY")
    plant_lock(store, ids[0], slurm={"job": earlier, "restart": 0}, silent_s=SILENT_S)
    plant_lock(store, ids[1], slurm={"job": f"{cluster.first_id + 500}_4", "restart": 0}, silent_s=SILENT_S)
    assert executor_for(store).run(ids[:1], job_done) == {ids[0]: "done"}
    assert store.job_lock(ids[1]).holder() is not None  # sacct lists it not


def test_sacct_saying_an_element_ended_breaks_no_lock_that_still_beats(tmp_path: Path, cluster: FakeCluster) -> None:
    """sacct reads an accounting database that can lag behind a requeued run already training: a lock beating
    within 3 heartbeats is kept whatever sacct says."""
    from usagg.execute.slurm import break_ended_locks

    store, ids = make_store(tmp_path)
    element = f"{cluster.first_id + 500}_3"
    cluster.set_state(element, "PREEMPTED")
    plant_lock(store, ids[0], slurm={"job": element, "restart": 1}, silent_s=5.0)
    assert break_ended_locks(store, ids[:1]) == [] and store.job_lock(ids[0]).holder() is not None
    beat = time.time() - SILENT_S
    os.utime(store.paths(ids[0]).lock, (beat, beat))
    assert break_ended_locks(store, ids[:1]) == [ids[0]] and store.job_lock(ids[0]).holder() is None


@pytest.mark.slow
def test_a_requeued_element_trains_the_job_its_killed_run_held(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], slurm={"job": str(cluster.first_id), "restart": 0}, silent_s=SILENT_S)  # before requeue
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the fake's elements inherit it: the first requeue
    assert executor_for(store).run(ids[:1], job_done) == {ids[0]: "done"}


@pytest.mark.slow
def test_an_element_finding_its_job_held_by_a_live_process_reports_it_running_elsewhere(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """The element trained nothing: the job is running elsewhere, as a pool worker reports it, not a failure with a
    --retry-failed hint, and the store keeps the holder's record (no failed state, no error.txt); the element ends
    COMPLETED, so a run collecting it later (no run waited) records no failure either."""
    store, ids = make_store(tmp_path)
    plant_lock(store, ids[0], host="node09")  # a live `usagg run` on node09, outside Slurm
    events: list[tuple[str, str, dict[str, Any]]] = []
    states = executor_for(store).run(ids[:1], job_done, lambda *e: events.append(e))
    element = str(cluster.first_id)
    assert states == {ids[0]: "running"}
    assert [event for _, event, _ in events if event != "note"] == ["submitted", "locked"]  # notes: the queue
    holder = events[-1][2]["holder"]
    assert (holder["host"], holder["pid"]) == ("node09", 4242) and events[-1][2]["slurm_job_id"] == element
    deadline = time.monotonic() + 20  # the result file comes before the node's process has exited
    while cluster.state(element) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.state(element) == "COMPLETED"
    record = store.job_record(ids[0])
    assert record["state"] == "running" and record["error"] is None and store.error_text(ids[0]) is None
    assert store.job_lock(ids[0]).holder()["host"] == "node09"  # left to node09
    assert still_queued(store, {ids[0]: element}, grace_s=0).failed == {}


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
    paths = SimpleNamespace(result_pickle=missing, stderr=tmp_path / "e")
    job = SimpleNamespace(job_id="1_0", state="COMPLETED", paths=paths)
    job.done, job.result, job._results_timeout_s = (lambda: True), result, 15
    state, event, info = executor_for(store)._collect(ids[0], job)
    assert (state, event) == ("failed", "failed")
    said = "state COMPLETED after more time-outs than max_requeue allows: ran out of time: raise execution.slurm"
    assert said in info["error"] and "time_min (now 5) or max_requeue (now 3)" in info["error"]


@pytest.mark.slow
def test_a_rerun_right_after_a_kill_waits_for_the_lock_to_fall_silent(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next `usagg run` seconds after Slurm killed an element: its lock still looks fresh, and the new element
    (another Slurm job) would fail at once naming a live holder; the submission waits for the silence instead."""
    monkeypatch.setattr(joblock, "SLURM_EVIDENCE_BEATS", 0.1)  # 3 s here, 90 s on a cluster
    store, ids = make_store(tmp_path)
    earlier = f"{cluster.first_id + 500}_3"
    cluster.set_state(earlier, "OUT_OF_MEMORY")
    plant_lock(store, ids[0], slurm={"job": earlier, "restart": 0}, silent_s=1.0)
    assert executor_for(store).run(ids[:1], job_done) == {ids[0]: "done"}


def test_the_element_mark_is_this_calls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's in-process `debug` cluster runs an element in the submitting process: its later locks must not
    claim the element's Slurm job."""
    as_element(monkeypatch, "7_0", restarts=None)
    monkeypatch.delenv(ELEMENT_ENV)
    assert joblock.slurm_run() is None
    with joblock.slurm_element():
        assert joblock.slurm_run() == {"job": "7_0", "restart": 0}
    assert joblock.slurm_run() is None and ELEMENT_ENV not in os.environ


def test_a_heartbeat_skips_a_moment_the_lock_reads_as_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An EIO or ESTALE on NFS reads the lock as {} for a beat; the heartbeat stopped for good then, and the live
    holder's lock fell silent and breakable."""
    lock = joblock.JobLock(tmp_path / ".lock", "j", heartbeat_s=0.05, stale_after_s=60.0)
    real, blips = joblock.read_holder, [3]

    def flaky(path: Path) -> dict[str, Any] | None:
        if blips[0]:
            blips[0] -= 1
            return {}
        return real(path)

    monkeypatch.setattr(joblock, "read_holder", flaky)
    with lock.held():
        time.sleep(0.4)  # the three blips pass
        before = lock.path.stat().st_mtime
        time.sleep(0.3)
        assert lock.path.stat().st_mtime > before  # still beating


@pytest.mark.slow
def test_a_job_another_run_submitted_meanwhile_is_not_submitted_again(tmp_path: Path, cluster: FakeCluster) -> None:
    """Two `usagg run`s of one study started together each planned every job and each submitted a full array: an
    allocation per job wasted. The second decides under the store's submission lock and leaves a job the first
    submitted, and Slurm still queues, to it."""
    store, ids = make_store(tmp_path)
    other = f"{cluster.first_id + 700}_0"
    store.mark_queued_on_slurm(ids[0], other)  # the first run's element, recorded after this run planned
    cluster.set_state(other, "PENDING")
    events: list[tuple[str, str]] = []
    states = executor_for(store).run(ids[:2], job_done, lambda job_id, event, info: events.append((job_id, event)))
    assert states == {ids[0]: "pending", ids[1]: "done"}
    assert [j for j, e in events if e == "submitted"] == [ids[1]]
    assert store.queued_on_slurm(ids[0]) == other and (store.root / ".slurm-submit.lock").exists()
