"""The statistics table shows values, interval end-points and effect sizes to 3 significant digits: two decimals
printed a ρ of 0.004 or an end-point of -0.0041 as 0.00 and -0.00."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagg.analysis.digits import significant
from usagg.analysis.fraction_trend import FRACTION_SLOPE
from usagg.analysis.inputs import load_input
from usagg.analysis.render import render
from usagg.analysis.stats import Stat
from usagg.analysis.summary import all_tables, analyse
from usagg.analysis.tables import stats_table


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


def test_the_2x2_and_fraction_trend_tables_show_3_significant_digits(tmp_path: Path) -> None:
    """The 2x2 effects' estimates, end-points and p, and the fraction trend's slope, interval and p, as the statistics
    table shows them: the 2x2 table printed 6.752 beside 9.450, the trend's interval [+2.0, +9.5]."""
    from tests.test_factorial import _table
    from tests.test_fraction_trend import _input

    fact = {t.name: t for t in all_tables(analyse(load_input(None, _table(tmp_path, jitter=0.05))))}["factorial"]
    assert fact.significant == ("Estimate", "95 % CI low", "95 % CI high", "p", "p (Holm)")
    row = next(r for r in fact.rows if r[4] == "all")
    numbers = [v for v in row[7:12] if isinstance(v, float)]
    (line,) = [ln for ln in render(fact, "table").splitlines() if f" {row[3]} " in ln and " all tasks " in ln
               and ln.startswith(f"{row[0]} ") and f" {row[2]} " in ln]  # fmt: skip
    assert len(numbers) == 5 and all(f" {significant(v)} " in line for v in numbers), line
    assert f" {numbers[0]:.3f} " not in line  # not the 3 decimals of before
    sweep = analyse(_input(tmp_path / "sweep"))
    trend = {t.name: t for t in all_tables(sweep)}["fraction_trend"]
    (au,) = trend.rows
    (slope,) = [s for s in sweep.stats if s.name == FRACTION_SLOPE]
    assert (au[2], au[4], au[5]) == (slope.value, slope.p, slope.p_holm)  # numbers, not text: the CSV keeps them
    assert (
        slope.ci is not None
        and au[3] == f"[{significant(slope.ci[0], sign=True)}, {significant(slope.ci[1], sign=True)}]"
    )
    text = render(trend, "table")
    assert f" {significant(au[2])} " in text and f" {significant(au[4])} " in text and f" {au[3]} " in text
