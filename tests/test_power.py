"""The smallest detectable Δ at the planned seeds (issue 25.5): against the noncentral t by hand, the pooled seed
spread, the study mean, the report's table and `usagg plan --power`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as ss

from tests.cli_run import run_cli
from usagg.analysis.cluster_power import detectable_mean
from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.power import AT_CHANCE, NO_SPREAD, STUDY_MEAN, detectable, seed_sd, standardised_mde
from usagg.analysis.results import Row, write_results
from usagg.analysis.summary import all_tables, analyse

REPO = Path(__file__).resolve().parent.parent


def _power_at(d: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided two-sample t test power at standardised effect d, n per arm: the noncentral t directly."""
    df = 2 * n - 2
    crit = ss.t.ppf(1 - alpha / 2, df)
    nc = d * math.sqrt(n / 2)
    return float(1 - ss.nct.cdf(crit, df, nc) + ss.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_the_detectable_effect_has_80_percent_power(n: int) -> None:
    d = standardised_mde(n)
    assert d is not None and _power_at(d, n) == pytest.approx(0.8, abs=1e-4)
    assert standardised_mde(1) is None


def test_task_rows_by_hand_and_the_study_mean_on_its_cluster_test() -> None:
    groups = {"a": "G1", "b": "G2", "c": "G3"}
    rows = detectable({"a": 2.0, "b": 1.0, "c": 3.0}, 3, groups, 10000, 0)
    by = {r.name: r for r in rows}
    d = standardised_mde(3)
    assert d is not None and by["a"].mde == pytest.approx(2.0 * d)
    se = math.sqrt(2 * (4 + 1 + 9) / 3) / 3
    assert by[STUDY_MEAN].sd == pytest.approx(se)
    sds = [math.sqrt(2 / 3) * s for s in (2.0, 1.0, 3.0)]
    assert by[STUDY_MEAN].mde == detectable_mean(sds, ["G1", "G2", "G3"], 10000, 0, 0.05, 0.8)
    # 3 clusters: the test needs several times z's Δm, which the table printed before (audit F10)
    assert by[STUDY_MEAN].mde > 3 * (ss.norm.ppf(0.975) + ss.norm.ppf(0.8)) * se
    assert "over 3 tasks in 3 clinical groups" in by[STUDY_MEAN].note
    one = {r.name: r for r in detectable({"a": 2.0, "b": 1.0, "c": 3.0}, 1, groups, 10000, 0)}
    assert one["a"].mde is None and "1 seed per paradigm leaves the task's t test no df" in one["a"].note
    # the Δm test takes its df from the groups: at 1 seed it has a Δm, and says why
    assert one[STUDY_MEAN].mde is not None and "at 1 seed too: its df come from the groups" in one[STUDY_MEAN].note


def test_fewer_than_three_clinical_groups_leave_dm_untestable() -> None:
    """Audit F10: 2 clinical groups, whose Δm compare never tests, got a detectable Δm of 2.97 from z."""
    rows = detectable({"a": 1.5, "b": 1.5, "c": 1.5, "d": 1.5}, 1, dict(zip("abcd", "FFBB", strict=True)), 10000, 0)
    mean = rows[-1]
    assert mean.name == STUDY_MEAN and mean.mde is None
    assert mean.note == (
        "not testable: 2 clinical groups (B, F); the Δm test, a wild cluster bootstrap over clinical groups, needs ≥ 3"
    )
    lone = detectable({"a": 1.0, "b": 1.0}, 3, {"a": "F", "b": "F"}, 10000, 0)[-1]
    assert lone.note.startswith("not testable: 1 clinical group (F);")


def test_each_set_of_tasks_a_dm_averages_gets_its_row() -> None:
    """A task at chance is in no study mean's row and its own row has a note, not a number (audit: "Detectable Δ
    766.496" for a task compare leaves out of every test); CG, leaving its one-task group out too, gets a Δm row of
    its own, and that task's row keeps its number, noted."""
    groups = {"a": "G1", "b": "G2", "c": "G3", "e": "G4"}
    sds = {"a": 2.0, "b": 1.0, "c": 3.0, "e": 1.0}
    left = {"AU": {}, "CG": {"e": "trained alone"}}
    by = {r.name: r for r in detectable(sds, 3, groups, 10000, 0, left_out=left, chance={"c"})}
    assert by[f"{STUDY_MEAN}, AU"].sd == pytest.approx(math.sqrt(2 * (4 + 1 + 1) / 3) / 3)
    assert "over 3 tasks in 3 clinical groups" in by[f"{STUDY_MEAN}, AU"].note
    assert by[f"{STUDY_MEAN}, CG"].mde is None and "2 clinical groups (G1, G2)" in by[f"{STUDY_MEAN}, CG"].note
    assert (by["c"].sd, by["c"].mde, by["c"].note) == (3.0, None, AT_CHANCE)
    d = standardised_mde(3)
    assert d is not None and by["e"].mde == pytest.approx(d) and by["e"].note == "trained alone: not in the Δm of CG"


def test_a_task_without_seed_spread_has_a_note_not_a_detectable_delta_of_0() -> None:
    """Audit: a task at AUC 1.000 in every job printed "sd 0.000, Detectable Δ 0.000", which reads as "any effect is
    detectable". Its row says why it has none; it stays in Δm (compare keeps it), adding no noise; a Δm of such tasks
    only has no detectable size either."""
    groups = {"a": "G1", "b": "G2", "z": "G3"}
    by = {r.name: r for r in detectable({"a": 2.0, "b": 1.0, "z": 0.0}, 3, groups, 10000, 0)}
    assert (by["z"].sd, by["z"].mde, by["z"].note) == (0.0, None, NO_SPREAD)
    mean = by[STUDY_MEAN]
    assert mean.sd == pytest.approx(math.sqrt(2 * (4 + 1) / 3) / 3) and "over 3 tasks in 3 clinical groups" in mean.note
    assert mean.mde == detectable_mean(
        [math.sqrt(2 / 3) * s for s in (2.0, 1.0, 0.0)], ["G1", "G2", "G3"], 10000, 0, 0.05, 0.8
    )
    flat = detectable(dict.fromkeys("abz", 0.0), 3, groups, 10000, 0)[-1]
    assert flat.mde is None and flat.note == (
        "over 3 tasks in 3 clinical groups: none of them has spread over seeds, so no detectable Δm follows"
    )


def _pilot(root: Path) -> Path:
    """A 2-seed pilot's run store: my_cls at AUC 1.000 in every job, my_lesion's TS at chance (AUC 0.45, 0.55),
    other with spread; and its spec."""
    vals = {
        "my_cls": {"TS": (1.0, 1.0), "AU": (1.0, 1.0)},
        "my_lesion": {"TS": (0.45, 0.55), "AU": (0.6, 0.4)},
        "other": {"TS": (0.80, 0.84), "AU": (0.82, 0.88)},
    }
    groups = {"my_cls": "Breast", "my_lesion": "Breast", "other": "Lung"}
    rows = [
        Row("pilot", f"{p}-{t}-{s}", p, groups[t], s, 1.0, t, "classification", "AUC", v, True, 100.0)
        for t, per in vals.items()
        for p, seeds in per.items()
        for s, v in enumerate(seeds)
    ]
    (root / "runs" / "pilot").mkdir(parents=True)
    write_results(rows, root / "runs" / "pilot" / "results.csv")
    spec = root / "s.yaml"
    spec.write_text(
        "name: pilot\noutput_root: " + str(root / "runs") + "\nseeds: [0, 1]\nparadigms: [TS, AU]\n"
        "data: {synthetic: {seed: 0}}\nmodel: {backbone: dinov3_test, image_size: 64}\ntasks:\n"
        + "".join(f"  - {{id: {t}, type: classification, num_classes: 2, group: {g}}}\n" for t, g in groups.items())
    )
    return spec


def test_plan_power_on_a_pilot_notes_a_task_at_ceiling_and_one_at_chance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg plan --power` on a pilot: the task at chance by compare's own check (the one its summary names) and
    the task without seed spread get notes, not 766.496 and 0.000; the other keeps d·sd; the report's power table
    says the same."""
    spec = _pilot(tmp_path)
    comp = compare(load_input(tmp_path / "runs" / "pilot", None))
    assert comp.chance[1.0] == ("my_lesion",)
    code, out = run_cli(["plan", str(spec), "--power", "--json"], monkeypatch, capsys)
    assert code == 0, out
    rows = {r["Task"]: r for r in json.loads(out)["rows"]}
    assert rows["my_cls"]["sd of a seed's Δ"] == 0.0
    assert (rows["my_cls"]["Detectable Δ"], rows["my_cls"]["Note"]) == (None, NO_SPREAD)
    assert (rows["my_lesion"]["Detectable Δ"], rows["my_lesion"]["Note"]) == (None, AT_CHANCE)
    sd = seed_sd(comp, 1.0)["other"]
    assert sd == pytest.approx(100 / 0.82 * math.sqrt((0.02**2 * 2 + 0.03**2 * 2) / 2))  # % of TS's mean
    d = standardised_mde(2)
    assert d is not None and rows["other"]["Detectable Δ"] == pytest.approx(d * sd)
    # Δm over my_cls and other (2 groups: not testable), my_lesion left out
    assert rows[STUDY_MEAN]["sd of a seed's Δ"] == pytest.approx(math.sqrt(sd**2) / 2)
    code, out = run_cli(["plan", str(spec), "--power"], monkeypatch, capsys)
    assert code == 0 and "766" not in out and "baseline at chance: compare leaves the task out" in out
    table = next(t for t in all_tables(analyse(load_input(tmp_path / "runs" / "pilot", None))) if t.name == "power")
    assert [(r[0], r[3], r[4]) for r in table.rows[:2]] == [("my_cls", None, NO_SPREAD), ("my_lesion", None, AT_CHANCE)]


def _seeded(tmp_path: Path) -> Path:
    vals = {"TS": {"a": (0.50, 0.52, 0.48), "b": (0.70, 0.70, 0.70)}, "AU": {"a": (0.55, 0.61, 0.58), "b": (0.7,)}}
    rows = []
    for p, per in vals.items():
        for t, seeds in per.items():
            for s, v in enumerate(seeds):
                rows.append(Row("s", f"{p}-{t}-{s}", p, "G", s, 1.0, t, "segmentation", "DSC", v, True, 100.0))
    write_results(rows, tmp_path / "r.csv")
    return tmp_path / "r.csv"


def test_seed_spread_is_pooled_over_paradigms_on_the_scale(tmp_path: Path) -> None:
    comp = compare(load_input(None, _seeded(tmp_path)))
    pooled = math.sqrt((2 * ss.tvar([0.50, 0.52, 0.48]) + 2 * ss.tvar([0.55, 0.61, 0.58])) / 4)
    sds = seed_sd(comp, 1.0)
    assert sds["a"] == pytest.approx(100 / 0.5 * pooled)  # relative: % of the baseline mean
    assert sds["b"] == pytest.approx(0.0)  # TS ran 3 identical seeds: sd 0 with 2 df
    table = next(t for t in all_tables(analyse(load_input(None, _seeded(tmp_path)))) if t.name == "power")
    row = next(r for r in table.rows if r[0] == "a")
    assert row[3] == pytest.approx(sds["a"] * standardised_mde(3))


def test_plan_power_from_a_given_spread_or_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: p\noutput_root: " + str(tmp_path / "runs") + "\nseeds: [0, 1, 2]\ndata: {synthetic: {seed: 0}}\n"
        "model: {backbone: dinov3_test, image_size: 64}\n"
        "tasks:\n  - {id: seg_a, type: segmentation, num_classes: 2, group: G}\n"
        "  - {id: cls_b, type: classification, num_classes: 3, group: G}\n"
    )
    code, out = run_cli(["plan", str(spec), "--power", "--seed-sd", "2"], monkeypatch, capsys)
    assert code == 0, out
    d = standardised_mde(3)
    assert d is not None and f"{2 * d:.3f}" in out and "study mean (Δm)" in out
    assert "not testable: 1 clinical group (G); the Δm test" in " ".join(out.split())
    code, out = run_cli(["plan", str(spec), "--power"], monkeypatch, capsys)
    assert code == 2 and "--seed-sd" in out and "Traceback" not in out
    code, out = run_cli(["plan", str(spec), "--power", "--seed-sd", "2", "--json"], monkeypatch, capsys)
    table = json.loads(out)
    assert code == 0 and table["rows"][-1]["Task"] == "study mean (Δm)" and table["rows"][0]["Detectable Δ"] > 0
    assert table["rows"][-1]["Detectable Δ"] is None
    for bad in ("0", "inf", "nan", "-1"):
        code, out = run_cli(["plan", str(spec), "--power", "--seed-sd", bad], monkeypatch, capsys)
        assert code == 2 and f"--seed-sd {bad}: expected a finite sd > 0" in out, (bad, out)


def test_plan_power_sizes_each_paradigms_dm_on_its_clinical_groups(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo: CG's Δm leaves the one-task Cardiac group out, so it has 3 clusters where AU's has 4, and needs a
    larger Δm; the AG note says its own one-task groups are not known yet."""
    code, out = run_cli(
        ["plan", str(REPO / "studies/demo.yaml"), "--power", "--seed-sd", "1.5", "--json"], monkeypatch, capsys
    )
    table = json.loads(out)
    rows = {r["Task"]: r for r in table["rows"]}
    cg, au = rows["study mean (Δm), CG, CGD"], rows["study mean (Δm), AU, AG, TSM, AUD"]
    assert code == 0 and "8 tasks in 3 clinical groups" in cg["Note"] and "9 tasks in 4 clinical groups" in au["Note"]
    assert cg["Detectable Δ"] > 2 * au["Detectable Δ"] > 2 * 2.8 * au["sd of a seed's Δ"]
    assert rows["cardiac_chambers"]["Note"].endswith("trained alone: not in the Δm of CG, CGD")
    assert any(n.startswith("AG: its Δm also leaves out the tasks it trains alone") for n in table["notes"])
