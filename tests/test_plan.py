"""The planner: which jobs TS, CG and AU make, and job ids that change exactly when results would."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from usagg.affinity import Affinity
from usagg.errors import SpecError
from usagg.paradigms import PARADIGMS, Unit, register_paradigm
from usagg.plan import Job, hash_payload, plan
from usagg.spec.jobhash import RULES, job_hash_rule
from usagg.spec.load import load_study
from usagg.spec.models import Study, TrainingSpec
from usagg.spec.reference import _models

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
    """A staged planner's evidence, as the run store gives it (usagg/run/evidence.py StoreEvidence), from a matrix."""

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


#: Job ids recorded before the job hash was declared on the spec fields (issue 27.6); they must never change, but for
#: a job measuring affinity when what it measures changes (the lookahead step, issue 25.7: marked below).
RECORDED_IDS: dict[str, list[str]] = {
    "demo": [
        "AU-all-f1-s0-950fdc67",  # measures affinity: new id with analysis.affinity.lookahead (issue 25.7)
        "AUD-all-f1-s0-df26c5c8",
        "CG-Breast-f1-s0-1dcf20d3",
        "CG-Cardiac-f1-s0-8b0dcfa8",
        "CG-Fetal-f1-s0-8d7d0628",
        "CG-Thyroid-f1-s0-e28968a1",
        "CGD-Breast-f1-s0-1025c107",
        "CGD-Cardiac-f1-s0-31f38dad",
        "CGD-Fetal-f1-s0-40468350",
        "CGD-Thyroid-f1-s0-1ad12f4f",
        "TS-breast_lesion-f1-s0-fb5675b7",
        "TS-breast_lesion_cls-f1-s0-23a4eab4",
        "TS-cardiac_chambers-f1-s0-31f38dad",
        "TS-fetal_head-f1-s0-29ca073c",
        "TS-fetal_head_biometry-f1-s0-0b81c22d",
        "TS-fetal_head_position-f1-s0-b9a776de",
        "TS-thyroid_malignancy-f1-s0-2ae4629d",
        "TS-thyroid_nodule-f1-s0-0400302e",
        "TS-thyroid_nodule_det-f1-s0-f24f7196",
        "TSM-breast_lesion-f1-s0-e839f074",
        "TSM-breast_lesion_cls-f1-s0-a7e122f1",
        "TSM-cardiac_chambers-f1-s0-8b0dcfa8",
        "TSM-fetal_head-f1-s0-38115c7f",
        "TSM-fetal_head_biometry-f1-s0-4f3dad68",
        "TSM-fetal_head_position-f1-s0-fd818fcc",
        "TSM-thyroid_malignancy-f1-s0-fec42b0e",
        "TSM-thyroid_nodule-f1-s0-6430cd92",
        "TSM-thyroid_nodule_det-f1-s0-dc88dd4c",
    ],
    "fmc_uia": [
        "AU-all-f1-s0-b89b102a",
        "AU-all-f1-s1-91e057bf",
        "AU-all-f1-s2-977f695d",
        "CG-Abdomen-f1-s0-cac7e5f9",
        "CG-Abdomen-f1-s1-35b67f16",
        "CG-Abdomen-f1-s2-d84bba86",
        "CG-Breast-f1-s0-c727fcc1",
        "CG-Breast-f1-s1-a18badef",
        "CG-Breast-f1-s2-8d80a3a9",
        "CG-Cardiovascular-f1-s0-832c4d18",
        "CG-Cardiovascular-f1-s1-919945ae",
        "CG-Cardiovascular-f1-s2-70615277",
        "CG-Gynaecology-f1-s0-2724ddfe",
        "CG-Gynaecology-f1-s1-efd5ddd2",
        "CG-Gynaecology-f1-s2-b9186e49",
        "CG-Lung-f1-s0-3c609a7e",
        "CG-Lung-f1-s1-8bbb5e8f",
        "CG-Lung-f1-s2-e6373d52",
        "CG-Multi-organ-f1-s0-5a24417d",
        "CG-Multi-organ-f1-s1-b5983475",
        "CG-Multi-organ-f1-s2-0b2699c3",
        "CG-Musculoskeletal-f1-s0-fcf02e90",
        "CG-Musculoskeletal-f1-s1-deeee4c9",
        "CG-Musculoskeletal-f1-s2-54164080",
        "CG-OB-f1-s0-a30313d1",
        "CG-OB-f1-s1-41003cf4",
        "CG-OB-f1-s2-3be42092",
        "CG-Thyroid-f1-s0-587701eb",
        "CG-Thyroid-f1-s1-c7f70410",
        "CG-Thyroid-f1-s2-63cbc9b3",
        "TS-FUGC-f1-s0-2b3848af",
        "TS-FUGC-f1-s1-3a636eaf",
        "TS-FUGC-f1-s2-f0991c4b",
        "TS-IUGC-f1-s0-ab28e98f",
        "TS-IUGC-f1-s1-995c6a68",
        "TS-IUGC-f1-s2-17007933",
        "TS-breast_2cls-f1-s0-334bec4c",
        "TS-breast_2cls-f1-s1-8d189886",
        "TS-breast_2cls-f1-s2-dd7d27bc",
        "TS-breast_3cls-f1-s0-a5a7f8f9",
        "TS-breast_3cls-f1-s1-e309da18",
        "TS-breast_3cls-f1-s2-28f5a155",
        "TS-breast_lesion-f1-s0-30959e65",
        "TS-breast_lesion-f1-s1-0fbe24d5",
        "TS-breast_lesion-f1-s2-5a41ba61",
        "TS-cardiac_multi-f1-s0-e404f5ff",
        "TS-cardiac_multi-f1-s1-022c26b4",
        "TS-cardiac_multi-f1-s2-3d192bf3",
        "TS-carotid_artery-f1-s0-888a7ff5",
        "TS-carotid_artery-f1-s1-c00df231",
        "TS-carotid_artery-f1-s2-f7aff4e1",
        "TS-cervix-f1-s0-54061c4d",
        "TS-cervix-f1-s1-21dec477",
        "TS-cervix-f1-s2-fa1e6819",
        "TS-cervix_multi-f1-s0-c77d87af",
        "TS-cervix_multi-f1-s1-2016b713",
        "TS-cervix_multi-f1-s2-777068e5",
        "TS-fetal_abdomen_multi-f1-s0-851f7b41",
        "TS-fetal_abdomen_multi-f1-s1-c1c2d007",
        "TS-fetal_abdomen_multi-f1-s2-f732aae9",
        "TS-fetal_femur-f1-s0-139341af",
        "TS-fetal_femur-f1-s1-9d7024d5",
        "TS-fetal_femur-f1-s2-69205a99",
        "TS-fetal_head-f1-s0-453a4698",
        "TS-fetal_head-f1-s1-81a9afa2",
        "TS-fetal_head-f1-s2-656a9c09",
        "TS-fetal_head_pos_cls-f1-s0-563d5632",
        "TS-fetal_head_pos_cls-f1-s1-1653ac86",
        "TS-fetal_head_pos_cls-f1-s2-9025a993",
        "TS-fetal_heart-f1-s0-574cb684",
        "TS-fetal_heart-f1-s1-0b5999d4",
        "TS-fetal_heart-f1-s2-5382080e",
        "TS-fetal_plane_cls-f1-s0-d776b617",
        "TS-fetal_plane_cls-f1-s1-fed70517",
        "TS-fetal_plane_cls-f1-s2-c7b8dfe1",
        "TS-fetal_sacral_pos_cls-f1-s0-45fd9bbb",
        "TS-fetal_sacral_pos_cls-f1-s1-9ffe931d",
        "TS-fetal_sacral_pos_cls-f1-s2-aa4cf8a4",
        "TS-head_symphysis_multi-f1-s0-0eb65510",
        "TS-head_symphysis_multi-f1-s1-21635293",
        "TS-head_symphysis_multi-f1-s2-d40fae09",
        "TS-liver_lesion_2cls-f1-s0-3858b8a2",
        "TS-liver_lesion_2cls-f1-s1-2c91ab4a",
        "TS-liver_lesion_2cls-f1-s2-b88cd08f",
        "TS-lung-f1-s0-ea8f2fd0",
        "TS-lung-f1-s1-d3081641",
        "TS-lung-f1-s2-19cd571b",
        "TS-lung_2cls-f1-s0-306adbed",
        "TS-lung_2cls-f1-s1-aaa81bfa",
        "TS-lung_2cls-f1-s2-f5e0fd03",
        "TS-lung_disease_3cls-f1-s0-e6513f1d",
        "TS-lung_disease_3cls-f1-s1-02afa2ce",
        "TS-lung_disease_3cls-f1-s2-0913fd99",
        "TS-organ_cls-f1-s0-9cd63f5f",
        "TS-organ_cls-f1-s1-bfc40fe1",
        "TS-organ_cls-f1-s2-b12c7b48",
        "TS-ovary_tumor-f1-s0-583ad57f",
        "TS-ovary_tumor-f1-s1-13782b6a",
        "TS-ovary_tumor-f1-s2-6fb05e8f",
        "TS-spinal_cord_injury_loc-f1-s0-6c122ea6",
        "TS-spinal_cord_injury_loc-f1-s1-886ab286",
        "TS-spinal_cord_injury_loc-f1-s2-19bdfb46",
        "TS-thyroid_nodule-f1-s0-36b000a4",
        "TS-thyroid_nodule-f1-s1-83afea9f",
        "TS-thyroid_nodule-f1-s2-bbdfd227",
        "TS-thyroid_nodule_det-f1-s0-c5e9d4af",
        "TS-thyroid_nodule_det-f1-s1-d1bba2ee",
        "TS-thyroid_nodule_det-f1-s2-27665b43",
        "TS-uterine_fibroid_det-f1-s0-1a022079",
        "TS-uterine_fibroid_det-f1-s1-83944327",
        "TS-uterine_fibroid_det-f1-s2-0238c916",
    ],
    "demo_variant": [
        "AU-all-f1-s0-f12c4c0c",
        "AUD-all-f1-s0-9fa6b7ff",
        "CG-Breast-f1-s0-49c9b7a4",
        "CG-Cardiac-f1-s0-c3c56c91",
        "CG-Fetal-f1-s0-aa14e351",
        "CG-Thyroid-f1-s0-57bb763c",
        "CGD-Breast-f1-s0-0b52e234",
        "CGD-Cardiac-f1-s0-67ed47f8",
        "CGD-Fetal-f1-s0-8e85884e",
        "CGD-Thyroid-f1-s0-7a166f40",
        "TS-breast_lesion-f1-s0-d85187f8",
        "TS-breast_lesion_cls-f1-s0-1b966bcb",
        "TS-cardiac_chambers-f1-s0-67ed47f8",
        "TS-fetal_head-f1-s0-dbaa2957",
        "TS-fetal_head_biometry-f1-s0-920cdbe2",
        "TS-fetal_head_position-f1-s0-2b19c4cf",
        "TS-thyroid_malignancy-f1-s0-f620d36e",
        "TS-thyroid_nodule-f1-s0-507071d7",
        "TS-thyroid_nodule_det-f1-s0-57784a45",
        "TSM-breast_lesion-f1-s0-aad3680e",
        "TSM-breast_lesion_cls-f1-s0-a6ec6f4c",
        "TSM-cardiac_chambers-f1-s0-c3c56c91",
        "TSM-fetal_head-f1-s0-17ff7452",
        "TSM-fetal_head_biometry-f1-s0-360e1608",
        "TSM-fetal_head_position-f1-s0-e17f224f",
        "TSM-thyroid_malignancy-f1-s0-dd0f716c",
        "TSM-thyroid_nodule-f1-s0-ec4b8d7c",
        "TSM-thyroid_nodule_det-f1-s0-f3a7f98a",
        "probe-all-f1-s0-fbe25501",  # measures affinity: as the demo's AU
    ],
    "fmc_small": [
        "AU-all-f0.5-s3-647243c2",
        "AU-all-f1-s3-fd47ce93",
        "AUD-all-f0.5-s3-118969dc",
        "AUD-all-f1-s3-cedd4e51",
        "CG-Breast-f0.5-s3-4b1fa0b6",
        "CG-Breast-f1-s3-1ca9cf25",
        "CG-OB-f0.5-s3-02678a97",
        "CG-OB-f1-s3-391ebfa2",
        "TS-FUGC-f0.5-s3-20f0b0b2",
        "TS-FUGC-f1-s3-101c7821",
        "TS-breast_lesion-f0.5-s3-9544afb9",
        "TS-breast_lesion-f1-s3-76cb0f12",
        "TS-fetal_head-f0.5-s3-119cbba4",
        "TS-fetal_head-f1-s3-3bcae6c6",
        "TSM-FUGC-f0.5-s3-0f73e196",
        "TSM-FUGC-f1-s3-6c8e735d",
        "TSM-breast_lesion-f0.5-s3-4b1fa0b6",
        "TSM-breast_lesion-f1-s3-1ca9cf25",
        "TSM-fetal_head-f0.5-s3-c3e828cf",
        "TSM-fetal_head-f1-s3-47367e4f",
    ],
}
#: The specs behind RECORDED_IDS: a shipped study as is, or with --set overrides reaching every conditional rule.
ID_SPECS: dict[str, tuple[str, list[str]]] = {
    "demo": ("studies/demo.yaml", []),
    "fmc_uia": ("studies/fmc_uia.yaml", []),
    "demo_variant": (
        "studies/demo.yaml",
        [
            "data.test_split=train",
            "data.test_fraction=0.25",
            "training.sampling=temperature",
            "training.temperature=3",
            "training.loss_weights.fetal_head=2",
            "model.weights=/nowhere/w.pth",
            "analysis.affinity.probe_epochs=2",
            "training.selection_scope=task",
            "training.loss_balance=initial",
            "model.heads.feature_blocks=[0,1]",
            "training.augmentation.hflip_p=0.5",
            "data.color=gray",
            "model.moe.experts=2",
            "training.steps_per_epoch=3",
            "training.grad_clip=null",
        ],
    ),
    "fmc_small": (
        "studies/fmc_uia.yaml",
        [
            "fractions=[0.5,1.0]",
            "seeds=[3]",
            "tasks_from.include=[breast_lesion,fetal_head,FUGC]",
            "paradigms=[TS,CG,AU,TSM,AUD]",
        ],
    ),
}
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(RECORDED_IDS))
def test_job_ids_are_the_recorded_ones(name: str) -> None:
    """Declaring the hash on the fields (27.6) moved no id: the shipped studies and variants plan the same jobs."""
    path, overrides = ID_SPECS[name]
    assert sorted(j.id for j in plan(load_study(REPO / path, overrides))) == RECORDED_IDS[name]


