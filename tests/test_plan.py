"""The planner: which jobs TS, CG and AU make, and job ids that change exactly when results would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from usagg.affinity import Affinity
from usagg.errors import SpecError
from usagg.paradigms import PARADIGMS, Unit, register_paradigm
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import Study

SPEC = """name: p
data: {root: data}
fractions: [0.25, 1.0]
seeds: [0, 1]
model: {backbone: dinov3_test, image_size: 64, weights: w/dino.pth}
tasks:
  - {id: seg_a, type: segmentation, num_classes: 2, group: Breast}
  - {id: cls_b, type: classification, num_classes: 3, group: Breast}
  - {id: det_c, type: detection, num_classes: 1, group: OB}
  - {id: reg_d, type: regression, num_classes: 2, group: OB}
  - {id: cls_e, type: classification, num_classes: 2, group: Lung}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "a" / "p.yaml"
    path.parent.mkdir()
    path.write_text(SPEC)
    return path


def ids(study: Study) -> dict[tuple, str]:
    return {(j.paradigm, j.name, j.fraction, j.seed): j.id for j in plan(study)}


def changed(spec: Path, *overrides: str) -> set[tuple]:
    before, after = ids(load_study(spec)), ids(load_study(spec, list(overrides)))
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_paradigm_units(spec: Path) -> None:
    jobs = plan(load_study(spec))
    assert len(jobs) == (5 + 3 + 1) * 2 * 2
    ts = [j for j in jobs if j.paradigm == "TS"]
    assert {tuple(j.task_ids) for j in ts} == {("seg_a",), ("cls_b",), ("det_c",), ("reg_d",), ("cls_e",)}
    assert not any(j.moe for j in ts)
    cg = {j.name: j for j in jobs if j.paradigm == "CG"}
    assert {n: j.task_ids for n, j in cg.items()} == {
        "Breast": ["seg_a", "cls_b"],
        "OB": ["det_c", "reg_d"],
        "Lung": ["cls_e"],
    }
    assert all(j.moe and j.group == j.name for j in cg.values())
    au = [j for j in jobs if j.paradigm == "AU"]
    assert len(au) == 4 and all(j.moe and len(j.tasks) == 5 and j.group is None for j in au)
    assert {(j.fraction, j.seed) for j in au} == {(0.25, 0), (0.25, 1), (1.0, 0), (1.0, 1)}
    assert next(j for j in ts if j.name == "det_c").group == "OB"


def test_readable_ids(spec: Path) -> None:
    jobs = {(j.paradigm, j.name, j.fraction, j.seed): j for j in plan(load_study(spec))}
    job = jobs[("CG", "Breast", 0.25, 1)]
    assert job.id == f"CG-Breast-f0.25-s1-{job.hash}"
    assert len(job.hash) == 8 and int(job.hash, 16) >= 0
    assert jobs[("TS", "seg_a", 1.0, 0)].id.startswith("TS-seg_a-f1-s0-")
    assert jobs[("AU", "all", 1.0, 1)].id.startswith("AU-all-f1-s1-")
    all_ids = [j.id for j in jobs.values()]
    assert len(set(all_ids)) == len(all_ids)


