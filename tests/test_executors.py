"""Executors: in-process, the spawn-based GPU pool (run on CPU) and Slurm through submitit's local cluster.

The job function here is a small stand-in for the engine's run_one with the
same contract: it locks the job, records its state in the real run store and
returns the final state. What it does per job is read from `behaviour.json`.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from submitit.helpers import DelayedSubmission

import usagg.execute.local as local
from tests.tiny_study import THREE_TASKS, small_study
from usagg.atomic import read_json, write_json_atomic
from usagg.engine.runner import run_one
from usagg.errors import SpecError, UsaggError
from usagg.execute import InProcessExecutor, PoolExecutor, make_executor, resolve_devices
from usagg.execute.pool import (
    GIB,
    SETTLE_POLLS,
    CpuMemoryProbe,
    JobMemory,
    cpu_threads,
    cpu_workers,
    default_cpu_threads,
    packed_jobs,
    usable_cores,
    visible_device,
)
from usagg.execute.slurm import SlurmExecutor, SlurmJobCall, slurm_parameters
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.spec.models import ExecutionSpec, SlurmSpec
from usagg.store import RunStore

TESTS_DIR = str(Path(__file__).parent)


def fake_run_one(store_root: str, job_id: str, *, device: str | None = None, threads: int | None = None) -> str:
    """run_one's contract: lock, state running, work, state done (or failed with error.txt); notes what it got."""
    store = RunStore(store_root)
    behaviour = read_json(Path(store_root) / "behaviour.json").get(job_id, "ok")
    with store.lock(job_id):
        start = time.time()  # before the state says running: a job waiting for company sees it after this
        store.set_state(job_id, "running")
        seen = {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
            "torch_imported": "torch" in sys.modules,
            "device": device,
            "threads": threads,
            "start": start,
        }
        write_json_atomic(store.job_dir(job_id) / "seen.json", seen)
        time.sleep(0.2 if behaviour == "ok" else 0)
        deadline = time.time() + 60
        while behaviour == "company" and time.time() < deadline:  # wait until another job of the store runs
            if any(store.job_state(j) == "running" for j in store.job_ids() if j != job_id):
                break
            time.sleep(0.05)
        write_json_atomic(store.job_dir(job_id) / "seen.json", {**seen, "end": time.time()})
        if behaviour == "raise":
            raise RuntimeError(f"boom in {job_id}")
        if behaviour == "oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if behaviour == "crash":
            os._exit(7)
        if behaviour == "fail":
            (store.job_dir(job_id) / "error.txt").write_text("engine said no\n")
            store.set_state(job_id, "failed", error="ValueError: engine said no")
            return "failed"
        store.set_state(job_id, "done")
        return "done"


def make_store(tmp_path: Path, behaviours: list[str]) -> tuple[RunStore, list[str]]:
    """A real store of 3 TS + 2 CG + 1 AU jobs; the first len(behaviours) jobs get these behaviours."""
    study = small_study("exec", THREE_TASKS)
    jobs = plan(study)[: len(behaviours)]
    store = RunStore(tmp_path / "runs" / "exec")
    store.init("name: exec\n", jobs)
    ids = [j.id for j in jobs]
    write_json_atomic(store.root / "behaviour.json", dict(zip(ids, behaviours, strict=True)))
    return store, ids


class FixedProbe:
    """Stands in for CudaMemoryProbe on the CPU: every job peaks at `peak` GiB with `free` GiB usable, known at once."""

    poll_s = 0.05

    def __init__(self, peak: float, free: float) -> None:
        self.peak, self.free = peak, free

    def start(self) -> None:
        pass

    def sample(self) -> JobMemory:
        return JobMemory(int(self.peak * GIB), int(self.free * GIB))

    def finish(self) -> JobMemory:
        return self.sample()


class DoneCountProbe:
    """Jobs peak at 8 GiB until `after` jobs of the store are done, then at 20 GiB; 40 GiB free; known at the end."""

    poll_s = 0.05

    def __init__(self, store_root: str, after: int) -> None:
        self.store_root, self.after = store_root, after

    def start(self) -> None:
        pass

    def sample(self) -> None:
        return None

    def finish(self) -> JobMemory:
        store = RunStore(self.store_root)
        done = sum(store.job_state(j) == "done" for j in store.job_ids())
        return JobMemory((8 if done < self.after else 20) * GIB, 40 * GIB)


class Events:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        self.calls.append((job_id, event, info))

    def of(self, job_id: str) -> list[str]:
        return [e for j, e, _ in self.calls if j == job_id]


# --------------------------------------------------------------------------- in-process


def test_inprocess_runs_all_and_records_an_exception_as_failed(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path, ["ok", "raise", "fail", "ok"])
    events = Events()
    states = InProcessExecutor(store.root).run(ids, fake_run_one, events)
    assert states == dict(zip(ids, ["done", "failed", "failed", "done"], strict=True))
    assert {jid: store.job_state(jid) for jid in ids} == states

    raised = store.job_record(ids[1])
    assert raised["error"] == f"RuntimeError: boom in {ids[1]}"
    assert "Traceback" in (store.job_dir(ids[1]) / "error.txt").read_text()
    assert raised["duration_s"] is not None and raised["attempts"] == 1
    assert store.job_lock(ids[1]).holder() is None  # released despite the exception

    # a failure fn recorded itself is kept as fn wrote it
    assert (store.job_dir(ids[2]) / "error.txt").read_text() == "engine said no\n"
    assert store.job_record(ids[2])["error"] == "ValueError: engine said no"

    assert events.of(ids[0]) == ["started", "finished"]
    assert events.of(ids[1]) == ["started", "failed"]
    assert events.of(ids[2]) == ["started", "failed"]
    failed_info = next(i for j, e, i in events.calls if j == ids[1] and e == "failed")
    assert failed_info == {"state": "failed", "error": f"RuntimeError: boom in {ids[1]}"}


