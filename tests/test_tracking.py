"""Trackers (issue 14.5): TensorBoard event files and MLflow runs (local sqlite), read back with their own APIs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.tiny_study import tracked_study
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.spec.models import MlflowSpec, TrackingSpec
from usagg.tracking import epoch_scalars, job_trackers, log_report, study_parent_run

REPO = Path(__file__).resolve().parents[1]
HISTORY = [
    {
        "epoch": e,
        "step": 10 * e,
        "loss": 1.0 / e,
        "task_loss": {"fetal_head": 0.5 / e, "cardiac_chambers": 0.25 / e},
        "select_score": 0.1 * e,
        "select": {"fetal_head": {"DSC": 0.2 * e, "HD": None}},
    }
    for e in (1, 2, 3)
]
METRICS = {"tasks": {"fetal_head": {"metrics": {"DSC": 0.8, "HD": 12.5}}}, "training": {"epochs": 3}}


@pytest.fixture(scope="module")
def job():  # type: ignore[no-untyped-def]
    return plan(load_study(REPO / "studies" / "demo.yaml"))[0]


def test_epoch_entries_flatten_to_named_scalars() -> None:
    assert epoch_scalars(HISTORY[1]) == {
        "loss": 0.5,
        "task_loss/fetal_head": 0.25,
        "task_loss/cardiac_chambers": 0.125,
        "select_score": pytest.approx(0.2),
        "select/fetal_head/DSC": pytest.approx(0.4),
    }


def test_tensorboard_event_files_hold_the_curves(job, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trackers = job_trackers(TrackingSpec(tensorboard=True), job, tmp_path)
    for entry in HISTORY:
        trackers.epoch(entry)
    trackers.finish(METRICS, "done")
    acc = EventAccumulator(str(tmp_path / "tensorboard" / job.id))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]
    assert [round(e.value, 6) for e in acc.Scalars("select/fetal_head/DSC")] == [0.2, 0.4, 0.6]
    assert [(e.step, e.value) for e in acc.Scalars("test/fetal_head/HD")] == [(3, 12.5)]


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_mlflow_runs_nest_under_the_study_and_hold_every_epoch(job, tmp_path: Path, mlflow_uri: str) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    spec = MlflowSpec(uri=mlflow_uri)
    store = tmp_path / "store"
    store.mkdir()
    trackers = job_trackers(TrackingSpec(mlflow=spec), job, store)
    for entry in HISTORY:
        trackers.epoch(entry)
    trackers.finish(METRICS, "done")
    parent = study_parent_run(spec, job.study, store)
    assert parent is not None and study_parent_run(spec, job.study, store) == parent  # kept in the store, reused
    client = MlflowClient(tracking_uri=spec.uri)
    exp = client.get_experiment_by_name(job.study)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_name for r in runs] == [job.id] and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["paradigm"] == job.paradigm
    assert run.data.params["training.epochs"] == str(job.training.epochs)
    history = client.get_metric_history(run.info.run_id, "select.fetal_head.DSC")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.2), (2, 0.4), (3, 0.6)]
    assert run.data.metrics["test.fetal_head.DSC"] == 0.8
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report\n")
    assert log_report(TrackingSpec(mlflow=spec), job.study, store, report)
    assert [a.path for a in client.list_artifacts(parent, "report")] == ["report/report.md"]
    assert list((store / "mlflow-artifacts").rglob("report.md"))  # in the run store, never ./mlruns


def test_a_tracker_that_cannot_be_reached_warns_once_and_the_job_goes_on(
    job, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="usagg.tracking"):
        trackers = job_trackers(TrackingSpec(mlflow=MlflowSpec(uri="http://127.0.0.1:9")), job, tmp_path)
        for entry in HISTORY:
            trackers.epoch(entry)
        trackers.finish(METRICS, "done")
    assert trackers.trackers == [] and time.monotonic() - t0 < 60
    assert len([r for r in caplog.records if "127.0.0.1:9" in r.getMessage()]) == 1


def test_a_missing_extra_is_a_spec_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'usagg\[tensorboard\]'"):
        TrackingSpec(tensorboard=True)


@pytest.mark.slow
def test_a_run_feeds_tensorboard_and_mlflow_per_epoch_and_drops_resume_state(tmp_path: Path, mlflow_uri: str) -> None:
    """The real path: usagg run's jobs write their curves to both trackers as they train."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from usagg.api import run_study
    from usagg.store import RunStore

    spec = tracked_study(  # the execution defaults, not the in-process cpu_jobs: 1 of the other tracker tests
        "tracked", tmp_path, {"tensorboard": True, "mlflow": {"uri": mlflow_uri}}, epochs=3, execution={}
    )
    result = run_study(spec, device="cpu")
    (job_id,) = result.states
    acc = EventAccumulator(str(result.store_root / "tensorboard" / job_id))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3]
    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id], "tags.usagg.job_id != ''")
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "loss")) == 3
    paths = RunStore(result.store_root).paths(job_id)
    assert (paths.checkpoints / "best.pt").is_file() and not paths.last_checkpoint.exists()  # done: no resume state
