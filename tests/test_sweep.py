"""Sweeps (issue 29.2): a `sweep:` block or `--sweep KEY=V1,V2` expands a study into points, each a full study
whose jobs have the ids the same study with those values set directly has; results.csv gets a column per swept
key and compare shows the points side by side, Δ versus the baseline of the same point."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_run import run_cli

from tests.tiny_study import BREAST, MALIGNANCY, write_tiny_study
from usagg.errors import SpecError
from usagg.plan import Job, plan
from usagg.run.stores import store_for
from usagg.spec.load import dump_study, load_study, sweep_override
from usagg.store import RunStore

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "studies" / "demo.yaml"


def tiny(tmp_path: Path, sweep: dict[str, list[float]] | None = None, name: str = "tiny") -> Path:
    return write_tiny_study(
        tmp_path / f"{name}.yaml",
        name,
        tmp_path,
        output_root=tmp_path / "runs",
        paradigms=("TS", "AU"),
        tasks=(MALIGNANCY, BREAST),
        synthetic={"default_size": 12, "val_size": 4},
        data_keys={"selection_fraction": 0},
        model={"heads": {"hidden": 16}},
        training={"batch_size": 4, "eval_batch_size": 8},
        execution={"devices": "cpu", "cpu_jobs": 1, "threads": 1},
        extra=None if sweep is None else {"sweep": sweep},
    )


def ids(jobs: list[Job]) -> set[str]:
    return {j.id for j in jobs}


# --------------------------------------------------------------------------- planning


def test_point_jobs_have_the_ids_of_the_value_set_directly() -> None:
    swept = plan(load_study(DEMO, [sweep_override("training.lr_encoder=1e-4,5e-4")]))
    low = plan(load_study(DEMO, ["training.lr_encoder=1e-4"]))
    high = plan(load_study(DEMO, ["training.lr_encoder=5e-4"]))
    assert ids(swept) == ids(low) | ids(high)
    assert len(swept) == len(low) + len(high)  # the learning rate enters every job: no job is shared
    assert {j.id for j in swept if j.sweep == [{"training.lr_encoder": 1e-4}]} == ids(low)
    assert {j.id for j in swept if j.sweep == [{"training.lr_encoder": 5e-4}]} == ids(high)


def test_no_sweep_plans_todays_jobs(tmp_path: Path) -> None:
    """An empty block changes no id, and jobs carry no point (tests/test_plan.py records the shipped ids)."""
    fmc = REPO / "studies" / "fmc_uia.yaml"
    plain = plan(load_study(fmc))
    assert all(j.sweep == [] for j in plain)
    assert [j.id for j in plan(load_study(fmc, ["sweep={}"]))] == [j.id for j in plain]


def test_the_block_crosses_keys_and_shares_jobs_a_key_does_not_enter(tmp_path: Path) -> None:
    spec = tiny(tmp_path, {"training.lr_encoder": [1.0e-4, 5.0e-4], "model.moe.experts": [4, 8]})
    jobs = plan(load_study(spec))
    au = [j for j in jobs if j.paradigm == "AU"]
    ts = [j for j in jobs if j.paradigm == "TS"]
    assert len(au) == 4 and len({j.id for j in au}) == 4  # 2 x 2 points
    assert {(j.training.lr_encoder, j.model.moe.experts) for j in au} == {(1e-4, 4), (1e-4, 8), (5e-4, 4), (5e-4, 8)}
    assert len(ts) == 4  # 2 tasks x 2 learning rates: the MoE size enters no TS job's id, so both points share it
    for job in ts:
        assert [p["model.moe.experts"] for p in job.sweep] == [4, 8]
        assert {p["training.lr_encoder"] for p in job.sweep} == {job.training.lr_encoder}
    direct = plan(load_study(tiny(tmp_path, name="direct"), ["model.moe.experts=8", "training.lr_encoder=5e-4"]))
    at_point = {j.id for j in jobs if {"training.lr_encoder": 5e-4, "model.moe.experts": 8} in j.sweep}
    assert at_point == ids(direct)  # the study name is not in a job id


def test_the_default_size_sweeps_it_changes_the_ids_of_tasks_sizes_does_not_name(tmp_path: Path) -> None:
    """Audit docs 6: data.synthetic.default_size was marked "job id: no" and refused by --sweep as changing no
    result, though it is the size of every task `sizes` does not name, so it changes their data and job ids."""
    spec = tiny(tmp_path)
    small, large = (plan(load_study(spec, [f"data.synthetic.default_size={n}"])) for n in (8, 16))
    assert ids(small).isdisjoint(ids(large))
    named = plan(load_study(spec, ["data.synthetic.sizes={thyroid_malignancy: 12, breast_lesion_cls: 12}"]))
    assert ids(
        plan(
            load_study(
                spec,
                [
                    "data.synthetic.sizes={thyroid_malignancy: 12, breast_lesion_cls: 12}",
                    "data.synthetic.default_size=99",
                ],
            )
        )
    ) == ids(named)  # every task named: no change
    swept = plan(load_study(spec, [sweep_override("data.synthetic.default_size=8,16")]))
    assert ids(swept) == ids(small) | ids(large)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("execution.threads", "execution never enters a job's id"),
        ("analysis.baseline", "analysis.baseline never enters a job's id"),
        ("data.root", "data.root never enters a job's id"),
        ("seeds", "a dimension the plan already crosses"),
        ("model.weights", "is a file path"),
        ("training.lr_encodr", "training has no setting 'lr_encodr' (did you mean 'lr_encoder'?)"),
        ("training.epochs.x", "training.epochs is a single value"),
    ],
)
def test_keys_outside_the_job_id_are_refused_with_the_reason(tmp_path: Path, key: str, why: str) -> None:
    with pytest.raises(SpecError) as err:
        load_study(tiny(tmp_path), [sweep_override(f"{key}=1,2")])
    assert f"{key!r} cannot be swept" in str(err.value)
    assert why in str(err.value)


def test_a_value_the_spec_refuses_names_the_key_and_the_value(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_study(tiny(tmp_path), [sweep_override("training.lr_encoder=1e-4,-1")])
    text = str(err.value)
    assert "sweep point training.lr_encoder=-1 is not a valid study" in text
    assert "training.lr_encoder: got -1" in text and str(tmp_path / "tiny.yaml") in text


@pytest.mark.parametrize("sweep", [None, {"training.lr_encoder": [1.0e-4, 5.0e-4]}])
def test_a_set_of_a_swept_key_is_refused_not_dropped(tmp_path: Path, sweep: dict[str, list[float]] | None) -> None:
    """Every sweep point sets its key, so a --set of the same key would be dropped without a word: it is an error
    naming both, whether the sweep comes from --sweep or from the spec's sweep: block."""
    overrides = ["training.lr_encoder=3e-4"] + ([] if sweep else [sweep_override("training.lr_encoder=1e-4,5e-4")])
    with pytest.raises(SpecError) as err:
        load_study(tiny(tmp_path, sweep), overrides)
    assert "--set training.lr_encoder=3e-4 sets training.lr_encoder, which the sweep sets at every point" in str(
        err.value
    )
    load_study(tiny(tmp_path, sweep), ["training.epochs=2", *overrides[1:]])  # another key: fine