def test_inprocess_leaves_a_job_locked_by_someone_else_alone(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path, ["ok", "ok"])
    events = Events()
    with store.lock(ids[0]):  # "another usagg run" holds this job
        states = InProcessExecutor(store.root).run(ids, fake_run_one, events)
    assert states == {ids[0]: "pending", ids[1]: "done"}
    assert store.job_state(ids[0]) == "pending"
    assert events.of(ids[0]) == ["locked"]  # never said to start here: another process runs it
    assert events.of(ids[1]) == ["started", "finished"]
    assert events.calls[0][2]["holder"]["pid"] == os.getpid()


def test_a_job_another_process_finished_is_finished_elsewhere_never_started_here(tmp_path: Path) -> None:
    """A new user's audit: a job another `usagg run` finished after this run decided to run it was logged "job 2/4:
    X started on cpu (2 threads)", then "X done in 0.0s". The job function is not called and no `started` comes:
    the one event is `finished` with `elsewhere`, which the console words as such."""
    store, ids = make_store(tmp_path, ["ok", "ok"])
    store.set_state(ids[0], "running")
    store.set_state(ids[0], "done")
    called: list[str] = []

    def fn(store_root: str, job_id: str) -> str:
        called.append(job_id)
        return fake_run_one(store_root, job_id)

    events = Events()
    states = InProcessExecutor(store.root).run(ids, fn, events)
    assert states == {ids[0]: "done", ids[1]: "done"} and called == [ids[1]]
    assert events.of(ids[0]) == ["finished"] and events.calls[0][2] == {"state": "done", "elsewhere": True}
    assert events.of(ids[1]) == ["started", "finished"] and "elsewhere" not in events.calls[-1][2]


def test_a_job_another_process_finished_just_before_the_lock_was_taken_is_never_started_here(tmp_path: Path) -> None:
    """The audit's F2 wording, its last window: the job was not done when this run's turn came, and another `usagg
    run` finished it before this one's job function took its lock, which finds it done there and trains nothing
    (usagg/engine/runner.py `run_one`). The console said "started on cpu" then "done in 0.0s": the state is read
    again as the lock is taken, so the one event is `finished` with `elsewhere`."""
    store, ids = make_store(tmp_path, ["ok"])

    def finished_meanwhile(store_root: str, job_id: str) -> str:
        def theirs() -> None:  # the other run's last writes, just before this one's lock (a thread of its own)
            RunStore(store_root).set_state(job_id, "running")
            RunStore(store_root).set_state(job_id, "done")

        other = threading.Thread(target=theirs)
        other.start()
        other.join()
        with store.lock(job_id):  # run_one: a job done under its lock is returned as is
            return store.job_state(job_id)

    events = Events()
    assert InProcessExecutor(store.root).run(ids, finished_meanwhile, events) == {ids[0]: "done"}
    assert events.calls == [(ids[0], "finished", {"state": "done", "elsewhere": True})]


@pytest.mark.slow
def test_pool_says_started_only_for_jobs_whose_lock_its_worker_took(tmp_path: Path) -> None:
    """The run decided to run both jobs, then another process took the first one's lock: its worker finds it held,
    and the job is only 'locked' (running elsewhere), never 'started' on a device of this pool."""
    store, ids = make_store(tmp_path, ["ok", "ok"])
    events = Events()
    with store.lock(ids[0]):  # this test process is the other `usagg run`; the pool workers are processes of their own
        states = PoolExecutor(str(store.root), None, jobs_per_device=2).run(ids, fake_run_one, events)
    assert states == {ids[0]: "pending", ids[1]: "done"}
    assert events.of(ids[0]) == ["locked"] and events.of(ids[1]) == ["started", "finished"]
    (info,) = [i for j, e, i in events.calls if e == "started"]
    assert info["device"] == "cpu" and info["jobs_at_once"] == 2


def test_a_broken_progress_callback_does_not_stop_the_run(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path, ["ok", "ok"])

    def bad(job_id: str, event: str, info: dict[str, Any]) -> None:
        raise KeyError(event)

    assert InProcessExecutor(store.root).run(ids, fake_run_one, bad) == {ids[0]: "done", ids[1]: "done"}


# --------------------------------------------------------------------------- GPU pool (on CPU)


