"""The Python API audit: what a researcher in a notebook or a script met (usagg/api.py), each fixed with a test.

Stores are made without training (tests/test_store_damage.py's helpers); the runs that must go through
`run_study` use a registered executor whose jobs fail at once, so nothing trains.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.test_store_damage import make_done, make_store, metrics_of, snapshot
from tests.tiny_study import write_tiny_study
from usagg.api import RunResult, load_history, load_results, run_study
from usagg.errors import UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, call_job
from usagg.execute.registry import EXECUTORS, register_executor
from usagg.store import RunStore


def _age(root: Path, seconds: float = 100.0) -> None:
    """Date every file and folder under `root` `seconds` back, so a later change is newer whatever the clock's
    granularity."""
    old = os.stat(root).st_mtime - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (old, old))


def _current_table(store: RunStore) -> None:
    """results.csv written from the jobs and dated after all of them (as a run leaves it)."""
    store.rebuild_results()
    _age(store.root)
    later = store.results_csv.stat().st_mtime + 10
    os.utime(store.results_csv, (later, later))


# --------------------------------------------------------------------------- 1: a store whose history lacks `step`


def test_load_history_reads_a_store_whose_history_has_no_steps(tmp_path: Path) -> None:
    """HistoryEntry.step is optional (older files lack it): a nullable Int64 column, <NA> where it is missing, for a
    finished job and for one read from its history.csv alike; steps that are there stay whole numbers."""
    from usagg.historycsv import write_history

    store, (old, new) = make_store(tmp_path)
    metrics = metrics_of(old)
    for entry in metrics["history"]:
        del entry["step"]
    store.set_state(old.id, "running")
    store.write_metrics(old.id, metrics)
    store.set_state(old.id, "done")
    store.set_state(new.id, "running")  # not finished: read from history.csv, whose step cells are empty
    write_history(store.paths(new.id).history, metrics["history"], new.task_ids)
    history = load_history(store.root)
    assert str(history["step"].dtype) == "Int64" and history["step"].isna().all()
    assert history.groupby("job_id")["epoch"].apply(list).to_dict() == {old.id: [1, 2], new.id: [1, 2]}

    store.paths(new.id).history.unlink()
    make_done(store, new)  # its history records steps 2 and 4
    steps = load_history(store.root).groupby("job_id")["step"].apply(list).to_dict()
    assert steps[new.id] == [2, 4] and all(s is pd.NA for s in steps[old.id])


# --------------------------------------------------------------------------- 2, 7: reads never write, one freshness


def test_load_results_writes_nothing_into_a_store(tmp_path: Path) -> None:
    """A missing results.csv is rebuilt in memory, not on disk: a received or read-only store reads."""
    store, jobs = make_store(tmp_path)
    for job in jobs:
        make_done(store, job)
    before = snapshot(store.root)
    frame = load_results(store.root)
    assert set(frame["job_id"]) == {j.id for j in jobs}
    assert snapshot(store.root) == before and not store.results_csv.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs permissions that bind (not root)")
def test_load_results_reads_a_read_only_store(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    store.rebuild_results()
    make_done(store, jobs[1])  # results.csv is behind now
    folders = [store.root, *(p for p in store.root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        assert set(load_results(store.root)["job_id"]) == {j.id for j in jobs}
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_load_results_follows_a_deleted_job_folder_and_a_changed_state(tmp_path: Path) -> None:
    """The table's freshness is the store's one rule (`RunStore.results_behind`): a job folder deleted, or a job's
    state changed, since results.csv was written makes it stale, not only a newer metrics.json."""
    store, (kept, deleted) = make_store(tmp_path)
    make_done(store, kept)
    make_done(store, deleted)
    _current_table(store)
    assert set(load_results(store.root)["job_id"]) == {kept.id, deleted.id}
    shutil.rmtree(store.job_dir(deleted.id))
    assert set(load_results(store.root)["job_id"]) == {kept.id}

    _current_table(store)
    store.set_state(kept.id, "failed", error="RuntimeError: redone")  # job.json newer than the table
    assert load_results(store.root).empty


def test_mark_results_fresh_keeps_a_table_written_by_other_means(tmp_path: Path) -> None:
    """`mark_results_fresh` dates the table after every source of the one rule, so `current_results` keeps it."""
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    store.results_csv.write_text("kept as is\n")
    store.mark_results_fresh()
    assert store.current_results() is None


# --------------------------------------------------------------------------- 3: `!usagg run` in a notebook


def test_a_jupyter_cell_gets_plain_lines_even_on_its_pseudo_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel runs `!usagg run` under a pty with FORCE_COLOR: a terminal to rich, whose redraws the cell keeps."""
    from rich.console import Console

    from usagg.cli.display import PlainDisplay, RichDisplay, make_display

    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    assert isinstance(make_display(console, 2, verbose=False, quiet=False), RichDisplay)
    monkeypatch.setenv("JPY_PARENT_PID", "4242")  # Jupyter's kernel launcher sets it; its children inherit it
    assert isinstance(make_display(console, 2, verbose=False, quiet=False), PlainDisplay)
    from usagg.cli.runs import ConsoleObserver

    observer = ConsoleObserver(console)
    with observer.checking_data():  # no spinner either: the data check's redraws would pile up the same way
        observer.data_progress("train", 3, 10)
    assert observer.status is None and "\x1b[1A" not in console.file.getvalue()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- 4, 8: a run whose jobs fail


