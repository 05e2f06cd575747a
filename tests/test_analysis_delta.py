"""Δ versus a baseline against hand-computed values: directions, seed averaging, zero and missing baselines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from usagg.analysis.delta import aggregates, compare, negative_transfer, relative_change
from usagg.analysis.inputs import load_input
from usagg.analysis.results import Row, write_results
from usagg.errors import UsaggError
from usagg.spec.models import AnalysisSpec


def _row(p: str, seed: int, task: str, ttype: str, metric: str, value: float, hib: bool, group: str = "G1") -> Row:
    return Row(
        "s", f"{p}-{seed}", p, group, seed, 1.0, task, ttype, metric, value, hib, 500.0 if task != "r" else 2000.0
    )


def _table(tmp_path: Path) -> Path:
    rows = [
        # segmentation, DSC higher is better: TS mean 0.7, CG mean 0.7, AU mean 0.84
        _row("TS", 0, "a", "segmentation", "DSC", 0.8, True),
        _row("TS", 1, "a", "segmentation", "DSC", 0.6, True),
        _row("CG", 0, "a", "segmentation", "DSC", 0.77, True),
        _row("CG", 1, "a", "segmentation", "DSC", 0.63, True),
        _row("AU", 0, "a", "segmentation", "DSC", 0.84, True),
        _row("AU", 1, "a", "segmentation", "DSC", 0.84, True),
        _row("TS", 0, "a", "segmentation", "HD", 9.0, False),  # a secondary metric, never primary
        # regression, MRE lower is better: TS mean 25, CG 20, AU 30
        _row("TS", 0, "r", "regression", "MRE", 20.0, False),
        _row("TS", 1, "r", "regression", "MRE", 30.0, False),
        _row("CG", 0, "r", "regression", "MRE", 20.0, False),
        _row("CG", 1, "r", "regression", "MRE", 20.0, False),
        _row("AU", 0, "r", "regression", "MRE", 30.0, False),
        # zero baseline
        _row("TS", 0, "z", "classification", "AUC", 0.0, True, "G2"),
        _row("CG", 0, "z", "classification", "AUC", 0.5, True, "G2"),
        _row("AU", 0, "z", "classification", "AUC", 0.5, True, "G2"),
        # no baseline result at all for task m
        _row("CG", 0, "m", "classification", "AUC", 0.9, True, "G2"),
        _row("AU", 0, "m", "classification", "AUC", 0.8, True, "G2"),
    ]
    path = tmp_path / "results.csv"
    write_results(rows, path)
    return path


@pytest.fixture
def comp(tmp_path: Path):
    return compare(load_input(None, _table(tmp_path)))


def test_relative_change_sign_follows_direction() -> None:
    assert relative_change(0.9, 0.8, True).value == pytest.approx(12.5)
    assert relative_change(15.6, 30.4, False).value == pytest.approx(48.684, abs=1e-3)  # the paper's MRE example
    assert relative_change(0.145, 0.713, True).value == pytest.approx(-79.66, abs=0.01)  # breast lesion CG


def test_delta_hand_computed_seeds_averaged_first(comp) -> None:
    d = {(t, p): comp.deltas[(1.0, t, p)].value for t in ("a", "r") for p in ("CG", "AU")}
    assert d[("a", "CG")] == pytest.approx(0.0)
    # seed means first: (0.84 - 0.7) / 0.7 = 20 %; averaging per-seed Δs would give 22.5 %
    assert d[("a", "AU")] == pytest.approx(20.0)
    assert d[("r", "CG")] == pytest.approx(20.0)  # lower is better: 25 -> 20 is a gain
    assert d[("r", "AU")] == pytest.approx(-20.0)
    cell = comp.cells[(1.0, "a", "TS")]
    assert (cell.mean, cell.n_seeds) == (pytest.approx(0.7), 2)
    assert cell.sd == pytest.approx(math.sqrt(0.02))
    assert comp.info("a").metric == "DSC"


def test_zero_and_missing_baseline_are_listed_not_dropped(comp) -> None:
    z = comp.deltas[(1.0, "z", "CG")]
    assert z.value is None and "baseline metric is 0" in z.reason
    m = comp.deltas[(1.0, "m", "AU")]
    assert m.value is None and "baseline TS has no AUC result" in m.reason
    listed = {(t, p) for _, t, p, _ in comp.not_available()}
    assert listed == {("z", "CG"), ("z", "AU"), ("m", "CG"), ("m", "AU")}
    (g2,) = [g for g in aggregates(comp, 1.0, "CG", "group") if g.name == "G2"]
    assert g2.mean is None and g2.n == 0 and set(g2.missing) == {"z", "m"}


def test_aggregates_and_negative_transfer(comp) -> None:
    (g1,) = [g for g in aggregates(comp, 1.0, "AU", "group") if g.name == "G1"]
    assert g1.mean == pytest.approx(0.0) and g1.n == 2  # (20 + -20) / 2
    assert "mean over seeds per task, then Δ per task, then mean over 2 tasks" in g1.order
    (allg,) = aggregates(comp, 1.0, "CG", "all")
    assert allg.mean == pytest.approx(10.0) and "2 without Δ left out" in allg.order
    regimes = {a.name: a.mean for a in aggregates(comp, 1.0, "CG", "regime")}
    assert regimes["low-data (n<1000)"] == pytest.approx(0.0)  # task a, n_train 500
    assert regimes["data-rich (n≥1000)"] == pytest.approx(20.0)  # task r, n_train 2000
    assert negative_transfer(comp, 1.0, "AU") == (1, 2)
    assert negative_transfer(comp, 1.0, "CG") == (0, 2)


def test_any_paradigm_can_be_the_baseline(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path)), baseline="CG")
    assert comp.others == ["TS", "AU"]
    assert comp.deltas[(1.0, "r", "TS")].value == pytest.approx(-25.0)  # TS 25 px vs CG 20 px
    assert comp.deltas[(1.0, "a", "AU")].value == pytest.approx(20.0)


def test_unknown_baseline_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UsaggError, match="baseline 'XX' has no results"):
        compare(load_input(None, _table(tmp_path)), baseline="XX")


def test_several_fractions_give_delta_per_fraction(tmp_path: Path) -> None:
    rows = []
    for f, ts, au in ((0.5, 0.5, 0.55), (1.0, 0.8, 0.76)):
        for p, v in (("TS", ts), ("AU", au)):
            rows.append(Row("s", p, p, "G", 0, f, "a", "segmentation", "DSC", v, True, 100 * f))
    write_results(rows, tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    assert comp.fractions == [0.5, 1.0]
    assert comp.deltas[(0.5, "a", "AU")].value == pytest.approx(10.0)
    assert comp.deltas[(1.0, "a", "AU")].value == pytest.approx(-5.0)
    assert comp.n_train[(0.5, "a")] == 50


def _grouped(tmp_path: Path, **settings: object) -> Path:
    """Three groups: G1 two tasks, G2 and G3 one task each; CG and AU Δ of +10 % on every task but g3 (−50 %)."""
    rows = []
    for task, group, n in (("a", "G1", 3000.0), ("b", "G1", 2500.0), ("c", "G2", 6000.0), ("g3", "G3", 100.0)):
        for p, v in (("TS", 0.5), ("CG", 0.55 if task != "g3" else 0.25), ("AU", 0.55)):
            rows.append(Row("s", f"{p}-{group}", p, group, 0, 1.0, task, "segmentation", "DSC", v, True, n))
    path = tmp_path / "g.csv"
    write_results(rows, path)
    if settings:
        store = tmp_path / "store"
        store.mkdir()
        (store / "study.yaml").write_text(yaml.safe_dump({"name": "g", "analysis": settings}))
        (store / "results.csv").write_bytes(path.read_bytes())
        return store
    return path


def test_one_task_groups_are_left_out_of_cg_aggregates_by_default(tmp_path: Path) -> None:
    comp = compare(load_input(None, _grouped(tmp_path)))
    assert comp.singletons() == ["c", "g3"] and comp.excluded == {"CG": ("c", "g3")}
    (allcg,) = aggregates(comp, 1.0, "CG", "all")
    assert allcg.mean == pytest.approx(10.0) and allcg.n == 2 and allcg.excluded == ("c", "g3")
    assert "2 one-task groups left out" in allcg.order
    (allau,) = aggregates(comp, 1.0, "AU", "all")
    assert allau.n == 4 and allau.excluded == ()  # AU trains every task together: nothing to leave out
    assert comp.delta_values(1.0, "CG")[0] == ["a", "b"]
    assert comp.deltas[(1.0, "g3", "CG")].value == pytest.approx(-50.0)  # the per-task Δ is still reported
    assert negative_transfer(comp, 1.0, "CG") == (0, 2)


def test_cg_singletons_include_keeps_them(tmp_path: Path) -> None:
    comp = compare(load_input(_grouped(tmp_path, cg_singletons="include"), None))
    assert comp.excluded == {}
    (allcg,) = aggregates(comp, 1.0, "CG", "all")
    assert allcg.mean == pytest.approx((10 + 10 + 10 - 50) / 4) and allcg.n == 4


def test_group_regime_by_group_size(tmp_path: Path) -> None:
    comp = compare(load_input(_grouped(tmp_path, group_regime_threshold=5000), None))
    names = {a.name: a.tasks for a in aggregates(comp, 1.0, "AU", "group regime")}
    # G1: 3000 + 2500 = 5500 images, G2: 6000 (data-rich); G3: 100 (low-data), whatever a task's own size
    assert names == {"data-rich group (n≥5000)": ("a", "b", "c"), "low-data group (n<5000)": ("g3",)}
    assert comp.regime(1.0, "a") == "data-rich (n≥1000)" and comp.regime(1.0, "g3") == "low-data (n<1000)"


def test_the_default_group_threshold_splits_the_studys_ob_and_breast() -> None:
    thr = AnalysisSpec().group_regime_threshold
    assert 2920 < thr <= 11910  # Breast 2,920 images: low-data; OB 11,910: data-rich (docs/study)


def test_a_task_trained_for_no_step_has_no_delta_and_says_why(tmp_path: Path) -> None:
    """A CG job whose steps_per_epoch left a task 0 optimiser steps: its DSC is an untrained head's, and a Δ of it
    (−100 %) would count as negative transfer. Δ is n/a with the reason, and the task leaves CG's aggregates."""
    import dataclasses

    rows = [
        *(_row("TS", s, t, "segmentation", "DSC", 0.8, True) for s in (0, 1) for t in ("a", "b")),
        *(dataclasses.replace(_row("CG", s, "a", "segmentation", "DSC", 0.0, True), steps=0.0) for s in (0, 1)),
        *(dataclasses.replace(_row("CG", s, "b", "segmentation", "DSC", 0.84, True), steps=10.0) for s in (0, 1)),
    ]
    write_results(rows, tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    a, b = comp.deltas[(1.0, "a", "CG")], comp.deltas[(1.0, "b", "CG")]
    assert a.value is None and a.reason.startswith("CG trained a for 0 optimiser steps, so its metric is an untrained")
    assert b.value == pytest.approx(5.0)
    assert comp.delta_values(1.0, "CG")[0] == ["b"]


def test_seeds_trained_for_no_step_are_left_out_of_the_cell_and_named(tmp_path: Path) -> None:
    """One seed of CG's job never stepped on task a (DSC 0): that seed is left out and the other one is the cell;
    the study's notes name it."""
    import dataclasses

    from usagg.analysis.tables import exclusion_notes

    rows = [
        *(_row("TS", s, "a", "segmentation", "DSC", 0.8, True) for s in (0, 1)),
        dataclasses.replace(_row("CG", 0, "a", "segmentation", "DSC", 0.0, True), steps=0.0),
        dataclasses.replace(_row("CG", 1, "a", "segmentation", "DSC", 0.84, True), steps=10.0),
    ]
    write_results(rows, tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    assert comp.cells[(1.0, "a", "CG")].n_seeds == 1 and comp.deltas[(1.0, "a", "CG")].value == pytest.approx(5.0)
    assert comp.untrained == {(1.0, "a", "CG"): (0,)}
    assert any(n.startswith("Not trained: a under CG (seed 0): the job gave the task 0") for n in exclusion_notes(comp))


def test_an_empty_value_is_left_out_of_its_cell_and_named_with_its_row(tmp_path: Path) -> None:
    """An empty value is how the store writes a metric undefined for a job (metrics.json null), so the reader takes
    it as NaN; compare leaves that seed out and says so, naming the row, instead of dropping it without a word (a
    value blanked in an edited copy of results.csv changed a task's mean silently)."""
    from usagg.analysis.tables import exclusion_notes

    rows = [
        _row("TS", 0, "a", "segmentation", "DSC", 0.8, True),
        _row("TS", 1, "a", "segmentation", "DSC", 0.6, True),
        _row("CG", 0, "a", "segmentation", "DSC", 0.77, True),
        _row("CG", 1, "a", "segmentation", "DSC", 0.63, True),
        _row("TS", 0, "z", "classification", "AUC", 0.7, True),
        _row("CG", 0, "z", "classification", "AUC", 0.8, True),
    ]
    write_results(rows, tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",0.6,", ",,")  # row 2 (line 3): TS a seed 1 blanked
    lines[6] = lines[6].replace(",0.8,", ",nan,")  # row 6 (line 7): CG z seed 0, the only one, as nan
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    assert comp.undefined == {(1.0, "a", "TS"): ((1, 2),), (1.0, "z", "CG"): ((0, 6),)}
    assert comp.cells[(1.0, "a", "TS")].n_seeds == 1 and comp.cells[(1.0, "a", "TS")].mean == pytest.approx(0.8)
    assert comp.deltas[(1.0, "z", "CG")].value is None
    assert comp.deltas[(1.0, "z", "CG")].reason == (
        "CG's AUC of z is empty in the table for every seed (seed 0 at row 6 (line 7)): undefined for its jobs"
    )
    (note,) = [n for n in exclusion_notes(comp) if n.startswith("Empty values:")]
    assert note.startswith(
        "Empty values: TS a DSC (seed 1 at row 2 (line 3)); CG z AUC (seed 0 at row 6 (line 7)): an empty (or nan) "
        "value is a metric undefined for that job"
    )
