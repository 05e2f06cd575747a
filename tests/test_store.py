"""The run store: atomic files, job states and timings, locks across processes, results.csv."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from cli_run import run_cli

import usagg.store as store_mod
from tests.store_reads import all_metrics
from usagg.atomic import read_json, write_json_atomic, write_text_atomic
from usagg.errors import UsaggError
from usagg.joblock import JobLocked
from usagg.plan import Job, plan
from usagg.results_schema import RESULT_COLUMNS
from usagg.spec.models import DataSpec, ModelSpec, Study, SynthSpec, TaskSpec, TrainingSpec
from usagg.store import RunStore

SPAWN = mp.get_context("spawn")


def make_study(epochs: int = 1, seeds: tuple[int, ...] = (0,)) -> Study:
    return Study(
        name="toy",
        seeds=list(seeds),
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64),
        training=TrainingSpec(epochs=epochs),
        tasks=[
            TaskSpec(id="heart_seg", type="segmentation", num_classes=2, group="cardiac"),
            TaskSpec(id="heart_cls", type="classification", num_classes=3, group="cardiac"),
            TaskSpec(id="head_box", type="detection", num_classes=1, group="head"),
        ],
    )


def make_store(tmp_path: Path, study: Study | None = None) -> tuple[RunStore, list[Job]]:
    study = study or make_study()
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / study.name)
    store.init("name: toy\n", jobs)
    return store, jobs


# --------------------------------------------------------------------------- atomic files


def test_atomic_json_roundtrip_and_no_temp_left(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    write_json_atomic(path, {"x": 1})
    write_json_atomic(path, {"x": 2})
    assert read_json(path) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old\n")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(store_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _crash_before_rename(path: str) -> None:
    """Child: the process dies after writing the temporary file, before the rename."""
    store_mod.os.replace = lambda *a, **k: os._exit(3)  # type: ignore[assignment]
    write_json_atomic(path, {"version": "new"})


def test_crash_between_write_and_rename_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    write_json_atomic(path, {"version": "old"})
    p = SPAWN.Process(target=_crash_before_rename, args=(str(path),))
    p.start()
    p.join(30)
    assert p.exitcode == 3
    assert read_json(path) == {"version": "old"}
    leftovers = [x.name for x in tmp_path.iterdir() if x.name != "job.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".job.json.") and leftovers[0].endswith(".tmp")
    assert json.loads((tmp_path / leftovers[0]).read_text()) == {"version": "new"}  # written, never renamed


# --------------------------------------------------------------------------- init and states


def test_init_writes_layout(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    assert store.exists()
    assert store.study_yaml.read_text() == "name: toy\n"
    assert [j.id for j in store.jobs()] == [j.id for j in jobs]
    assert [j.paradigm for j in jobs] == ["TS", "TS", "TS", "CG", "CG", "AU"]
    for job in jobs:
        rec = store.job_record(job.id)
        assert rec["state"] == "pending" and rec["attempts"] == 0
        assert store.job(job.id) == job
    assert store.job_state("TS-nothing-f1-s0-deadbeef") == "pending"
    assert not RunStore(tmp_path / "runs" / "other").exists()


def test_reinit_keeps_states_and_adds_changed_hashes_as_new_folders(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    done = jobs[0].id
    store.set_state(done, "running")
    store.set_state(done, "done")
    (store.job_dir(done) / "metrics.json").write_text("{}")

    store.init("name: toy\n", jobs)  # same plan again: nothing lost
    assert store.job_state(done) == "done"
    assert store.job_record(done)["attempts"] == 1

    changed = plan(make_study(epochs=2))
    assert {j.id for j in changed}.isdisjoint({j.id for j in jobs})
    store.init("name: toy\ntraining: {epochs: 2}\n", changed)
    assert [j.id for j in store.jobs()] == [j.id for j in changed]
    assert all(store.job_state(j.id) == "pending" for j in changed)
    # old folders and their results are untouched
    assert store.job_state(done) == "done"
    assert (store.job_dir(done) / "metrics.json").read_text() == "{}"
    assert len(list(store.jobs_dir.iterdir())) == 2 * len(jobs)


def test_duplicate_job_ids_rejected(tmp_path: Path) -> None:
    jobs = plan(make_study())
    with pytest.raises(UsaggError, match="duplicate"):
        RunStore(tmp_path / "s").init("", [jobs[0], jobs[0]])


def test_state_transitions_and_timings(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    rec = store.set_state(jid, "running")
    assert rec["attempts"] == 1 and rec["started"] and rec["finished"] is None
    assert rec["host"] == socket.gethostname() and rec["pid"] == os.getpid()
    time.sleep(0.02)
    rec = store.set_state(jid, "failed", error="RuntimeError: boom")
    assert rec["state"] == "failed" and rec["error"] == "RuntimeError: boom"
    assert rec["finished"] >= rec["started"] and rec["duration_s"] >= 0.02
    first_started = rec["started"]

    rec = store.set_state(jid, "running")  # a retry
    assert rec["attempts"] == 2 and rec["started"] > first_started
    assert rec["finished"] is None and rec["duration_s"] is None and rec["error"] is None
    rec = store.set_state(jid, "done", note="resumed")
    assert store.job_state(jid) == "done"
    assert store.job_record(jid) == rec and rec["note"] == "resumed" and rec["error"] is None
    assert rec["job"]["id"] == jid

    with pytest.raises(ValueError, match="unknown job state"):
        store.set_state(jid, "finished")
    with pytest.raises(UsaggError, match="not in the run store"):
        store.set_state("TS-x-f1-s0-00000000", "running")


# --------------------------------------------------------------------------- results.csv


def _metrics(job: Job) -> dict:
    tasks = {}
    for t in job.tasks:
        if t.type == "segmentation":
            m = {"DSC": 0.8, "HD": 12.5}
        elif t.type == "classification":
            m = {"AUC": 0.9, "ACC": 0.75}
        else:
            m = {"IoU": 0.6}
        tasks[t.id] = {
            "type": t.type,
            "primary": t.metric,
            "metrics": m,
            "n_train": 100 + job.seed,
            "n_test": 20,
            "steps": 30 + job.seed,
        }
    return {"job_id": job.id, "tasks": tasks, "expert_usage": None, "weights": {}, "params": {}}


def test_rebuild_results_from_done_jobs(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path, make_study(seeds=(0, 1)))
    failed = next(j for j in jobs if j.paradigm == "CG" and j.name == "head" and j.seed == 1)
    for job in jobs:
        store.set_state(job.id, "running")
        if job is failed:
            store.set_state(job.id, "failed", error="x")
            continue
        write_json_atomic(store.job_dir(job.id) / "metrics.json", _metrics(job))
        store.set_state(job.id, "done")

    path = store.rebuild_results()
    assert path == store.root / "results.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == RESULT_COLUMNS
        rows = list(reader)

    metrics_per_task = {"heart_seg": 2, "heart_cls": 2, "head_box": 1}
    expected = sum(metrics_per_task[t.id] for j in jobs if j is not failed for t in j.tasks)
    assert len(rows) == expected == 2 * (5 + 5 + 5) - 1
    assert not any(r["job_id"] == failed.id for r in rows)
    assert [r["paradigm"] for r in rows] == sorted((r["paradigm"] for r in rows), key=["TS", "CG", "AU"].index)

    au = [r for r in rows if r["paradigm"] == "AU" and r["seed"] == "1"]
    assert {(r["task"], r["group"]) for r in au} == {
        ("heart_seg", "cardiac"),
        ("heart_cls", "cardiac"),
        ("head_box", "head"),
    }
    hd = next(r for r in au if r["metric"] == "HD")
    assert hd == {
        "study": "toy",
        "job_id": next(j.id for j in jobs if j.paradigm == "AU" and j.seed == 1),
        "paradigm": "AU",
        "group": "cardiac",
        "seed": "1",
        "fraction": "1.0",
        "task": "heart_seg",
        "type": "segmentation",
        "metric": "HD",
        "value": "12.5",
        "higher_is_better": "False",
        "n_train": "101",
        "steps": "31",
    }
    assert next(r for r in au if r["metric"] == "DSC")["higher_is_better"] == "True"

    first = path.read_bytes()
    assert store.rebuild_results().read_bytes() == first  # deterministic


# --------------------------------------------------------------------------- locks


def _hold_lock(root: str, job_id: str, ready: object, release: object) -> None:
    with RunStore(root).lock(job_id):
        ready.set()  # type: ignore[attr-defined]
        release.wait(30)  # type: ignore[attr-defined]


def _lock_and_die(root: str, job_id: str) -> None:
    held = RunStore(root).lock(job_id)
    held.__enter__()
    os._exit(0)  # dies holding the lock: no release, no cleanup


def _claim_jobs(root: str, job_ids: list[str], start: object) -> None:
    """Child: run every job nobody ran yet, inside its lock; record who ran it."""
    store = RunStore(root)
    start.wait(30)  # type: ignore[attr-defined]
    for jid in job_ids:
        try:
            with store.lock(jid):
                mark = store.job_dir(jid) / "ran.txt"
                if mark.exists():
                    continue
                time.sleep(0.02)
                with open(mark, "a") as f:
                    f.write(f"{os.getpid()}\n")
        except JobLocked:
            continue


def test_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    ids = [f"job{i}" for i in range(12)]
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=_claim_jobs, args=(str(store.root), ids, start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for jid in ids:
        assert len((store.job_dir(jid) / "ran.txt").read_text().splitlines()) == 1
        assert store.job_lock(jid).holder() is None


def test_live_lock_raises_joblocked_with_holder(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    ready, release = SPAWN.Event(), SPAWN.Event()
    p = SPAWN.Process(target=_hold_lock, args=(str(store.root), jid, ready, release))
    p.start()
    try:
        assert ready.wait(30)
        with pytest.raises(JobLocked) as err, store.lock(jid):
            pass
        assert err.value.holder["pid"] == p.pid
        assert err.value.holder["host"] == socket.gethostname()
        assert str(p.pid) in str(err.value)
    finally:
        release.set()
        p.join(30)
    with store.lock(jid) as holder:  # released by the other process: ours now
        assert holder["pid"] == os.getpid()
    assert store.job_lock(jid).holder() is None


def test_lock_in_same_process_is_not_reentrant(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    with store.lock(jobs[0].id), pytest.raises(JobLocked), store.lock(jobs[0].id):
        pass


def test_stale_lock_of_dead_process_is_broken(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    p = SPAWN.Process(target=_lock_and_die, args=(str(store.root), jid))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert store.job_lock(jid).holder()["pid"] == p.pid  # left behind by the dead process
    with store.lock(jid) as holder:
        assert holder["pid"] == os.getpid()
    assert store.job_lock(jid).holder() is None
    assert [x.name for x in store.job_dir(jid).iterdir() if x.name.startswith(".lock")] == []


def _foreign_lock(store: RunStore, jid: str, age_s: float) -> Path:
    path = store.job_dir(jid) / ".lock"
    path.write_text(json.dumps({"host": "elsewhere.cluster", "pid": 1, "started": "then", "token": "t"}))
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_lock_on_other_host_live_until_heartbeat_times_out(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    store.stale_after_s = 60
    jid = jobs[0].id
    _foreign_lock(store, jid, age_s=5)
    with pytest.raises(JobLocked, match=r"elsewhere\.cluster"), store.lock(jid):
        pass
    _foreign_lock(store, jid, age_s=120)
    with store.lock(jid) as holder:
        assert holder["host"] == socket.gethostname()
    _foreign_lock(store, jid, age_s=-30)  # a clock a little ahead: still the other host's heartbeat
    with pytest.raises(JobLocked), store.lock(jid):
        pass
    _foreign_lock(store, jid, age_s=-86_400 * 365 * 50)  # dated years ahead (by hand, or a broken clock): stale
    with store.lock(jid) as holder:
        assert holder["host"] == socket.gethostname()


def test_heartbeat_keeps_lock_fresh(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "s", heartbeat_s=0.05)
    with store.lock("j1"):
        path = store.job_dir("j1") / ".lock"
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.time() + 5
        while path.stat().st_mtime < time.time() - 100 and time.time() < deadline:
            time.sleep(0.02)
        assert path.stat().st_mtime > time.time() - 100


# --------------------------------------------------------------------------- latest


def test_latest_picks_most_recent_study(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(UsaggError, match="no run store"):
        RunStore.latest(out)
    jobs = plan(make_study())
    a, b = RunStore(out / "a"), RunStore(out / "b")
    a.init("", jobs)
    b.init("", jobs)
    (out / "not_a_store").mkdir()
    old = time.time() - 100
    for p in (b.root, b.plan_json):
        os.utime(p, (old, old))
    assert RunStore.latest(out).root == a.root
    for p in (a.root, a.plan_json):
        os.utime(p, (old - 100, old - 100))
    assert RunStore.latest(out).root == b.root


# --------------------------------------------------------------------------- display state and liveness


def test_display_state_running_with_a_dead_or_missing_holder_is_interrupted(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    assert store.display_state(jid) == "pending"
    assert store.display_state("TS-nothing-f1-s0-deadbeef") == "pending"  # no folder at all
    store.set_state(jid, "running")
    assert store.display_state(jid) == "interrupted"  # running, but nobody holds the lock
    with store.lock(jid):
        assert store.lock_alive(jid) and store.display_state(jid) == "running"
    p = SPAWN.Process(target=_lock_and_die, args=(str(store.root), jid))
    p.start()
    p.join(30)
    assert store.job_lock(jid).holder()["pid"] == p.pid  # the dead process's lock is still there
    assert not store.lock_alive(jid)
    assert store.display_state(jid) == "interrupted"
    assert store.job_state(jid) == "running"  # the record itself is left as it was


def test_display_state_of_a_holder_on_another_host_follows_its_heartbeat(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    store.stale_after_s = 60
    jid = jobs[0].id
    store.set_state(jid, "running")
    _foreign_lock(store, jid, age_s=5)
    assert store.lock_alive(jid) and store.display_state(jid) == "running"
    _foreign_lock(store, jid, age_s=120)
    assert not store.lock_alive(jid) and store.display_state(jid) == "interrupted"


# --------------------------------------------------------------------------- job files


def test_job_files_go_through_the_store(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    paths = store.paths(jid)
    assert paths.folder == store.job_dir(jid) and paths.metrics.parent == paths.folder
    assert store.metrics(jid) is None and store.error_text(jid) is None and not store.has_checkpoint(jid)
    store.write_metrics(jid, {"job_id": jid, "tasks": {}})
    assert store.metrics(jid) == {"job_id": jid, "tasks": {}}
    assert all_metrics(store) == {jid: {"job_id": jid, "tasks": {}}}
    store.write_error(jid, "Traceback ...\n")
    assert store.error_text(jid) == "Traceback ...\n"
    store.clear_error(jid)
    assert store.error_text(jid) is None
    paths.last_checkpoint.parent.mkdir(parents=True)
    paths.last_checkpoint.write_bytes(b"x")
    assert store.has_checkpoint(jid)
    paths.metrics.write_text("{not json")
    assert store.metrics(jid) is None and paths.metrics.is_file()  # reported only: status and dry runs write nothing
    assert "metrics.json is damaged (not readable JSON" in store.repairs[-1] and "next `usagg run`" in store.repairs[-1]
    assert store.repair() == store.repairs[-1:]  # the explicit repair step is the writer
    assert store.metrics(jid) is None and (paths.folder / "metrics.json.damaged").read_text() == "{not json"
    assert "metrics.json was damaged (not readable JSON" in store.repairs[-1]
    assert store.planned_count() == len(jobs)
    assert store.stored_study() == {"name": "toy"}
    assert store.job_folders() == sorted(j.id for j in jobs)


def test_a_metric_of_exactly_zero_stays_a_zero_in_results_csv(tmp_path: Path) -> None:
    """A collapsed head scores DSC 0, IoU 0: written as an empty (undefined) cell it would leave every aggregate
    with the task's seed dropped and its negative transfer gone."""
    from usagg.analysis.delta import compare
    from usagg.analysis.inputs import load_input

    store, jobs = make_store(tmp_path)
    for job in jobs:
        metrics = _metrics(job)
        for t in metrics["tasks"].values():
            if job.paradigm == "CG":
                t["metrics"] = dict.fromkeys(t["metrics"], 0.0)
        store.set_state(job.id, "running")
        store.write_metrics(job.id, metrics)
        store.set_state(job.id, "done")
    store.rebuild_results()
    with open(store.results_csv, newline="") as f:
        cg = [r for r in csv.DictReader(f) if r["paradigm"] == "CG"]
    assert cg and all(r["value"] == "0.0" for r in cg)
    comp = compare(load_input(store.root, None))
    assert comp.cells[(1.0, "heart_seg", "CG")].mean == 0.0 and comp.cells[(1.0, "heart_seg", "CG")].n_seeds == 1
    assert comp.deltas[(1.0, "heart_seg", "CG")].value == pytest.approx(-100.0)


