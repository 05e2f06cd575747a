"""The run driver (issues 26, 27, 29): one run sequence with observers, selectors that AND across keys, a study
name bound to its spec file, `validate` and `run --dry-run` checking what `run` checks, --set paths from the
current folder."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import run_cli

from tests.tiny_study import MALIGNANCY, NODULE, write_tiny_study
from usagg import api
from usagg.errors import UsaggError
from usagg.joblock import _proc_start
from usagg.plan import plan
from usagg.run import notes
from usagg.run.observer import RunObserver
from usagg.run.selection import make_selection
from usagg.run.studyrun import StudyRun
from usagg.spec.load import load_study
from usagg.store import RunStore

REPO = Path(__file__).resolve().parents[1]


def write_study(
    path: Path, root: Path, name: str = "tiny", tasks: tuple[dict[str, Any], ...] = (MALIGNANCY,), epochs: int = 1
) -> Path:
    return write_tiny_study(
        path,
        name,
        root,
        output_root=root / "runs",
        tasks=tasks,
        epochs=epochs,
        synthetic={"default_size": 12, "val_size": 4},
        data_keys={"selection_fraction": 0},
        model={"heads": {"hidden": 16}},
        training={"batch_size": 4, "eval_batch_size": 8},
        execution={"devices": "cpu", "cpu_jobs": 1, "threads": 1},
    )


def finish_job(store: RunStore, job_id: str, metrics: str = '{"tasks": {}}') -> None:
    """A job as a run leaves it done (the record through its states, then metrics.json)."""
    store.set_state(job_id, "running")
    store.paths(job_id).metrics.write_text(metrics)
    store.set_state(job_id, "done")


# --------------------------------------------------------------------------- 29.3 selectors


@pytest.fixture(scope="module")
def demo_jobs() -> list[Any]:
    return plan(load_study(REPO / "studies" / "demo.yaml"))


def picked(jobs: list[Any], *only: str) -> list[str]:
    return sorted(j.id for j in make_selection(jobs, only=only).pick(jobs))


def test_selectors_of_different_keys_and_of_one_key_or(demo_jobs: list[Any]) -> None:
    ts_breast = [j.id for j in demo_jobs if j.paradigm == "TS" and j.task_ids == ["breast_lesion"]]
    assert len(ts_breast) == 1
    assert picked(demo_jobs, "task=breast_lesion", "TS") == ts_breast  # was every breast_lesion job and every TS job
    assert picked(demo_jobs, "task=breast_lesion", "paradigm:TS") == ts_breast
    either = sorted(j.id for j in demo_jobs if {"breast_lesion", "fetal_head"} & set(j.task_ids))
    assert picked(demo_jobs, "task=breast_lesion", "task=fetal_head") == either
    both = sorted(j.id for j in demo_jobs if j.paradigm in ("TS", "CG"))
    assert picked(demo_jobs, "TS", "CG") == both
    with pytest.raises(UsaggError, match="no job matches them all"):
        make_selection(demo_jobs, only=["task=breast_lesion", "group:Fetal"])


def test_an_id_selector_is_a_whole_id_its_dashed_beginning_or_a_glob(demo_jobs: list[Any]) -> None:
    lesion = [j.id for j in demo_jobs if j.id.startswith("TS-breast_lesion-")]
    assert picked(demo_jobs, "TS-breast_lesion") == lesion  # never TS-breast_lesion_cls
    assert picked(demo_jobs, f"id={lesion[0]}") == lesion
    assert len(picked(demo_jobs, "TS-breast_lesion*")) == 2
    with pytest.raises(UsaggError, match="--only TS-breast matches no job"):
        make_selection(demo_jobs, only=["TS-breast"])  # a bare prefix inside a task name spans tasks


def test_plan_only_shows_the_selection_run_would_make(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = str(REPO / "studies" / "demo.yaml")
    code, out = run_cli(["plan", demo, "--only", "task=breast_lesion", "--only", "TS", "--json"], monkeypatch, capsys)
    rows = json.loads(out)
    assert code == 0 and [(r["paradigm"], [t["id"] for t in r["tasks"]]) for r in rows] == [("TS", ["breast_lesion"])]
    code, out = run_cli(["plan", demo, "--only", "group:Breast", "--paradigm", "CG"], monkeypatch, capsys)
    assert code == 0 and "1 of " in out and "jobs selected" in out and "CG-Breast-" in out, out


# --------------------------------------------------------------------------- 29.8 paths and checks of --set


def test_set_paths_resolve_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_study(tmp_path / "specs" / "s.yaml", tmp_path)
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    study = load_study(spec, ["model.weights=w/dino.pth", "data.cache_dir=c"])
    assert study.model.weights == here / "w" / "dino.pth" and study.data.cache_dir == here / "c"
    raw = yaml.safe_load(spec.read_text())
    raw["model"]["weights"] = "in_spec.pth"
    spec.write_text(yaml.safe_dump(raw))
    assert load_study(spec).model.weights == tmp_path / "specs" / "in_spec.pth"  # spec paths: from its folder


def test_dry_run_refuses_missing_weights_and_a_placeholder_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_study(tmp_path / "s.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec), "--dry-run", "--set", "model.weights=nope.pth"], monkeypatch, capsys)
    assert code == 2 and "model.weights" in out and str(tmp_path / "nope.pth") in out, out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()
    code, out = run_cli(["run", str(REPO / "studies" / "fmc_uia.yaml"), "--dry-run"], monkeypatch, capsys)
    assert code == 2 and "data.root /path/to/FMC_UIA does not exist" in out and "would run" not in out, out
    code, out = run_cli(
        ["run", str(REPO / "studies" / "fmc_uia.yaml"), "--dry-run", "--no-data-check"], monkeypatch, capsys
    )
    assert code == 0 and "not checked" in out and "111 of 111 jobs would run" in out
    code, out = run_cli(["run", str(spec), "--no-data-check"], monkeypatch, capsys)
    assert code == 2 and "--no-data-check goes with --dry-run" in out


# --------------------------------------------------------------------------- 26.7 dry-run and validate parity


def test_dry_run_runs_a_job_whose_metrics_are_damaged_as_the_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_study(tmp_path / "s.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    study = load_study(spec)
    run = StudyRun.prepare(study, spec_file=spec)
    run.init_store()
    good, damaged = (j.id for j in run.jobs)
    finish_job(run.store, good)
    finish_job(run.store, damaged, metrics="[]")  # a JSON list: the run sets it aside and evaluates the job anew
    dry = StudyRun.prepare(study, spec_file=spec)
    assert dry.action(good) == "skip (done)" and dry.action(damaged) == "run" and dry.todo == [damaged]
    assert RunStore(dry.store.root).paths(damaged).metrics.read_text() == "[]"  # the dry run repaired nothing
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec), "--dry-run", "--no-data-check", "--json"], monkeypatch, capsys)
    rows, _ = json.JSONDecoder().raw_decode(out)  # stdout; the line saying what was not checked is on stderr
    assert code == 0 and {r["job_id"]: r["action"] for r in rows} == {good: "skip (done)", damaged: "run"}
    real = StudyRun.prepare(study, spec_file=spec)
    real.init_store()  # what `usagg run` does before any job: the same decision
    assert real.todo == [damaged] and real.store.job_state(damaged) == "pending"


@pytest.mark.slow
def test_validate_and_dry_run_refuse_the_data_run_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.data.source import dataset_root

    spec = write_study(tmp_path / "s.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0 and "data not checked: the synthetic benchmark" in out, out
    root = dataset_root(load_study(spec).data)
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0 and "has no problems in this study's tasks" in out, out
    victim = sorted((root / "train").rglob("thyroid_nodule_det*.png"))[0]
    victim.unlink()
    for args in (["validate", str(spec)], ["run", str(spec), "--dry-run"], ["run", str(spec)]):
        code, out = run_cli(args, monkeypatch, capsys)
        assert code == 1 and victim.name in out and "problem" in out, (args, out)
        assert "would run" not in out and "is a valid study" not in out
    code, out = run_cli(["validate", str(spec), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "data not checked (--no-data-check)" in out
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 26.6 a study name is bound to its store


def test_a_second_spec_with_the_same_name_is_refused_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    second = write_study(tmp_path / "b" / "study.yaml", tmp_path, tasks=(NODULE,))
    run = StudyRun.prepare(load_study(first), spec_file=first)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    assert run.store.spec_files() == [str(first)]

    with pytest.raises(UsaggError) as err:
        StudyRun.prepare(load_study(second), spec_file=second)
    message = str(err.value)
    assert str(first) in message and str(second) in message and "--force" in message and "name" in message
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(second), "--dry-run", "--no-data-check"], monkeypatch, capsys)
    assert code == 2 and "--force" in out and "Traceback" not in out
    assert json.loads(run.store.plan_json.read_text())[0]["id"] == done  # nothing written

    edited = StudyRun.prepare(load_study(first, ["training.epochs=2"]), spec_file=first)  # the same file: its own
    assert edited.kept == [] and edited.jobs[0].id != done

    forced = StudyRun.prepare(load_study(second), spec_file=second, force=True)
    forced.init_store()
    store = RunStore(run.store.root)
    (new,) = (j.id for j in forced.jobs)
    assert store.job_ids() == [new, done] and store.job_state(done) == "done"  # both studies' jobs listed
    assert store.spec_files() == [str(first), str(second)]
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and done in out and new in out and "1 done, 1 pending" in out
    again = StudyRun.prepare(load_study(second), spec_file=second)  # bound now: no --force needed, nothing hidden
    assert [j.id for j in again.kept] == [done]


def test_a_one_off_set_on_a_finished_study_warns_that_it_hides_its_done_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg run SPEC --set training.epochs=3` replaces the stored plan of the same file: the done jobs it no longer
    lists stay on disk but leave status and compare. Nothing is deleted, so it runs, with a warning before any job
    (and in --dry-run) naming them and the way to keep both; the spec as it was plans nothing hidden."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    assert notes.replaced_text(StudyRun.prepare(load_study(spec), spec_file=spec)) is None
    edited = StudyRun.prepare(load_study(spec, ["training.epochs=3"]), spec_file=spec)
    assert edited.replaced_done == [done]
    text = notes.replaced_text(edited) or ""
    assert (
        f"1 done job it no longer lists ({done})" in text and "--set name=NEW" in text and "nothing is deleted" in text
    )
    monkeypatch.chdir(tmp_path)
    forced = ["run", str(spec), "--set", "training.epochs=3", "--force", "--dry-run", "--no-data-check"]
    code, out = run_cli(forced, monkeypatch, capsys)
    assert code == 0 and "warning:" in out and done in out and "1 done job it no longer lists" in " ".join(out.split())
    assert RunStore(run.store.root).job_state(done) == "done"  # a dry run writes nothing


def test_a_set_that_hides_done_jobs_of_the_spec_is_refused_as_a_copy_is_unless_force_or_a_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's audit: `usagg run --help`'s second example (`--set training.epochs=2`) after `make demo` replaced
    the demo's plan with one warning among the progress lines (status "9 done, 19 pending", compare only TS), while a
    copy of the spec with the same change was refused. The --set is refused the same way, before anything is written;
    --force or a name of its own runs it, and an override that changes no job (--devices) is no change of plan."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    plan_before = run.store.plan_json.read_bytes()
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--dry-run", "--no-data-check"]):
        code, out = run_cli(["run", str(spec), "--set", "training.epochs=3", *extra], monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 2 and "Traceback" not in said, said
        assert f"the run store {run.store.root} holds study 'tiny' run from {spec}" in said
        hide = f"running it would hide 1 done job of that study's plan ({done})"
        assert f"this run's --set or --sweep overrides plan other jobs under the same name: {hide}" in said
        assert "--set name=NEW" in said and "--force" in said and "Nothing was written" in said
        assert run.store.plan_json.read_bytes() == plan_before and run.store.job_state(done) == "done"
    code, out = run_cli(
        ["run", str(spec), "--sweep", "training.epochs=2,3", "--dry-run", "--no-data-check"], monkeypatch, capsys
    )
    assert code == 2 and "would hide 1 done job" in " ".join(out.split()), out
    code, out = run_cli(["validate", str(spec), "--set", "training.epochs=3", "--no-data-check"], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and "warning: `usagg run` would refuse this study now: the run store" in said, out
    assert "overrides plan other jobs under the same name" in said
    code, out = run_cli(
        ["run", str(spec), "--devices", "cpu", "--set", "execution.threads=1", "--dry-run", "--no-data-check"],
        monkeypatch,
        capsys,
    )
    assert code == 0 and "skip (done)" in out, out  # overrides that leave the plan as it is
    code, out = run_cli(
        ["run", str(spec), "--set", "training.epochs=3", "--set", "name=quick", "--dry-run", "--no-data-check"],
        monkeypatch,
        capsys,
    )
    said = " ".join(out.split())
    assert code == 0 and "replaces the one stored" not in said and str(tmp_path / "runs" / "quick") in said, out

    with pytest.raises(UsaggError, match="overrides plan other jobs") as err:  # the API refuses it alike
        api.run_study(spec, ["training.epochs=3"], device="cpu")
    assert 'overrides=["name=NEW"]' in str(err.value) and "force=True" in str(err.value)
    assert run.store.plan_json.read_bytes() == plan_before


def test_an_edited_spec_still_replaces_its_own_plan_with_a_warning(tmp_path: Path) -> None:
    """The refusal is of overrides only: the spec file edited is the user's new study, run with the warning."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    spec.write_text(spec.read_text().replace("epochs: 1", "epochs: 3"))
    edited = StudyRun.prepare(load_study(spec), spec_file=spec)
    assert edited.replaced_done == [done] and edited.jobs[0].id != done
    assert f"1 done job it no longer lists ({done})" in (notes.replaced_text(edited) or "")