@pytest.mark.slow
def test_gpu_pool_pins_workers_and_survives_a_crashed_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    store, ids = make_store(tmp_path, ["ok", "crash", "ok", "raise", "ok", "ok"])
    events = Events()
    fn = functools.partial(fake_run_one, device="cuda", threads=2)  # as usagg.run.jobfunction.job_function binds them
    states = PoolExecutor(str(store.root), [0, 1]).run(ids, fn, events)
    expected = dict(zip(ids, ["done", "failed", "done", "failed", "done", "done"], strict=True))
    assert states == expected
    assert {jid: store.job_state(jid) for jid in ids} == expected

    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    assert {s["cuda_visible_devices"] for s in seen.values()} == {"0", "1"}
    assert not any(s["torch_imported"] for s in seen.values())  # pinned before anything heavy
    assert {(s["device"], s["threads"]) for s in seen.values()} == {("cuda", 2)}  # carried by the job function
    assert len({s["pid"] for s in seen.values()}) >= 3  # the crashed worker was replaced

    crashed = store.job_record(ids[1])
    assert "exit code 7" in crashed["error"] and crashed["duration_s"] is not None
    assert "died" in (store.job_dir(ids[1]) / "error.txt").read_text()
    assert store.job_record(ids[3])["error"] == f"RuntimeError: boom in {ids[3]}"
    with store.lock(ids[1]):  # the dead worker's lock is stale, not a blocker
        pass

    started = {j: i["device"] for j, e, i in events.calls if e == "started"}
    assert set(started) == set(ids) and set(started.values()) == {0, 1}
    assert events.of(ids[1]) == ["started", "failed"]
    assert next(i for j, e, i in events.calls if j == ids[1] and e == "failed")["exitcode"] == 7
    assert all(events.of(j)[-1] == "finished" for j in ids if expected[j] == "done")


@pytest.mark.slow
def test_gpu_pool_runs_jobs_per_gpu_workers_and_an_oom_fails_only_its_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    store, ids = make_store(tmp_path, ["ok", "ok", "oom", "ok", "ok", "ok"])
    events = Events()
    states = PoolExecutor(str(store.root), [0, 1], jobs_per_device=2).run(ids, fake_run_one, events)
    expected = dict(zip(ids, ["done", "done", "failed", "done", "done", "done"], strict=True))
    assert states == expected and {jid: store.job_state(jid) for jid in ids} == expected

    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    pids = {dev: {s["pid"] for s in seen.values() if s["cuda_visible_devices"] == dev} for dev in ("0", "1")}
    assert {dev: len(p) for dev, p in pids.items()} == {"0": 2, "1": 2}  # two worker processes per GPU
    assert {i["jobs_at_once"] for _, e, i in events.calls if e == "started"} == {2}

    error = store.job_record(ids[2])["error"]
    assert "out of GPU memory" in error and "execution.jobs_per_gpu" in error and "Tried to allocate 2.00 GiB" in error
    text = (store.job_dir(ids[2]) / "error.txt").read_text()
    assert "OutOfMemoryError" in text and "execution.jobs_per_gpu" in text
    assert events.of(ids[2]) == ["started", "failed"]


@pytest.mark.slow
def test_gpu_pool_auto_measures_the_largest_job_first_and_packs_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # TS a, b, c; CG g1, g2; AU (MoE, 3 tasks) last, running until another job runs beside it (60 s at most)
    store, ids = make_store(tmp_path, ["ok"] * 5 + ["company"])
    au = ids[-1]
    assert store.job(au).paradigm == "AU"
    events = Events()
    pool = PoolExecutor(str(store.root), [0], jobs_per_device="auto", probe=FixedProbe(peak=8, free=40))
    assert pool.run(ids, fake_run_one, events) == dict.fromkeys(ids, "done")

    started = [(j, i["jobs_at_once"]) for j, e, i in events.calls if e == "started"]
    assert started[0] == (au, 1)  # the largest job goes first, alone
    assert {n for _, n in started[1:]} == {3}  # (40 + 1) // (1.25 * 8 + 1) = 3
    assert pool.limits == {0: packed_jobs(40 * GIB, 8 * GIB)} == {0: 3}
    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    assert any(s["start"] < seen[au]["end"] for j, s in seen.items() if j != au)  # packed while AU ran
    assert seen[au]["end"] - seen[au]["start"] < 50
    assert len({s["pid"] for s in seen.values()}) == 3  # the measuring worker and two more


@pytest.mark.slow
def test_gpu_pool_auto_lowers_the_count_when_a_larger_peak_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    store, ids = make_store(tmp_path, ["ok"] * 6)
    events = Events()
    pool = PoolExecutor(str(store.root), [0], jobs_per_device="auto", probe=DoneCountProbe(str(store.root), 3))
    assert pool.run(ids, fake_run_one, events) == dict.fromkeys(ids, "done")

    started = [(j, i["jobs_at_once"]) for j, e, i in events.calls if e == "started"]
    assert [n for _, n in started[:4]] == [1, 3, 3, 3]  # measured at 8 GiB: (40 + 1) // (10 + 1)
    assert started[-1][1] == 1 and pool.limits == {0: 1}  # then 20 GiB: (40 + 1) // (25 + 1)
    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    last = started[-1][0]
    assert all(seen[last]["start"] >= s["end"] for j, s in seen.items() if j != last)  # alone again


@pytest.mark.slow
def test_gpu_pool_auto_keeps_one_worker_per_gpu_when_jobs_use_no_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    store, ids = make_store(tmp_path, ["ok"] * 3)
    pool = PoolExecutor(str(store.root), [0], jobs_per_device="auto")  # the real CudaMemoryProbe
    assert pool.run(ids, fake_run_one) == dict.fromkeys(ids, "done")
    assert pool.limits == {0: 1}
    assert len({read_json(store.job_dir(j) / "seen.json")["pid"] for j in ids}) == 1


