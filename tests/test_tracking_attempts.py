"""A job that runs again (retried after a failure, resumed after an interruption) keeps one MLflow run whose curve
is epochs 1..N, each once, history.csv's values even where the epoch trained again came out otherwise, and TensorBoard
shows each epoch once (audit of the Python API, finding 1). Offline: a real MLflow sqlite store and real TensorBoard
event files, written by real runs of a one-task synthetic study."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_study import tracked_study
from usagg import tracking
from usagg.store import RunStore


def _fail_once_at_epoch_2(monkeypatch: pytest.MonkeyPatch, *, other_value: bool = False) -> None:
    """The job's first attempt fails right after its trackers logged epoch 2 (its last.pt may hold epoch 1 only);
    `other_value`: the trackers got another loss for that epoch than the one trained again after the resume (training
    that is not bit-reproducible)."""
    logged = tracking.JobTrackers.on_epoch_end
    failed: list[int] = []

    def failing(self: tracking.JobTrackers, trainer: Any, entry: dict[str, Any]) -> None:
        if entry["epoch"] == 2 and not failed and other_value:
            entry = {**entry, "loss": entry["loss"] + 1.0}  # the trainer's history keeps its own entry
        logged(self, trainer, entry)
        if entry["epoch"] == 2 and not failed:
            failed.append(2)
            raise RuntimeError("injected failure after epoch 2")

    monkeypatch.setattr(tracking.JobTrackers, "on_epoch_end", failing)


def _job_runs(client: Any, job_id: str) -> list[Any]:
    exp = client.get_experiment_by_name("again")
    return list(client.search_runs([exp.experiment_id], f"tags.usagg.job_id = '{job_id}'"))


def _losses(store: Path, job_id: str) -> list[tuple[int, float]]:
    """The job's training loss per epoch, as metrics.json keeps its history."""
    history = json.loads(RunStore(store).paths(job_id).metrics.read_text())["history"]
    return [(e["epoch"], e["loss"]) for e in history]


def _history_csv_losses(store: Path, job_id: str) -> list[tuple[int, float]]:
    """The job's loss per epoch as its history.csv holds it (a row per epoch and task: one task here)."""
    with RunStore(store).paths(job_id).history.open() as f:
        return [(int(row["epoch"]), float(row["job_loss"])) for row in csv.DictReader(f)]


def _tensorboard_losses(store: Path, job_id: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(store / "tensorboard" / job_id), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss")]


@pytest.mark.slow
def test_a_retried_job_keeps_one_mlflow_run_and_tensorboard_shows_each_epoch_once(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from usagg.api import run_study

    spec = tracked_study("again", tmp_path, {"tensorboard": True, "mlflow": {"uri": mlflow_uri}}, epochs=3)
    _fail_once_at_epoch_2(monkeypatch, other_value=True)
    first = run_study(spec, device="cpu")
    (job_id,) = first.states
    assert first.states[job_id] == "failed"
    client = MlflowClient(tracking_uri=mlflow_uri)
    (failed,) = _job_runs(client, job_id)
    assert failed.info.status == "FAILED"
    again = run_study(spec, device="cpu", retry_failed=True)
    assert again.states[job_id] == "done"
    (run,) = _job_runs(client, job_id)  # the same run, reopened: no second one beside it
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    expected = _losses(again.store_root, job_id)
    assert [e for e, _ in expected] == [1, 2, 3]
    history = client.get_metric_history(run.info.run_id, "loss")
    # one point per epoch, history.csv's value: the first attempt's other value at epoch 2 is gone
    assert sorted((m.step, m.value) for m in history) == _history_csv_losses(again.store_root, job_id)
    assert [(e, pytest.approx(v)) for e, v in expected] == _history_csv_losses(again.store_root, job_id)
    assert run.data.metrics["loss"] == expected[-1][1]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in expected] == _tensorboard_losses(again.store_root, job_id)
    assert len(list((again.store_root / "tensorboard" / job_id).glob("events.out.tfevents.*"))) == 2
    params = client.get_run(run.info.run_id).data.params
    assert params["job_id"] == job_id and params["training.epochs"] == "3"


@pytest.mark.slow
def test_a_run_gone_from_the_store_gives_a_new_one_with_the_whole_curve(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The job's recorded run was deleted between attempts: the next attempt starts a new run, no warning, and that
    run gets the epochs of the checkpoint it resumed from as well as the ones it trains."""
    from mlflow.tracking import MlflowClient

    from usagg.api import run_study

    spec = tracked_study("again", tmp_path, {"tensorboard": True, "mlflow": {"uri": mlflow_uri}}, epochs=3)
    _fail_once_at_epoch_2(monkeypatch)
    first = run_study(spec, device="cpu")
    (job_id,) = first.states
    client = MlflowClient(tracking_uri=mlflow_uri)
    (failed,) = _job_runs(client, job_id)
    client.delete_run(failed.info.run_id)
    with caplog.at_level(logging.WARNING, logger="usagg.tracking"):
        again = run_study(spec, device="cpu", retry_failed=True)
    assert again.states[job_id] == "done"
    assert not [r for r in caplog.records if r.name == "usagg.tracking"]
    (run,) = _job_runs(client, job_id)
    assert run.info.run_id != failed.info.run_id and run.info.status == "FINISHED"
    expected = _losses(again.store_root, job_id)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(e, pytest.approx(v)) for e, v in expected]
    recorded = json.loads(RunStore(again.store_root).paths(job_id).mlflow.read_text())
    assert recorded == {"uri": mlflow_uri, "run_id": run.info.run_id}