def test_an_edited_spec_on_a_store_from_before_specs_json_warns_that_it_hides_done_jobs(tmp_path: Path) -> None:
    """An upgrade audit: on a store an older usagg made (no specs.json) an edited spec hid its done jobs from status,
    compare and results.csv with no warning, as a store that records its spec file gets one."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    run.store.specs_json.unlink()  # as a usagg from before specs.json left the store
    assert notes.replaced_text(StudyRun.prepare(load_study(spec), spec_file=spec)) is None
    edited = StudyRun.prepare(load_study(spec, ["training.epochs=3"]), spec_file=spec)
    assert edited.replaced_done == [done] and edited.binding == "add"
    assert f"1 done job it no longer lists ({done})" in (notes.replaced_text(edited) or "")


def test_a_copy_of_the_spec_runs_unbound_and_a_moved_spec_takes_the_study_over(tmp_path: Path) -> None:
    """A copy of the spec (the same plan) runs without being bound: bound, its unchanged plan was kept beside the
    first file's edited one (two TS results per task: compare refused the store). A spec run where every bound
    file is gone (moved, renamed) takes the study over instead of needing --force."""
    first = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    copy = write_study(tmp_path / "b" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(first), spec_file=first)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    same = StudyRun.prepare(load_study(copy), spec_file=copy)
    same.init_store()
    assert same.kept == [] and run.store.spec_files() == [str(first)]
    edited = StudyRun.prepare(load_study(first, ["training.epochs=2"]), spec_file=first)
    edited.init_store()
    assert edited.kept == [] and [j.id for j in edited.store.jobs()] == [j.id for j in edited.jobs] != [done]
    with pytest.raises(UsaggError, match="--force"):  # the copy now plans other jobs than the bound file
        StudyRun.prepare(load_study(copy), spec_file=copy)
    first.unlink()
    moved = StudyRun.prepare(load_study(copy), spec_file=copy)
    moved.init_store()
    assert moved.kept == [] and moved.store.spec_files() == [str(copy)]
    assert [j.id for j in moved.store.jobs()] == [done] and moved.store.job_state(done) == "done"


def test_a_copy_that_only_adds_jobs_is_bound_and_a_refusal_counts_the_jobs_it_would_hide(tmp_path: Path) -> None:
    """An upgrade audit: a copy of the spec with a seed added was refused as "would hide that study's plan (0 jobs,
    0 done)", hiding nothing. A plan that holds every stored job hides none: it runs, bound as --force would bind
    it; a refusal names how many stored jobs the other plan lacks."""
    first = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(first), spec_file=first)
    run.init_store()
    (done,) = (j.id for j in run.jobs)
    finish_job(run.store, done)
    more = write_study(tmp_path / "b" / "study.yaml", tmp_path)
    more.write_text(more.read_text() + "seeds: [0, 1]\n")
    added = StudyRun.prepare(load_study(more), spec_file=more)
    assert added.kept == [] and added.replaced_done == [] and len(added.jobs) == 2 and done in added.todo + added.done
    added.init_store()
    store = RunStore(run.store.root)
    assert store.spec_files() == [str(first), str(more)] and store.job_state(done) == "done"
    assert len(store.job_ids()) == 2
    other = write_study(tmp_path / "c" / "study.yaml", tmp_path, tasks=(NODULE,))
    with pytest.raises(UsaggError, match=r"would hide 2 jobs of that study's plan \(1 done\)"):
        StudyRun.prepare(load_study(other), spec_file=other)


def test_a_job_another_spec_file_planned_is_stored_once_when_this_one_plans_it_too(tmp_path: Path) -> None:
    """AG's stage plans its groups from the results: the ids another bound file's AG jobs have (kept after
    --force) can come again. The store holds each job once (it stopped with 'duplicate job ids')."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.kept = list(run.all_jobs)  # as if another file had planned the same jobs
    run.init_store()
    assert run.store.job_ids() == [j.id for j in run.all_jobs]


