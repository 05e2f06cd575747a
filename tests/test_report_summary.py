"""The report's summary lines: Δm per paradigm, with no interval numbers where 3 clusters make the interval
uninformative by construction (the statistics table and the headline keep them, with the note)."""

from __future__ import annotations

from pathlib import Path

from usagg.analysis.cluster_inference import FEW_CLUSTERS, MEAN_DELTA
from usagg.analysis.digits import significant
from usagg.analysis.inputs import load_input
from usagg.analysis.render import render
from usagg.analysis.report import UNINFORMATIVE, write_report
from usagg.analysis.summary import analyse
from usagg.analysis.tables import stats_table

DEMO = Path(__file__).parent / "data" / "demo_results.csv"


def test_three_clusters_give_the_summary_a_statement_not_an_interval(tmp_path: Path) -> None:
    """The demo's CG and CGD leave the one-task Cardiac group out: 3 clusters, CG's interval −177 to +143."""
    a = analyse(load_input(None, DEMO))
    by = {s.paradigm: s for s in a.stats if s.name == MEAN_DELTA}
    cg, au = by["CG"], by["AU"]
    assert cg.note == FEW_CLUSTERS[3] and cg.ci is not None and cg.ci[0] < -170 and cg.ci[1] > 140
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- **CG**: Δm")]
    assert line.startswith(f"- **CG**: Δm {cg.value:+.1f} % ({UNINFORMATIVE}), p = {cg.p:.2g}, Holm (primary) ")
    assert "177" not in line and "143" not in line and "wide by construction" not in line
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- **CGD**: Δm")]
    assert f"({UNINFORMATIVE})" in line and ", Holm" not in line  # exploratory: no p in the summary
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- **AU**: Δm")]  # 4 clusters: the interval stays
    assert line.startswith(f"- **AU**: Δm {au.value:+.1f} % (95 % CI -12.3 to +32.0; {FEW_CLUSTERS[4]}), p = 0.71")
    # the numbers stay where the method is read: the headline and the statistics table, beside the note
    assert f"Δm = {cg.value:+.1f} % (95 % CI -177 to +143; {FEW_CLUSTERS[3]})" in md  # the table's: was -176.5
    (row,) = [r for r in stats_table(a.stats, a.comp).rows if r[0] == "CG" and r[2] == MEAN_DELTA]
    assert str(row[4]).startswith("95 % CI [") and FEW_CLUSTERS[3] in str(row[4])


def test_the_headline_says_the_mixed_models_intervals_with_the_statistics_tables_digits(tmp_path: Path) -> None:
    """The headline printed CG's slope '+57.9 (95 % CI +10.3 to +105.5)' where the statistics table shows [+10.3,
    +106]: one interval, two spellings."""
    a = analyse(load_input(None, DEMO))
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    table = render(stats_table(a.stats, a.comp), "table")
    fitted = [s for s in a.stats if s.name.startswith("mixed model") and s.ci and s.value is not None]
    assert len(fitted) > 6  # the slopes and their interactions
    for s in fitted:
        assert s.ci is not None and s.value is not None
        lo, hi = (significant(v, sign=True) for v in s.ci)
        assert f"95 % CI [{lo}, {hi}]" in table
        assert f"{significant(s.value, sign=True)} pp per doubling of n_train (95 % CI {lo} to {hi}, p = " in md
