"""The run service (usagg/run/): options as overrides, the engine device, the job function, no torch."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_study import small_study
from usagg.engine.runner import run_one
from usagg.errors import UsaggError
from usagg.registry import code_plugins
from usagg.run.jobfunction import engine_device, job_function
from usagg.run.options import devices_override, run_overrides
from usagg.spec.models import ExecutionSpec


@pytest.mark.parametrize(
    ("executor", "devices", "device"),
    [
        ("local", "cpu", "cpu"),
        ("local", "cuda", "cuda"),
        ("local", [0], "cuda"),
        ("local", [2, 3], "cuda"),  # pool workers see their one GPU as cuda:0
        ("local", "auto", None),  # the engine picks: a visible GPU, else the CPU
        ("slurm", "cpu", "cpu"),
        ("slurm", "cuda", "cuda"),  # a node without a visible GPU fails the job (usagg/execute/slurm.py)
        ("slurm", [0], "cuda"),  # the node's GPUs are Slurm's to give: the first one it gave
        ("slurm", "auto", None),
    ],
)
def test_engine_device_follows_the_execution_section(executor: str, devices: object, device: str | None) -> None:
    assert engine_device(ExecutionSpec(executor=executor, devices=devices)) == device


def test_job_function_carries_device_and_threads_through_a_pickle() -> None:
    plugins = tuple(code_plugins())  # modules outside usagg that registered entries in this process (none alone)
    fn = pickle.loads(pickle.dumps(job_function(ExecutionSpec(devices="cpu", threads=3))))
    assert fn.func is run_one and fn.keywords == {
        "device": "cpu",
        "threads": 3,
        "accel": "eager",
        "tracking": None,
        "plugins": plugins,
    }
    plain = {"device": None, "threads": None, "accel": "eager", "tracking": None, "plugins": plugins}
    assert job_function(ExecutionSpec()).keywords == plain


def test_options_become_overrides() -> None:
    assert run_overrides(["seeds=[0]"], executor="slurm", devices="0,1", threads=2) == [
        "seeds=[0]",
        "execution.executor=slurm",
        "execution.devices=[0, 1]",
        "execution.threads=2",
    ]
    assert devices_override("cpu") == "execution.devices=cpu" and devices_override([1]) == "execution.devices=[1]"
    assert devices_override(2) == "execution.devices=[2]"
    with pytest.raises(UsaggError, match="--executor 'ray': choose one of local, slurm"):
        run_overrides(executor="ray")


def test_the_service_and_the_api_import_no_torch_or_pandas() -> None:
    code = (
        "import importlib, pkgutil, sys, usagg.api, usagg.run\n"
        "for m in pkgutil.iter_modules(usagg.run.__path__): importlib.import_module('usagg.run.' + m.name)\n"
        "print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_only_selects_by_id_task_group_paradigm_and_glob() -> None:
    """`--only` without copying a hashed id (issue 14.3); a selector that picks nothing names what exists."""
    from pathlib import Path

    from usagg.plan import plan
    from usagg.run.selection import make_selection
    from usagg.spec.load import load_study

    jobs = plan(load_study(Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"))

    def picked(*only: str) -> list[str]:
        return sorted(j.id for j in make_selection(jobs, only=only).pick(jobs))

    ts_fetal = [j.id for j in jobs if j.paradigm == "TS" and j.task_ids == ["fetal_head"]]
    assert picked(ts_fetal[0]) == ts_fetal
    training_fetal = sorted(j.id for j in jobs if "fetal_head" in j.task_ids)
    assert picked("fetal_head") == picked("task:fetal_head") == training_fetal and len(training_fetal) >= 3
    assert picked("paradigm:AU") == picked("AU") == sorted(j.id for j in jobs if j.paradigm == "AU")
    assert picked("TS-*") == sorted(j.id for j in jobs if j.paradigm == "TS")
    assert picked("TS-breast*") == sorted(j.id for j in jobs if j.id.startswith("TS-breast"))
    assert picked("TS-breast_lesion") == sorted(j.id for j in jobs if j.id.startswith("TS-breast_lesion-"))
    assert picked("task=breast_lesion") == picked("task:breast_lesion") and len(picked("task=breast_lesion")) >= 3
    breast = sorted(j.id for j in jobs if j.paradigm != "AU" and all(t.group == "Breast" for t in j.tasks))
    assert picked("group:Breast") == breast and len(breast) >= 3  # TS of its two tasks and CG-Breast (and controls)
    assert set(picked("task:thyroid_*")) == {j.id for j in jobs if any(t.startswith("thyroid_") for t in j.task_ids)}
    with pytest.raises(UsaggError, match=r"--only task:nope matches no job.*tasks: .*fetal_head"):
        make_selection(jobs, only=["task:nope"])


def test_executor_slurm_without_sbatch_is_a_user_error(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`--executor slurm` where no sbatch is found must not quietly run the jobs here (issue 16.5)."""
    import shutil

    import cli_run

    if shutil.which("sbatch"):
        pytest.skip("this host has Slurm")
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: s\ndata: {synthetic: {seed: 0, image_size: 32, default_size: 4, val_size: 2}}\n"
        "tasks: [{id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}]\n"
        "model: {backbone: dinov3_test, image_size: 32}\nparadigms: [TS]\n"
    )
    code, out = cli_run.run_cli(["run", str(study), "--executor", "slurm"], monkeypatch, capsys)
    assert code == 2 and "no `sbatch` on PATH" in out and "Traceback" not in out
    assert not list((tmp_path / "runs" / "s" / "jobs").rglob("metrics.json"))


