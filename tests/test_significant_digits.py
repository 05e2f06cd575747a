"""The statistics table shows values, interval end-points and effect sizes to 3 significant digits: two decimals
printed a ρ of 0.004 or an end-point of -0.0041 as 0.00 and -0.00."""

from __future__ import annotations

import pytest

from usagg.analysis.render import render
from usagg.analysis.stats import Stat
from usagg.analysis.tables import significant, stats_table


@pytest.mark.parametrize(
    ("value", "shown", "signed"),
    [
        (0.004123, "0.00412", "+0.00412"),
        (-0.0041, "-0.00410", "-0.00410"),
        (12.345, "12.3", "+12.3"),
        (-176.5, "-176", "-176"),
        (1234.6, "1235", "+1235"),  # never an integer digit rounded away
        (9.996, "10.0", "+10.0"),  # rounded before the decimals are counted: not 10.00
        (1e-7, "0.000000100", "+0.000000100"),  # fixed point, never 1e-07
        (-0.0, "0", "+0"),
    ],
)
def test_three_significant_digits(value: float, shown: str, signed: str) -> None:
    assert (significant(value), significant(value, sign=True)) == (shown, signed)


def test_the_statistics_table_keeps_small_values_and_end_points() -> None:
    small = Stat("mean", "AU", 1.0, 0.004123, 9, "m", p=0.03, ci=(-0.0041, 0.0123), effects=(("r", 0.0049),))
    large = Stat("slope", "CG", 1.0, 57.93, 9, "m", ci=(-176.5, 142.52))
    table = stats_table([small, large])
    text = render(table, "table")
    assert "95 % CI [-0.00410, +0.0123]; p = 0.03" in text and "r +0.00490" in text
    assert "95 % CI [-176, +143]" in text
    value = table.columns.index("Value")
    assert [r[value] for r in table.rows] == [0.004123, 57.93]  # the cells stay numbers: the CSV keeps every digit
    shown = [ln.split() for ln in text.splitlines() if ln.startswith(("AU", "CG"))]
    assert shown[0][3] == "0.00412" and shown[1][3] == "57.9"  # not 0.004 and 57.930
    assert "0.004123" in render(table, "csv") and "| 0.00412 |" in render(table, "markdown")
    assert "0.00412" in render(table, "latex")
