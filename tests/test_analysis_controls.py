"""The controls TSM and AUD split Δ into aggregation and MoE parts; per-task Δ intervals from seeds; steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as ss

from usagg.analysis.controls import control_of, controls, splits, task_parts
from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.results import Row, write_results
from usagg.analysis.tables import budget_table, delta_long_table
from usagg.analysis.uncertainty import SEEDS, seed_interval, shown_interval, task_uncertainty

# one group of two tasks (a, b) and a one-task group (c); DSC of every paradigm, TS = 0.5
VALUES = {
    "TS": {"a": 0.5, "b": 0.5, "c": 0.5},
    "CG": {"a": 0.6, "b": 0.45, "c": 0.52},
    "AU": {"a": 0.55, "b": 0.6, "c": 0.4},
    "TSM": {"a": 0.51, "b": 0.49, "c": 0.52},
    "AUD": {"a": 0.56, "b": 0.57, "c": 0.45},
}
GROUP = {"a": "G", "b": "G", "c": "H"}


def _table(tmp_path: Path, paradigms: tuple[str, ...] = tuple(VALUES)) -> Path:
    rows = []
    for p in paradigms:
        for t, v in VALUES[p].items():
            rows.append(Row("s", f"{p}-{t}", p, GROUP[t], 0, 1.0, t, "segmentation", "DSC", v, True, 100.0))
    write_results(rows, tmp_path / "r.csv")
    return tmp_path / "r.csv"


def test_controls_pair_each_paradigm_with_the_factor_it_isolates(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path)))
    assert [(c.paradigm, c.control, c.measures) for c in controls(comp)] == [
        ("CG", "TSM", "MoE"),
        ("AU", "AUD", "aggregation"),
    ]
    assert control_of(comp, "TSM") is None and control_of(comp, "AUD") is None  # one factor each: no split
    without = compare(load_input(None, _table(tmp_path, ("TS", "CG", "AU"))))
    assert controls(without) == []
    as_base = compare(load_input(None, _table(tmp_path)), baseline="AU")
    ts = control_of(as_base, "TS")  # against AU, TSM differs from AU in scope only: it measures aggregation
    assert ts is not None and (ts.control, ts.measures) == ("TSM", "aggregation")


def test_parts_add_up_by_construction(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path)))
    cg, au = controls(comp)
    parts = task_parts(comp, 1.0, cg)
    assert set(parts) == {"a", "b"}  # c is a one-task group: left out of CG
    total, agg, moe = parts["a"]  # CG +20 %, TSM +2 %: MoE 2 pp, aggregation 18 pp
    assert (total, agg, moe) == (pytest.approx(20.0), pytest.approx(18.0), pytest.approx(2.0))
    total, agg, moe = task_parts(comp, 1.0, au)["c"]  # AU −20 %, AUD −10 %: aggregation −10 pp, MoE −10 pp
    assert (total, agg, moe) == (pytest.approx(-20.0), pytest.approx(-10.0), pytest.approx(-10.0))
    for ctl in (cg, au):
        for sp in splits(comp, 1.0, ctl):
            assert sp.total == pytest.approx(sp.aggregation + sp.moe)
    (g, allcg) = splits(comp, 1.0, cg)
    assert (g.name, g.n, allcg.level, allcg.n) == ("G", 2, "all", 2)
    assert allcg.moe == pytest.approx((2 - 2) / 2) and allcg.total == pytest.approx((20 - 10) / 2)


def _seeded(tmp_path: Path) -> Path:
    rows = []
    for p, vals in (("TS", (0.50, 0.52, 0.48)), ("AU", (0.55, 0.60, 0.56))):
        for s, v in enumerate(vals):
            steps = 100.0 if p == "TS" else 250.0
            rows.append(Row("s", f"{p}-{s}", p, "G", s, 1.0, "a", "segmentation", "DSC", v, True, 100.0, steps))
    write_results(rows, tmp_path / "s.csv")
    return tmp_path / "s.csv"


def test_seed_interval_by_hand(tmp_path: Path) -> None:
    comp = compare(load_input(None, _seeded(tmp_path)))
    st = seed_interval(comp, 1.0, "a", "AU")
    assert st is not None and st.name == SEEDS and st.n == 3
    seeds = np.array([0.55, 0.60, 0.56]) / 0.5 * 100 - 100  # Δ of each AU seed against TS's seed mean 0.50
    assert st.value == pytest.approx(seeds.mean()) == pytest.approx(comp.deltas[(1.0, "a", "AU")].value)
    assert dict(st.effects)["sd"] == pytest.approx(seeds.std(ddof=1))
    sp, sb = np.std([0.55, 0.60, 0.56], ddof=1), np.std([0.50, 0.52, 0.48], ddof=1)
    va, vb = (100 / 0.5 * sp) ** 2 / 3, (100 / 0.5 * (0.57 / 0.5) * sb) ** 2 / 3
    se, df = math.sqrt(va + vb), (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = ss.t.ppf(0.975, df) * se
    assert st.ci == (pytest.approx(st.value - half), pytest.approx(st.value + half))
    assert shown_interval([st], 1.0, "a", "AU")[2] == "seeds (n=3, t)"


def test_csv_carries_the_interval_and_the_steps_ratio(tmp_path: Path) -> None:
    inp = load_input(None, _seeded(tmp_path))
    comp = compare(inp)
    stats = task_uncertainty(inp, comp)
    table = delta_long_table(comp, stats)
    row = dict(zip(table.columns, next(r for r in table.rows if r[7] == "AU"), strict=True))
    assert (row["ci_low"], row["ci_high"]) == stats[0].ci and row["ci_source"] == "seeds (n=3, t)"
    assert (row["steps"], row["steps_ratio"], row["in_aggregates"]) == (250.0, 2.5, "true")
    ts = dict(zip(table.columns, next(r for r in table.rows if r[7] == "TS"), strict=True))
    assert ts["ci_low"] is None and ts["ci_source"] == "" and ts["steps_ratio"] == 1.0
    budget = budget_table(comp, 1.0)
    assert budget.columns[-3:] == ["AU steps", "AU/TS", "ΔAU %"] and budget.rows[0][-2] == 2.5


def test_steps_column_may_be_missing_in_older_tables(tmp_path: Path) -> None:
    path = _seeded(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")  # drop the last column, steps
    comp = compare(load_input(None, path))
    assert comp.steps == {} and comp.deltas[(1.0, "a", "AU")].value is not None


def test_each_split_part_gets_the_2x2_interval_and_a_collapsed_control_is_named_beside_it(tmp_path: Path) -> None:
    """The audit: AG's headline split (aggregation +13.5 pp, MoE −19.0 pp) had no interval and rested on TSM's
    collapsed breast_lesion run. Each part over all tasks now carries the wild cluster interval of the 2x2 effects
    over its per-task parts (clinical groups as clusters, no p), the group rows say descriptive, and the collapsed
    control run is named beside the split with the parts over the tasks without it, by hand here."""
    import dataclasses

    from usagg.analysis.cluster_inference import wild_cluster_mean
    from usagg.analysis.controls import split_stat_name, split_stats
    from usagg.analysis.digits import significant
    from usagg.analysis.render import render
    from usagg.analysis.report import _headline
    from usagg.analysis.simulate import load_tasks, simulate_rows
    from usagg.analysis.summary import analyse
    from usagg.analysis.tables import split_table

    tasks = [t for t in load_tasks(Path(__file__).parent / "data" / "fmc_uia_tasks.yaml") if t["type"] != "regression"]
    rows = simulate_rows(tasks, paradigms=("TS", "AU", "AUD", "TSM"), seeds=(0,), study="split")
    victim = next(r for r in rows if r.paradigm == "TSM" and r.metric == "DSC")  # its head predicts nothing
    rows = [dataclasses.replace(r, value=0.0) if r is victim else r for r in rows]
    write_results(rows, tmp_path / "r.csv")
    inp = load_input(None, tmp_path / "r.csv")
    comp = compare(inp)
    (au,) = controls(comp)
    assert (au.paradigm, au.control) == ("AU", "AUD")
    parts = task_parts(comp, 1.0, au)
    clusters = [comp.info(t).group for t in parts]
    stats = {s.name: s for s in split_stats(comp, 500, 0)}
    for i, part in enumerate(("aggregation", "MoE"), start=1):
        own = wild_cluster_mean([v[i] for v in parts.values()], clusters, 500, 0)
        s = stats[split_stat_name(part)]
        assert s.p is None and s.ci is not None and s.ci == own.ci and own.clusters >= 4
        assert s.value == pytest.approx(np.mean([v[i] for v in parts.values()]))
    a = analyse(inp)
    table = split_table(comp, 1.0, [au], a.stats)
    whole = next(r for r in table.rows if r[2] == "all")
    agg = next(s for s in a.stats if s.name == split_stat_name("aggregation") and s.paradigm == "AU")
    assert agg.ci is not None and whole[8:10] == list(agg.ci)
    assert all(r[8:12] == [None] * 4 and r[12] == "descriptive" for r in table.rows if r[2] == "group")
    shown = next(ln for ln in render(table, "table").splitlines() if ln.startswith("AU ") and " all " in ln)
    ends = " ".join(significant(v) for v in whole[8:12])  # as the 2x2 table: -45.080 beside 34.3 before
    assert f" {ends}" in " ".join(shown.split()), shown
    line = next(x for x in _headline(a) if x.startswith("**AU split**"))
    lo, hi = (significant(v, sign=True) for v in agg.ci)  # the table's digits: it printed -2.0 beside -2.03
    assert f"aggregation {whole[6]:+.1f} pp (95 % CI {lo} to {hi})" in line
    assert "collapsed" not in line  # AU's split holds no TSM run
    # AUD collapsing instead: named beside AU's split, with the parts without its task by hand
    rows = [dataclasses.replace(r, value=0.0) if (r.paradigm, r.task, r.metric) == ("AUD", victim.task, "DSC")
            else r for r in rows]  # fmt: skip
    write_results(rows, tmp_path / "r2.csv")
    comp = compare(load_input(None, tmp_path / "r2.csv"))
    rest = [v for t, v in task_parts(comp, 1.0, au).items() if t != victim.task]
    (note,) = [n for n in split_table(comp, 1.0, [au]).notes if n.startswith("AU split: collapsed run")]
    assert f"AUD {victim.task} seed 0 (DSC 0.000)" in note
    assert f"aggregation {np.mean([v[1] for v in rest]):+.1f} pp, MoE {np.mean([v[2] for v in rest]):+.1f} pp" in note
