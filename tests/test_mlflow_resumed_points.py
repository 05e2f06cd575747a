"""A job's MLflow run, reopened by a later attempt, ends with the job's history as its curve: one point per metric
and epoch, the history's value (usagg/tracking.py `MlflowTracker`, usagg/mlflowstore.py).

Training is not bit-reproducible across a resume: an epoch trained after the checkpoint, logged, then trained again
by the next attempt gets another value, and a fit that stops earlier the second time (early stopping) never trains
it again. MLflow keeps every point logged and has no call that deletes one: the run held two points at such a step,
or an orphaned one past the end. Offline, with real stores: a sqlite and a file store, whose points usagg deletes,
and a tracking server (MLflow's own app, served in this process), whose points it cannot delete: kept, the run
tagged and the user told once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from usagg import tracking
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import MlflowSpec, TrackingSpec
from usagg.tracking import STALE_TAG, job_trackers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def job() -> Job:
    return plan(load_study(REPO / "studies" / "demo.yaml"))[0]


def _entry(epoch: int, attempt: int) -> dict[str, Any]:
    """Epoch `epoch` as attempt `attempt` trained it: its values tell the attempts apart."""
    return {"epoch": epoch, "loss": 10.0 * attempt + epoch, "task_loss": {"fetal_head": attempt + epoch / 10}}


def _attempt(spec: MlflowSpec, job: Job, store: Path, resumed: list[dict[str, Any]], trained: list[Any]) -> None:
    """One attempt: its fit resumes the checkpoint's history `resumed` and trains `trained`; a list ends it done at
    its last epoch, with a test metric; a tuple ends it failed."""
    trackers = job_trackers(TrackingSpec(mlflow=spec), job, store)
    assert trackers.trackers, "the tracker did not open"
    for tracker in trackers.trackers:
        tracker.start(resumed)
    for entry in trained:
        trackers.epoch(entry)
    if isinstance(trained, tuple):
        trackers.finish(None, "failed")
        return
    epochs = trained[-1]["epoch"]
    trackers.finish({"tasks": {"fetal_head": {"metrics": {"DSC": 0.5}}}, "training": {"epochs": epochs}}, "done")


def _curves(uri: str, job: Job) -> tuple[Any, dict[str, list[tuple[int, float]]]]:
    """The job's run and every metric's points, (step, value) in step then logging order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(job.study)
    (run,) = client.search_runs([exp.experiment_id], f"tags.usagg.job_id = '{job.id}'")
    curves = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        curves[key] = [(int(m.step), m.value) for m in points]
    return run, curves


@pytest.fixture(params=["sqlite", "file"])
def local_uri(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local tracking store of this test's own: sqlite (a copy of the migrated template), or a file store (which
    MLflow 3 opens only with MLFLOW_ALLOW_FILE_STORE)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("mlflow_uri"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


@pytest.mark.slow  # two attempts' runs in a real store: a second or two
def test_a_shorter_resumed_fit_leaves_no_orphaned_point_past_its_end(local_uri: str, job: Job, tmp_path: Path) -> None:
    """Attempt 1 logs epochs 1-3 and fails (its checkpoint: epoch 1); attempt 2 trains epoch 2 again, to another
    value, and stops there (early stopping): the run's curve is epoch 1 of attempt 1 and 2 of attempt 2, nothing at
    step 3, and what MLflow shows as the latest value is attempt 2's epoch 2."""
    spec = MlflowSpec(uri=local_uri)
    _attempt(spec, job, tmp_path, [], (_entry(1, 1), _entry(2, 1), _entry(3, 1)))
    _attempt(spec, job, tmp_path, [_entry(1, 1)], [_entry(2, 2)])
    run, curves = _curves(local_uri, job)
    assert curves["loss"] == [(1, 11.0), (2, 22.0)]
    assert curves["task_loss.fetal_head"] == [(1, 1.1), (2, 2.2)]
    assert curves["test.fetal_head.DSC"] == [(2, 0.5)]
    assert run.data.metrics["loss"] == 22.0 and run.info.status == "FINISHED"
    assert STALE_TAG not in run.data.tags


@pytest.mark.slow
def test_a_resumed_epoch_of_another_value_replaces_the_one_logged_before(
    local_uri: str, job: Job, tmp_path: Path
) -> None:
    """The checkpoint's own epoch 2 differs from the value the run holds (an earlier attempt logged that epoch, then
    the crash came before its checkpoint; the next attempt trained it again and checkpointed it): the history's
    value replaces it; the epochs after it are logged once."""
    spec = MlflowSpec(uri=local_uri)
    _attempt(spec, job, tmp_path, [], (_entry(1, 1), _entry(2, 1)))
    _attempt(spec, job, tmp_path, [_entry(1, 1), _entry(2, 2)], [_entry(3, 2)])
    run, curves = _curves(local_uri, job)
    assert curves["loss"] == [(1, 11.0), (2, 22.0), (3, 23.0)]
    assert run.data.metrics["loss"] == 23.0 and STALE_TAG not in run.data.tags


@pytest.fixture
def server_uri(mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tracking server: MLflow's own server app on a sqlite store, served from a thread of this process."""
    from mlflow.server import app, handlers
    from werkzeug.serving import make_server

    monkeypatch.setattr(handlers, "_tracking_store", None)  # the app's store, made once per process: this test's
    handlers._get_tracking_store(mlflow_uri, str(tmp_path / "server-artifacts"))
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.slow  # MLflow's server app, imported and served: about 5 s
def test_a_tracking_server_keeps_the_earlier_points_tags_the_run_and_says_so_once(
    server_uri: str, job: Job, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's store cannot be edited from here: the earlier attempt's points stay beside the job's, each step's
    later point is the job's (MLflow's latest value too), the run's tag names the epoch after which two may show,
    and one warning says so, for this URI, not one per job."""
    monkeypatch.setattr(tracking, "_stale_warned", set())
    spec = MlflowSpec(uri=server_uri)
    _attempt(spec, job, tmp_path, [], (_entry(1, 1), _entry(2, 1), _entry(3, 1)))
    with caplog.at_level(logging.WARNING, logger="usagg.tracking"):
        _attempt(spec, job, tmp_path, [_entry(1, 1)], [_entry(2, 2), _entry(3, 2)])
        other = job.model_copy(update={"id": f"{job.id}-other"})
        _attempt(spec, other, tmp_path, [], (_entry(1, 1), _entry(2, 1)))
        _attempt(spec, other, tmp_path, [_entry(1, 1)], [_entry(2, 2)])
    run, curves = _curves(server_uri, job)
    assert curves["loss"] == [(1, 11.0), (2, 12.0), (2, 22.0), (3, 13.0), (3, 23.0)]
    assert run.data.metrics["loss"] == 23.0 and run.data.tags[STALE_TAG] == "1"
    said = [r.getMessage() for r in caplog.records if r.name == "usagg.tracking"]
    assert len(said) == 1 and server_uri in said[0] and STALE_TAG in said[0] and "history.csv" in said[0], said