def unclassified(root: type[BaseModel]) -> list[str]:
    """Fields reachable from `root` without a valid JobHash marker, as Model.field."""
    bad = []
    for model in _models(root):
        for name, info in model.model_fields.items():
            marker = job_hash_rule(info)
            if marker is None or marker.rule not in RULES:
                bad.append(f"{model.__name__}.{name}")
            elif marker.rule == "per_task" and isinstance(marker.default, str):
                assert marker.default in model.model_fields, f"{model.__name__}.{name}: no field {marker.default}"
    return bad


def test_every_spec_field_says_whether_it_changes_the_job_id() -> None:
    """A new spec field must declare its part in the job hash (usagg/spec/jobhash.py), or this test fails."""
    assert unclassified(Study) == []

    class Grown(TrainingSpec):
        new_knob: int = 3  # no marker: what a new field without a classification looks like

    assert unclassified(Grown) == ["Grown.new_knob"]
    study = load_study(REPO / "studies/demo.yaml")
    unit = Unit(paradigm="TS", name="x", tasks=(study.tasks[0].id,), moe=False)
    grown = study.model_copy(update={"training": Grown()})
    with pytest.raises(TypeError, match="new_knob has no JobHash marker"):
        hash_payload(unit, grown, 1.0, 0)


def _alternatives(field: Any) -> list[str]:
    """`--set` values other than a field's default that its type allows, to try in order."""
    default = field.default
    options = [a for a in get_args(field.annotation) if not isinstance(a, type)]
    if get_origin(field.annotation) is Literal:
        return [str(o) for o in get_args(field.annotation) if o != default]
    if isinstance(default, bool):
        return [str(not default).lower()]
    if isinstance(default, int):
        return [str(v) for v in (default + 16, default + 1, default * 2, default - 1) if v != default]
    if isinstance(default, float):
        return [repr(v) for v in (default * 1.5, default * 0.5, 0.1) if v != default]
    if default is None and int in get_args(field.annotation):
        return ["1", "2", "3"]
    if isinstance(default, tuple) and default:  # a range: both ends moved
        return [f"[{', '.join(repr(v * 0.5) for v in default)}]", f"[{', '.join(repr(v * 2) for v in default)}]"]
    if isinstance(default, list) or (default is None and "list" in str(field.annotation)):
        return ["[1]", "[0, 1]", "[2, 3]"]
    return [str(o) for o in options if o != default]