def test_current_results_rebuilds_a_missing_or_stale_table_in_memory(tmp_path: Path) -> None:
    """A read never writes: a missing or stale results.csv is rebuilt as text, the file left as it was."""
    store, jobs = make_store(tmp_path)
    with pytest.raises(UsaggError, match=r"no results\.csv and no finished job"):
        store.current_results()
    job = jobs[0]
    store.set_state(job.id, "running")
    store.write_metrics(job.id, _metrics(job))
    store.set_state(job.id, "done")
    text = store.current_results()  # missing: built, not written
    assert text is not None and len(text.splitlines()) == 1 + 2 and not store.results_csv.exists()
    path = store.results_csv
    path.write_text(",".join(RESULT_COLUMNS) + "\n")
    old = time.time() - 100
    os.utime(path, (old, old))
    assert len((store.current_results() or "").splitlines()) == 3  # older than metrics.json: rebuilt
    assert path.read_text() == ",".join(RESULT_COLUMNS) + "\n"
    path.write_text("kept as is\n")
    store.mark_results_fresh()
    assert store.current_results() is None and path.read_text() == "kept as is\n"  # dated after every file: kept


def test_a_slow_init_never_writes_a_done_job_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One owner per job.json (issue 16.3): `init` writes a record only under the job's lock.

    A second `usagg run` refreshes the records (a setting outside the hash changed) while a
    runner holds a job's lock and marks it done; every write of `init` is slowed down. The
    done job must stay done, and a later `init` refreshes its settings without touching its state.
    """
    import threading
    import time

    import usagg.store as store_module

    store, jobs = make_store(tmp_path, make_study())
    job = jobs[0]
    changed = [j.model_copy(update={"training": j.training.model_copy(update={"eval_batch_size": 7})}) for j in jobs]
    real_write = store_module.write_json_atomic

    def slow_write(path, obj):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "second-run" and Path(path).name == "job.json":
            time.sleep(0.2)
        return real_write(path, obj)

    monkeypatch.setattr(store_module, "write_json_atomic", slow_write)
    holding = threading.Event()
    release = threading.Event()

    def runner() -> None:
        with store.lock(job.id):
            store.set_state(job.id, "running")
            holding.set()
            release.wait(5)
            store.set_state(job.id, "done")

    t = threading.Thread(target=runner)
    t.start()
    holding.wait(5)
    second = threading.Thread(target=store.init, args=("name: toy\n", changed), name="second-run")
    second.start()
    time.sleep(0.1)
    release.set()
    t.join(5)
    second.join(10)
    assert store.job_state(job.id) == "done"
    assert store.job_record(job.id)["job"]["training"]["eval_batch_size"] != 7  # left to a later init
    store.init("name: toy\n", changed)
    record = store.job_record(job.id)
    assert record["state"] == "done" and record["job"]["training"]["eval_batch_size"] == 7
    assert all(store.job_state(j.id) == "pending" for j in jobs[1:])


@pytest.mark.parametrize("damage", ["", "{trunc", "[1, 2]", '{"state": "exploded"}'])
def test_a_damaged_job_record_is_set_aside_and_rebuilt_from_the_plan(tmp_path: Path, damage: str) -> None:
    """Issue 16.4: named, set aside, rebuilt (done when metrics.json is intact, else pending)."""
    store, jobs = make_store(tmp_path, make_study())
    done, other = jobs[0], jobs[1]
    for job in (done, other):
        store.set_state(job.id, "running")
    write_json_atomic(store.paths(done.id).metrics, _metrics(done))
    store.set_state(done.id, "done")
    for job in (done, other):
        store.paths(job.id).record.write_text(damage)
    assert store.job_state(done.id) == "done" and store.job_state(other.id) == "pending"  # as a dry run sees it
    assert store.paths(done.id).record.read_text() == damage and len(store.repairs) == 2
    store.repairs.clear()
    assert len(store.repair()) == 2
    assert store.job_state(done.id) == "done" and store.job_state(other.id) == "pending"
    assert store.job_record(done.id)["job"] == done.model_dump(mode="json")
    assert (store.job_dir(done.id) / "job.json.damaged").read_text() == damage
    assert len(store.repairs) == 2 and any("rebuilt from the plan as done" in note for note in store.repairs)
    assert store.rebuild_results().is_file()


def test_temporary_files_of_a_killed_writer_go_when_the_lock_is_taken(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path, make_study())
    jid = jobs[0].id
    left = store.paths(jid).checkpoints / ".last.pt.abc123.tmp"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"\0" * 1000)
    keep = store.paths(jid).checkpoints / "last.pt"
    keep.write_bytes(b"x")
    with store.lock(jid):
        assert not left.exists() and keep.exists()


def test_set_state_is_a_compare_and_set(tmp_path: Path) -> None:
    """A writer that expected another state never rewrites job.json (issue 16.3): a done job stays done."""
    from usagg.store.records import StateConflict

    store, jobs = make_store(tmp_path, make_study())
    jid = jobs[0].id
    store.set_state(jid, "running", expect=("pending",))
    store.set_state(jid, "done", expect=("running",))
    before = store.paths(jid).record.read_bytes()
    with pytest.raises(StateConflict, match=f"job {jid} is done .* not pending or failed or running"):
        store.set_state(jid, "running", expect=("pending", "failed", "running"))
    assert store.paths(jid).record.read_bytes() == before and store.job_state(jid) == "done"


def _finish(store: RunStore, job: Job) -> None:
    store.set_state(job.id, "running")
    write_json_atomic(store.job_dir(job.id) / "metrics.json", _metrics(job))
    store.set_state(job.id, "done")


def _tabled(store: RunStore) -> set[str]:
    with open(store.results_csv, newline="") as f:
        return {row["job_id"] for row in csv.DictReader(f)}


def test_a_job_done_while_the_table_is_read_leaves_it_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that finishes between reading the jobs and writing results.csv (another run's, on a large store or
    NFS: seconds) is not in the table, so the table must not read as current: the analysis rebuilds from the jobs."""
    store, jobs = make_store(tmp_path)
    first, late = jobs[0], jobs[1]
    _finish(store, first)
    read = RunStore.results_text

    def read_then_late_finishes(self: RunStore) -> str:
        text = read(self)
        _finish(store, late)
        return text

    monkeypatch.setattr(RunStore, "results_text", read_then_late_finishes)
    store.rebuild_results()
    monkeypatch.setattr(RunStore, "results_text", read)
    assert _tabled(store) == {first.id}
    assert store.results_behind() and late.id in (store.current_results() or "")


