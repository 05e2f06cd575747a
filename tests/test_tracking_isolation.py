"""What a tracked run leaves around it (audit of the Python API): the process environment as it was, the notebook's
logging as the notebook set it, each study's MLflow artifacts in its own run store. Offline: a real MLflow sqlite
store and real runs of a one-task synthetic study."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_study import tracked_study
from usagg.spec.models import MlflowSpec, TrackingSpec
from usagg.tracking import MLFLOW_HTTP_DEFAULTS, job_trackers, study_parent_run


def test_mlflow_http_settings_hold_only_during_usaggs_own_calls(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """usagg's short HTTP retry policy is set around its own MLflow calls, never left in the notebook's environment
    (its own MLflow calls and the processes it starts keep MLflow's defaults); a value the user set is kept."""
    from usagg.plan import plan
    from usagg.spec.load import load_study

    for key in MLFLOW_HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    before = dict(os.environ)
    job = plan(load_study(Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"))[0]
    spec = MlflowSpec(uri=mlflow_uri)
    seen: list[tuple[str | None, str | None]] = []
    trackers = job_trackers(TrackingSpec(mlflow=spec), job, tmp_path)
    tracker: Any = trackers.trackers[0]
    log_batch = tracker.client.log_batch

    def watching(*args: Any, **kwargs: Any) -> Any:  # what MLflow's request code would read at this call
        seen.append((os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"), os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")))
        return log_batch(*args, **kwargs)

    tracker.client.log_batch = watching
    trackers.epoch({"epoch": 1, "loss": 1.0})
    trackers.finish(None, "failed")
    assert study_parent_run(spec, job.study, tmp_path) is not None
    assert seen == [("2", "99")]  # usagg's retries, the user's own timeout
    assert dict(os.environ) == before


@pytest.mark.slow
def test_run_study_leaves_the_environment_as_it_was(tmp_path: Path, mlflow_uri: str) -> None:
    from usagg.api import run_study

    def mlflow_env() -> dict[str, str]:  # (torch's import sets variables of its own: KMP_*, TORCHINDUCTOR_*)
        return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW")}

    before = mlflow_env()
    result = run_study(tracked_study("envt", tmp_path, {"mlflow": {"uri": mlflow_uri}}), device="cpu")
    assert result.ok and mlflow_env() == before


@pytest.mark.slow
def test_a_job_in_process_leaves_the_notebooks_logging_alone(tmp_path: Path) -> None:
    """A notebook's `logging.basicConfig()` (root at WARNING, a handler on it): while an in-process job runs the
    root keeps its level and handlers, the handler gets usagg's warnings but none of its INFO lines, the notebook's
    own records stay out of the job's log.txt, and log.txt holds the job's INFO lines as before."""
    from usagg.api import run_study
    from usagg.engine.progress import Progress
    from usagg.store import RunStore

    root = logging.getLogger()
    stream = io.StringIO()
    mine = logging.StreamHandler(stream)
    mine.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    old_level, usagg_state = root.level, (logging.getLogger("usagg").level, logging.getLogger("usagg").propagate)
    seen: list[tuple[int, bool]] = []

    def heard(p: Progress) -> None:  # during the job: what the notebook's logging looks like, and a line of its own
        seen.append((root.level, mine in root.handlers))
        logging.getLogger("notebook").warning("the notebook's own line")

    root.addHandler(mine)
    root.setLevel(logging.WARNING)
    try:
        result = run_study(tracked_study("logt", tmp_path, None), device="cpu", on_progress=heard)
    finally:
        root.removeHandler(mine)
        root.setLevel(old_level)
    assert result.ok and seen and set(seen) == {(logging.WARNING, True)}
    shown = stream.getvalue().splitlines()
    assert not [line for line in shown if line.startswith("INFO:")]
    assert any(line.startswith("WARNING:usagg.model.backbones:NO PRETRAINED WEIGHTS") for line in shown)
    assert any(line == "WARNING:notebook:the notebook's own line" for line in shown)
    (job_id,) = result.states
    text = RunStore(result.store_root).paths(job_id).log.read_text()
    assert "INFO usagg.engine.trainer: epoch 1/1" in text and f"INFO usagg.engine.runner: job done: {job_id}" in text
    assert "WARNING usagg.model.backbones: NO PRETRAINED WEIGHTS" in text and "notebook" not in text
    assert (logging.getLogger("usagg").level, logging.getLogger("usagg").propagate) == usagg_state


def _done_job_files(store: Path, job_id: str) -> None:
    """What a done job leaves that its MLflow run receives: metrics.json and a prediction."""
    from usagg.store import RunStore

    paths = RunStore(store).paths(job_id)
    (paths.predictions / "fetal_head").mkdir(parents=True)
    (paths.predictions / "fetal_head" / "case_1.png").write_bytes(b"png")
    paths.metrics.write_text('{"tasks": {}, "training": {"epochs": 1}}')


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_studies_sharing_an_experiment_keep_their_artifacts_in_their_own_stores(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Study A makes the shared experiment (its location: A's run store); study B, run from a relative output
    root after A's store was deleted, gets its runs' artifacts in B's store, A's is not re-created, and B's study
    run names its store by its absolute path."""
    import shutil

    from mlflow.tracking import MlflowClient

    from usagg.plan import plan
    from usagg.spec.load import load_study
    from usagg.tracking import log_report

    job = plan(load_study(Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"))[0]
    spec = MlflowSpec(uri=mlflow_uri, experiment="shared")
    client = MlflowClient(tracking_uri=mlflow_uri)
    monkeypatch.chdir(tmp_path)
    runs: dict[str, str] = {}
    for name in ("A", "B"):
        store = Path("runs") / name  # relative, as a spec's output_root usually is
        store.mkdir(parents=True)
        _done_job_files(store, job.id)
        trackers = job_trackers(TrackingSpec(mlflow=spec), job, store)
        trackers.finish(None, "done")
        runs[name] = trackers.trackers[0].run_id  # type: ignore[attr-defined]
        if name == "A":
            shutil.rmtree(store)  # the user deletes study A
    b = (tmp_path / "runs" / "B").resolve()
    own = b / "mlflow-artifacts" / runs["B"] / "artifacts"
    assert client.get_run(runs["B"]).info.artifact_uri == own.as_uri()
    assert {a.path for a in client.list_artifacts(runs["B"])} == {"metrics.json", "predictions"}
    assert (own / "metrics.json").is_file() and (own / "predictions" / "fetal_head" / "case_1.png").is_file()
    assert not (tmp_path / "runs" / "A").exists()
    parent = study_parent_run(spec, job.study, Path("runs/B"))
    assert parent is not None and client.get_run(parent).data.tags["usagg.store"] == str(b)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report\n")
    assert log_report(TrackingSpec(mlflow=spec), job.study, Path("runs/B"), report)
    assert (b / "mlflow-artifacts" / parent / "artifacts" / "report" / "report.md").is_file()
    assert not (tmp_path / "runs" / "A").exists()
