"""Trackers end with the study (issue 29.6): the MLflow study run ends FINISHED / FAILED / KILLED, `report --mlflow`
reopens and closes it, a done job's run holds its files, TensorBoard holds each job's hparams. Offline: an MLflow
sqlite store and TensorBoard event files, read back with their own APIs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import MlflowSpec, TrackingSpec
from usagg.store import RunStore
from usagg.tracking import end_study_run, job_trackers, log_report, start_study_run, study_parent_run

REPO = Path(__file__).resolve().parents[1]
METRICS = {
    "tasks": {"fetal_head": {"primary": "DSC", "metrics": {"DSC": 0.8, "HD": 12.5}}},
    "training": {"epochs": 2},
}


@pytest.fixture(scope="module")
def job() -> Job:
    return plan(load_study(REPO / "studies" / "demo.yaml"))[0]


def _client(spec: MlflowSpec) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.uri)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> str:
    """One sqlite tracking store for the module, a copy of the session's migrated one (tests/conftest.py)."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    return f"sqlite:///{db}"


def _spec(database: str, tmp_path: Path) -> MlflowSpec:
    """The module's store, an experiment of this test's own."""
    return MlflowSpec(uri=database, experiment=tmp_path.name)


def _hparams(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The HParams view's data of a job folder: its settings and the metric tags of its experiment."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {k: getattr(v, str(v.WhichOneof("kind"))) for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def _done_job_files(store: RunStore, job: Job, weights: str = "best.pt") -> None:
    """What a done job leaves that its MLflow run receives (`weights`: last.pt alone under selection: last)."""
    paths = store.paths(job.id)
    (paths.predictions / "fetal_head").mkdir(parents=True)
    (paths.predictions / "fetal_head" / "case_1.png").write_bytes(b"png")
    paths.metrics.write_text(json.dumps(METRICS))
    paths.checkpoints.mkdir(parents=True)
    (paths.checkpoints / weights).write_bytes(b"weights")


def test_tensorboard_holds_each_jobs_settings_and_primary_metrics_as_hparams(job: Job, tmp_path: Path) -> None:
    trackers = job_trackers(TrackingSpec(tensorboard=True), job, tmp_path)
    trackers.epoch({"epoch": 1, "loss": 0.5})
    trackers.finish(METRICS, "done")
    values, metric_tags = _hparams(tmp_path / "tensorboard" / job.id)
    assert values["paradigm"] == job.paradigm and values["tasks"] == ",".join(job.task_ids)
    assert values["seed"] == job.seed and values["fraction"] == job.fraction and values["moe"] == job.moe
    assert values["training.epochs"] == job.training.epochs  # a number, so the HParams view filters on it
    assert values["model.backbone"] == job.model.backbone
    assert metric_tags == ["test/fetal_head/DSC"]  # the primary metric only: its value is the test scalar
    assert not [p for p in (tmp_path / "tensorboard" / job.id).iterdir() if p.is_dir()]  # no timestamped subfolder


def test_a_failed_job_writes_no_hparams_row(job: Job, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trackers = job_trackers(TrackingSpec(tensorboard=True), job, tmp_path)
    trackers.epoch({"epoch": 1, "loss": 0.5})
    trackers.finish(None, "failed")
    acc = EventAccumulator(str(tmp_path / "tensorboard" / job.id))
    acc.Reload()
    assert acc.Scalars("loss")[0].value == 0.5
    with pytest.raises(KeyError):
        acc.PluginTagToContent("hparams")


@pytest.mark.slow  # over a second: out of `make test-fast`
@pytest.mark.parametrize(("checkpoints", "weights"), [(False, "best.pt"), (True, "best.pt"), (True, "last.pt")])
def test_a_done_jobs_run_holds_its_metrics_and_predictions_and_its_weights_only_when_asked(
    job: Job, database: str, tmp_path: Path, checkpoints: bool, weights: str
) -> None:
    """The tested weights: best.pt, or last.pt under selection: last (no best.pt is written)."""
    spec = _spec(database, tmp_path)
    store = RunStore(tmp_path / "store")
    _done_job_files(store, job, weights)
    trackers = job_trackers(TrackingSpec(mlflow=spec, mlflow_checkpoints=checkpoints), job, store.root)
    trackers.finish(METRICS, "done")
    client = _client(spec)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(spec.experiment).experiment_id], "tags.usagg.job_id != ''"
    )
    top = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert top == (["checkpoints", "metrics.json", "predictions"] if checkpoints else ["metrics.json", "predictions"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "predictions/fetal_head")] == [
        "predictions/fetal_head/case_1.png"
    ]
    local = Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path)))
    assert json.loads(local.read_text()) == METRICS
    if checkpoints:
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [f"checkpoints/{weights}"]
    assert run.info.status == "FINISHED"


