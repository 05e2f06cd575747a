"""A column of a rendered table reads with one number of decimals (usagg/analysis/render.py `column_text`)."""

from __future__ import annotations

from usagg.analysis.render import column_text, render
from usagg.analysis.tables import Table


def test_a_column_shares_its_decimals() -> None:
    assert column_text("Value", [7.0, 17.0]) == ["7", "17"]  # Wilcoxon W: whole numbers, one of them 10 or more
    assert column_text("Value", [3.407, -16.0]) == ["3.407", "-16.000"]  # not 3.407 beside -16.0
    assert column_text("AUC", [1.0, 0.85, None]) == ["1.000", "0.850", "—"]  # 1.000, not 1
    assert column_text("MRE", [12.345, 20.0]) == ["12.3", "20.0"]
    assert column_text("Δ %", [1.0, None]) == ["+1.0", "n/a"]  # Δ keeps its signed form
    assert column_text("n tasks", [4, 12]) == ["4", "12"]  # ints as they are


def test_markdown_and_text_use_the_column_rule() -> None:
    t = Table("x", "X", ["Name", "Value"], [["W", 7.0], ["mean", 3.25], ["slope", -16.0]], [])
    for fmt in ("markdown", "table"):
        out = render(t, fmt)
        assert "7.000" in out and "3.250" in out and "-16.000" in out, out