def test_ctrl_c_in_a_run_says_how_to_go_on_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import usagg.run.driver

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(usagg.run.driver, "drive", interrupted)
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 130 and "Traceback" not in out, out
    assert "interrupted; the same `usagg run` command resumes: done jobs are kept, the stopped ones go on" in said


# --------------------------------------------------------------------------- 27.2 one run driver, observed


class Recorder(RunObserver):
    """Every observer call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.checked: list[tuple[str, int, int]] = []  # the data check's progress, apart

    def data_progress(self, split: str, checked: int, images: int) -> None:
        self.checked.append((split, checked, images))

    def data_checked(self, run: StudyRun, report: Any) -> None:
        self.calls.append(("data_checked", len(run.jobs)))

    def store_ready(self, run: StudyRun) -> None:
        self.calls.append(("store_ready", list(run.todo)))

    def warning(self, message: str) -> None:
        self.calls.append(("warning", message))

    def job_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        self.calls.append(("job_event", event))

    def finished(self, run: StudyRun, result: Any) -> None:
        self.calls.append(("finished", dict(result.states)))


@pytest.mark.slow
def test_the_api_and_the_cli_run_one_driver_that_tells_its_observer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_study(tmp_path / "s.yaml", tmp_path)
    recorder = Recorder()
    result = api.run_study(spec, observer=recorder)
    (job,) = result.states
    names = [name for name, _ in recorder.calls]
    # data.selection_fraction 0: one line before the job that it tests its last epoch, no selection warning at the end
    assert names == ["data_checked", "store_ready", "warning", "warning", "job_event", "job_event", "finished"], names
    assert recorder.calls[1] == ("store_ready", [job]) and recorder.calls[-1] == ("finished", {job: "done"})
    assert recorder.calls[2][1].startswith("data.selection_fraction is 0 for the 1 job to run: without a selection")
    assert "model.weights is empty: the dinov3_test encoder is RANDOMLY initialised" in recorder.calls[3][1]
    assert RunStore(result.store_root).spec_files() == [str(spec.resolve())]
    for split in ("train", "val"):  # each split told from 0 to all its images
        told = [(c, n) for sp, c, n in recorder.checked if sp == split]
        assert told[0][0] == 0 and told[-1][0] == told[-1][1] > 0, recorder.checked

    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)  # the CLI's observer: nothing to do, no warning
    assert code == 0 and "1 job selected, 0 to run, 1 done" in out and "RANDOMLY" not in out, out
    code, out = run_cli(["run", str(spec), "--set", "training.epochs=2", "--force", "-q"], monkeypatch, capsys)
    assert code == 0 and "warning: model.weights is empty" in out and "results: " in out, out


# --------------------------------------------------------------------------- a plan replaced while another run trains


#: Another `usagg run`'s record in .runs/, named as usagg names one (usagg/store/links.py `new_run_record`).
THEIR_RUN = f"{'0' * 32}.lock"


def other_process_holds(lock: Path, **about: object) -> subprocess.Popen[bytes]:
    """A lock file at `lock` held by another live process of this host (a sleeping child), as usagg/joblock.py
    writes one: the other `usagg run` of these tests, without its timing."""
    proc = subprocess.Popen(["sleep", "120"])
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = {**about, "host": socket.gethostname(), "pid": proc.pid, "proc_start": _proc_start(proc.pid)}
    lock.write_text(json.dumps({**holder, "started": "2026-12-07T15:00:00+00:00", "token": "theirs"}))
    return proc


def test_two_spec_files_of_one_name_started_together_bind_one(tmp_path: Path) -> None:
    """Both prepared before either wrote (two terminals at the same moment): the first binds the store, the second
    gets the refusal a later start gets, and nothing of it is written (it bound both files, as --force does)."""
    first = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    second = write_study(tmp_path / "b" / "study.yaml", tmp_path, tasks=(NODULE,))
    a = StudyRun.prepare(load_study(first), spec_file=first)
    b = StudyRun.prepare(load_study(second), spec_file=second)
    a.init_store()
    with pytest.raises(UsaggError, match=r"plans other jobs under the same name.*--force"):
        b.init_store()
    store = RunStore(a.store.root)
    assert store.spec_files() == [str(first)] and store.job_ids() == [j.id for j in a.jobs]


def test_a_plan_is_not_replaced_while_another_run_trains_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg run SPEC --set training.epochs=2` while `usagg run SPEC` trains (its run lock held by another live
    process) is refused, naming it and what to do, exit 2, nothing written: also when the other run started after
    this one was prepared. Once it has ended, the plan is replaced as documented (with the warning)."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    (theirs,) = (j.id for j in run.jobs)
    run.release()
    plan = run.store.plan_json.read_bytes()
    edited = StudyRun.prepare(load_study(spec, ["training.epochs=2"]), spec_file=spec)  # before the other started
    other = other_process_holds(run.store.runs_dir / THEIR_RUN, spec=str(spec), jobs=1)
    try:
        with pytest.raises(UsaggError) as err:
            edited.init_store()
        said = " ".join(str(err.value).split())
        assert f"pid {other.pid}" in said and str(spec) in said and theirs in said
        assert "Wait for it to finish" in said and "--set name=NEW" in said and "Nothing was written" in said
        monkeypatch.chdir(tmp_path)
        code, out = run_cli(["run", str(spec), "--set", "training.epochs=2", "--no-data-check"], monkeypatch, capsys)
        assert code == 2 and f"pid {other.pid}" in out and "Traceback" not in out
        assert run.store.plan_json.read_bytes() == plan and run.store.job_ids() == [theirs]
        same = StudyRun.prepare(load_study(spec), spec_file=spec)  # the same plan runs beside it: job locks
        same.init_store()
        same.release()
    finally:
        other.kill()
        other.wait()
    again = StudyRun.prepare(load_study(spec, ["training.epochs=2"]), spec_file=spec)
    again.init_store()
    again.release()
    assert run.store.job_ids() != [theirs] and again.replaced_done == []  # theirs was never done: nothing to warn


def test_a_plan_is_not_replaced_while_another_process_holds_a_job_it_drops(tmp_path: Path) -> None:
    """No `usagg run` recorded (a Slurm element whose submitting run was stopped): a live lock of a job the new plan
    drops refuses it too."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    run.release()
    (theirs,) = (j.id for j in run.jobs)
    other = other_process_holds(run.store.paths(theirs).lock)
    try:
        with pytest.raises(UsaggError, match=rf"another process \(\S+ pid {other.pid}.*{theirs}"):
            StudyRun.prepare(load_study(spec, ["training.epochs=2"]), spec_file=spec)
    finally:
        other.kill()
        other.wait()