def test_a_failed_jobs_run_gets_no_files(job: Job, database: str, tmp_path: Path) -> None:
    spec = _spec(database, tmp_path)
    store = RunStore(tmp_path / "store")
    _done_job_files(store, job)
    trackers = job_trackers(TrackingSpec(mlflow=spec, mlflow_checkpoints=True), job, store.root)
    trackers.finish(None, "failed")
    client = _client(spec)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(spec.experiment).experiment_id], "tags.usagg.job_id != ''"
    )
    assert run.info.status == "FAILED" and client.list_artifacts(run.info.run_id) == []


@pytest.mark.parametrize(("state", "status"), [("done", "FINISHED"), ("failed", "FAILED"), ("interrupted", "KILLED")])
def test_the_study_run_is_running_while_jobs_run_then_ends_with_the_run(
    database: str, tmp_path: Path, state: str, status: str
) -> None:
    spec = _spec(database, tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    assert end_study_run(spec, store, state) is False  # no study run yet: nothing is created to be ended
    parent = start_study_run(spec, "toy", store)
    assert parent is not None and _client(spec).get_run(parent).info.status == "RUNNING"
    assert end_study_run(spec, store, state) is True
    info = _client(spec).get_run(parent).info
    assert info.status == status and info.end_time is not None
    assert end_study_run(spec, store, "done") is False  # already ended: a later run with nothing to do leaves it
    assert _client(spec).get_run(parent).info.status == status
    assert start_study_run(spec, "toy", store) == parent  # the next run reopens the same run
    assert _client(spec).get_run(parent).info.status == "RUNNING"


@pytest.mark.parametrize("ended", ["FINISHED", "FAILED", None])
def test_report_reopens_the_study_run_and_closes_it_with_its_own_end(
    database: str, tmp_path: Path, ended: str | None
) -> None:
    """A report never leaves the run RUNNING: FINISHED (a failed study stays FAILED), the study's end time kept; a
    run an older usagg left RUNNING ends now."""
    spec = _spec(database, tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    parent = study_parent_run(spec, "toy", store)
    assert parent is not None
    client = _client(spec)
    if ended is not None:
        client.set_terminated(parent, ended, end_time=1_700_000_000_000)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report\n")
    assert log_report(TrackingSpec(mlflow=spec), "toy", store, report)
    info = client.get_run(parent).info
    assert info.status == (ended or "FINISHED")
    assert info.end_time == 1_700_000_000_000 if ended else info.end_time is not None
    assert [a.path for a in client.list_artifacts(parent, "report")] == ["report/report.md"]


def test_mlflow_checkpoints_is_off_by_default_and_outside_the_job_id() -> None:
    from usagg.spec.jobhash import job_hash_rule

    field = TrackingSpec.model_fields["mlflow_checkpoints"]
    assert TrackingSpec().mlflow_checkpoints is False and job_hash_rule(field).rule == "no"  # type: ignore[union-attr]
    assert "| `mlflow_checkpoints` |" in (REPO / "docs" / "spec.md").read_text()


@pytest.mark.slow
def _one_task_study(name: str, tmp_path: Path, tracking: dict[str, Any], seeds: list[int] | None = None) -> dict:
    """A one-task TS study of the synthetic benchmark at 32 px, one epoch, tracked as `tracking` says."""
    return {
        "name": name,
        "output_root": str(tmp_path / "runs"),
        "paradigms": ["TS"],
        "seeds": seeds or [0],
        "data": {
            "synthetic": {"seed": 0, "image_size": 32, "default_size": 8, "val_size": 4},
            "cache_dir": str(tmp_path),
        },
        "tasks": [{"id": "thyroid_malignancy", "type": "classification", "num_classes": 2, "group": "Thyroid"}],
        "model": {"backbone": "dinov3_test", "image_size": 32},
        "training": {"epochs": 1, "batch_size": 4},
        "tracking": tracking,
    }


def test_a_run_ends_the_study_run_and_an_interrupted_one_kills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mlflow_uri: str
) -> None:
    """The real driver (usagg/run/driver.py `drive`): a run leaves its study run FINISHED, its job's run with files and
    TensorBoard hparams; `usagg report --mlflow` leaves it FINISHED; Ctrl-C in a later run leaves it KILLED."""
    from usagg.api import run_study
    from usagg.run.observer import RunObserver

    uri = mlflow_uri
    spec = _one_task_study("ended", tmp_path, {"tensorboard": True, "mlflow": {"uri": uri}})
    result = run_study(spec, device="cpu")
    (job_id,) = result.states
    mlflow = MlflowSpec(uri=uri)
    client = _client(mlflow)
    parent = study_parent_run(mlflow, "ended", result.store_root)
    assert parent is not None and client.get_run(parent).info.status == "FINISHED"
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.usagg.job_id != ''")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "predictions"}
    values, tags = _hparams(result.store_root / "tensorboard" / job_id)
    assert values["training.epochs"] == 1 and tags == ["test/thyroid_malignancy/AUC"]
    ended = client.get_run(parent).info.end_time
    code, out = run_cli(
        ["report", str(result.store_root), "--out", str(tmp_path / "report"), "--mlflow"], monkeypatch, capsys
    )
    assert code == 0 and "logged" in out
    info = client.get_run(parent).info  # reopened for the report, closed again as the study ended
    assert info.status == "FINISHED" and info.end_time == ended
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent, "report")}

    class Interrupting(RunObserver):
        def job_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
            if event == "started":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a second seed's job starts, and Ctrl-C comes
        run_study({**spec, "seeds": [0, 1]}, device="cpu", observer=Interrupting())
    assert client.get_run(parent).info.status == "KILLED"