def test_the_last_writer_of_results_includes_every_done_job(tmp_path: Path) -> None:
    """Two runs' finish: the one that read first (before a job was done) writes last. Under the results lock the
    second waits for the first to have written, so its own table, read after, is the one left: holding every done
    job. (The wait for `read` only costs time when the lock works: without it, the second writes at once.)"""
    store, jobs = make_store(tmp_path)
    first, late = jobs[0], jobs[1]
    _finish(store, first)
    from filelock import FileLock

    second_done = threading.Event()

    def second_run_finishes() -> None:
        store.rebuild_results()
        second_done.set()

    with FileLock(str(store.results_lock_file)):  # the first run holds it: it has read, without `late`
        stale = store.results_text()
        _finish(store, late)
        other = threading.Thread(target=second_run_finishes)
        other.start()
        assert not second_done.wait(1.0)  # it waits for the first run's write
        write_text_atomic(store.results_csv, stale)
    other.join(30)
    assert second_done.is_set() and _tabled(store) == {first.id, late.id}
    assert store.current_results() is None


def test_no_table_yet_says_what_the_jobs_are_doing_and_where_to_follow_them(tmp_path: Path) -> None:
    """`compare` during a run's first job: the error names the running and pending jobs and `usagg status`."""
    store, jobs = make_store(tmp_path)
    with store.lock(jobs[0].id):  # the run training its first job
        store.set_state(jobs[0].id, "running")
        with pytest.raises(UsaggError) as err:
            store.current_results()
    said = str(err.value)
    assert f"of its {len(jobs)} planned jobs 1 running, {len(jobs) - 1} pending, none finished yet" in said
    assert f"`usagg status {store.root}` shows their progress" in said