def test_points_with_the_same_jobs_are_refused(tmp_path: Path) -> None:
    """The temperature counts only with temperature sampling: two points would plan the same jobs."""
    with pytest.raises(SpecError, match=r"give the same jobs: training\.temperature"):
        plan(load_study(tiny(tmp_path), [sweep_override("training.temperature=1,2")]))
    with pytest.raises(SpecError, match=r"lists 0\.0001 twice"):
        load_study(tiny(tmp_path), [sweep_override("training.lr_encoder=1e-4,0.0001")])


def test_sweep_values_follow_hydras_grammar() -> None:
    assert sweep_override("model.moe.blocks=[8,9],[10,11]") == "sweep[model.moe.blocks]=[[8, 9], [10, 11]]"
    assert sweep_override("training.precision='bf16',fp32") == 'sweep[training.precision]=["bf16", "fp32"]'
    assert sweep_override("training.lr_encoder=1e-4, 5e-4") == "sweep[training.lr_encoder]=[0.0001, 0.0005]"
    for bad in ("training.lr_encoder", "training.lr_encoder=", "training.lr_encoder=1e-4,,5e-4"):
        with pytest.raises(SpecError, match="--sweep"):
            sweep_override(bad)


def test_a_list_valued_key_sweeps(tmp_path: Path) -> None:
    study = load_study(tiny(tmp_path), [sweep_override("model.moe.blocks=[2],[3]")])
    au = [j for j in plan(study) if j.paradigm == "AU"]
    assert sorted(j.model.moe.blocks for j in au) == [[2], [3]]


