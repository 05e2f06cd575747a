"""Jobs of one hash are one training: a CG job of a one-task clinical group and TSM on that task (the same data, MoE
on), CGD's and TS's. The run trains one and fills the other from it (`RunStore.reuse`), as a new user found the
demo training both (identical DSC, twice the time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_cli

from tests.tiny_study import CARDIAC, MALIGNANCY, NODULE, write_tiny_study
from usagg import api
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.store import RunStore


def test_a_one_task_groups_cg_job_reuses_tsm_on_its_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_tiny_study(
        tmp_path / "s.yaml", "twins", tmp_path, paradigms=("TS", "CG", "TSM"), tasks=(MALIGNANCY, NODULE, CARDIAC),
        output_root=tmp_path / "runs",
    )  # fmt: skip
    jobs = {j.id: j for j in plan(load_study(spec))}
    cg = next(j for j in jobs.values() if j.paradigm == "CG" and j.task_ids == ["cardiac_chambers"])
    tsm = next(j for j in jobs.values() if j.paradigm == "TSM" and j.task_ids == ["cardiac_chambers"])
    assert cg.hash == tsm.hash and len({j.hash for j in jobs.values()}) == len(jobs) - 1
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec), "--dry-run", "--no-data-check"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and f"reuse: {tsm.id} takes the result of {cg.id}" in flat  # plan order: CG before TSM

    result = api.run_study(spec)
    store = RunStore(result.store_root)
    assert result.ok and store.job_state(tsm.id) == "done" and store.job_record(tsm.id)["reused_from"] == cg.id
    assert store.job_record(tsm.id)["attempts"] == 0  # never trained
    a, b = store.metrics(cg.id), store.metrics(tsm.id)
    assert a is not None and b is not None and b["job_id"] == tsm.id and b["reused_from"] == cg.id
    assert a["tasks"] == b["tasks"]
    src, dst = store.paths(cg.id), store.paths(tsm.id)
    for name in ("item_scores.json", "history.csv", "splits.json"):
        assert (dst.folder / name).read_bytes() == (src.folder / name).read_bytes()
    for f in src.checkpoints.iterdir():
        assert (dst.checkpoints / f.name).stat().st_ino == f.stat().st_ino  # hard-linked, not copied
    df = api.load_results(result)
    heart = df[df["task"] == "cardiac_chambers"].pivot_table(index="metric", columns="paradigm", values="value")
    assert len(heart) > 0 and (heart["CG"] == heart["TSM"]).all()

    store.set_state(tsm.id, "pending")  # a repair sends it back: the next run reuses again, trains nothing
    again = api.run_study(spec)
    assert again.ok and RunStore(again.store_root).job_record(tsm.id)["reused_from"] == cg.id
    assert json.loads(store.paths(tsm.id).record.read_text())["state"] == "done"


def _pair(tmp_path: Path) -> tuple[Path, str, str]:
    spec = write_tiny_study(
        tmp_path / "s.yaml", "twins", tmp_path, paradigms=("CG", "TSM"), tasks=(MALIGNANCY, NODULE, CARDIAC),
        output_root=tmp_path / "runs",
    )  # fmt: skip
    jobs = plan(load_study(spec))
    cg = next(j.id for j in jobs if j.paradigm == "CG" and j.task_ids == ["cardiac_chambers"])
    tsm = next(j.id for j in jobs if j.paradigm == "TSM" and j.task_ids == ["cardiac_chambers"])
    return spec, cg, tsm


def test_the_source_is_the_twin_that_has_begun_or_is_queued_on_slurm(tmp_path: Path) -> None:
    """An auditor's jam: TSM run alone and stopped (a running record, its last.pt) became CG's twin, CG trained from
    scratch and filling TSM failed on its running state in every later run. The twin that has begun is the source;
    one still queued on Slurm is too, so its twin is not submitted a second time."""
    from usagg.run.studyrun import StudyRun

    spec, cg, tsm = _pair(tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    assert run.twins == {tsm: cg}  # plan order, nothing begun
    run.store.set_state(tsm, "running")  # stopped mid-way (Ctrl-C, a killed node)
    again = StudyRun.prepare(load_study(spec), spec_file=spec)
    assert again.twins == {cg: tsm} and tsm in again.todo and cg not in again.todo
    run.store.set_state(tsm, "pending")
    queued = StudyRun.prepare(load_study(spec), spec_file=spec)
    queued.queued = {cg: "1001_4"}
    queued.todo = [j.id for j in queued.jobs if j.id != cg]  # as `_decide` leaves it: every pending job but CG
    queued.twins = queued._twins()
    assert queued.twins == {tsm: cg}


def test_a_twin_stopped_mid_run_is_filled_its_own_leftovers_set_aside(tmp_path: Path) -> None:
    spec, cg, tsm = _pair(tmp_path)
    events: list[tuple[str, str, dict]] = []
    first = api.run_study(spec, on_event=lambda j, e, i: events.append((j, e, i)))
    assert first.ok and (tsm, "finished", {"state": "done", "reused_from": cg}) in events  # the API hears it too
    store = RunStore(first.store_root)
    store.set_state(tsm, "running")  # as if an earlier attempt of its own had stopped: a stale file of its own
    (store.paths(tsm).checkpoints / "stale.pt").write_bytes(b"old")
    store.paths(tsm).error.write_text("an old traceback\n")
    again = api.run_study(spec)
    assert again.ok and store.job_state(tsm) == "done" and store.job_record(tsm)["reused_from"] == cg
    assert not (store.paths(tsm).checkpoints / "stale.pt").exists() and not store.paths(tsm).error.exists()


def test_a_reused_job_gets_its_own_tracker_runs_with_the_twins_curves(tmp_path: Path, mlflow_uri: str) -> None:
    """A reviewer's gap: a reused job was in the run store but in neither tracker, so an MLflow or TensorBoard view of
    the study lacked one job. It gets its own runs: its own paradigm, the twin's curves, its test metrics, the twin
    named."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = write_tiny_study(
        tmp_path / "s.yaml", "twins", tmp_path, paradigms=("CG", "TSM"), tasks=(MALIGNANCY, NODULE, CARDIAC),
        output_root=tmp_path / "runs", epochs=2,
        extra={"tracking": {"tensorboard": True, "mlflow": {"uri": mlflow_uri}}},
    )  # fmt: skip
    jobs = plan(load_study(spec))
    cg = next(j.id for j in jobs if j.paradigm == "CG" and j.task_ids == ["cardiac_chambers"])
    tsm = next(j.id for j in jobs if j.paradigm == "TSM" and j.task_ids == ["cardiac_chambers"])
    result = api.run_study(spec, device="cpu")
    store = RunStore(result.store_root)
    assert result.ok and store.job_record(tsm)["reused_from"] == cg

    curves = {}
    for jid in (cg, tsm):
        acc = EventAccumulator(str(store.tensorboard_dir(jid)))
        acc.Reload()
        curves[jid] = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert len(curves[tsm]) == 2 and curves[tsm] == curves[cg]

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("twins").experiment_id], "tags.usagg.job_id != ''")
    by_job = {r.data.tags["usagg.job_id"]: r for r in runs}
    assert set(by_job) == {j.id for j in jobs}  # every job of the study, the reused one included
    twin = by_job[tsm]
    assert twin.info.status == "FINISHED" and twin.data.tags["usagg.reused_from"] == cg
    assert twin.data.params["paradigm"] == "TSM" and twin.data.params["reused_from"] == cg
    assert len(client.get_metric_history(twin.info.run_id, "loss")) == 2
    dsc = "test.cardiac_chambers.DSC"
    assert (
        twin.data.metrics[dsc]
        == by_job[cg].data.metrics[dsc]
        == store.metrics(tsm)["tasks"]["cardiac_chambers"]["metrics"]["DSC"]
    )