def test_packed_jobs_leaves_room_for_contexts_and_clamps() -> None:
    assert packed_jobs(78 * GIB, int(2.56 * GIB)) == 16  # an AU job of the H100 gpu-check: 18 fit, capped at 16
    assert packed_jobs(78 * GIB, 6 * GIB) == 9  # (78 + 1) // (1.25 * 6 + 1)
    assert packed_jobs(78 * GIB, 20 * GIB) == 3  # (78 + 1) // (1.25 * 20 + 1)
    assert packed_jobs(10 * GIB, 12 * GIB) == 1  # never fewer than one


def test_run_one_names_jobs_per_gpu_when_the_engine_runs_out_of_gpu_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    import usagg.engine.job

    def out_of_memory(*args: Any, **kwargs: Any) -> dict:  # the engine entry point, failing as a full GPU makes it
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(usagg.engine.job, "run_job", out_of_memory)
    store, ids = make_store(tmp_path, ["ok", "ok"])
    assert run_one(str(store.root), ids[0], device="cpu") == "failed"
    error = store.job_record(ids[0])["error"]
    assert error.startswith("GpuOutOfMemory: out of GPU memory") and "execution.jobs_per_gpu" in error
    assert "Tried to allocate 512.00 MiB" in error
    text = (store.job_dir(ids[0]) / "error.txt").read_text()
    assert "torch.OutOfMemoryError" in text and text.rstrip().endswith("Tried to allocate 512.00 MiB)")
    assert "job failed: GpuOutOfMemory" in (store.job_dir(ids[0]) / "log.txt").read_text()
    assert store.job_state(ids[1]) == "pending"


def test_out_of_gpu_memory_is_told_apart_from_other_errors_wherever_it_is_in_the_chain() -> None:
    """The caching allocator's OutOfMemoryError, the CUDA runtime's own allocation failures (AcceleratorError
    "out of memory": a context, a workspace, pinned memory), either wrapped by another error (the compiler's): all
    name jobs_per_gpu; another AcceleratorError or RuntimeError is no memory error."""
    torch = pytest.importorskip("torch")
    from usagg.engine.runner import gpu_memory_error

    def wrapped(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as err:
                raise RuntimeError("backend compiler failed") from err
        except RuntimeError as outer:
            return outer

    runtime = torch.AcceleratorError("CUDA error: out of memory\nCUDA kernel errors might be reported later")
    for err in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), runtime, wrapped(runtime)):
        found = gpu_memory_error(err)
        assert found is not None and "execution.jobs_per_gpu" in str(found)
    assert "(CUDA error: out of memory)" in str(gpu_memory_error(wrapped(runtime)))
    for err in (torch.AcceleratorError("CUDA error: an illegal memory access"), RuntimeError("out of memory?")):
        assert gpu_memory_error(err) is None


@pytest.mark.parametrize("value", [0, 17, -1, "many", 2.5])
def test_jobs_per_gpu_out_of_range_is_a_spec_error(tmp_path: Path, value: object) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {synthetic: {}}\ntasks_from: {catalog: synthetic}\n"
        f"model: {{backbone: dinov3_test, image_size: 64}}\nexecution: {{jobs_per_gpu: {value}}}\n"
    )
    with pytest.raises(SpecError, match=r"execution\.jobs_per_gpu: got .*'auto'"):
        load_study(spec)
    assert ExecutionSpec().jobs_per_gpu == "auto" and ExecutionSpec(jobs_per_gpu=16).jobs_per_gpu == 16


def test_visible_device_maps_through_the_parent_visibility() -> None:
    assert visible_device(1, "") == "1"
    assert visible_device(1, "2,3") == "3"
    with pytest.raises(ValueError, match="not visible"):
        visible_device(2, "2,3")


# --------------------------------------------------------------------------- CPU pool


def run_one_reporting_threads(store_root: str, job_id: str, **kwargs: Any) -> str:
    """fake_run_one, then the torch threads its worker runs with (torch imported after the worker was pinned)."""
    import torch

    state = fake_run_one(store_root, job_id, **kwargs)
    seen_file = RunStore(store_root).job_dir(job_id) / "seen.json"
    write_json_atomic(seen_file, {**read_json(seen_file), "torch_threads": torch.get_num_threads()})
    return state


@pytest.fixture
def two_cores() -> Iterator[None]:
    """This process (and the workers it spawns) runs on two cores: the pool's auto counts are the same on any box."""
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two usable cores")
    os.sched_setaffinity(0, sorted(before)[:2])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.slow
def test_cpu_pool_runs_jobs_side_by_side_each_on_its_share_of_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_cores: None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a CPU worker sees no GPU, whatever its parent sees
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the worker's own share wins over the parent's setting
    # TS a, b, c and CG g1: CG (two tasks, MoE) is the largest and goes first; it and TS a wait for each other
    store, ids = make_store(tmp_path, ["company", "ok", "ok", "company"])
    events = Events()
    pool = PoolExecutor(str(store.root), None, jobs_per_device="auto", probe=FixedProbe(peak=1, free=40))
    fn = functools.partial(run_one_reporting_threads, device="cpu")
    assert pool.run(ids, fn, events) == dict.fromkeys(ids, "done")

    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    cg, ts = seen[ids[3]], seen[ids[0]]
    assert cg["start"] < ts["end"] and ts["start"] < cg["end"]  # side by side
    assert cg["end"] - cg["start"] < 50  # each found the other running, not the 60 s time-out
    assert len({s["pid"] for s in seen.values()}) == 2 and os.getpid() not in {s["pid"] for s in seen.values()}
    assert {(s["cuda_visible_devices"], s["torch_threads"]) for s in seen.values()} == {("", 1)}  # 2 cores / 2
    started = [(j, i) for j, e, i in events.calls if e == "started"]
    assert {j for j, _ in started[:2]} == {ids[3], ids[0]}  # the first two handed out: CG, then TS a (not TS b)
    assert {(i["device"], i["jobs_at_once"], i["threads"]) for _, i in started} == {("cpu", 2, 1)}
    assert pool.limits == {"cpu": 2}  # 40 GiB hold 32 such jobs: the cores bound it