class FailingExecutor(Executor):
    """Runs each job through `call_job` with a job function that raises at once: a failure recorded as a real one."""

    name = "failing"

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: Any = None
    ) -> dict[str, str]:
        def boom(store_root: str, job_id: str) -> str:
            raise RuntimeError(f"the GPU caught fire in {job_id}")

        states = {}
        for job_id in job_ids:
            states[job_id], event, info = call_job(boom, str(self.store_root), job_id)
            self._emit(on_event, job_id, event, info)
        return states


@pytest.fixture
def failing_executor() -> Any:
    @register_executor("failing-test", "every job raises, for the test")
    def make(execution: Any, store_root: str | Path) -> Executor:
        return FailingExecutor(store_root)

    yield "failing-test"
    del EXECUTORS["failing-test"]


@pytest.mark.slow
def test_failed_jobs_are_logged_and_kept_in_the_result_with_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failing_executor: str
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write_tiny_study(tmp_path / "study.yaml", "fails", tmp_path, output_root=Path("runs"))  # relative
    with caplog.at_level(logging.WARNING, logger="usagg"):
        result = run_study(spec, [f"execution.executor={failing_executor}"], device="cpu")
    store_root = (tmp_path / "runs" / "fails").resolve()
    assert result.store_root == store_root and result.results_csv == store_root / "results.csv"
    assert result.store_root.is_absolute() and result.results_csv.is_absolute()
    assert len(result.failed) == 2 and sorted(result.errors) == sorted(result.failed)
    for job_id, error in result.errors.items():
        assert error == f"RuntimeError: the GPU caught fire in {job_id}"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert len(warned) == 2
    for job_id in result.failed:
        (line,) = [w for w in warned if w.startswith(f"job {job_id} failed: ")]
        assert f"RuntimeError: the GPU caught fire in {job_id}" in line and "error.txt" in line

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="usagg"):
        again = run_study(spec, [f"execution.executor={failing_executor}"], device="cpu")
    assert again.errors == result.errors  # skipped, not run again: still failed, with the same errors
    (skipped,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped.startswith("2 jobs failed in an earlier run and are skipped (retry_failed=True runs them again)")
    monkeypatch.chdir(tmp_path / "runs")  # elsewhere: the result's paths still lead to the store
    assert load_results(result).empty and RunStore(result.store_root).exists()


# --------------------------------------------------------------------------- 5: arguments of the read functions


def test_the_read_functions_take_a_run_result_and_name_a_bad_argument(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    result = RunResult(store.root, {jobs[0].id: "done"}, store.results_csv)
    assert load_results(result).equals(load_results(store.root))
    assert load_history(result).equals(load_history(store.root))
    with pytest.raises(UsaggError, match=r"^run_dir_or_csv must be a run store folder or a results CSV file .*int 3"):
        load_results(3)  # type: ignore[arg-type]
    with pytest.raises(UsaggError, match=r"^run_dir must be a run store folder .*RunResult.*got NoneType None"):
        load_history(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 6: the API's errors name its arguments


def test_run_study_errors_name_its_arguments_not_the_cli_flags(tmp_path: Path) -> None:
    spec = write_tiny_study(tmp_path / "study.yaml", "named", tmp_path, output_root=tmp_path / "runs")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"device": "gpu"}, "device='gpu': give 'cpu', 'auto', 'cuda', a GPU index such as 0"),
        ({"paradigms": ["XX"]}, "paradigms='XX': this study plans TS"),
        ({"only": ["nope"]}, "only='nope' matches no job of this selection"),
        ({"only": ["task=thyroid_malignancy", "paradigm=TS", "id=TS-thyroid_nodule_det"]}, "only=['task="),
    ]
    for kwargs, said in cases:
        with pytest.raises(UsaggError) as err:
            run_study(spec, **kwargs)
        message = str(err.value)
        assert said in message and "--" not in message, (kwargs, message)
    assert "`usagg.api.plan(spec)` lists every job" in _error_of(spec, only=["nope"])
    assert not (tmp_path / "runs").exists()


