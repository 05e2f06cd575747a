"""Executors: in-process, the spawn-based GPU pool (run on CPU) and Slurm through submitit's local cluster.

The job function here is a small stand-in for the engine's run_one with the
same contract: it locks the job, records its state in the real run store and
returns the final state. What it does per job is read from `behaviour.json`.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from submitit.helpers import DelayedSubmission

import usagg.execute.local as local
from usagg.errors import UsaggError
from usagg.execute import GpuPoolExecutor, InProcessExecutor, make_executor, resolve_devices
from usagg.execute.pool import visible_device
from usagg.execute.slurm import SlurmExecutor, SlurmJobCall, slurm_parameters
from usagg.plan import plan
from usagg.spec.models import DataSpec, ExecutionSpec, ModelSpec, SlurmSpec, Study, SynthSpec, TaskSpec
from usagg.store import RunStore, read_json, write_json_atomic

TESTS_DIR = str(Path(__file__).parent)


def fake_run_one(store_root: str, job_id: str, *, device: str | None = None, threads: int | None = None) -> str:
    """run_one's contract: lock, state running, work, state done (or failed with error.txt); notes what it got."""
    store = RunStore(store_root)
    behaviour = read_json(Path(store_root) / "behaviour.json").get(job_id, "ok")
    with store.lock(job_id):
        store.set_state(job_id, "running")
        write_json_atomic(
            store.job_dir(job_id) / "seen.json",
            {
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "pid": os.getpid(),
                "torch_imported": "torch" in sys.modules,
                "device": device,
                "threads": threads,
            },
        )
        time.sleep(0.2 if behaviour == "ok" else 0)
        if behaviour == "raise":
            raise RuntimeError(f"boom in {job_id}")
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
    study = Study(
        name="exec",
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64),
        tasks=[
            TaskSpec(id="a", type="classification", num_classes=2, group="g1"),
            TaskSpec(id="b", type="segmentation", num_classes=2, group="g1"),
            TaskSpec(id="c", type="regression", num_classes=3, group="g2"),
        ],
    )
    jobs = plan(study)[: len(behaviours)]
    store = RunStore(tmp_path / "runs" / "exec")
    store.init("name: exec\n", jobs)
    ids = [j.id for j in jobs]
    write_json_atomic(store.root / "behaviour.json", dict(zip(ids, behaviours, strict=True)))
    return store, ids


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
    assert store.lock_holder(ids[1]) is None  # released despite the exception

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
    assert events.of(ids[0]) == ["started", "locked"]
    assert events.calls[1][2]["holder"]["pid"] == os.getpid()


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
    fn = functools.partial(fake_run_one, device="cuda", threads=2)  # as usagg.service.job_function binds them
    states = GpuPoolExecutor(str(store.root), [0, 1]).run(ids, fn, events)
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


def test_visible_device_maps_through_the_parent_visibility() -> None:
    assert visible_device(1, "") == "1"
    assert visible_device(1, "2,3") == "3"
    with pytest.raises(ValueError, match="not visible"):
        visible_device(2, "2,3")


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
        assert store.lock_holder(ids[0]) is None  # the requeued run may start on another host
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
    assert isinstance(make_executor(ExecutionSpec(devices="cpu"), tmp_path), InProcessExecutor)
    assert isinstance(make_executor(ExecutionSpec(devices=[0]), tmp_path), InProcessExecutor)
    pool = make_executor(ExecutionSpec(devices="auto"), tmp_path)
    assert isinstance(pool, GpuPoolExecutor) and pool.devices == [0, 1]
    one = make_executor(ExecutionSpec(devices=[1]), tmp_path)  # only a fresh process can be pinned to GPU 1
    assert isinstance(one, GpuPoolExecutor) and one.devices == [1]
    slurm = make_executor(ExecutionSpec(executor="slurm"), tmp_path, cluster="local")
    assert isinstance(slurm, SlurmExecutor) and slurm.cluster == "local"
    assert slurm.folder == tmp_path / "slurm"


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
