"""Machine-readable CSV: an interval is two numeric columns (an `Interval` cell under a pair of `Table.keys`) while
the display formats show it as `[a, b]` as before, and a whole count is written as an integer (51, not 51.0)."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

import pytest

from usagg.analysis.cluster_inference import ClusterMean
from usagg.analysis.delta import compare
from usagg.analysis.expect import Outcome, expectations_table
from usagg.analysis.inputs import load_input
from usagg.analysis.render import render, to_csv
from usagg.analysis.results import write_results
from usagg.analysis.selection_gap import GapRow, SelectionGap, gap_json, gap_table, gap_tables
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.tables import Interval, Table, delta_long_table

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
WHOLE = re.compile(r"-?\d+")


def _records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_an_interval_cell_is_two_numbers_in_csv_and_its_text_elsewhere() -> None:
    t = Table(
        "t",
        "Intervals",
        ["Name", "Value", "95 % CI"],
        [["a", 1.5, Interval(-9.25, 8.125, "[-9.2, +8.1]")], ["b", None, Interval(None, None, "no values")]],
        ["A note."],
        ["name", "value", ("ci_low", "ci_high")],
    )
    a, b = _records(to_csv(t))
    assert list(a) == ["name", "value", "ci_low", "ci_high"]
    assert (float(a["ci_low"]), float(a["ci_high"])) == (-9.25, 8.125)  # full precision, not the text's rounding
    assert (b["value"], b["ci_low"], b["ci_high"]) == ("", "", "")
    for fmt in ("table", "markdown", "latex"):
        shown = render(t, fmt)
        assert "[-9.2, +8.1]" in shown and "no values" in shown and "ci_low" not in shown
    untitled = dataclasses.replace(t, keys=[])  # no keys: the display header and the interval's text
    assert _records(to_csv(untitled))[0] == {"Name": "a", "Value": "1.5", "95 % CI": "[-9.2, +8.1]"}
    with pytest.raises(ValueError, match="2 keys for 3 columns"):
        Table("t", "T", ["a", "b", "c"], [], keys=["a", "b"])


def _gap() -> SelectionGap:
    measured = ClusterMean(-0.6051697152197865, (-9.2034, 8.1377), 0.9, 8, 4)
    nothing = ClusterMean(None, None, None, 0, 0, "no values")
    rows = [
        GapRow("CG", 1.0, ("a", "b"), {"model": -9.6, "task": -10.2, "last": -13.4}, measured, {}, "measured"),
        GapRow("AU", 1.0, (), {"model": None, "task": None, "last": None}, nothing, {}, "not measured: no split"),
    ]
    return SelectionGap("TS", "relative", rows, "model", ["A note."])


def test_selection_gap_csv_has_numeric_bounds_matching_the_json() -> None:
    gap = _gap()
    cg, au = _records(to_csv(gap_table(gap)))
    assert list(cg) == ["paradigm", "n_tasks", "mean_model", "mean_task", "mean_last", "gap", "ci_low", "ci_high",
                        "status"]  # fmt: skip
    assert float(cg["ci_low"]) < float(cg["gap"]) < float(cg["ci_high"]) and WHOLE.fullmatch(cg["n_tasks"])
    js = gap_json(gap)["rows"][0]
    assert (float(cg["ci_low"]), float(cg["ci_high"]), float(cg["gap"])) == (js["ci_low"], js["ci_high"], js["gap"])
    assert (au["ci_low"], au["ci_high"], au["gap"], au["n_tasks"]) == ("", "", "", "0")
    assert "fraction" in _records(to_csv(gap_table(gap, multi=True)))[0]
    md = render(gap_table(gap), "markdown")  # the display as before: the interval's text under "95 % CI"
    assert "| 95 % CI" in md and "[-9.2, +8.1]" in md and "no values" in md


def test_expectations_csv_has_numeric_bounds_matching_the_json() -> None:
    outcomes = [
        Outcome("learns", True, 0.7565217391304349, 0.6101, 0.8873, "TS AUC > 0.65: ..."),
        Outcome("groups", True, 1.0, None, None, "adjusted Rand index ..."),
        Outcome("not run", None, None, None, None, "AG did not run"),
    ]
    learns, groups, not_run = _records(to_csv(expectations_table(outcomes)))
    assert list(learns) == ["name", "verdict", "value", "ci_low", "ci_high", "margin", "detail"]
    assert float(learns["ci_low"]) < float(learns["value"]) < float(learns["ci_high"])
    assert (float(learns["ci_low"]), float(learns["ci_high"])) == (outcomes[0].ci_low, outcomes[0].ci_high)
    assert (groups["ci_low"], groups["ci_high"], not_run["value"]) == ("", "", "")
    md = render(expectations_table(outcomes), "markdown")
    assert "[0.610, 0.887]" in md and "| —" in md


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in ("breast_2cls", "breast_lesion", "lung_2cls", "lung")]
    path = tmp_path_factory.mktemp("csv") / "r.csv"
    write_results(simulate_rows(tasks, paradigms=("TS", "CG", "AU")), path)
    return path


def test_delta_csv_writes_whole_counts_as_integers(results: Path) -> None:
    comp = compare(load_input(None, results))
    rows = _records(to_csv(delta_long_table(comp)))
    assert rows and all(WHOLE.fullmatch(r["n_train"]) for r in rows)
    assert not any(r["steps"].endswith(".0") for r in rows)  # a whole mean of steps as an int, the rest as floats
    assert {r["ci_low"] for r in rows} == {""}  # no statistics passed: no interval, empty as before


def test_a_swept_studys_titled_gap_tables_keep_their_keys(results: Path) -> None:
    from usagg.analysis.summary import Analysis

    inp = load_input(None, results)
    one = Analysis(inp, compare(inp), [])
    (t,) = gap_tables(dataclasses.replace(one, points=[((("data.fraction", "1"),), one)]))
    assert t.title.endswith("[data.fraction=1]") and ("ci_low", "ci_high") in t.keys
    assert list(_records(to_csv(t))[0])[-3:] == ["ci_low", "ci_high", "status"]