def test_run_study_refuses_arguments_of_the_wrong_type_before_writing_anything(tmp_path: Path) -> None:
    """force="no" read as true and passed the guard against another spec file's store; a non-callable on_event
    printed a traceback per job event; observer=object() failed deep inside the run; device=[] made the store and
    failed every job."""
    spec = write_tiny_study(tmp_path / "study.yaml", "typed", tmp_path, output_root=tmp_path / "runs")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"force": "no"}, "force must be True or False, got 'no'"),
        ({"retry_failed": 1}, "retry_failed must be True or False, got 1"),
        ({"on_event": "print"}, "on_event must be a function on_event(job_id, event, info) or None, got 'print'"),
        ({"on_progress": 3}, "on_progress must be a function on_progress(progress) or None, got 3"),
        ({"observer": object()}, "observer must be a usagg.api.RunObserver"),
        ({"device": []}, "device must be 'cpu', 'cuda', 'auto', a GPU index such as 0 or a list of them"),
        ({"device": -1}, "device must be 'cpu', 'cuda', 'auto', a GPU index such as 0 or a list of them"),
        ({"device": ""}, "device must be 'cpu', 'cuda', 'auto', a GPU index such as 0 or a list of them"),
    ]
    for kwargs, said in cases:
        assert said in _error_of(spec, **kwargs), kwargs
    assert not (tmp_path / "runs").exists()


def test_an_override_error_names_the_overrides_argument_not_set(tmp_path: Path) -> None:
    """A notebook's user wrote overrides=[...]: the error names that item and shows an example in that form."""
    spec = write_tiny_study(tmp_path / "study.yaml", "named", tmp_path, output_root=tmp_path / "runs")
    cases = [
        (["training.epoch=3"], "overrides item training.epoch=3: training has no setting 'epoch' (did you mean"),
        (["training.epochs"], "expected KEY.PATH=VALUE, for example overrides=['training.epochs=5']"),
        (["tasks[99].type=x"], "overrides item tasks[99].type=x: tasks has"),
    ]
    for overrides, said in cases:
        message = _error_of(spec, overrides=overrides)
        assert said in message and "--set" not in message, (overrides, message)
    assert not (tmp_path / "runs").exists()


def _error_of(spec: Path, **kwargs: Any) -> str:
    with pytest.raises(UsaggError) as err:
        run_study(spec, **kwargs)
    return str(err.value)


def test_another_spec_of_the_same_name_is_told_the_arguments(tmp_path: Path) -> None:
    from usagg.run.studyrun import StudyRun
    from usagg.spec.load import load_study

    first = write_tiny_study(tmp_path / "a" / "study.yaml", "same", tmp_path, output_root=tmp_path / "runs")
    second = write_tiny_study(
        tmp_path / "b" / "study.yaml", "same", tmp_path, output_root=tmp_path / "runs", paradigms=("AU",)
    )
    StudyRun.prepare(load_study(first), spec_file=first).init_store()
    message = _error_of(second)
    assert 'overrides=["name=NEW"]' in message and "force=True" in message
    assert "--force" not in message and "--set" not in message
    RunStore(tmp_path / "runs" / "same").plan_json.write_text("{oops")
    message = _error_of(second)
    assert "this one with force=True" in message and "--force" not in message


# --------------------------------------------------------------------------- 9: text dtypes; the docstring


def test_text_columns_have_one_dtype_in_both_tables(tmp_path: Path) -> None:
    """The docs say str: pandas' text dtype (`str` from pandas 3, object before), in load_results as in
    load_history."""
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    text = pd.Series(["x"]).dtype
    results, history = load_results(store.root), load_history(store.root)
    for column in ("study", "job_id", "paradigm", "group", "task", "type", "metric"):
        assert results[column].dtype == text, column
    for column in ("job_id", "paradigm", "task", "type", "primary"):
        assert history[column].dtype == text, column
    assert "every finished job" not in (load_history.__doc__ or "")


# --------------------------------------------------------------------------- 10: a plan.json of another version


def test_a_plan_entry_of_another_version_names_its_field(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    plan = json.loads(store.plan_json.read_text())
    plan[1]["seed"] = "zero"
    plan[1]["training"]["new_knob"] = 1  # a second problem: counted, the first named
    store.plan_json.write_text(json.dumps(plan))
    with pytest.raises(UsaggError) as err:
        store.jobs()
    message = str(err.value)
    assert message.startswith(f"{store.plan_json} is damaged, or was written by another usagg version than this one")
    assert f"job 2 ({plan[1]['id']!r}) does not read as a job: seed: Input should be a valid integer" in message
    assert "got 'zero'" in message and "more)" in message and "`usagg.api.run_study(SPEC)`) writes it anew" in message
    store.plan_json.write_text(json.dumps({"jobs": plan}))
    with pytest.raises(UsaggError, match=r"damaged \(it holds a JSON dict, not a list of jobs\)"):
        store.jobs()


# --------------------------------------------------------------------------- 12: the progress type


def test_progress_is_exported_without_torch_or_pandas() -> None:
    import usagg.api
    from usagg.engine.progress import Progress

    assert usagg.api.Progress is Progress and "Progress" in usagg.api.__all__
    code = "import sys, usagg.api; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