def test_a_job_another_process_runs_is_left_to_it_and_the_dry_run_says_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `usagg run` (or its --dry-run) while the first trains a job: the job is not this run's to do, and
    the dry run says skip and who runs it, as it does for a job queued on Slurm (it said "1 of 1 job would run")."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    run.release()
    (theirs,) = (j.id for j in run.jobs)
    run.store.set_state(theirs, "running")
    other = other_process_holds(run.store.paths(theirs).lock)
    try:
        second = StudyRun.prepare(load_study(spec), spec_file=spec)
        assert second.todo == [] and second.action(theirs).startswith("skip (running elsewhere: ")
        assert f"pid {other.pid}" in second.action(theirs)
        assert f"pid {other.pid}" in (notes.elsewhere_text(second) or "")
        monkeypatch.chdir(tmp_path)
        code, out = run_cli(["run", str(spec), "--dry-run", "--no-data-check", "--json"], monkeypatch, capsys)
        assert code == 0
        (row,), _ = json.JSONDecoder().raw_decode(out[out.index("[\n") :])  # the notes go to stderr, after it
        assert row["state"] == "running" and row["action"].startswith("skip (running elsewhere:")
    finally:
        other.kill()
        other.wait()
    assert StudyRun.prepare(load_study(spec), spec_file=spec).todo == [theirs]  # its holder gone: interrupted, resumed


