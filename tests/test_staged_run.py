"""Staged paradigms end to end: AU measures affinity, then AG is planned from it and run, in process and through
the Slurm executor on submitit's local cluster (a second submission, no waiting job)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

from tests.tiny_study import FETAL_HEAD, THYROID_PAIR, write_tiny_study
from usagg import api
from usagg.affinity import read_affinity
from usagg.errors import UsaggError
from usagg.run.driver import run_study
from usagg.run.studyrun import StudyRun
from usagg.spec.load import load_study
from usagg.spec.models import Study

pytestmark = pytest.mark.slow  # trains real tiny jobs


def _study(tmp_path: Path, executor: str = "local", paradigms: tuple[str, ...] = ("AU", "AG")) -> Study:
    spec = write_tiny_study(
        tmp_path / "staged.yaml",
        "staged",
        tmp_path,
        output_root=tmp_path,
        paradigms=paradigms,
        tasks=(*THYROID_PAIR, FETAL_HEAD),
        steps=3,
        synthetic={"default_size": 12},
        data_keys={"test_split": "val", "selection_fraction": 0},
        model={"moe": {"experts": 2}, "heads": {"hidden": 16, "decoder_channels": 8}},
        training={"batch_size": 4},
        execution={"executor": executor, "devices": "cpu", "threads": 1},
        extra={"analysis": {"affinity": {"every": 1, "probe_size": 2}}},
    )
    return load_study(spec)


def _results(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_study_runs_au_then_ag_from_its_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path)
    code, out = run_cli(["validate", str(tmp_path / "staged.yaml"), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "jobs: 1 (AU 1, AG 0)" in out and "AG: planned once AU-" in out, out
    result = run_study(study)
    assert result.ok
    au = [j for j in result.states if j.startswith("AU-")]
    ag = [j for j in result.states if j.startswith("AG-")]
    assert len(au) == 1 and len(ag) == 2 and all(result.states[j] == "done" for j in result.states)
    aff = read_affinity(result.store_root / "jobs" / au[0] / "affinity.json")
    assert aff.steps == [1, 2, 3] and aff.tasks == ["thyroid_malignancy", "thyroid_nodule_det", "fetal_head"]
    rows = _results(result.results_csv)
    assert {r["paradigm"] for r in rows} == {"AU", "AG"}
    ag_tasks = sorted(sorted({r["task"] for r in rows if r["job_id"] == j}) for j in ag)
    assert sum(len(t) for t in ag_tasks) == 3  # a partition of the three tasks into two groups
    plan_ids = [r["id"] for r in json.loads((result.store_root / "plan.json").read_text())]
    assert set(plan_ids) == set(result.states)

    assert {j.id for j in api.plan(study)} == set(result.states)  # the public plan reads the store's evidence too
    again = StudyRun.prepare(study)  # the plan now holds AG at once: nothing waits, nothing to do
    assert not again.waiting and sorted(j.id for j in again.jobs) == sorted(result.states) and not again.todo
    # validate counts AG's jobs as plan lists them (audit: "AG 0 ... planned once AU is done" after the demo)
    code, out = run_cli(["validate", str(tmp_path / "staged.yaml"), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "jobs: 3 (AU 1, AG 2)" in out and "planned once" not in out, out

    path = result.store_root / "jobs" / au[0] / "affinity.json"
    raw = json.loads(path.read_text())
    raw["job_hash"] = "0" * 8  # a file measured under another spec
    path.write_text(json.dumps(raw))
    with pytest.raises(UsaggError, match="not reused"):
        StudyRun.prepare(study)
    code, out = run_cli(["validate", str(tmp_path / "staged.yaml"), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "AG: planned once AU-" in out and "would refuse this study now" in out, out  # a warning


def test_selecting_ag_brings_the_job_it_needs(tmp_path: Path) -> None:
    run = StudyRun.prepare(_study(tmp_path), paradigms=["AG"])
    assert [j.paradigm for j in run.jobs] == ["AU"] and [w.paradigm for w in run.waiting] == ["AG"]
    run = StudyRun.prepare(_study(tmp_path), only=["paradigm:AU"])
    assert [j.paradigm for j in run.jobs] == ["AU"] and not run.waiting


def test_two_stages_through_the_slurm_executor_on_the_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usagg.execute import slurm

    made = slurm.make_slurm_executor

    def polled_often(*args: Any, **kwargs: Any) -> slurm.SlurmExecutor:
        executor = made(*args, **kwargs)
        executor.poll_s = 0.2  # not a cluster's 2 s: a stage's last job is seen done at once
        return executor

    monkeypatch.setattr(slurm, "make_slurm_executor", polled_often)
    run = StudyRun.prepare(_study(tmp_path, "slurm"))
    run.check_data()
    run.init_store()
    events: list[tuple[str, str]] = []
    first = run.execute(lambda job_id, event, info: events.append((job_id, event)), cluster="local")
    assert list(first.values()) == ["done"] and next(iter(first)).startswith("AU-")
    new = run.next_stage()
    assert [j.paradigm for j in new] == ["AG", "AG"] and run.todo == [j.id for j in new]
    second = run.execute(lambda job_id, event, info: events.append((job_id, event)), cluster="local")
    assert set(second) == {j.id for j in new} and set(second.values()) == {"done"}
    submitted = [jid for jid, e in events if e == "submitted"]
    # two submissions, stage one then stage two; within one, the array lists the largest jobs first (as the pool)
    assert submitted[: len(first)] == list(first) and sorted(submitted[len(first) :]) == sorted(j.id for j in new)
    assert run.finish().ok


def test_no_selection_runs_every_stage_one_job(tmp_path: Path) -> None:
    study = _study(tmp_path, paradigms=("TS", "AU", "AG"))
    run = StudyRun.prepare(study)
    assert sorted({j.paradigm for j in run.jobs}) == ["AU", "TS"] and len(run.jobs) == 4
    assert StudyRun.prepare(study, paradigms=["TS", "AG"]).jobs == run.jobs  # TS, plus the AU job AG needs