def test_an_unfinished_run_leaves_the_study_run_running_for_the_run_that_finishes_it(
    tmp_path: Path, mlflow_uri: str
) -> None:
    """A job another live process holds is neither done nor failed as the run ends: the study is not finished, so
    its MLflow run is not ended FINISHED (it was); the run that does finish it ends it."""
    import subprocess
    import sys

    from usagg.api import run_study

    spec = _one_task_study("unfinished", tmp_path, {"mlflow": {"uri": mlflow_uri}}, seeds=[0, 1])
    spec["execution"] = {"cpu_jobs": 1}
    from usagg.spec.load import dump_study
    from usagg.spec.models import Study

    study = Study.model_validate(spec)
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "unfinished")
    store.init(dump_study(study), jobs)
    held = jobs[1].id
    code = (
        f"import time\nfrom usagg.store import RunStore\nlock = RunStore({str(store.root)!r}).lock({held!r})\n"
        "lock.__enter__()\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_study(spec, device="cpu")
    finally:
        holder.kill()
        holder.wait()
    assert result.ok and result.unfinished == [held] and result.states[jobs[0].id] == "done"
    mlflow = MlflowSpec(uri=mlflow_uri)
    client = _client(mlflow)
    parent = study_parent_run(mlflow, "unfinished", result.store_root)
    assert parent is not None and client.get_run(parent).info.status == "RUNNING"
    again = run_study(spec, device="cpu")
    assert again.ok and not again.unfinished
    assert study_parent_run(mlflow, "unfinished", result.store_root) == parent
    assert client.get_run(parent).info.status == "FINISHED"