def test_a_dry_run_reads_the_jobs_again_after_its_checks_and_a_job_whose_lock_is_taken_runs_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's audit: `run --dry-run` beside a live run listed a job that run had just started as "running,
    resume" (decided before its seconds of data check, shown after), or a just-finished one as "done, skip (running
    elsewhere)". A job another live process holds is running elsewhere whatever its record says (a run takes the
    lock, then records running), the dry run decides again after its checks, and state and action come from one
    reading."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    run.release()
    theirs, ended = (j.id for j in run.jobs)
    dry = StudyRun.prepare(load_study(spec), spec_file=spec)
    assert dry.todo == [theirs, ended] and dry.shown_state(theirs) == "pending"
    other = other_process_holds(run.store.paths(theirs).lock)  # taken after the decision; its record says pending
    finish_job(run.store, ended)  # and the other job finished meanwhile
    try:
        assert dry.action(theirs) == "run"  # as it was decided
        dry.refresh()
        assert dry.todo == [] and dry.action(theirs).startswith(f"skip (running elsewhere: {socket.gethostname()}")
        assert (dry.shown_state(theirs), dry.shown_state(ended), dry.action(ended)) == (
            "running",
            "done",
            "skip (done)",
        )
        monkeypatch.chdir(tmp_path)
        code, out = run_cli(["run", str(spec), "--dry-run", "--no-data-check", "--json"], monkeypatch, capsys)
        rows, _ = json.JSONDecoder().raw_decode(out)
        assert code == 0 and [(r["state"], r["action"].split(":")[0]) for r in rows] == [
            ("running", "skip (running elsewhere"),
            ("done", "skip (done)"),
        ], out
    finally:
        other.kill()
        other.wait()
    run.store.set_state(theirs, "running")  # a killed run's record: running, its holder gone
    gone = StudyRun.prepare(load_study(spec), spec_file=spec)
    assert gone.todo == [theirs] and gone.shown_state(theirs) == "interrupted"