@pytest.mark.slow
def test_cpu_pool_auto_lowers_the_count_when_memory_does_not_fit(tmp_path: Path, two_cores: None) -> None:
    store, ids = make_store(tmp_path, ["ok"] * 6)
    events = Events()
    pool = PoolExecutor(str(store.root), None, jobs_per_device="auto", probe=FixedProbe(peak=8, free=4))
    assert pool.run(ids, fake_run_one, events) == dict.fromkeys(ids, "done")

    started = [(j, i["jobs_at_once"]) for j, e, i in events.calls if e == "started"]
    # one worker per core, the largest jobs (AU, CG g1) first; which worker takes its job's lock first is a race
    assert set(started[:2]) == {(ids[5], 2), (ids[3], 2)}
    assert [n for _, n in started[2:]] == [1] * 4  # 4 GiB + the other job at 8 GiB hold (4 + 8) // 10 = 1
    assert pool.limits == {"cpu": packed_jobs(12 * GIB, 8 * GIB, 0, 2)} == {"cpu": 1}
    seen = {jid: read_json(store.job_dir(jid) / "seen.json") for jid in ids}
    later = sorted((seen[j] for j, _ in started[2:]), key=lambda s: s["start"])
    assert all(b["start"] >= a["end"] for a, b in itertools.pairwise(later))  # one at a time
    assert all(s["threads"] is None for s in seen.values())  # the job function's own threads stay as bound


@pytest.mark.slow
def test_cpu_pool_threads_setting_and_a_single_job_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_cores: None
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a worker would inherit, were it not pinned
    store, ids = make_store(tmp_path, ["ok", "ok", "ok"])
    events = Events()
    fn = functools.partial(run_one_reporting_threads, device="cpu", threads=2)  # as job_function binds them
    pool = PoolExecutor(str(store.root), None, jobs_per_device=2, threads=2)  # not the cores' share: 2 // 2
    assert pool.run(ids[:2], fn, events) == dict.fromkeys(ids[:2], "done")
    seen = [read_json(store.job_dir(j) / "seen.json") for j in ids[:2]]
    assert [(s["torch_threads"], s["threads"]) for s in seen] == [(2, 2), (2, 2)]
    assert len({s["pid"] for s in seen} - {os.getpid()}) == 2
    assert {i["threads"] for _, e, i in events.calls if e == "started"} == {2}

    assert pool.run(ids[2:], fake_run_one, events) == {ids[2]: "done"}  # one job: no worker to start
    assert read_json(store.job_dir(ids[2]) / "seen.json")["pid"] == os.getpid()
    assert events.calls[-2] == (ids[2], "started", {"device": "cpu", "threads": 2})