# --------------------------------------------------------------------------- results and compare


def _finish(store: RunStore, job: Job, values: dict[str, float]) -> None:
    store.set_state(job.id, "running")
    tasks = {
        t.id: {"type": t.type, "metrics": {"AUC": values[t.id], "ACC": 0.5}, "n_train": 12, "steps": 1}
        for t in job.tasks
    }
    store.paths(job.id).metrics.write_text(json.dumps({"job_id": job.id, "tasks": tasks}))
    store.set_state(job.id, "done")


def test_results_get_a_column_per_key_and_compare_shows_points_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TS scores 0.6 at both rates; AU 0.75 at 1e-4 and 0.45 at 5e-4: Δ AU is +25 % and -25 % of the same point."""
    spec = tiny(tmp_path, {"training.lr_encoder": [1.0e-4, 5.0e-4], "model.moe.experts": [4]})
    study = load_study(spec)
    jobs = plan(study)
    store = store_for(study)
    store.init(dump_study(study), jobs)
    for job in jobs:
        au = {1e-4: 0.75, 5e-4: 0.45}[job.training.lr_encoder]
        _finish(store, job, {t.id: (au if job.paradigm == "AU" else 0.6) for t in job.tasks})
    rows = list(csv.DictReader(store.rebuild_results().open()))
    assert list(rows[0])[-2:] == ["training.lr_encoder", "model.moe.experts"]
    assert {(r["paradigm"], r["training.lr_encoder"], r["model.moe.experts"]) for r in rows} == {
        ("TS", "0.0001", "4"),
        ("TS", "0.0005", "4"),
        ("AU", "0.0001", "4"),
        ("AU", "0.0005", "4"),
    }
    code, out = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    assert code == 0, out
    assert "Sweep points side by side versus TS" in out
    assert "=== sweep point training.lr_encoder=0.0001, model.moe.experts=4 ===" in out
    assert "=== sweep point training.lr_encoder=0.0005, model.moe.experts=4 ===" in out
    line = next(x for x in out.splitlines() if x.startswith("thyroid_malignancy") and " AU " in x)
    assert line.split()[-4:] == ["0.750", "+25.0", "0.450", "-25.0"]
    code, out = run_cli(["compare", str(store.root), "--format", "csv"], monkeypatch, capsys)
    assert code == 0, out
    table = list(csv.DictReader(out.splitlines()))
    deltas = {(r["training.lr_encoder"], r["task"]): float(r["delta_pct"]) for r in table if r["paradigm"] == "AU"}
    assert deltas[("0.0001", "breast_lesion_cls")] == pytest.approx(25.0)
    assert deltas[("0.0005", "breast_lesion_cls")] == pytest.approx(-25.0)


def test_a_job_shared_by_points_is_every_points_baseline(tmp_path: Path) -> None:
    """TS does not use the MoE size: its one job per task is the baseline of both MoE points."""
    from usagg.analysis.inputs import load_input
    from usagg.analysis.summary import analyse

    spec = tiny(tmp_path, {"model.moe.experts": [4, 8]})
    study = load_study(spec)
    jobs = plan(study)
    assert len(jobs) == 2 + 2  # TS: one per task, shared; AU: one per point
    store = store_for(study)
    store.init(dump_study(study), jobs)
    for job in jobs:
        value = {4: 0.9, 8: 0.3}[job.model.moe.experts] if job.paradigm == "AU" else 0.6
        _finish(store, job, {t.id: value for t in job.tasks})
    a = analyse(load_input(store.root, None))
    assert [dict(p) for p, _ in a.points] == [{"model.moe.experts": "4"}, {"model.moe.experts": "8"}]
    deltas = [sub.comp.deltas[(1.0, "thyroid_malignancy", "AU")].value for _, sub in a.points]
    assert deltas == pytest.approx([50.0, -50.0])


def test_a_swept_report_refuses_a_planted_tables_link_before_any_write(tmp_path: Path) -> None:
    """reports/<study>/tables a link elsewhere: the points' side-by-side sweep.csv would be written through it, so
    the report refuses before its first point's report is written."""
    from usagg.analysis.inputs import load_input
    from usagg.analysis.report import write_report
    from usagg.analysis.summary import analyse
    from usagg.safepath import UnsafePath

    study = load_study(tiny(tmp_path, {"model.moe.experts": [4, 8]}))
    store = store_for(study)
    store.init(dump_study(study), plan(study))
    for job in plan(study):
        _finish(store, job, {t.id: 0.6 for t in job.tasks})
    folder, victim = tmp_path / "rep", tmp_path / "victim"
    victim.mkdir()
    folder.mkdir()
    (folder / "tables").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafePath, match=r"rep/tables is a symbolic link"):
        write_report(analyse(load_input(store.root, None)), folder, render=lambda *_: [])
    assert list(victim.iterdir()) == [] and [p.name for p in folder.iterdir()] == ["tables"]