def test_same_spec_same_ids_anywhere(spec: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "deeper" / "p.yaml"
    moved.parent.mkdir(parents=True)
    shutil.copy(spec, moved)
    assert ids(load_study(spec)) == ids(load_study(spec))
    assert ids(load_study(moved)) == ids(load_study(spec))


def test_settings_outside_results_keep_ids(spec: Path) -> None:
    assert not changed(
        spec,
        "data.root=/mnt/other",
        "data.cache_dir=/tmp/c",
        "data.num_workers=8",
        "training.eval_batch_size=7",
        "execution.devices=cpu",
        "analysis.bootstrap=500",
        "output_root=elsewhere",
        "name=renamed",
        "model.weights=/other/place/dino.pth",
        "data.test_fraction=0.3",  # only used when test_split is train
    )


def test_epochs_change_every_hash(spec: Path) -> None:
    assert len(changed(spec, "training.epochs=7")) == 36


def test_moe_settings_change_only_cg_and_au(spec: Path) -> None:
    diff = changed(spec, "model.moe.experts=4")
    assert diff and {k[0] for k in diff} == {"CG", "AU"}
    assert len(diff) == (3 + 1) * 4


def test_num_classes_changes_only_jobs_with_that_task(spec: Path) -> None:
    diff = changed(spec, "tasks[cls_b].num_classes=5")
    assert {(k[0], k[1]) for k in diff} == {("TS", "cls_b"), ("CG", "Breast"), ("AU", "all")}
    assert len(diff) == 3 * 4


def test_loss_weight_changes_only_jobs_with_that_task(spec: Path) -> None:
    diff = changed(spec, "training.loss_weights.reg_d=2.0")
    assert {(k[0], k[1]) for k in diff} == {("TS", "reg_d"), ("CG", "OB"), ("AU", "all")}
    assert not changed(spec, "training.loss_weights.reg_d=1.0")  # the default weight, written out


def test_sampling_only_matters_with_several_tasks(spec: Path) -> None:
    diff = changed(spec, "training.sampling=proportional")
    assert {k[0] for k in diff} == {"CG", "AU"}
    assert ("CG", "Lung") not in {(k[0], k[1]) for k in diff}  # a one-task group samples nothing
    assert not changed(spec, "training.temperature=3")  # unused unless sampling is temperature


def test_regrouping_keeps_ts_and_au(spec: Path) -> None:
    before = ids(load_study(spec))
    after = ids(load_study(spec, ["tasks[cls_e].group=OB"]))
    assert {k: v for k, v in before.items() if k[0] != "CG"} == {k: v for k, v in after.items() if k[0] != "CG"}
    assert ("CG", "Lung", 1.0, 0) not in after


def test_fraction_and_seed_in_hash(spec: Path) -> None:
    jobs = plan(load_study(spec))
    hashes = {(j.paradigm, j.name): set() for j in jobs}
    for j in jobs:
        hashes[(j.paradigm, j.name)].add(j.hash)
    assert all(len(h) == 4 for h in hashes.values())


def test_singleton_groups(spec: Path) -> None:
    run = [j.name for j in plan(load_study(spec)) if j.paradigm == "CG"]
    skip = [j.name for j in plan(load_study(spec, ["singleton_groups=skip"])) if j.paradigm == "CG"]
    assert "Lung" in run and "Lung" not in skip
    assert sorted(set(skip)) == ["Breast", "OB"]


def test_paradigm_subset_and_order(spec: Path) -> None:
    jobs = plan(load_study(spec, ["paradigms=[AU, TS]", "seeds=[3]", "fractions=[0.5]"]))
    assert [j.paradigm for j in jobs] == ["AU"] + ["TS"] * 5
    assert all(j.seed == 3 and j.fraction == 0.5 for j in jobs)


def test_job_round_trips_through_json(spec: Path) -> None:
    for job in plan(load_study(spec))[:3]:
        again = Job.model_validate_json(job.model_dump_json())
        assert again == job and again.task_ids == job.task_ids


def test_a_registered_paradigm_is_accepted_by_the_spec_and_planned(spec: Path) -> None:
    @register_paradigm("PAIR", "the first two tasks together")
    def plan_pairs(study: Study) -> list[Unit]:
        return [Unit(paradigm="PAIR", name="pair", tasks=tuple(t.id for t in study.tasks[:2]), moe=True)]

    try:
        study = load_study(spec, ["paradigms=[TS, PAIR]"])
        jobs = [j for j in plan(study) if j.paradigm == "PAIR"]
        assert len(jobs) == len(study.seeds) * len(study.fractions)
        assert jobs[0].task_ids == [t.id for t in study.tasks[:2]] and jobs[0].moe
        assert jobs[0].id.startswith("PAIR-pair-")
    finally:
        PARADIGMS.pop("PAIR")
    with pytest.raises(SpecError, match="unknown paradigm 'PAIR'"):
        load_study(spec, ["paradigms=[TS, PAIR]"])


def test_weights_count_by_content_not_by_path(spec: Path, tmp_path: Path) -> None:
    """Same bytes anywhere under any name: same ids; other bytes under the same name: every id changes."""
    weights = spec.parent / "w" / "dino.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"first weights")
    elsewhere = tmp_path / "b" / "other_name.pth"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"first weights")
    assert not changed(spec, f"model.weights={elsewhere}")
    assert len(changed(spec, "model.weights=null")) == 36
    before = ids(load_study(spec))
    weights.write_bytes(b"other weights, another size")
    after = ids(load_study(spec))
    assert all(before[k] != after[k] for k in before)


