"""A data-scale sweep's statistics across fractions: each task's least-squares slope of Δ on log10 n_train over the
fractions, averaged over the tasks with a Δ at every fraction with Δm's wild cluster interval; Δm per fraction over
the same tasks; fig_fraction drawn from them (error bars only where an interval exists, and the caption says why
not); the report's headline line. Recomputed here with numpy's polyfit and by hand from the table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from usagg.analysis.cluster_inference import wild_cluster_mean
from usagg.analysis.digits import significant
from usagg.analysis.figure_data_size import fig_fraction, fraction_series
from usagg.analysis.fraction_trend import COMMON_MEAN, FRACTION_SLOPE, POOLED, common_tasks
from usagg.analysis.inputs import AnalysisInput, load_input
from usagg.analysis.report import write_report
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.style import paper_style
from usagg.analysis.summary import Analysis, all_tables, analyse

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
#: Six tasks in four clinical groups: enough clusters for the wild cluster interval.
SIX = ("breast_lesion", "breast_2cls", "lung", "lung_2cls", "FUGC", "thyroid_nodule_det")
FRACTIONS = (0.25, 0.5, 1.0)
SLOPES = {"breast_lesion": 2.0, "breast_2cls": 6.0, "lung": 1.0, "lung_2cls": 3.0, "FUGC": 5.0,
          "thyroid_nodule_det": 4.0}  # fmt: skip


def _input(tmp_path: Path, tasks: tuple[str, ...] = SIX, ts_at: dict[tuple[str, float], float] | None = None
           ) -> AnalysisInput:  # fmt: skip
    """TS and AU over three fractions, AU's Δ of task t at fraction f set to −8 + SLOPES[t]·log10(n / n at f=1) plus
    a per-fraction wiggle, so each task's slope is near but not exactly SLOPES[t]; `ts_at` sets TS values."""
    info = [t for t in load_tasks(TASKS) if t["id"] in tasks]
    rows = simulate_rows(info, paradigms=("TS", "AU"), seeds=(0,), fractions=FRACTIONS, study="sweep")
    primary = ("DSC", "AUC", "MRE", "IoU")
    ts = {(r.task, r.fraction): r.value for r in rows if r.paradigm == "TS" and r.metric in primary}
    full = {r.task: r.n_train for r in rows if r.fraction == 1.0}
    wiggle = {0.25: 0.3, 0.5: -0.6, 1.0: 0.3}
    out = []
    for r in rows:
        if r.metric not in ("DSC", "AUC", "MRE", "IoU"):
            out.append(r)
        elif r.paradigm == "TS":
            out.append(dataclasses.replace(r, value=(ts_at or {}).get((r.task, r.fraction), r.value)))
        else:
            delta = -8 + SLOPES[r.task] * math.log10(r.n_train / full[r.task]) + wiggle[r.fraction]
            sign = 1 if r.higher_is_better else -1
            out.append(dataclasses.replace(r, value=ts[(r.task, r.fraction)] * (1 + sign * delta / 100)))
    write_results(out, tmp_path / "r.csv")
    return load_input(None, tmp_path / "r.csv")


def _slope_by_hand(a: Analysis, task: str) -> float:
    x = [math.log10(a.comp.n_train[(f, task)]) for f in FRACTIONS]
    y = [a.comp.deltas[(f, task, "AU")].value for f in FRACTIONS]
    return float(np.polyfit(x, y, 1)[0])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return analyse(_input(tmp_path_factory.mktemp("sweep")))


def test_the_slope_is_the_mean_of_the_tasks_least_squares_slopes_with_a_wild_cluster_interval(sweep: Analysis) -> None:
    (s,) = [s for s in sweep.stats if s.name == FRACTION_SLOPE]
    by_hand = {t: _slope_by_hand(sweep, t) for t in SIX}
    assert all(abs(by_hand[t] - SLOPES[t]) < 2 for t in SIX)  # the wiggle moves each a little
    assert (s.paradigm, s.fraction, s.n) == ("AU", POOLED, 6)
    assert s.value == pytest.approx(np.mean(list(by_hand.values())), rel=1e-12)
    groups = [sweep.comp.info(t).group for t in by_hand]
    ref = wild_cluster_mean(list(by_hand.values()), groups, sweep.inp.settings.bootstrap, 0)
    assert s.ci == pytest.approx(ref.ci) and s.p == pytest.approx(ref.p) and s.ci[0] > 0  # every task gains with data
    assert s.p_holm is not None and s.p_holm >= s.p  # in the Holm family


