"""A count of one reads in the singular in everything the analysis writes (compare's tables and notes, the report):
"1 cluster", "1 clinical group", "over 1 task", never "1 clusters" (audit F10's leftovers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from usagg.analysis.inputs import load_input
from usagg.analysis.report import write_report
from usagg.analysis.results import Row, write_results
from usagg.analysis.summary import analyse, compare_output

#: "1" before a plural noun, as a count: not "0.1 tasks", "11 tasks" or "fraction 1 seeds".
ONE_PLURAL = re.compile(
    r"(?<![\d.,])\b1 (tasks|clusters|clinical groups|groups|seeds|jobs|measurements|epochs|points|images|steps"
    r"|p-values|task–paradigm pairs)\b"
)


def _results(tmp_path: Path, tasks: dict[str, str]) -> Path:
    """TS and AU on `tasks` (task -> clinical group), one seed, AU a little worse on each."""
    rows = []
    for p, shift in (("TS", 0.0), ("AU", -0.05)):
        for i, (t, g) in enumerate(tasks.items()):
            value = 0.6 + 0.05 * i + shift
            rows.append(Row("s", f"{p}-{t}-s0", p, g, 0, 1.0, t, "segmentation", "DSC", value, True, 40.0 + 10 * i))
    write_results(rows, tmp_path / "r.csv")
    return tmp_path / "r.csv"


@pytest.mark.parametrize(
    "tasks", [{"a": "G1", "b": "G1", "c": "G1"}, {"a": "G1"}], ids=["one clinical group", "one task"]
)
def test_no_count_of_one_takes_a_plural(tmp_path: Path, tasks: dict[str, str]) -> None:
    a = analyse(load_input(None, _results(tmp_path, tasks)))
    text = compare_output(a, "table")
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    report = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert ONE_PLURAL.findall(text + report) == []
    if len(tasks) > 1:  # the Δm test's method and the mixed model's reason, as compare prints them
        flat = " ".join(text.split())
        assert "1 cluster: clinical groups" in flat and "1 clinical group, need ≥3" in flat
    else:
        assert "over 1 task" in report