def test_controls_tsm_and_aud(spec: Path) -> None:
    jobs = plan(load_study(spec, ["paradigms=[TS, CG, AU, TSM, AUD]", "seeds=[0]", "fractions=[1.0]"]))
    by = {p: [j for j in jobs if j.paradigm == p] for p in ("TS", "TSM", "AU", "AUD")}
    assert [j.task_ids for j in by["TSM"]] == [j.task_ids for j in by["TS"]]  # TS's units, MoE on
    assert all(j.moe and j.group == j.tasks[0].group for j in by["TSM"])
    (au,), (aud,) = by["AU"], by["AUD"]
    assert aud.task_ids == au.task_ids and aud.moe is False and au.moe is True
    ids = [j.id for j in jobs]
    assert len(set(ids)) == len(ids) and by["TSM"][0].id.startswith("TSM-seg_a-f1-s0-")
    assert {j.hash for j in by["TS"]}.isdisjoint({j.hash for j in by["TSM"]})  # MoE is part of the hash


def test_moe_settings_reach_the_controls_as_their_moe_says(spec: Path) -> None:
    default = ids(load_study(spec))
    before = ids(load_study(spec, ["paradigms=[TS, CG, AU, TSM, AUD]"]))
    assert {k: v for k, v in before.items() if k in default} == default  # adding the controls moves no id
    before = ids(load_study(spec, ["paradigms=[TS, TSM, AUD]"]))
    after = ids(load_study(spec, ["paradigms=[TS, TSM, AUD]", "model.moe.experts=4"]))
    assert {k[0] for k in before if before[k] != after[k]} == {"TSM"}  # AUD has MoE off, like TS


def test_paradigm_factors_are_registered() -> None:
    factors = {p: (PARADIGMS[p].scope, PARADIGMS[p].moe) for p in ("TS", "CG", "AU", "TSM", "AUD")}
    assert factors == {
        "TS": ("task", False),
        "CG": ("group", True),
        "AU": ("all", True),
        "TSM": ("task", True),
        "AUD": ("all", False),
    }
    with pytest.raises(ValueError, match="scope of paradigm 'X' is one of task, group, all"):
        register_paradigm("X", "x", scope="tasks")


class _Evidence:
    """A staged planner's evidence, as the run store gives it (usagg/service.py StoreEvidence), from a matrix."""

    def __init__(self, tasks: list[str], matrix: list[list[float]]) -> None:
        self.aff = Affinity(tasks, matrix)

    def affinity(self) -> Affinity:
        return self.aff


TASKS = ["seg_a", "cls_b", "det_c", "reg_d", "cls_e"]
# seg_a + det_c help each other, cls_b + reg_d too, cls_e helps no one: the best 3 groups
PLANTED = [
    [0.0, -0.1, 0.5, -0.1, 0.0],
    [-0.1, 0.0, -0.1, 0.4, 0.0],
    [0.6, -0.1, 0.0, -0.1, 0.0],
    [-0.1, 0.3, -0.1, 0.0, 0.0],
    [-0.2, -0.2, -0.2, -0.2, 0.0],
]


