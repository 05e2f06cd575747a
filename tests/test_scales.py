"""analysis.scale (relative, log_ratio, headroom) and chance-level baselines (issue 25.3), against numbers by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as ss

from usagg.analysis.delta import compare, rescaled
from usagg.analysis.inputs import load_input
from usagg.analysis.render import to_markdown
from usagg.analysis.results import Row, write_results
from usagg.analysis.scales import change, from_relative, gradient, interval_on_scale, on_scale
from usagg.analysis.summary import analyse, compare_output
from usagg.analysis.tables import delta_long_table, scale_disagreements, scales_table
from usagg.analysis.uncertainty import seed_interval
from usagg.errors import SpecError
from usagg.spec.load import study_from_mapping
from usagg.tasktypes import scale_problem


def test_each_scale_by_hand() -> None:
    assert change("relative", "DSC", 0.9, 0.8, True)[0] == pytest.approx(12.5)
    assert change("log_ratio", "DSC", 0.9, 0.8, True)[0] == pytest.approx(100 * math.log(0.9 / 0.8))
    assert change("log_ratio", "MRE", 8.0, 10.0, False)[0] == pytest.approx(-100 * math.log(0.8))
    assert change("headroom", "DSC", 0.9, 0.8, True)[0] == pytest.approx(50.0)  # 0.1 of the 0.2 left to 1
    assert change("headroom", "MRE", 8.0, 10.0, False)[0] == pytest.approx(20.0)  # 2 px of the 10 px left to 0
    assert change("headroom", "AUC", 0.9, 0.8, True)[0] == pytest.approx(50.0)
    # chance-aware: a baseline below chance has the headroom of chance (0.5 to 1), not of 0.45
    assert change("headroom", "AUC", 0.6, 0.45, True)[0] == pytest.approx(0.15 / 0.5 * 100)
    assert change("headroom", "DSC", 0.6, 0.45, True)[0] == pytest.approx(0.15 / 0.55 * 100)
    assert change("relative", "DSC", 0.5, 0.0, True) == (None, "baseline metric is 0, relative change undefined")
    assert change("log_ratio", "DSC", 0.0, 0.5, True)[0] is None
    # a loss is the share of the distance down to the worst value given away (normalised change), so a baseline near
    # the best is not divided by the little headroom left: AUC 0.998 -> 0.938 is 0.06 of the 0.498 above chance
    assert change("headroom", "DSC", 0.9, 1.0, True)[0] == pytest.approx(-10.0)
    assert change("headroom", "AUC", 0.938, 0.998, True)[0] == pytest.approx(-0.06 / 0.498 * 100)
    assert change("headroom", "DSC", 0.7, 0.8, True)[0] == pytest.approx(-12.5)  # 0.1 of the 0.8 down to 0
    assert change("headroom", "MRE", 12.0, 10.0, False)[0] == pytest.approx(-20.0)  # no worst px: as a gain's D
    assert change("headroom", "DSC", 1.0, 1.0, True)[0] == 0.0  # no change, even with nothing left to gain


@pytest.mark.parametrize("scale", ["relative", "log_ratio", "headroom"])
@pytest.mark.parametrize(
    ("metric", "m_p", "m_b", "hib"),
    [("DSC", 0.7, 0.6, True), ("MRE", 9.0, 11.0, False), ("AUC", 0.58, 0.45, True), ("AUC", 0.7, 0.8, True)],
)
def test_gradient_matches_finite_differences(scale: str, metric: str, m_p: float, m_b: float, hib: bool) -> None:
    h = 1e-6
    g = gradient(scale, metric, m_p, m_b, hib)
    assert g is not None

    def delta(p: float, b: float) -> float:
        v = change(scale, metric, p, b, hib)[0]
        assert v is not None
        return v

    dp = (delta(m_p + h, m_b) - delta(m_p - h, m_b)) / (2 * h)
    db = (delta(m_p, m_b + h) - delta(m_p, m_b - h)) / (2 * h)
    assert g == (pytest.approx(abs(dp), rel=1e-5), pytest.approx(abs(db), rel=1e-5))


def test_a_relative_interval_carries_over_to_log_ratio_only() -> None:
    assert from_relative("log_ratio", 12.5, True) == pytest.approx(100 * math.log(1.125))
    assert from_relative("log_ratio", 20.0, False) == pytest.approx(-100 * math.log(0.8))  # MRE 10 -> 8
    assert from_relative("headroom", 12.5, True) is None
    # the one mapping the test-set intervals of a Δ (an interval) and of a difference of two Δ (each draw) use
    assert interval_on_scale("log_ratio", (0.0, 12.5), True) == (0.0, pytest.approx(100 * math.log(1.125)))
    assert interval_on_scale("log_ratio", (-120.0, 12.5), True) is None  # a ratio <= 0 has no log
    assert (
        interval_on_scale("headroom", (0.0, 12.5), True) is None and interval_on_scale("relative", None, True) is None
    )
    assert math.isnan(on_scale("relative", math.nan, True)) and math.isnan(on_scale("headroom", 1.0, True))


def test_scales_that_do_not_fit_a_metric_are_named() -> None:
    assert scale_problem("log_ratio", "DSC") is None and scale_problem("headroom", "MRE") is None
    assert "MCC can be negative" in scale_problem("log_ratio", "MCC")  # type: ignore[operator]
    assert "no known" in scale_problem("log_ratio", "not_a_metric")  # type: ignore[operator]
    assert "no known best value" in scale_problem("headroom", "not_a_metric")  # type: ignore[operator]


def _spec(scale: str, metric: str | None) -> dict[str, Any]:
    cls: dict[str, Any] = {"id": "cls_b", "type": "classification", "num_classes": 3, "group": "G"}
    if metric:
        cls["metric"] = metric
    return {
        "name": "scales",
        "data": {"synthetic": {"seed": 0}},
        "model": {"backbone": "dinov3_test", "image_size": 64},
        "tasks": [{"id": "seg_a", "type": "segmentation", "num_classes": 2, "group": "G"}, cls],
        "analysis": {"scale": scale},
    }


def test_a_scale_that_does_not_fit_a_task_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"analysis.scale: log_ratio does not fit tasks\[1\] \(cls_b\).*MCC"):
        study_from_mapping(_spec("log_ratio", "MCC"), tmp_path / "s.yaml")
    assert study_from_mapping(_spec("log_ratio", None), tmp_path / "s.yaml").analysis.scale == "log_ratio"
    assert study_from_mapping(_spec("headroom", "MCC"), tmp_path / "s.yaml").analysis.scale == "headroom"


def _results(tmp_path: Path, values: dict[str, dict[str, tuple[float, ...]]], metric: dict[str, str],
             settings: str = "") -> Path:  # fmt: skip
    rows = []
    for p, per_task in values.items():
        for t, seeds in per_task.items():
            kind = "classification" if metric[t] == "AUC" else "segmentation"
            for s, v in enumerate(seeds):
                rows.append(Row("s", f"{p}-{t}-{s}", p, f"G{t}", s, 1.0, t, kind, metric[t], v, True, 100.0))
    write_results(rows, tmp_path / "r.csv")
    return tmp_path / "r.csv"


def _input(path: Path, **settings: str):  # type: ignore[no-untyped-def]
    inp = load_input(None, path)
    for k, v in settings.items():
        setattr(inp.settings, k, v)
    return inp


def test_log_ratio_delta_and_its_seed_interval_by_hand(tmp_path: Path) -> None:
    vals = {"TS": {"a": (0.50, 0.52, 0.48)}, "AU": {"a": (0.55, 0.60, 0.56)}}
    comp = compare(_input(_results(tmp_path, vals, {"a": "DSC"}), scale="log_ratio"))
    mp, mb = sum(vals["AU"]["a"]) / 3, 0.5
    assert comp.deltas[(1.0, "a", "AU")].value == pytest.approx(100 * math.log(mp / mb))
    sp, sb = ss.tstd(vals["AU"]["a"]), ss.tstd(vals["TS"]["a"])
    se = math.sqrt((100 / mp * sp) ** 2 / 3 + (100 / mb * sb) ** 2 / 3)
    terms = [(100 / mp * sp) ** 2 / 3, (100 / mb * sb) ** 2 / 3]
    df = se**4 / sum(t**2 / 2 for t in terms)
    st = seed_interval(comp, 1.0, "a", "AU")
    assert st is not None and st.ci is not None
    half = ss.t.ppf(0.975, df) * se
    assert st.ci == (pytest.approx(st.value - half), pytest.approx(st.value + half))
    seeds = comp.seed_deltas(1.0, "a", "AU")
    assert list(seeds.values()) == pytest.approx([100 * math.log(v / mb) for v in vals["AU"]["a"]])
    long = delta_long_table(comp)
    assert {r[long.columns.index("scale")] for r in long.rows} == {"log_ratio"}


def test_a_baseline_without_spread_gives_its_interval_one_df_not_a_crash(tmp_path: Path) -> None:
    """TS at AUC 1.0 on both seeds: one term of df 1, whose Welch-Satterthwaite df rounded to 0.9999999999999998
    and crashed the quantile; the interval is the t interval of df 1."""
    vals = {"TS": {"a": (1.0, 1.0)}, "AU": {"a": (0.85, 0.8)}}  # relative: Welch df was 1 − 2e-16
    for scale in ("relative", "headroom"):
        comp = compare(_input(_results(tmp_path / scale, vals, {"a": "AUC"}), scale=scale))
        for level in (0.95, 1 - 0.05 / 3, 0.9):
            st = seed_interval(comp, 1.0, "a", "AU", level)
            assert st is not None and st.ci is not None and st.value is not None
            half = (st.ci[1] - st.ci[0]) / 2
            se = abs(half / ss.t.ppf(0.5 + level / 2, 1))
            assert st.ci == (pytest.approx(st.value - half), pytest.approx(st.value + half)) and se > 0


CHANCE_VALUES = {
    "TS": {"x": (0.52, 0.49, 0.55), "y": (0.80, 0.81, 0.79), "z": (0.70, 0.71, 0.69)},
    "AU": {"x": (0.70, 0.72, 0.71), "y": (0.82, 0.83, 0.81), "z": (0.69, 0.70, 0.68)},
}
CHANCE_METRIC = {"x": "AUC", "y": "AUC", "z": "DSC"}


def test_a_baseline_at_chance_is_flagged_and_left_out(tmp_path: Path) -> None:
    path = _results(tmp_path, CHANCE_VALUES, CHANCE_METRIC)
    comp = compare(_input(path))
    # x: TS mean 0.52, sd 0.03, one-sided 95 % t bound 0.52 − 2.92·0.03/√3 is below 0.5; y is well above; z has no
    # chance level
    low = 0.52 - ss.t.ppf(0.95, 2) * ss.tstd(CHANCE_VALUES["TS"]["x"]) / math.sqrt(3)
    assert low < 0.5 and comp.chance[1.0] == ("x",)
    assert comp.delta_values(1.0, "AU")[0] == ["y", "z"]
    kept = compare(_input(path, chance_tasks="include"))
    assert kept.chance[1.0] == ("x",) and kept.delta_values(1.0, "AU")[0] == ["x", "y", "z"]
    text = compare_output(analyse(_input(path)), "table")
    assert "Not shown above chance: x" in text and "Baseline at chance" in text
    long = delta_long_table(comp)
    in_agg = {(r[1], r[7]): r[long.columns.index("in_aggregates")] for r in long.rows}
    assert in_agg[("x", "AU")] == "false" and in_agg[("y", "AU")] == "true"


def test_one_seed_at_or_below_chance_is_flagged(tmp_path: Path) -> None:
    vals = {"TS": {"x": (0.48,), "y": (0.51,)}, "AU": {"x": (0.6,), "y": (0.7,)}}
    comp = compare(_input(_results(tmp_path, vals, {"x": "AUC", "y": "AUC"})))
    assert comp.chance[1.0] == ("x",)


def test_means_that_differ_in_sign_between_scales_are_reported_side_by_side(tmp_path: Path) -> None:
    # p: DSC 0.10 -> 0.12 (relative +20 %, headroom +2.2 %: 0.02 of the 0.9 up to 1); q: DSC 0.90 -> 0.81 (relative
    # −10 %, headroom −10 %: a loss of 0.09 of the 0.9 down to 0)
    vals = {"TS": {"p": (0.10,), "q": (0.90,)}, "AU": {"p": (0.12,), "q": (0.81,)}}
    comp = compare(_input(_results(tmp_path, vals, {"p": "DSC", "q": "DSC"})))
    rel = (20.0 + (0.81 - 0.9) / 0.9 * 100) / 2
    log = (100 * math.log(1.2) + 100 * math.log(0.81 / 0.9)) / 2
    head = (0.02 / 0.9 * 100 + (-0.09) / 0.9 * 100) / 2
    table = scales_table(comp, 1.0)
    (row,) = [r for r in table.rows if r[1] == "all"]
    assert row[4:7] == [pytest.approx(rel), pytest.approx(log), pytest.approx(head)] and row[7] == "NO"
    assert rel > 0 and head < 0
    (line,) = scale_disagreements(comp, 1.0)
    assert "AU Δm differs in sign" in line and f"relative {rel:+.1f}" in line and f"headroom {head:+.1f}" in line
    assert rescaled(comp, "headroom").deltas[(1.0, "q", "AU")].value == pytest.approx(-10.0)


def test_signs_agree_only_where_every_scale_has_a_mean_over_the_same_tasks(tmp_path: Path) -> None:
    """AU's DSC of 0 on task a has a relative Δ of −100 % and a headroom Δ of −100 % but no log ratio: the log-ratio
    mean covers b, c only, so the means of group G and of all tasks are over different tasks and their signs are
    not compared (relative −26.7 against log +9.5 was a 'NO' before). CG's group H is its one task d, left out
    under CG: no mean on any scale, nothing to agree."""
    values = {
        "TS": {"a": 0.50, "b": 0.60, "c": 0.70, "d": 0.80},
        "AU": {"a": 0.00, "b": 0.66, "c": 0.77, "d": 0.88},
        "CG": {"a": 0.55, "b": 0.66, "c": 0.77, "d": 0.88},
    }
    group = {"a": "G", "b": "G", "c": "G", "d": "H"}
    rows = [
        Row("s", f"{p}-{t}", p, group[t], 0, 1.0, t, "segmentation", "DSC", v, True, 100.0)
        for p, per_task in values.items()
        for t, v in per_task.items()
    ]
    write_results(rows, tmp_path / "r.csv")
    comp = compare(_input(tmp_path / "r.csv"))
    table = scales_table(comp, 1.0)
    cells = {(r[0], r[2]): (r[3], r[4:7], r[7]) for r in table.rows}
    n, means, agree = cells[("AU", "G")]
    assert n == 3 and means == [
        pytest.approx(-80 / 3),
        pytest.approx(100 * math.log(1.1)),
        pytest.approx((-100 + 15 + 70 / 3) / 3),
    ]
    assert agree is None
    assert cells[("AU", "all tasks (Δm)")][2] is None and cells[("AU", "H")][2] == "yes"
    assert cells[("CG", "H")] == (0, [None, None, None], None)
    assert cells[("CG", "G")][2] == "yes" and cells[("CG", "all tasks (Δm)")][2] == "yes"
    assert table.notes[5] == (
        "The signs agree across scales in each of the 3 rows where they are compared. Signs agree is — in 3 rows, "
        "where a scale has no mean, or the scales' means cover different tasks (a task whose Δ is undefined on one "
        "scale is left out of that scale's mean)."
    )
    shown = [[c.strip() for c in ln.strip("|").split("|")] for ln in to_markdown(table).splitlines() if "| H " in ln]
    assert shown == [["CG", "group", "H", "0", "n/a", "n/a", "n/a", "—"],
                     ["AU", "group", "H", "1", "+10.0", "+9.5", "+40.0", "yes"]]  # fmt: skip
    assert scale_disagreements(comp, 1.0) == []  # Δm: −17.5 % relative, +9.5 log points over b, c, d only


def test_a_job_that_lost_nearly_all_of_the_baselines_skill_is_named_collapsed(tmp_path: Path) -> None:
    """DSC 0.70 -> 0.05 in one AU seed loses 93 % of the way to 0: named, with its seed; an AUC 0.80 -> 0.52 loses 93 %
    of the way to chance (0.5); a loss of 85 % (0.70 -> 0.105) is not; x, at chance under TS, is never named."""
    from usagg.analysis.delta import collapsed
    from usagg.analysis.tables import collapse_notes

    vals = {
        "TS": {"x": (0.52, 0.49, 0.55), "y": (0.80, 0.80, 0.80), "z": (0.70, 0.70, 0.70)},
        "AU": {"x": (0.30, 0.30, 0.30), "y": (0.82, 0.52, 0.81), "z": (0.05, 0.105, 0.69)},
    }
    comp = compare(_input(_results(tmp_path, vals, CHANCE_METRIC)))
    found = [(c.task, c.paradigm, c.seed, round(c.value, 3)) for c in collapsed(comp, 1.0)]
    assert found == [("y", "AU", 1, 0.52), ("z", "AU", 0, 0.05)]
    note, baseline = collapse_notes(comp)  # x's TS seed 1 at 0.49, below chance beside 0.52 and 0.55: named apart
    assert note.startswith("Collapsed: AU y seed 1 (AUC 0.520 against TS's 0.800); AU z seed 0 (DSC 0.050 against")
    assert baseline.startswith("Collapsed baseline: TS x seed 1 (AUC 0.490 against chance 0.500):")
    assert "z seed 1" not in note and "history.csv" in note
    assert "Collapsed: AU y seed 1" in compare_output(analyse(_input(_results(tmp_path, vals, CHANCE_METRIC))), "table")
    notes = collapse_notes(compare(_input(_results(tmp_path, CHANCE_VALUES, CHANCE_METRIC))))
    assert [n for n in notes if n.startswith("Collapsed:")] == []


def test_the_report_says_an_exclusion_note_once_and_refers_to_it_under_each_table(tmp_path: Path) -> None:
    """A reviewer counted the same 'At chance' paragraph six times in one report: the headline says it whole, each
    table under it refers to it; the LaTeX tables, each a file of its own, keep it whole."""
    from usagg.analysis.report import write_report

    a = analyse(_input(_results(tmp_path, CHANCE_VALUES, CHANCE_METRIC)))
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    subject = "Not shown above chance: x (TS AUC 0.520, chance 0.500; one-sided 95 % t over 3 seeds)"
    assert md.count(f"{subject}: the TS metric is not shown to beat the metric's chance level (AUC 0.5)") == 1
    assert md.count(f"- {subject} (see Headline statistics).") >= 3
    tex = (tmp_path / "rep" / "tables" / "tasks.tex").read_text()
    assert f"{subject.replace('%', chr(92) + '%')}: the TS metric is not shown to beat" in tex  # LaTeX's \%


# ----- edges a hand mutation of the code passed unseen (docs/benchmarks.md, "Mutation testing")


def test_a_negative_baseline_keeps_the_sign_of_the_change() -> None:
    """MCC runs from −1: a gain from −0.2 to +0.1 is +150 % (the relative Δ divides by |m_b|), and the delta
    method's gradient holds the same |m_b|; every other test's baseline was positive."""
    assert change("relative", "MCC", 0.1, -0.2, True)[0] == pytest.approx(150.0)
    assert change("relative", "MCC", -0.3, -0.2, True)[0] == pytest.approx(-50.0)
    assert gradient("relative", "MCC", 0.1, -0.2, True) == pytest.approx((500.0, 250.0))


def test_the_chance_check_reads_the_one_sided_95_percent_bound(tmp_path: Path) -> None:
    """c's TS lower bound is below 0.5 at one-sided 95 % and above it at 90 %; d's above at both: only c is at chance
    (a 90 % check let c into every aggregate). The question is one-sided (is TS above chance?): the two-sided
    interval's 97.5 % end held a task that beat chance in every seed out of the aggregates."""
    vals = {"TS": {"c": (0.51, 0.56, 0.61), "d": (0.58, 0.60, 0.62)}, "AU": {"c": (0.7,) * 3, "d": (0.7,) * 3}}
    comp = compare(_input(_results(tmp_path, vals, {"c": "AUC", "d": "AUC"})))
    low95, low90 = (0.56 - ss.t.ppf(q, 2) * 0.05 / math.sqrt(3) for q in (0.95, 0.90))
    assert low95 < 0.5 < low90 and comp.chance[1.0] == ("c",)