def test_fractions_that_leave_a_task_one_image_are_refused_before_any_job(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Issue 16.5: a small fraction (1e-9 is a spec error since 26.5) must not reach BatchNorm with one image."""
    import cli_run

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "s.yaml"
    study.write_text(
        "name: s\ndata: {synthetic: {seed: 0, image_size: 32, default_size: 8, val_size: 2, out: synth}}\n"
        "tasks: [{id: thyroid_nodule, type: segmentation, num_classes: 2, group: Thyroid}]\n"
        "model: {backbone: dinov3_test, image_size: 32}\nparadigms: [TS]\nfractions: [0.01]\n"
    )
    code, out = cli_run.run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 2 and "thyroid_nodule has 1 training image at fraction 0.01" in out, out
    assert "Traceback" not in out and not (tmp_path / "runs" / "s" / "jobs").exists()


def test_a_damaged_plan_is_written_anew_by_a_run_of_its_spec(tmp_path: Path) -> None:
    """plan.json damaged: its error says `usagg run` with the study's spec writes it anew, and that is what a run of
    the spec file the store is bound to does (its done jobs stay done); another spec file is told which one, or
    --force."""
    from tests.test_store_damage import metrics_of
    from usagg.plan import plan
    from usagg.run.studyrun import StudyRun
    from usagg.store import RunStore

    study = small_study("toy", output_root=str(tmp_path / "runs"), paradigms=["TS"])
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "toy")
    store.init("name: toy\n", jobs)
    store.set_state(jobs[0].id, "running")
    store.write_metrics(jobs[0].id, metrics_of(jobs[0]))
    store.set_state(jobs[0].id, "done")
    spec, other = tmp_path / "toy.yaml", tmp_path / "other.yaml"
    spec.write_text("name: toy\n")
    other.write_text("name: toy\n")
    store.add_spec_file(spec.resolve())
    store.plan_json.write_text("{oops")
    with pytest.raises(
        UsaggError, match=r"the spec file this store was run from, .*toy\.yaml, or this one with --force"
    ):
        StudyRun.prepare(study, spec_file=other)
    run = StudyRun.prepare(study, spec_file=spec)
    assert run.states[jobs[0].id] == "done" and not run.todo
    run.init_store()
    assert [j.id for j in store.jobs()] == [j.id for j in jobs] and store.job_state(jobs[0].id) == "done"


def test_repair_of_a_done_job_without_its_metrics_says_so(tmp_path: Path) -> None:
    """A done job whose metrics.json is missing has nothing to set aside: the repair says it is missing and sends the
    job back to pending (it raised an IndexError, adding to a repair message that did not exist)."""
    from usagg.plan import plan
    from usagg.store import RunStore

    (job,) = plan(small_study("toy", paradigms=["TS"]))
    store = RunStore(tmp_path / "runs" / "toy")
    store.init("name: toy\n", [job])
    store.set_state(job.id, "running")
    store.set_state(job.id, "done")
    repairs = store.repair()
    said = f"{store.paths(job.id).metrics} is missing, although the job is done; the job is pending again"
    assert any(r.startswith(said) for r in repairs), repairs
    assert store.job_state(job.id) == "pending"