def test_ag_waits_for_the_au_job_then_plans_groups_from_its_affinity(spec: Path) -> None:
    from usagg.plan import plan_stages

    study = load_study(spec, ["paradigms=[TS,CG,AU,AG]"])
    first = plan_stages(study)
    au = [j for j in first.jobs if j.paradigm == "AU"]
    assert all(j.affinity is not None for j in au) and len(au) == 4  # AU measures at every fraction and seed
    (waiting,) = first.waiting
    assert waiting.paradigm == "AG" and set(waiting.needs) == {j.id for j in au if j.fraction == 1.0}
    assert not [j for j in first.jobs if j.paradigm == "AG"]

    seen: list[list[str]] = []

    def evidence_for(jobs: list[Job]) -> _Evidence:
        seen.append([j.id for j in jobs])
        return _Evidence(TASKS, PLANTED)

    second = plan_stages(study, evidence_for)
    assert seen == [list(waiting.needs)] and not second.waiting
    ag = [j for j in second.jobs if j.paradigm == "AG" and j.fraction == 1.0 and j.seed == 0]
    # budget: 3 clinical groups (Breast, OB, Lung)
    assert [(j.name, j.task_ids) for j in ag] == [
        ("g1", ["seg_a", "det_c"]),
        ("g2", ["cls_b", "reg_d"]),
        ("g3", ["cls_e"]),
    ]
    assert [j.moe for j in ag] == [True] * 3 and ag[2].group == "Lung" and ag[0].group is None
    assert len([j for j in second.jobs if j.paradigm == "AG"]) == 3 * 2 * 2  # crossed with fractions and seeds
    # ids hash the task set: a CG unit of the same tasks trains the same model (only the prefix differs)
    cg = {j.task_ids[0]: j for j in second.jobs if j.paradigm == "CG" and j.fraction == 1.0 and j.seed == 0}
    assert ag[2].hash == cg["cls_e"].hash


def test_ag_settings_and_the_affinity_settings_in_the_ids(spec: Path) -> None:
    from usagg.plan import plan_stages

    study = load_study(spec, ["paradigms=[TS,AU,{AG: {groups: 2}}]"])
    assert study.paradigms == ["TS", "AU", "AG"] and study.paradigm_settings == {"AG": {"groups": 2}}
    ag = [j for j in plan_stages(study, lambda jobs: _Evidence(TASKS, PLANTED)).jobs if j.paradigm == "AG"]
    assert len({j.name for j in ag}) == 2
    plain = {j.id for j in plan(load_study(spec, ["paradigms=[TS,AU]"]))}
    with_ag = {j.id for j in plan(study) if j.paradigm == "AU"}
    assert not with_ag & plain  # the AU job that measures affinity writes more: its own id
    other = {j.id for j in plan(load_study(spec, ["paradigms=[TS,AU,AG]", "analysis.affinity.probe_size=8"]))}
    assert not with_ag & other


def test_a_probe_run_measures_affinity_without_au(spec: Path) -> None:
    from usagg.plan import plan_stages

    study = load_study(spec, ["paradigms=[TS,AG]", "analysis.affinity.probe_epochs=2"])
    planned = plan_stages(study)
    (probe,) = [j for j in planned.jobs if j.paradigm == "probe"][:1]
    probes = [j for j in planned.jobs if j.paradigm == "probe"]
    assert [(j.fraction, j.seed) for j in probes] == [(1.0, 0), (1.0, 1)]  # the largest fraction only
    assert probe.training.epochs == 2 and probe.affinity is not None and probe.moe
    assert planned.waiting[0].needs == tuple(j.id for j in probes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["paradigms=[TS,CG,AG]"], "add AU to `paradigms`, or set analysis.affinity.probe_epochs"),
        (["paradigms=[TS,AU,{AG: {groups: 0}}]"], "groups"),
        (["paradigms=[TS,AU,{AG: {group: 2}}]"], "group"),
        (["paradigms=[{TS: {groups: 2}},AU]"], "paradigm TS takes no settings"),
        (["paradigms=[TS,probe]"], "unknown paradigm 'probe'"),
        (["paradigms=[TS,AU]", "paradigm_settings={AG: {groups: 2}}"], "which `paradigms` does not run"),
    ],
)
def test_bad_ag_specs_say_what_to_change(spec: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_study(spec, overrides)