def test_a_seed_interval_over_unequal_seed_counts_is_welchs_by_hand(tmp_path: Path) -> None:
    """TS kept 2 seeds, AU 3: each side's variance over its own count, Welch-Satterthwaite df (the baseline's over
    the paradigm's count narrowed the interval by a quarter; every other fixture had equal counts)."""
    ts, au = (0.60, 0.70), (0.70, 0.72, 0.74)
    comp = compare(_input(_results(tmp_path, {"TS": {"a": ts}, "AU": {"a": au}}, {"a": "DSC"})))
    mp, mb = sum(au) / 3, sum(ts) / 2
    terms = [(100 / mb) ** 2 * ss.tvar(au) / 3, (100 * mp / mb**2) ** 2 * ss.tvar(ts) / 2]
    df = sum(terms) ** 2 / (terms[0] ** 2 / 2 + terms[1] ** 2 / 1)
    half = ss.t.ppf(0.975, df) * math.sqrt(sum(terms))
    delta = 100 * (mp - mb) / mb
    st = seed_interval(comp, 1.0, "a", "AU")
    assert st is not None and st.ci == pytest.approx((delta - half, delta + half), abs=1e-9)
    assert st.ci == pytest.approx((-80.809, 102.348), abs=1e-3)


@pytest.mark.parametrize("scale", ["relative", "log_ratio", "headroom"])
def test_a_lower_is_better_tie_is_zero_never_minus_zero(scale: str) -> None:
    """The extension audit: a lower-is-better metric equal to TS's (MRE, HD, a plug-in's MAE) printed Δ "-0.0"."""
    from usagg.analysis.tables import fmt_delta

    value, why = change(scale, "MRE", 3.5, 3.5, False)
    assert why == "" and value == 0.0 and math.copysign(1.0, value) == 1.0
    assert fmt_delta(value) == fmt_delta(-0.0) == "+0.0"
