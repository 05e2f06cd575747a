"""The smallest detectable Δ at the planned seeds (issue 25.5): against the noncentral t by hand, the pooled seed
spread, the study mean, the report's table and `usagg plan --power`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as ss

from tests.cli_run import run_cli
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


def test_study_mean_by_hand() -> None:
    rows = detectable({"a": 2.0, "b": 1.0, "c": 3.0}, 3)
    by = {r.name: r for r in rows}
    d = standardised_mde(3)
    assert d is not None and by["a"].mde == pytest.approx(2.0 * d)
    se = math.sqrt(2 * (4 + 1 + 9) / 3) / 3
    assert by[STUDY_MEAN].sd == pytest.approx(se)
    assert by[STUDY_MEAN].mde == pytest.approx((ss.norm.ppf(0.975) + ss.norm.ppf(0.8)) * se)
    one = {r.name: r for r in detectable({"a": 2.0}, 1)}
    assert one["a"].mde is None and "no df" in one["a"].note


def test_the_study_mean_covers_the_tasks_dm_averages() -> None:
    """A task Δm leaves out (at chance) keeps its own row, noted, but is not in the study mean's row."""
    by = {r.name: r for r in detectable({"a": 2.0, "b": 1.0, "c": 3.0}, 3, not_in_mean={"c": "at chance: not in Δm"})}
    assert by[STUDY_MEAN].sd == pytest.approx(math.sqrt(2 * (4 + 1) / 3) / 2)
    assert "over 2 tasks" in by[STUDY_MEAN].note and by["c"].note == "at chance: not in Δm" and by["c"].mde is not None


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
    se = math.sqrt(2 * 2 * 4 / 3) / 2
    assert f"{(ss.norm.ppf(0.975) + ss.norm.ppf(0.8)) * se:.3f}" in out
    code, out = run_cli(["plan", str(spec), "--power"], monkeypatch, capsys)
    assert code == 2 and "--seed-sd" in out and "Traceback" not in out
    code, out = run_cli(["plan", str(spec), "--power", "--seed-sd", "2", "--json"], monkeypatch, capsys)
    table = json.loads(out)
    assert code == 0 and table["rows"][-1]["Task"] == "study mean (Δm)" and table["rows"][0]["Detectable Δ"] > 0
    for bad in ("0", "inf", "nan", "-1"):
        code, out = run_cli(["plan", str(spec), "--power", "--seed-sd", bad], monkeypatch, capsys)
        assert code == 2 and f"--seed-sd {bad}: expected a finite sd > 0" in out, (bad, out)
