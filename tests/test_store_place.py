"""A relative output_root is relative to the folder usagg runs from: a run started elsewhere (a Slurm script, a tmux
pane in $HOME) would train the whole study again into a new, empty store. It is refused, naming the store the spec
ran into (a real-data audit)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli

from tests.tiny_study import write_tiny_study


def test_a_run_from_another_folder_names_the_store_the_spec_ran_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    spec = write_tiny_study(project / "mystudy" / "s.yaml", "placed", tmp_path, output_root=Path("runs"))
    monkeypatch.chdir(project)
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 0 and (project / "runs" / "placed" / "plan.json").is_file(), out

    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for args in (["run", str(spec)], ["run", str(spec), "--dry-run"]):
        code, out = run_cli(args, monkeypatch, capsys)
        flat = " ".join(out.split())
        assert code == 2 and "Traceback" not in out, out
        assert f"ran into the run store {project / 'runs' / 'placed'} (2 jobs, 2 done)" in flat
        assert f"this run would start a new one at {elsewhere / 'runs' / 'placed'}" in flat
        assert f"Run from {project}" in flat and "--set output_root=" in flat
    assert not (elsewhere / "runs").exists()  # nothing written

    code, out = run_cli(["run", str(spec), "--set", f"output_root={elsewhere / 'runs'}"], monkeypatch, capsys)
    assert code == 0 and (elsewhere / "runs" / "placed" / "plan.json").is_file(), out  # chosen: a store of its own
