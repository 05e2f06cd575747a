"""Numbers as the report prints estimates and interval end-points: one form for a table's cell and a headline's
sentence, so the same interval reads digit for digit alike wherever it is said (factorial.py cannot import
tables.py, which imports it)."""

from __future__ import annotations

import math

__all__ = ["ci_words", "significant"]


def significant(v: float, digits: int = 3, *, sign: bool = False) -> str:
    """`v` to `digits` significant digits in fixed point: 0.00412, 12.3, -176 (never 1.2e-05, and never an integer
    digit rounded away: 1234), so a small estimate or end-point keeps its digits where two decimals printed 0.00;
    `sign` writes + before a positive value. 0 is 0 whatever its sign bit."""
    plus = "+" if sign else ""
    if not math.isfinite(v) or abs(v) >= 10 ** (digits - 1):
        return f"{v + 0.0:{plus}.0f}" if math.isfinite(v) else str(v)
    rounded = float(f"{v:.{digits - 1}e}") + 0.0  # -0.0 -> 0.0; rounding first: 9.996 is 10.0, not 10.00
    if rounded == 0:
        return "+0" if sign else "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:{plus}.{decimals}f}"


def ci_words(ci: tuple[float, float]) -> str:
    """An interval as a sentence says it, its end-points as the tables' cells show them: '95 % CI -211 to +172'."""
    return f"95 % CI {significant(ci[0], sign=True)} to {significant(ci[1], sign=True)}"