def test_run_dry_run_shows_each_jobs_sweep_point_as_plan_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit (hour): `run --sweep ... --dry-run` listed two rows per job kind that could not be told apart."""
    spec = tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    picked = ["--sweep", "training.lr_encoder=1e-4,5e-4", "--only", "task=thyroid_malignancy", "--paradigm", "TS"]
    code, out = run_cli(["run", str(spec), *picked, "--dry-run", "--no-data-check"], monkeypatch, capsys)
    assert code == 0, out
    rows = [line for line in out.splitlines() if "TS-thyroid_malignancy" in line]
    assert len(rows) == 2 and "lr_encoder=0.0001" in rows[0] and "lr_encoder=0.0005" in rows[1], out
    code, out = run_cli(["plan", str(spec), *picked], monkeypatch, capsys)
    assert code == 0 and "sweep point" in out and "lr_encoder=0.0005" in out, out
    code, out = run_cli(["run", str(spec), *picked, "--dry-run", "--no-data-check", "--json"], monkeypatch, capsys)
    listed, _ = json.JSONDecoder().raw_decode(out[out.index("[") :])  # stderr's note may follow
    assert [row["sweep"] for row in listed] == [[{"training.lr_encoder": 1e-4}], [{"training.lr_encoder": 5e-4}]]


@pytest.mark.slow
def test_run_sweep_then_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's done-means: `usagg run --sweep` trains each point's jobs and compare shows both points."""
    spec = tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["run", str(spec), "--sweep", "training.lr_encoder=1e-4,5e-4", "--only", "task=thyroid_malignancy"]
    code, out = run_cli([*args, "--paradigm", "TS", "--paradigm", "AU", "--quiet"], monkeypatch, capsys)
    assert code == 0, out
    store = store_for(load_study(spec, [sweep_override("training.lr_encoder=1e-4,5e-4")]))
    done = [j for j in store.jobs() if store.job_state(j.id) == "done"]
    assert sorted((j.paradigm, j.training.lr_encoder) for j in done) == [
        ("AU", 1e-4),
        ("AU", 5e-4),
        ("TS", 1e-4),
        ("TS", 5e-4),
    ]
    code, out = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    assert code == 0, out
    assert "lr_encoder=0.0001" in out and "lr_encoder=0.0005" in out
    assert "=== sweep point training.lr_encoder=0.0005 ===" in out
