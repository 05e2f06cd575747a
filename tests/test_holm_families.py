"""The primary (confirmatory) Holm family is Δm of analysis.primary's paradigms at the full data; every other p is
exploratory, Holm-adjusted apart (usagg/analysis/families.py), and the table and report say which is which."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagg.analysis.cluster_inference import MEAN_DELTA
from usagg.analysis.delta import compare
from usagg.analysis.families import family_lines, holm_families, primary_paradigms
from usagg.analysis.inputs import load_input
from usagg.analysis.stats import holm
from usagg.analysis.summary import Analysis, analyse
from usagg.analysis.tables import stats_table

DEMO = Path(__file__).parent / "data" / "demo_results.csv"


@pytest.fixture(scope="module")
def demo() -> Analysis:
    return analyse(load_input(None, DEMO))


def test_the_default_primary_family_is_the_studys_question(demo: Analysis) -> None:
    """CG and AU against TS: two tests, Holm over two, so the smaller p is doubled; the 29 others apart."""
    tested = [s for s in demo.stats if s.p is not None]
    primary = [s for s in tested if s.family == "primary"]
    assert [(s.name, s.paradigm, s.fraction) for s in primary] == [(MEAN_DELTA, "CG", 1.0), (MEAN_DELTA, "AU", 1.0)]
    assert [s.p_holm for s in primary] == pytest.approx(holm([s.p for s in primary]))
    by = {s.paradigm: s for s in primary}
    assert by["CG"].p == pytest.approx(0.38, abs=0.005) and by["AU"].p == pytest.approx(0.713, abs=0.005)
    assert by["CG"].p_holm == pytest.approx(2 * by["CG"].p) and by["AU"].p_holm == pytest.approx(by["CG"].p_holm)
    rest = [s for s in tested if s.family == "exploratory"]
    assert len(rest) == 29 and [s.p_holm for s in rest] == pytest.approx(holm([s.p for s in rest]))
    # AG's Δm is a Δm, but not the study's question: exploratory, adjusted over 29 tests, not 2
    (ag,) = [s for s in rest if s.name == MEAN_DELTA and s.paradigm == "AG"]
    assert ag.p is not None and ag.p_holm is not None and ag.p_holm >= min(1.0, ag.p * 2)


def test_a_declared_primary_family_replaces_the_default(demo: Analysis) -> None:
    stats = holm_families(demo.stats, demo.comp, ["AU"])
    (au,) = [s for s in stats if s.family == "primary"]
    assert (au.paradigm, au.name) == ("AU", MEAN_DELTA) and au.p_holm == pytest.approx(au.p)  # a family of one
    cg = next(s for s in stats if s.name == MEAN_DELTA and s.paradigm == "CG")
    assert cg.family == "exploratory" and cg.p is not None and cg.p_holm is not None and cg.p_holm > cg.p
    lines = family_lines(stats, demo.comp, ["AU"])
    assert lines[0] == (
        "Primary (confirmatory): Δm of AU versus TS at fraction 1 (the study's full data), the wild cluster test "
        "(analysis.primary); Holm over this one test."
    )
    assert lines[1].startswith("Exploratory: the other 30 tests") and "other fractions" not in lines[1]  # one fraction


def test_each_family_says_when_none_of_its_tests_can_reach_alpha(demo: Analysis) -> None:
    """CG and CGD leave the demo's one-task group out: 3 clusters, a floor of 6/216 = 0.028 each; Holm over the
    two doubles it to 0.056, past 0.05 whatever the data; the exploratory family holds Wald tests (no floor)."""
    declared = ["CG", "CGD", "XX"]
    lines = family_lines(holm_families(demo.stats, demo.comp, declared), demo.comp, declared)
    assert "the wild cluster test (analysis.primary; XX named there but without a Δ here)" in lines[0]
    assert [ln for ln in lines if "can reach" in ln] == [
        "With 3 clusters (clinical groups) in each test, no test of the primary family can reach 0.05 after Holm's "
        "adjustment: the smallest p any of its 2 tests can attain is 0.028, and Holm multiplies the smallest by 2 "
        "(0.056); 'Holm 1' is not 'no effect'."
    ]
    assert not [ln for ln in family_lines(demo.stats, demo.comp, None) if "can reach" in ln]  # 2 × 0.0046 < 0.05


def test_the_default_without_cg_or_au_is_every_compared_paradigm(tmp_path: Path) -> None:
    rows = DEMO.read_text().splitlines()
    kept = [rows[0], *(r for r in rows[1:] if r.split(",")[2] in ("TS", "AG", "TSM"))]
    (tmp_path / "r.csv").write_text("\n".join(kept) + "\n")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    assert primary_paradigms(None, comp) == ["AG", "TSM"]
    assert primary_paradigms(["TSM", "XX"], comp) == ["TSM"]


def test_the_table_and_the_report_name_each_tests_family(demo: Analysis, tmp_path: Path) -> None:
    from usagg.analysis.report import write_report

    table = stats_table(demo.stats, demo.comp)
    family = table.columns.index("Family")
    assert table.columns[family - 1] == "p (Holm)"
    assert {r[family] for r in table.rows if r[2] == MEAN_DELTA and r[0] in ("CG", "AU")} == {"primary"}
    assert {r[family] for r in table.rows if r[2] != MEAN_DELTA and r[5] != "—"} == {"exploratory"}
    assert {r[family] for r in table.rows if r[5] == "—"} == {"—"}
    write_report(demo, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    holm_lines = [ln for ln in md.splitlines() if ln.startswith("- **Holm family**")]
    assert holm_lines[0].startswith(
        "- **Holm family**: Primary (confirmatory): Δm of CG and AU versus TS at fraction 1 (the study's full data)"
    )
    assert holm_lines[1].startswith("- **Holm family**: Exploratory: the other 29 tests")
    cg = next(s for s in demo.stats if s.name == MEAN_DELTA and s.paradigm == "CG")
    assert f"p = {cg.p:.2g}, Holm (primary) {cg.p_holm:.2g}" in md
    assert "Holm (exploratory) " in md


def test_a_primary_family_without_a_p_says_so(tmp_path: Path) -> None:
    """Two clinical groups are too few clusters for Δm's test: the primary family is empty, and the report says so
    rather than leaving the reader to look for it."""
    rows = DEMO.read_text().splitlines()
    kept = [rows[0], *(r for r in rows[1:] if r.split(",")[3] in ("Fetal", "Thyroid"))]
    (tmp_path / "r.csv").write_text("\n".join(kept) + "\n")
    a = analyse(load_input(None, tmp_path / "r.csv"))
    assert not [s for s in a.stats if s.family == "primary"]
    (cg,) = [s for s in a.stats if s.name == MEAN_DELTA and s.paradigm == "CG"]
    assert cg.p is None and cg.note == "2 clusters: need ≥ 3"
    lines = family_lines(a.stats, a.comp, None)
    assert lines[0] == (
        "Primary (confirmatory): no test: Δm of CG and AU versus TS at fraction 1 (the study's full data) has no p "
        "(the default, the study's own question: does aggregating tasks change performance against TS; "
        "analysis.primary can declare others)."
    )
    assert len(lines) == 1 and not [s for s in a.stats if s.p is not None]  # nor has any other test: no second line
