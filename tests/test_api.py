"""usagg.api on a tiny synthetic study on the CPU: run_study, plan, load_results, load_history, plug-in executors."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.tiny_study import FETAL_HEAD, THYROID_PAIR, write_tiny_study
from usagg.api import load_history, load_results, plan, run_study
from usagg.engine.progress import ProgressFn, with_progress
from usagg.errors import DataError, SpecError, UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, call_job
from usagg.execute.registry import EXECUTORS, register_executor
from usagg.results_schema import RESULT_COLUMNS
from usagg.spec.load import load_study
from usagg.store import RunStore


def write_study(root: Path, name: str = "tiny", paradigms: tuple[str, ...] = ("TS",)) -> Path:
    return write_tiny_study(
        root / "study.yaml",
        name,
        root,
        output_root=root / "runs",
        paradigms=paradigms,
        epochs=3,
        steps=2,
        execution={"cpu_jobs": 1},  # in this process: the tests read its thread count
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[tuple[str, str]]]:
    """The tiny study run once through the API on the CPU, with USAGG_DEVICE unset."""
    import torch

    root = tmp_path_factory.mktemp("api")
    events: list[tuple[str, str]] = []
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("USAGG_DEVICE", raising=False)
        mp.delenv("USAGG_THREADS", raising=False)
        result = run_study(
            write_study(root, paradigms=("TS", "AU")),
            device="cpu",
            threads=1,
            on_event=lambda job, event, info: events.append((job, event)),
        )
        assert "USAGG_DEVICE" not in os.environ and "USAGG_THREADS" not in os.environ
        assert torch.get_num_threads() == threads  # the caller's count is put back (metrics.json: what trained)
    return root, result, events


@pytest.mark.slow
def test_run_study_trains_every_job_with_the_device_it_was_given(finished: tuple) -> None:
    root, result, events = finished
    store = RunStore(root / "runs" / "tiny")
    assert result.store_root == store.root and result.results_csv == store.results_csv and result.ok
    assert list(result.states) == store.job_ids() and set(result.states.values()) == {"done"}
    for job_id in result.states:
        metrics = store.metrics(job_id)
        assert metrics is not None and metrics["training"]["device"] == "cpu"  # passed, not read from os.environ
        assert metrics["training"]["threads"] == 1  # the threads reached the engine too
        assert [e for j, e in events if j == job_id] == ["started", "finished"]
    # a second run has nothing to do and gives the same answer
    again = run_study(root / "study.yaml", device="cpu")
    assert again.states == result.states and not again.failed


@pytest.mark.slow
def test_load_results_is_the_csv_with_proper_dtypes(finished: tuple) -> None:
    _, result, _ = finished
    frame = load_results(result.store_root)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert str(frame["seed"].dtype) == "int64" and str(frame["fraction"].dtype) == "float64"
    assert str(frame["value"].dtype) == "float64" and str(frame["higher_is_better"].dtype) == "bool"
    with open(result.results_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(frame) == len(rows) > 0
    for (_, got), want in zip(frame.iterrows(), rows, strict=True):
        assert (got["job_id"], got["task"], got["metric"]) == (want["job_id"], want["task"], want["metric"])
        assert got["value"] == float(want["value"]) if want["value"] else math.isnan(got["value"])
        assert got["higher_is_better"] is (want["higher_is_better"] == "True")
        assert got["seed"] == int(want["seed"]) and got["n_train"] == float(want["n_train"])
    assert load_results(result.results_csv).equals(frame)  # the CSV itself reads the same
    auc = frame[(frame.task == "thyroid_malignancy") & (frame.metric == "AUC")]
    assert sorted(auc["paradigm"]) == ["AU", "TS"] and auc["value"].between(0.0, 1.0).all()


@pytest.mark.slow
def test_load_results_rebuilds_a_missing_table_in_memory(finished: tuple, tmp_path: Path) -> None:
    """A read writes nothing: the missing table is rebuilt from the jobs in memory, and left missing."""
    _, result, _ = finished
    before = load_results(result.store_root)
    text = result.results_csv.read_text()
    result.results_csv.unlink()
    try:
        assert load_results(result.store_root).equals(before)
        assert not result.results_csv.exists()
    finally:
        result.results_csv.write_text(text)


@pytest.mark.slow
def test_load_history_has_a_row_per_epoch_and_task_with_per_task_losses(finished: tuple) -> None:
    _, result, _ = finished
    store = RunStore(result.store_root)
    history = load_history(result.store_root)
    assert list(history.columns[:15]) == [
        "job_id", "paradigm", "seed", "fraction", "epoch", "step", "task", "type",
        "loss", "aux_loss", "job_loss", "select_score", "primary", "select_primary", "selected",
    ]  # fmt: skip
    assert len(history) == 2 * 3 + 2 * 3  # two one-task TS jobs and a two-task AU job, 3 epochs each
    trained = history["loss"].notna()  # NaN: the task drew no batch that epoch (AU's 2 steps may go to one task)
    assert (history.loc[trained, "loss"].map(math.isfinite) & (history.loc[trained, "loss"] > 0)).all()
    assert trained.groupby([history["job_id"], history["epoch"]]).any().all()
    for job_id, rows in history.groupby("job_id", sort=False):
        recorded = store.metrics(str(job_id))
        assert recorded is not None
        epochs = recorded["history"]
        assert rows["selected"].sum() == len(rows["task"].unique())  # one selected epoch, a row per task
        assert set(rows.loc[rows["selected"], "epoch"]) == {recorded["selection"]["epoch"]}
        for task, per_task in rows.groupby("task", sort=False):
            assert per_task["epoch"].tolist() == [1, 2, 3] and per_task["step"].tolist() == [2, 4, 6]
            assert per_task["job_loss"].tolist() == [h["loss"] for h in epochs]
            primary = recorded["tasks"][task]["primary"]
            assert (per_task["primary"] == primary).all()
            assert per_task["select_primary"].tolist() == [h["select"][task][primary] for h in epochs]
            assert per_task[f"select_{primary}"].tolist() == per_task["select_primary"].tolist()
        if rows["paradigm"].iloc[0] == "TS":
            # one task without MoE: its own mean loss is the epoch's total loss, to the bit, and no auxiliary loss
            assert rows["loss"].tolist() == rows["job_loss"].tolist() and rows["aux_loss"].isna().all()
        else:
            # MoE: every batch adds the balance loss; the epoch's total is a mean of the tasks' own + auxiliary losses
            assert (rows["aux_loss"].notna() == rows["loss"].notna()).all() and (rows["aux_loss"].dropna() > 0).all()
            optimised = (rows["loss"] + rows["aux_loss"]).groupby(rows["epoch"])
            job_loss = rows.groupby("epoch")["job_loss"].first()
            assert ((optimised.min() - 1e-12 <= job_loss) & (job_loss <= optimised.max() + 1e-12)).all()
    det = history[history.task == "thyroid_nodule_det"]
    assert det["select_AUC"].isna().all() and det["select_IoU"].notna().all()


@pytest.mark.slow
def test_history_csv_is_written_per_epoch_and_read_for_a_job_that_has_not_finished(
    finished: tuple, tmp_path: Path
) -> None:
    """Issue 14.4: history.csv holds every epoch and task; load_history reads it while metrics.json is missing."""
    import csv
    import shutil

    _, result, _ = finished
    copy = tmp_path / "store"
    shutil.copytree(result.store_root, copy)
    store = RunStore(copy)
    au = next(j for j in store.jobs() if j.paradigm == "AU")
    with store.paths(au.id).history.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["epoch"], r["task"]) for r in rows] == [(str(e), t) for e in (1, 2, 3) for t in au.task_ids]
    metrics = store.job_metrics(au.id)
    assert metrics is not None and metrics.history is not None
    want = [(e.select_loss or {}).get(t) for e in metrics.history for t in au.task_ids]
    assert [float(r["select_loss"]) if r["select_loss"] else None for r in rows] == want  # each task's own loss
    before = load_history(copy)
    store.paths(au.id).metrics.unlink()  # as while the job runs
    during = load_history(copy)
    done_rows = before[before.job_id == au.id].drop(columns="selected").reset_index(drop=True)
    running_rows = during[during.job_id == au.id].drop(columns="selected").reset_index(drop=True)
    assert running_rows.equals(done_rows) and not during[during.job_id == au.id]["selected"].any()


# --------------------------------------------------------------------------- studies as paths, Study objects, dicts


def test_plan_takes_a_path_a_study_or_a_mapping(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    ids = [j.id for j in plan(path)]
    assert len(ids) == 2 and all(i.startswith("TS-thyroid_") for i in ids)
    assert [j.id for j in plan(load_study(path))] == ids
    assert [j.id for j in plan(yaml.safe_load(path.read_text()))] == ids
    two_seeds = plan(load_study(path), ["seeds=[0, 1]"])
    assert len(two_seeds) == 4 and two_seeds[0].id == ids[0]
    assert [j.id for j in plan(yaml.safe_load(path.read_text()), ["seeds=[0, 1]"])] == [j.id for j in two_seeds]
    with pytest.raises(SpecError, match="has no setting 'epoch'"):
        plan(path, ["training.epoch=2"])
    with pytest.raises(SpecError, match=r"<study mapping>: invalid study spec"):
        plan({**yaml.safe_load(path.read_text()), "paradigms": ["XX"]})
    with pytest.raises(UsaggError, match="single string"):
        plan(path, "seeds=[0]")  # type: ignore[arg-type]


def test_run_study_refuses_bad_selections_and_devices(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    with pytest.raises(UsaggError, match=r"^paradigms='AU' \(a registered paradigm this study does not plan\): this"):
        run_study(path, paradigms=["AU"])
    with pytest.raises(UsaggError, match=r"^device='gpu0': give 'cpu', 'auto', 'cuda', a GPU index such as 0"):
        run_study(path, device="gpu0")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_study_refuses_a_dataset_with_problems(tmp_path: Path) -> None:
    from usagg.data.source import dataset_root

    path = write_study(tmp_path)
    root = dataset_root(load_study(path).data)
    victim = sorted((root / "train").rglob("thyroid_nodule_det*.png"))[0]
    victim.unlink()
    with pytest.raises(DataError, match="problem") as err:
        run_study(path, device="cpu")
    assert victim.name in str(err.value) and err.value.exit_code == 1
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- a plug-in executor


class RecordingExecutor(Executor):
    """A toy executor registered from this test: runs jobs in order and remembers them."""

    name = "recording"
    ran: ClassVar[list[str]] = []

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        states = {}
        for job_id in job_ids:
            states[job_id], event, info = call_job(with_progress(fn, on_progress), self.store_root, job_id)
            RecordingExecutor.ran.append(job_id)
            self._emit(on_event, job_id, event, info)
        return states


@pytest.mark.slow
def test_a_registered_executor_runs_a_study(tmp_path: Path) -> None:
    @register_executor("recording-test", "runs jobs in order, for the test")
    def make(execution: Any, store_root: str | Path) -> Executor:
        return RecordingExecutor(store_root)

    try:
        result = run_study(
            write_study(tmp_path, name="plugin"), ["execution.executor=recording-test", "training.epochs=1"], "cpu"
        )
    finally:
        del EXECUTORS["recording-test"]
    assert result.ok and RecordingExecutor.ran == list(result.states) and len(result.states) == 2
    assert set(load_results(result.store_root)["task"]) == {"thyroid_malignancy", "thyroid_nodule_det"}


def test_run_study_in_an_unguarded_script_is_refused_in_the_workers_not_left_waiting(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing\n"
        "from usagg.api import run_study\n"
        "from usagg.errors import UsaggError\n"
        "try:\n"
        "    run_study('missing.yaml')  # the parent: no such file; a spawned worker: refused before anything\n"
        "except UsaggError as err:\n"
        "    print(multiprocessing.current_process().name, err, flush=True)\n"
        "if __name__ == '__main__':\n"
        "    worker = multiprocessing.get_context('spawn').Process(target=print, name='worker')\n"
        "    worker.start()\n"
        "    worker.join()\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    parent, child = out.splitlines()[:2]
    assert parent.startswith("MainProcess ") and "missing.yaml" in parent
    assert child.startswith("worker run_study was called while a worker process was importing your script")


@pytest.mark.slow
def test_an_unguarded_script_leaves_its_jobs_pending_and_says_why_so_the_guarded_one_runs_them(tmp_path: Path) -> None:
    """Audit (hour): a pool worker refusing while it imports the script failed every job with only 'worker died with
    exit code 1', and the fixed script then skipped them as failed."""
    import subprocess
    import sys

    study = write_tiny_study(
        tmp_path / "study.yaml", "unguarded", tmp_path, output_root=tmp_path / "runs", execution={"cpu_jobs": 2}
    )
    call = f"result = run_study({str(study)!r}, ['training.epochs=1'], device='cpu', threads=1)\n"
    head = "from usagg.api import run_study\nfrom usagg.errors import UsaggError\n"
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(head + "try:\n    " + call + "except UsaggError as err:\n    print('ERROR', err)\n")
    ran = subprocess.run([sys.executable, str(unguarded)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    message = ran.stdout.split("ERROR ", 1)[1]
    assert message.startswith("the worker process on the CPU could not start: your script called run_study")
    assert 'call run_study under `if __name__ == "__main__":`' in message
    assert "2 jobs of this run did not run and stay pending (none is recorded failed)" in message
    store = RunStore(tmp_path / "runs" / "unguarded")
    assert {store.job_state(j) for j in store.job_ids()} == {"pending"}
    assert not [p for j in store.job_ids() if (p := store.paths(j).error).exists()]

    guarded = tmp_path / "guarded.py"
    report = "    print('OK', result.ok, len(result.states))\n"
    guarded.write_text(head + "if __name__ == '__main__':\n    " + call + report)
    ran = subprocess.run([sys.executable, str(guarded)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "OK True 2" in ran.stdout, ran.stderr
    assert {store.job_state(j) for j in store.job_ids()} == {"done"}


@pytest.mark.slow
def test_an_unguarded_script_refused_after_the_store_was_written_leaves_results_csv_current(tmp_path: Path) -> None:
    """A run whose pool workers refuse the unguarded script ends in one UsaggError after `init_store` rewrote the
    plan: results.csv was left behind its jobs, so `compare` read the store as rebuilt ("behind its jobs") where it
    had read the file. Now the table is rebuilt, as a run that finishes rebuilds it: the same rows, current."""
    import subprocess
    import sys

    study = write_tiny_study(
        tmp_path / "study.yaml",
        "refused",
        tmp_path,
        tasks=(*THYROID_PAIR, FETAL_HEAD),  # two jobs left for the refusing run: a pool of two workers
        output_root=tmp_path / "runs",
        execution={"cpu_jobs": 2},
    )
    head = "from usagg.api import run_study\nfrom usagg.errors import UsaggError\n"
    call = f"run_study({str(study)!r}, ['training.epochs=1'], device='cpu', threads=1, only=ONLY)\n"
    guarded = tmp_path / "guarded.py"
    guarded.write_text(head + "if __name__ == '__main__':\n    ONLY = ['thyroid_malignancy']\n    " + call)
    ran = subprocess.run([sys.executable, str(guarded)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    store = RunStore(tmp_path / "runs" / "refused")
    states = sorted(map(store.job_state, store.job_ids()))
    assert ran.returncode == 0 and states == ["done", "pending", "pending"], ran.stderr
    before = store.results_csv.read_text()
    assert "thyroid_malignancy" in before and store.current_results() is None

    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(head + "ONLY = ()\ntry:\n    " + call + "except UsaggError as err:\n    print('ERROR', err)\n")
    ran = subprocess.run([sys.executable, str(unguarded)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "2 jobs of this run did not run and stay pending" in ran.stdout.split("ERROR ", 1)[1], ran.stderr
    assert sorted(map(store.job_state, store.job_ids())) == ["done", "pending", "pending"]
    assert store.plan_json.stat().st_mtime_ns > os.stat(tmp_path / "guarded.py").st_mtime_ns  # the plan rewritten
    assert not store.results_behind() and store.current_results() is None
    assert store.results_csv.read_text() == before


@pytest.mark.slow
def test_the_report_draws_a_panel_of_training_curves_per_job(finished: tuple) -> None:
    """Issue 14.4: curves per job, nnU-Net style, from the histories the jobs kept."""
    from usagg.analysis.curves import fig_curves
    from usagg.analysis.inputs import load_input
    from usagg.analysis.summary import analyse

    _, result, _ = finished
    a = analyse(load_input(result.store_root, None))
    assert set(a.inp.histories) == set(RunStore(result.store_root).job_ids())
    fig, caption = fig_curves(a)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 3 and {ax.get_title().split()[0] for ax in titled} == {"TS", "AU"}
    au = next(ax for ax in titled if ax.get_title().startswith("AU"))
    assert len(au.get_lines()) == 2  # one loss curve per task of the AU job
    assert "own training loss" in caption


def test_load_table_is_compares_csv_as_a_dataframe_with_the_sign_right_for_lower_is_better(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The extension audit's F2: the Python API gave no Δ, and a Δ by hand from load_results, (p − TS) / TS, has the
    wrong sign for a lower-is-better metric (MRE). `load_table` is `usagg compare --format csv --table NAME`."""
    from usagg.analysis.simulate import load_tasks, simulate_run_store
    from usagg.api import load_table
    from usagg.cli.app import app

    tasks = load_tasks(Path(__file__).parent / "data" / "fmc_uia_tasks.yaml")[:6]
    run = simulate_run_store(tmp_path / "runs" / "sim", tasks, paradigms=("TS", "AU"), seeds=(0,))
    delta = load_table(run)
    monkeypatch.setenv("COLUMNS", "200")
    from typer.testing import CliRunner

    said = CliRunner().invoke(app, ["compare", str(run), "--format", "csv"])
    assert said.exit_code == 0, said.output
    import io

    import pandas as pd

    printed = pd.read_csv(io.StringIO(said.output), keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(delta, printed)
    assert delta.higher_is_better.dtype == bool and delta.delta_pct.dtype == float
    rows = load_results(run)
    lower = delta[(delta.paradigm == "AU") & ~delta.higher_is_better].iloc[0]
    ts, au = (rows[(rows.task == lower.task) & (rows.paradigm == p) & (rows.metric == lower.metric)].value.iloc[0]
              for p in ("TS", "AU"))  # fmt: skip
    assert lower.delta_pct == pytest.approx((ts - au) / abs(ts) * 100)  # lower is better: TS minus AU
    assert load_table(run, "statistics").columns[0] == "Paradigm"
    with pytest.raises(UsaggError, match="'nope' is not a table of this study"):
        load_table(run, "nope")