def _hashed_leaves(model: type[BaseModel], prefix: str) -> list[tuple[str, Any]]:
    """Every leaf field that enters every job's id ("yes"), sections of "yes" descended into."""
    out = []
    for name, field in model.model_fields.items():
        rule = job_hash_rule(field)
        if rule is None or rule.rule != "yes":
            continue
        section = field.annotation if isinstance(field.annotation, type) else None
        if section is not None and issubclass(section, BaseModel):
            out += _hashed_leaves(section, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", field))
    return out


def test_every_setting_marked_in_the_hash_changes_every_job_id(spec: Path) -> None:
    """The marker is the rule, checked field by field: each "yes" setting of training, model and data, changed to
    another value its type allows, changes all 36 ids (a field dropped from the payload passed every test but the
    snapshot of recorded ids, which any legitimate change re-records)."""
    from usagg.spec.models import DataSpec, ModelSpec

    leaves = [*_hashed_leaves(TrainingSpec, "training."), *_hashed_leaves(ModelSpec, "model.")]
    leaves += _hashed_leaves(DataSpec, "data.")
    untried, unchanged = [], []
    for path, field in leaves:
        for value in _alternatives(field):
            try:
                diff = changed(spec, f"{path}={value}")
            except SpecError:
                continue  # not a value this spec allows: the next
            if len(diff) != 36:
                unchanged.append(f"{path}={value}: {len(diff)} of 36 ids changed")
            break
        else:
            untried.append(path)
    assert unchanged == []
    # no other value to try: a single option, a registry name, a section the spec leaves out
    assert untried == ["training.optimizer", "model.backbone", "data.synthetic"]
    assert len(leaves) - len(untried) >= 25
