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
from usagg.analysis.power import STUDY_MEAN, detectable, seed_sd, standardised_mde
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
    """A task Δm leaves out (at chance) keeps its own row, noted, but is not in the study mean's row; CG, leaving
    its one-task group out too, gets a row of its own."""
    groups = {"a": "G1", "b": "G2", "c": "G3", "e": "G4"}
    sds = {"a": 2.0, "b": 1.0, "c": 3.0, "e": 1.0}
    left = {"AU": {"c": "at chance"}, "CG": {"c": "at chance", "e": "trained alone"}}
    by = {r.name: r for r in detectable(sds, 3, groups, 10000, 0, left_out=left)}
    assert by[f"{STUDY_MEAN}, AU"].sd == pytest.approx(math.sqrt(2 * (4 + 1 + 1) / 3) / 3)
    assert "over 3 tasks in 3 clinical groups" in by[f"{STUDY_MEAN}, AU"].note
    assert by[f"{STUDY_MEAN}, CG"].mde is None and "2 clinical groups (G1, G2)" in by[f"{STUDY_MEAN}, CG"].note
    assert by["c"].note == "at chance: not in Δm" and by["c"].mde is not None
    assert by["e"].note == "trained alone: not in the Δm of CG"


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
