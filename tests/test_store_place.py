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


def test_plan_and_validate_from_another_folder_read_the_store_the_spec_ran_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's audit: `usagg plan proj/scale.yaml` from the folder above showed every job "pending" (it read the
    empty place runs/ names from there) and `validate` named that place as the run store, while `usagg run` from
    there refused, naming both. Both now read the store the spec ran into and say why; --json stays JSON."""
    import json

    from usagg.run.studyrun import StudyRun
    from usagg.spec.load import load_study
    from usagg.store import RunStore

    project = tmp_path / "project"
    spec = write_tiny_study(project / "mystudy" / "s.yaml", "placed", tmp_path, output_root=Path("runs"))
    monkeypatch.chdir(project)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    run.release()
    store = RunStore(project / "runs" / "placed")
    done = store.job_ids()[0]
    store.set_state(done, "running")
    store.paths(done).metrics.write_text('{"tasks": {}}')
    store.set_state(done, "done")

    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out = run_cli(["plan", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and f"note: {spec} ran into the run store {store.root} (2 jobs, 1 done)" in flat, out
    assert f"Run from {project}" in flat and "The states and seeds read here are that store's" in flat
    assert [ln.split()[-1] for ln in out.splitlines() if ln.strip().startswith("TS-")] == ["done", "pending"], out
    code, out = run_cli(["plan", str(spec), "--json"], monkeypatch, capsys)
    records, end = json.JSONDecoder().raw_decode(out)  # stdout: the JSON alone; the note went to stderr
    assert code == 0 and [r["state"] for r in records] == ["done", "pending"] and out[end:].strip().startswith("note:")
    code, out = run_cli(["validate", str(spec), "--no-data-check"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and f"(run store {store.root}, where it ran; from here output_root names another" in flat, out
    assert "warning: `usagg run` would refuse this study now" in flat and f"Run from {project}" in flat
    assert not (elsewhere / "runs").exists()  # nothing written

    monkeypatch.chdir(project)  # from the folder it ran from: no note
    code, out = run_cli(["plan", str(spec)], monkeypatch, capsys)
    assert code == 0 and "note:" not in out and "done" in out, out
