"""`usagg report --mlflow` asks for something explicitly: where nothing can be logged it says why in one line
(audit docs 9: it printed nothing and exited 0 for a study without MLflow tracking and with --results)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_run import run_cli
from usagg.analysis.simulate import load_tasks, simulate_run_store

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tasks in two groups; its study.yaml has no tracking section."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"FUGC", "IUGC", "breast_2cls", "breast_lesion"}]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "tiny", tasks)


def test_mlflow_without_tracking_says_nothing_was_logged(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["report", str(store), "--out", str(tmp_path / "rep"), "--mlflow"], monkeypatch, capsys)
    said = [line for line in out.splitlines() if not line.startswith("wrote ")]
    assert code == 0 and said == [f"not logged to MLflow: {store / 'study.yaml'} names no tracking.mlflow, so the "
                                  "study has no MLflow run to attach the report to"], out  # fmt: skip
    code, out = run_cli(["report", str(store), "--out", str(tmp_path / "rep")], monkeypatch, capsys)
    assert code == 0 and "MLflow" not in out, out  # not asked for: nothing to say


def test_mlflow_with_results_says_there_is_no_run_store(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--results", str(store / "results.csv"), "--out", str(tmp_path / "rep"), "--mlflow"]
    code, out = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "not logged to MLflow: --results is a table, not a run store" in out, out
