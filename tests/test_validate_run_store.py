"""`usagg validate` warns (exit 0) where `usagg run` would refuse the run store: a study of the same name run from
another spec file. `usagg init` names the study after its folder, so a copy of the demo never meets the demo's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_run import run_cli

from usagg.run.studyrun import StudyRun
from usagg.spec.load import load_study

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"


def test_validate_warns_where_run_would_refuse_a_store_of_another_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `make demo`, runs/demo holds study 'demo' from studies/demo.yaml: a copy of the demo named 'demo' got
    `usagg run`'s refusal only at run time; validate said ok."""
    monkeypatch.chdir(tmp_path)
    demo = Path(shutil.copy(DEMO, tmp_path / "demo.yaml"))  # a store of the repository's own (make demo) aside
    StudyRun.prepare(load_study(demo), spec_file=demo).init_store()  # runs/demo, bound to demo.yaml
    code, text = run_cli(["init", "mine"], monkeypatch, capsys)
    assert code == 0 and "the study 'mine'" in text and "  usagg status runs/mine\n" in text, text
    code, text = run_cli(["validate", "mine/demo.yaml", "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "valid study mine (run store runs/mine)" in text and "warning" not in text, text
    edited = ["--set", "name=demo", "--set", "seeds=[1]"]  # the user's copy, edited, under the demo's name
    code, text = run_cli(["validate", "mine/demo.yaml", "--no-data-check", *edited], monkeypatch, capsys)
    said = " ".join(text.split())
    assert code == 0 and "Traceback" not in said, said
    assert "warning: `usagg run` would refuse this study now: the run store runs/demo holds study 'demo'" in said
    assert f"run from {demo}, and {tmp_path / 'mine' / 'demo.yaml'} plans other jobs" in said
    code, text = run_cli(["validate", str(demo), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "warning" not in text, text  # the file the store is bound to