class EndsBetweenReads(RunStore):
    """A real run store in which another `usagg run` finishes a job, or starts one, at the moment this process reads
    the job's lock: between its reading of the job's record and of its lock (the race of a dry run beside a live
    run, made deterministic)."""

    def __init__(self, root: Path, finish: str | None = None, start: str | None = None) -> None:
        super().__init__(root)
        self.finish, self.start = finish, start
        self.holder: subprocess.Popen[bytes] | None = None

    def lock_alive(self, job_id: str) -> bool:
        if job_id == self.finish:  # the other run's last writes: the record done, then its lock let go
            self.finish = None
            self.paths(job_id).metrics.write_text('{"tasks": {}}')
            self.set_state(job_id, "done")
        if job_id == self.start:  # the other run takes the lock, then records running
            self.start = None
            self.set_state(job_id, "running")  # recorded a moment after the lock is taken: the same to a reader
            self.holder = other_process_holds(self.paths(job_id).lock)
        return super().lock_alive(job_id)


def test_a_job_another_run_ends_or_starts_between_reading_its_record_and_its_lock_is_shown_as_one_reading(
    tmp_path: Path,
) -> None:
    """The audit's F2: `run --dry-run` beside a live run showed a job that run had just finished as "running,
    resume" (its record read running, its lock then free). A job whose record changed while its lock was read is
    read again, so it is shown as what its record says once the other process let go (done, skip), or as that
    process's (running elsewhere)."""
    spec = write_study(tmp_path / "a" / "study.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    run = StudyRun.prepare(load_study(spec), spec_file=spec)
    run.init_store()
    run.release()
    ending, starting = (j.id for j in run.jobs)
    run.store.set_state(ending, "running")  # the other run trains it, and holds its lock until it is done
    dry = StudyRun.prepare(load_study(spec), spec_file=spec)
    store = EndsBetweenReads(run.store.root, finish=ending, start=starting)
    dry.store = store
    try:
        dry.refresh()
        assert (dry.shown_state(ending), dry.action(ending)) == ("done", "skip (done)")
        assert store.holder is not None and store.job_state(starting) == "running"
        assert dry.shown_state(starting) == "running"
        holder = f"{socket.gethostname()} pid {store.holder.pid}"
        assert dry.action(starting).startswith(f"skip (running elsewhere: {holder}")
        assert dry.todo == []
    finally:
        if store.holder is not None:
            store.holder.kill()
            store.holder.wait()


def test_a_force_beside_a_live_run_is_refused_when_it_would_replace_its_jobs_and_goes_on_when_it_adds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg run B.yaml --force` while `usagg run A.yaml` trains the store: B changed a setting, so its job fills the
    cell (task, paradigm, fraction, seed) of A's under another id, and A would close with two results for it, which
    compare refuses. It was allowed ('adds jobs only'); now refused in one paragraph naming A's run (host, pid, since,
    spec) and what B would change, exit 2, nothing written. C adds a task: it goes on, saying so."""
    a = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    b = write_study(tmp_path / "b" / "study.yaml", tmp_path, epochs=2)
    c = write_study(tmp_path / "c" / "study.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    run = StudyRun.prepare(load_study(a), spec_file=a)
    run.init_store()
    run.release()
    (theirs,) = run.store.job_ids()
    plan_before = run.store.plan_json.read_bytes()
    (mine,) = (j.id for j in plan(load_study(b)))
    other = other_process_holds(run.store.runs_dir / THEIR_RUN, spec=str(a), jobs=1)
    try:
        monkeypatch.chdir(tmp_path)
        code, out = run_cli(["run", str(b), "--force"], monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 2 and "Traceback" not in out, out
        holder = f"another usagg run ({socket.gethostname()} pid {other.pid}, since 2026-12-07T15:00:00+00:00, spec {a}"
        assert holder in said and "would replace 1 job of the plan it trains" in said, out
        assert f"({theirs} by {mine})" in said and "Nothing was written" in said and "--set name=NEW" in said, out
        assert run.store.plan_json.read_bytes() == plan_before and run.store.spec_files() == [str(a)]

        added = StudyRun.prepare(load_study(c), spec_file=c, force=True)
        added.init_store()
        added.release()
        assert added.beside is not None and holder in added.beside and "this run adds 1 job" in added.beside
        assert "replaces or drops none of that run's jobs" in added.beside
        assert theirs in run.store.job_ids() and len(run.store.job_ids()) == 2
    finally:
        other.kill()
        other.wait()


def test_a_later_stage_keeps_the_jobs_a_force_beside_it_added(tmp_path: Path) -> None:
    """A run's next stage (AG once AU is done) wrote the plan of its own spec and the jobs it kept at its start: jobs
    a `--force` of another spec file added meanwhile vanished from plan.json, status and compare while that run
    trained them."""
    a = write_study(tmp_path / "a" / "study.yaml", tmp_path)
    c = write_study(tmp_path / "c" / "study.yaml", tmp_path, tasks=(MALIGNANCY, NODULE))
    first = StudyRun.prepare(load_study(a), spec_file=a)
    first.init_store()  # live from here on
    try:
        forced = StudyRun.prepare(load_study(c), spec_file=c, force=True)
        forced.init_store()
        forced.release()
        both = sorted(first.store.job_ids())
        assert len(both) == 2
        first.init_store()  # its next stage writes the plan again
        assert sorted(first.store.job_ids()) == both and first.store.spec_files() == [str(a), str(c)]
    finally:
        first.release()