def test_analysis_of_a_store_whose_only_job_failed_says_none_finished_and_names_each_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audits: `usagg compare` on a store whose only job failed said "runs/x/results.csv: the table has a header but
    no rows" (a failed run writes the header), and report, plot and advise before any job was done each ended
    "compare once a job is done". Now one paragraph: none finished, how many failed, `usagg status`, --retry-failed
    with the spec the store was run from, and the command given."""
    store, jobs = make_store(tmp_path)
    spec = tmp_path / "toy.yaml"
    store.add_spec_file(spec)
    store.set_state(jobs[0].id, "running")
    store.set_state(jobs[0].id, "failed", error="RuntimeError: boom")
    store.rebuild_results()  # what the failed run leaves: the header alone
    assert store.results_csv.read_text().count("\n") == 1
    monkeypatch.chdir(tmp_path)
    for cmd in ("compare", "report", "plot", "advise"):
        code, out = run_cli([cmd, str(store.root)], monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 2 and "Traceback" not in said and "header but no rows; every" not in said, said
        assert f"{store.root} has no finished job (jobs/*/metrics.json), and its results.csv holds a header" in said
        assert f"of its {len(jobs)} planned jobs {len(jobs) - 1} pending, 1 failed, none finished yet" in said
        assert f"`usagg status {store.root}` shows each failed job's error" in said
        assert f"`usagg run {spec} --retry-failed`" in said and f"`usagg {cmd}` once a job is done" in said
        assert "compare once" not in said or cmd == "compare"
    from usagg.api import load_results  # a script's loop over stores: the empty table, RunResult.failed says why

    table = load_results(store.root)
    assert table.empty and list(table.columns)[:3] == store.results_csv.read_text().split(",")[:3]
    assert not (tmp_path / "reports").exists()