def test_the_common_means_are_the_mean_delta_at_each_fraction_and_fig_fraction_draws_them(sweep: Analysis) -> None:
    common = {s.fraction: s for s in sweep.stats if s.name == COMMON_MEAN}
    for f in FRACTIONS:
        by_hand = np.mean([sweep.comp.deltas[(f, t, "AU")].value for t in SIX])
        assert common[f].value == pytest.approx(by_hand, rel=1e-12) and common[f].p is None and common[f].ci
    assert fraction_series(sweep) == {"AU": [(f, common[f].value, common[f].ci) for f in FRACTIONS]}
    with paper_style():
        fig, caption = fig_fraction(sweep)  # type: ignore[misc]
    (bars,) = fig.axes[0].containers  # one errorbar container: AU's, with its three intervals
    assert len(bars.lines[2][0].get_segments()) == 3
    assert "Error bars (AU): 95 % wild cluster" in caption and "No error bars" not in caption
    assert "AU (6 tasks)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_a_task_without_a_delta_at_one_fraction_leaves_every_point_and_the_slope(tmp_path: Path) -> None:
    """TS breast_lesion DSC 0 at fraction 0.5 (no relative Δ there): the line and the slope are over the other five
    tasks at every fraction, so Δm does not change its tasks along the sweep; the two tables say so."""
    a = analyse(_input(tmp_path, ts_at={("breast_lesion", 0.5): 0.0}))
    kept, why = common_tasks(a.comp, "AU")
    assert kept == [t.task for t in a.comp.tasks if t.task != "breast_lesion"]
    assert list(why) == ["breast_lesion"] and why["breast_lesion"].startswith("no Δ at fraction 0.5")
    (s,) = [s for s in a.stats if s.name == FRACTION_SLOPE]
    five = [t for t in SIX if t != "breast_lesion"]
    assert s.n == 5 and s.value == pytest.approx(np.mean([_slope_by_hand(a, t) for t in five]), rel=1e-12)
    common = {st.fraction: st for st in a.stats if st.name == COMMON_MEAN}
    assert common[0.25].value == pytest.approx(np.mean([a.comp.deltas[(0.25, t, "AU")].value for t in five]))
    tables = {t.name: t for t in all_tables(a)}
    assert "left out: AU: breast_lesion (no Δ at fraction 0.5" in " ".join(tables["fractions"].notes)
    assert tables["fraction_trend"].rows[0][-1].startswith("breast_lesion (no Δ at fraction 0.5")


def test_two_clusters_draw_no_error_bar_and_the_caption_says_why(tmp_path: Path) -> None:
    a = analyse(_input(tmp_path, tasks=("breast_lesion", "breast_2cls", "lung", "lung_2cls")))
    with paper_style():
        fig, caption = fig_fraction(a)  # type: ignore[misc]
    assert not fig.axes[0].containers  # no errorbar, so no error-bar glyph in the legend either
    assert "No error bars for AU: 2 clusters: need ≥ 3" in caption and "Error bars (" not in caption
    assert "AU +" in caption and "(no interval: 2 clusters: need ≥ 3)" in caption  # the slope, without a CI


def test_the_headline_has_the_sweep_line_and_a_study_of_one_fraction_has_none(sweep: Analysis, tmp_path: Path) -> None:
    write_report(sweep, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    (s,) = [s for s in sweep.stats if s.name == FRACTION_SLOPE]
    trend = " → ".join(f"{st.value:+.1f}" for st in sweep.stats if st.name == COMMON_MEAN)
    assert f"- **Data-scale sweep, AU** (fractions 0.25, 0.5, 1): Δm {trend} % over the same 6 tasks; " in md
    assert s.value is not None and s.ci is not None
    lo, hi = (significant(v, sign=True) for v in s.ci)  # the fraction table's digits
    assert f"within-task slope {significant(s.value, sign=True)} pp per tenfold n_train (95 % CI {lo} to {hi}" in md
    one = analyse(_one_fraction(tmp_path))
    assert not [st for st in one.stats if st.name in (FRACTION_SLOPE, COMMON_MEAN)]
    write_report(one, tmp_path / "one", render=lambda *_: [])
    assert "Data-scale sweep" not in (tmp_path / "one" / "report.md").read_text()


def _one_fraction(tmp_path: Path) -> AnalysisInput:
    info = [t for t in load_tasks(TASKS) if t["id"] in SIX]
    write_results(simulate_rows(info, paradigms=("TS", "AU"), seeds=(0,), study="one"), tmp_path / "one.csv")
    return load_input(None, tmp_path / "one.csv")