@pytest.mark.slow
def test_a_cpu_job_trains_on_the_threads_a_full_run_gives_it_however_many_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_cores: None
) -> None:
    """A CPU job's numbers depend on its threads: a job rerun alone (`--only`, `--retry-failed`, the last one left)
    ran in-process on every core where the full pool gave it one, and the demo's DSC moved by 13 %."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    store, ids = make_store(tmp_path, ["ok", "ok", "ok"])
    fn = functools.partial(run_one_reporting_threads, device="cpu")
    before = torch.get_num_threads()
    pool = PoolExecutor(str(store.root), None, jobs_per_device="auto", probe=FixedProbe(peak=1, free=40))
    assert pool.run(ids[:2], fn) == dict.fromkeys(ids[:2], "done")  # two workers, one thread each
    assert pool.run(ids[2:], fn) == {ids[2]: "done"}  # the lone job, in this process
    seen = [read_json(store.job_dir(j) / "seen.json") for j in ids]
    assert [s["torch_threads"] for s in seen] == [1, 1, 1] and seen[2]["pid"] == os.getpid()
    assert torch.get_num_threads() == before  # this process's count is put back
    assert default_cpu_threads("auto", None) == 1 and default_cpu_threads(1, None) == 2
    assert default_cpu_threads(2, 3) == 3  # an explicit count is the user's
    in_process = local.make_local_executor(ExecutionSpec(devices="cpu", cpu_jobs=1), store.root)
    assert isinstance(in_process, InProcessExecutor) and in_process.threads == 2  # one job at a time: every core
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own cap
    assert default_cpu_threads(1, None) == 1 and default_cpu_threads(1, 2) == 2


def run_one_until_stopped(store_root: str, job_id: str) -> str:
    """run_one's contract under a stop: running until interrupted, then back to pending and the lock released."""
    store = RunStore(store_root)
    with store.lock(job_id):
        try:  # from the first write: a stop may land anywhere after it, as in the engine's runner
            store.set_state(job_id, "running")
            write_json_atomic(store.job_dir(job_id) / "seen.json", {"pid": os.getpid()})
            time.sleep(120)
        except BaseException:
            store.set_state(job_id, "pending", error="interrupted")
            raise
    return "done"


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c", "kill-int"])
def test_ctrl_c_leaves_the_cpu_pool_jobs_pending_and_no_worker_behind(tmp_path: Path, to_group: bool) -> None:
    """Ctrl-C at a terminal reaches the whole process group, the workers too: each printed its job's
    KeyboardInterrupt traceback. They leave it to the parent, which stops them as it does on `kill -INT`."""
    store, ids = make_store(tmp_path, ["ok", "ok", "ok"])
    # SIGINT as a shell leaves it for a foreground command. Started in the background (`make test &`, nohup), the
    # suite inherits SIGINT ignored (POSIX shells without job control do so), Python then installs no
    # KeyboardInterrupt, and the parent would stay deaf to the Ctrl-C this test sends (SigIgn 0x1001007 measured).
    code = (
        "import signal, sys, test_executors as t\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "from usagg.execute import PoolExecutor\n"
        "try:\n"
        f"    PoolExecutor({str(store.root)!r}, None, 2).run({ids!r}, t.run_one_until_stopped)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    seen = [store.job_dir(j) / "seen.json" for j in ids[:2]]
    while not all(p.is_file() for p in seen) and time.monotonic() < deadline:  # both jobs inside their work
        time.sleep(0.05)
    assert [store.job_state(j) for j in ids] == ["running", "running", "pending"]
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT`: its workers must stop with it
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        proc.kill()  # no parent left behind by a failure (its workers' jobs end within two minutes)
        masks = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigPnd", "ShdPnd"))]
        pytest.fail(f"the pool's parent did not stop within 30 s of SIGINT; its signal masks: {masks}")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [(store.job_state(j), store.job_record(j)["error"]) for j in ids[:2]] == [("pending", "interrupted")] * 2
    assert store.job_state(ids[2]) == "pending" and all(store.job_lock(j).holder() is None for j in ids)
    for pid in (read_json(store.job_dir(j) / "seen.json")["pid"] for j in ids[:2]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_cpu_memory_probe_reads_this_process() -> None:
    probe = CpuMemoryProbe()
    probe.start()
    before = probe.finish()
    assert before is not None and 0 < before.peak < before.free
    ballast = b"\x01" * (256 << 20)  # every page written: resident
    grown = probe.finish()
    assert grown is not None and grown.peak - before.peak >= 250 << 20
    del ballast
    probe.start()  # the next job's peak starts from what is resident now
    again = probe.finish()
    assert again is not None and again.peak < grown.peak - (200 << 20)
    answers = [probe.sample() for _ in range(SETTLE_POLLS)]
    assert answers == [None] * SETTLE_POLLS  # never before SETTLE_POLLS polls alike
    settled = next((m for m in (probe.sample() for _ in range(50)) if m is not None), None)
    assert settled is not None and settled.peak >= again.peak


def test_cpu_workers_and_threads_follow_the_cores(two_cores: None) -> None:
    assert usable_cores() == 2
    assert [cpu_workers("auto", n) for n in (None, 1, 8)] == [2, 1, 2]
    assert [cpu_workers(4, n) for n in (None, 3)] == [4, 3]
    assert [cpu_workers("auto", 8, t) for t in (1, 2, 3)] == [2, 1, 1]  # never more threads than cores
    assert cpu_workers(4, 8, threads=2) == 4  # an explicit count is the user's
    assert [cpu_threads(None, w) for w in (1, 2, 4)] == [2, 1, 1]
    assert cpu_threads(3, 2) == 3


def test_cpu_jobs_changes_no_job_id() -> None:
    study = small_study("ids")
    ids = [j.id for j in plan(study)]
    for cpu_jobs in (1, 8, "auto"):
        execution = ExecutionSpec(cpu_jobs=cpu_jobs, threads=2)
        assert [j.id for j in plan(study.model_copy(update={"execution": execution}))] == ids


# --------------------------------------------------------------------------- Slurm via submitit


@pytest.mark.slow
def test_slurm_executor_runs_an_array_on_the_local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # submitit's local jobs unpickle fake_run_one by module name: let them import this file
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p))
    store, ids = make_store(tmp_path, ["ok", "raise", "crash"])
    slurm = SlurmSpec(time_min=5, gpus_per_node=0, cpus_per_task=1, mem_gb=1, max_requeue=1)
    events = Events()
    executor = make_executor(ExecutionSpec(executor="slurm", slurm=slurm), store.root, cluster="local")
    assert isinstance(executor, SlurmExecutor)
    executor.poll_s = 0.2
    executor.results_timeout_s = 1  # the crashed job leaves no result file: do not wait 15 s for one
    states = executor.run(ids, functools.partial(fake_run_one, device="cpu", threads=1), events)
    assert states == {ids[0]: "done", ids[1]: "failed", ids[2]: "failed"}
    assert read_json(store.job_dir(ids[0]) / "seen.json")["device"] == "cpu"  # the node got it in the pickled call
    assert {jid: store.job_state(jid) for jid in ids} == states
    assert store.job_record(ids[1])["error"] == f"RuntimeError: boom in {ids[1]}"
    assert "did not complete" in (store.job_dir(ids[2]) / "error.txt").read_text()
    assert [e for _, e, _ in events.calls[:3]] == ["submitted"] * 3
    assert sorted(events.of(ids[0])) == ["finished", "submitted"]
    assert (store.root / "slurm").is_dir() and any((store.root / "slurm").rglob("*_log.out"))


def test_checkpoint_resubmits_the_same_call_and_frees_the_lock(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path, ["ok"])
    call = SlurmJobCall(fake_run_one)
    with store.lock(ids[0]):
        delayed = call.checkpoint(str(store.root), ids[0])
        assert store.job_lock(ids[0]).holder() is None  # the requeued run may start on another host
    assert isinstance(delayed, DelayedSubmission)
    assert delayed.function is call and delayed.args == (str(store.root), ids[0]) and delayed.kwargs == {}
    assert delayed.result() == ("done", "finished", {"state": "done"})  # re-running it runs the job
    assert store.job_state(ids[0]) == "done"


def test_slurm_parameters_reach_the_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (fakebin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakebin}{os.pathsep}{os.environ['PATH']}")
    slurm = SlurmSpec(partition="gpu", qos="high", time_min=90, max_requeue=5, additional={"constraint": "a100"})
    ex = SlurmExecutor(tmp_path / "runs" / "s", slurm, cluster="slurm").make_submitit_executor()
    script = ex._executor._make_submission_file_text("CMD", "uid")  # type: ignore[attr-defined]
    for line in (
        "--partition=gpu",
        "--qos=high",
        "--time=90",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--constraint=a100",
        "--job-name=usagg-s",
    ):
        assert f"#SBATCH {line}\n" in script
    assert "--account" not in script
    assert ex._executor.max_num_timeout == 5  # type: ignore[attr-defined]
    assert ex._executor.parameters["array_parallelism"] == 16  # type: ignore[attr-defined]
    assert "slurm_additional_parameters" not in slurm_parameters(SlurmSpec(), "x")


# --------------------------------------------------------------------------- choosing an executor


def test_make_executor_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "cuda_device_count", lambda: 2)
    assert isinstance(make_executor(ExecutionSpec(devices="cpu", cpu_jobs=1, threads=4), tmp_path), InProcessExecutor)
    cpu = make_executor(ExecutionSpec(devices="cpu", cpu_jobs=3, threads=2, jobs_per_gpu=4), tmp_path)
    assert isinstance(cpu, PoolExecutor) and (cpu.devices, cpu.jobs_per_device, cpu.threads) == (None, 3, 2)
    assert isinstance(make_executor(ExecutionSpec(devices=[0], jobs_per_gpu=1), tmp_path), InProcessExecutor)
    packed = make_executor(ExecutionSpec(devices=[0]), tmp_path)  # one GPU, jobs_per_gpu auto: a pool packs it
    assert isinstance(packed, PoolExecutor) and packed.devices == [0] and packed.jobs_per_device == "auto"
    pool = make_executor(ExecutionSpec(devices="auto", jobs_per_gpu=3), tmp_path)
    assert isinstance(pool, PoolExecutor) and pool.devices == [0, 1] and pool.jobs_per_device == 3
    one = make_executor(ExecutionSpec(devices=[1]), tmp_path)  # only a fresh process can be pinned to GPU 1
    assert isinstance(one, PoolExecutor) and one.devices == [1]
    slurm = make_executor(ExecutionSpec(executor="slurm"), tmp_path, cluster="local")
    assert isinstance(slurm, SlurmExecutor) and slurm.cluster == "local"
    assert slurm.folder == tmp_path / "slurm"


def test_make_executor_cpu_auto_follows_the_cores(tmp_path: Path, two_cores: None) -> None:
    auto = make_executor(ExecutionSpec(devices="cpu"), tmp_path)
    assert isinstance(auto, PoolExecutor) and (auto.devices, auto.jobs_per_device, auto.threads) == (None, "auto", None)
    assert isinstance(make_executor(ExecutionSpec(devices="cpu", threads=2), tmp_path), InProcessExecutor)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])  # the fixture restores it
    assert isinstance(make_executor(ExecutionSpec(devices="cpu"), tmp_path), InProcessExecutor)


def test_resolve_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "cuda_device_count", lambda: 2)
    assert resolve_devices(ExecutionSpec(devices="cpu")) is None
    assert resolve_devices(ExecutionSpec(devices="auto")) == [0, 1]
    assert resolve_devices(ExecutionSpec(devices="cuda")) == [0, 1]
    assert resolve_devices(ExecutionSpec(devices=[1, 0])) == [1, 0]
    with pytest.raises(UsaggError, match="not visible"):
        resolve_devices(ExecutionSpec(devices=[0, 2]))
    with pytest.raises(UsaggError, match="twice"):
        resolve_devices(ExecutionSpec(devices=[1, 1]))
    monkeypatch.setattr(local, "cuda_device_count", lambda: 0)
    assert resolve_devices(ExecutionSpec(devices="auto")) is None
    with pytest.raises(UsaggError, match="no CUDA device"):
        resolve_devices(ExecutionSpec(devices="cuda"))


def test_resolve_devices_with_real_torch_on_this_machine() -> None:
    torch = pytest.importorskip("torch")
    n = torch.cuda.device_count()
    assert resolve_devices(ExecutionSpec(devices="auto")) == (list(range(n)) or None)


# --------------------------------------------------------------------------- the registry


def test_registry_holds_the_built_ins_and_imports_nothing_heavy() -> None:
    import subprocess

    code = (
        "import sys, usagg.execute.registry as r; "
        "print(r.executor_names(), sorted(m for m in ('torch', 'submitit', 'usagg.spec.models', 'usagg.store') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['local', 'slurm'] []"


def test_unknown_executor_names_the_registered_ones(tmp_path: Path) -> None:
    from usagg.execute.registry import EXECUTORS, get_executor_factory, register_executor

    def factory(execution: ExecutionSpec, store_root: str) -> InProcessExecutor:
        return InProcessExecutor(store_root)

    with pytest.raises(
        UsaggError, match=r"unknown executor 'slrum' \(did you mean 'slurm'\?\); registered executors: "
    ):
        get_executor_factory("slrum")
    with pytest.raises(ValueError, match="already registered"):
        register_executor("local", "another local")(factory)
    with pytest.raises(ValueError, match="an executor name"):
        register_executor("two words", "x")(factory)
    assert EXECUTORS["local"].description and EXECUTORS["slurm"].factory is get_executor_factory("slurm")


def run_one_reporting_progress(store_root: str, job_id: str, *, progress: Any, **kwargs: Any) -> str:
    """fake_run_one after 50 training steps reported to its `progress` sink as the trainer does (2 epochs of 25),
    then a test phase."""
    from usagg.engine.progress import Progress

    for epoch in range(2):
        for step in range(1, 26):
            progress(Progress(job_id, "train", epoch, 2, step, 25, loss=1.0 / step))
        progress(Progress(job_id, "select", epoch, 2, 25, 25))
    progress(Progress(job_id, "test", 1, 2, 25, 25))
    return fake_run_one(store_root, job_id, **kwargs)


@pytest.mark.slow
def test_pooled_jobs_progress_reaches_the_parents_sink(tmp_path: Path, two_cores: None) -> None:
    """`usagg run` shows a pooled job's epochs: its worker forwards the trainer's reports (throttled within an
    epoch's training, never an epoch's end or another phase) to the run's `on_progress` in the pool's process."""
    from usagg.engine.progress import Progress

    store, ids = make_store(tmp_path, ["ok", "ok"])
    heard: list[Progress] = []
    states = PoolExecutor(str(store.root), None, jobs_per_device=2).run(
        ids, functools.partial(run_one_reporting_progress, device="cpu"), None, heard.append
    )
    assert states == dict.fromkeys(ids, "done")
    for jid in ids:
        mine = [(p.phase, p.epoch, p.step) for p in heard if p.job_id == jid]
        assert [m for m in mine if m[0] != "train" or m[2] == 25] == [
            ("train", 0, 25), ("select", 0, 25), ("train", 1, 25), ("select", 1, 25), ("test", 1, 25)
        ]  # fmt: skip
        assert 5 < len(mine) < 5 + 50  # the first step of each epoch's throttle window too, not all 50 steps


def _gone(pid: int) -> bool:
    """The process has exited: no /proc entry, or a zombie its parent has not joined yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def run_one_outliving_the_others(store_root: str, job_id: str, **kwargs: Any) -> str:
    """fake_run_one; the job whose behaviour is "outlive" first waits (up to 20 s) until every other job has ended
    and the worker that ran it has exited, and notes whether it saw that happen."""
    store = RunStore(store_root)
    if read_json(Path(store_root) / "behaviour.json").get(job_id) != "outlive":
        return fake_run_one(store_root, job_id, **kwargs)
    others = [j for j in store.job_ids() if j != job_id]
    deadline, exited = time.time() + 20, False
    while time.time() < deadline and not exited:
        if all(store.job_state(j) == "done" for j in others):
            pids = {read_json(store.job_dir(j) / "seen.json")["pid"] for j in others} - {os.getpid()}
            exited = all(_gone(pid) for pid in pids)
        time.sleep(0.05)
    write_json_atomic(store.job_dir(job_id) / "outlived.json", {"others_exited": exited})
    return fake_run_one(store_root, job_id, **kwargs)


@pytest.mark.slow
def test_a_worker_with_nothing_left_to_run_exits_while_the_others_still_work(tmp_path: Path, two_cores: None) -> None:
    """An idle worker is told to exit as soon as the queue is empty, not when the last job ends: its process
    (torch and all) is gone while the other worker still runs, and the run ends without joining it late."""
    store, ids = make_store(tmp_path, ["outlive", "ok", "ok"])
    pool = PoolExecutor(str(store.root), None, jobs_per_device=2, threads=1)
    assert pool.run(ids, functools.partial(run_one_outliving_the_others, device="cpu")) == dict.fromkeys(ids, "done")
    assert read_json(store.job_dir(ids[0]) / "outlived.json") == {"others_exited": True}


def test_a_dead_workers_message_names_the_signal_and_the_kept_checkpoint(tmp_path: Path) -> None:
    """The ops audit II: a pool worker killed (kill -9, the out-of-memory killer) failed its job with "died with exit
    code -9" alone, and a plain `usagg run` skipped it while `--retry-failed` resumed from its kept last.pt."""
    from usagg.execute.pool import _died_text

    store, (job, *_) = make_store(tmp_path, ["done"])
    said = _died_text("cpu", -9, job, store.root)
    assert said == f"worker on cpu died with exit code -9 (SIGKILL) while running job {job}"
    last = store.paths(job).last_checkpoint
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_bytes(b"a checkpoint")
    assert _died_text("cuda:0", 1, job, store.root) == (
        f"worker on cuda:0 died with exit code 1 while running job {job}; its last.pt is kept: "
        "`usagg run --retry-failed` resumes it from there"
    )
