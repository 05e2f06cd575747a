"""What a tracked run leaves around it (audit of the Python API): the process environment as it was, the notebook's
logging as the notebook set it. Offline: a real MLflow sqlite store and real runs of a one-task synthetic study."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from usagg.spec.models import MlflowSpec, TrackingSpec
from usagg.tracking import MLFLOW_HTTP_DEFAULTS, job_trackers, study_parent_run


def _study(name: str, tmp_path: Path, tracking: dict[str, Any] | None, epochs: int = 1) -> dict[str, Any]:
    """A one-task TS study of the synthetic benchmark at 32 px, in-process (cpu_jobs: 1)."""
    return {
        "name": name,
        "output_root": str(tmp_path / "runs"),
        "paradigms": ["TS"],
        "data": {
            "synthetic": {"seed": 0, "image_size": 32, "default_size": 8, "val_size": 4},
            "cache_dir": str(tmp_path),
        },
        "tasks": [{"id": "thyroid_malignancy", "type": "classification", "num_classes": 2, "group": "Thyroid"}],
        "model": {"backbone": "dinov3_test", "image_size": 32},
        "training": {"epochs": epochs, "batch_size": 4},
        "execution": {"cpu_jobs": 1},
        **({"tracking": tracking} if tracking else {}),
    }


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
    result = run_study(_study("envt", tmp_path, {"mlflow": {"uri": mlflow_uri}}), device="cpu")
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
        result = run_study(_study("logt", tmp_path, None), device="cpu", on_progress=heard)
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
