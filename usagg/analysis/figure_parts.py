"""What several figures share: a print-sized figure, an interval drawn as a range, a legend under the axes, the Δ
axis's label, the tasks at chance a caption names and a Theil-Sen trend line with its caption words.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.delta import Comparison

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


#: Entries per row of a figure-wide legend: six paradigms and four task types would not fit one row.
LEGEND_COLUMNS = 6


def new_figure(w: float, h: float) -> Figure:
    """A w x h inch figure whose constrained layout makes room for its labels and legends."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def main_fraction(a: Analysis) -> float:
    """The fraction a figure of one fraction shows: the largest (full data)."""
    return max(a.comp.fractions)


def range_bar(ax, at: object, lo: object, hi: object, *, vertical: bool) -> None:
    """Intervals as lines with end caps from `lo` to `hi` at position(s) `at` (errorbar would need them to contain
    the value drawn; a percentile bootstrap need not)."""
    at, lo, hi = (np.atleast_1d(np.asarray(v, float)) for v in (at, lo, hi))
    ends, pos = np.concatenate([lo, hi]), np.concatenate([at, at])
    caps = {"color": "0.15", "linestyle": "", "markersize": 2.5, "markeredgewidth": 0.5}
    if vertical:
        ax.vlines(at, lo, hi, color="0.15", linewidth=0.5)
        ax.plot(pos, ends, marker="_", **caps)
    else:
        ax.hlines(at, lo, hi, color="0.15", linewidth=0.5)
        ax.plot(ends, pos, marker="|", **caps)


def chance_tasks(comp: Comparison, f: float) -> tuple[str, ...]:
    """The tasks at chance that every paradigm leaves out at fraction f: none under analysis.chance_tasks: include,
    which keeps them in the aggregates, and so in the figures."""
    return comp.chance.get(f, ()) if comp.chance_excluded else ()


def chance_text(comp: Comparison, f: float, where: str) -> str:
    """A caption's sentence naming the tasks at chance left out of `where`; '' when none is."""
    chance = chance_tasks(comp, f)
    return f" At chance, left out of {where} (analysis.chance_tasks): {', '.join(chance)}." if chance else ""


def legend_below(fig: Figure, ax) -> None:
    """The axes' legend under its x label, two entries a row where they fit: long ρ labels inside the axes would
    cover points. Anchored a fixed distance below the axes, so the constrained layout makes room for it."""
    from matplotlib.transforms import ScaledTranslation

    handles, labels = ax.get_legend_handles_labels()
    cols = 2 if max(map(len, labels), default=0) <= 22 else 1
    fig.set_figheight(fig.get_figheight() + 0.15 * math.ceil(len(labels) / cols))
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=cols, frameon=False,
              bbox_transform=ax.transAxes + ScaledTranslation(0, -0.36, fig.dpi_scale_trans), handletextpad=0.2,
              columnspacing=1.0, borderaxespad=0.0)  # fmt: skip


#: A Δ axis's unit on each analysis.scale (usagg/analysis/scales.py UNITS, short enough for an axis).
AXIS_UNITS = {"relative": "%", "log_ratio": "log points", "headroom": "% of headroom"}


def delta_axis(comp: Comparison, what: str = "Δ") -> str:
    """The label of a Δ axis, in the unit of the comparison's scale (log points are not %)."""
    return f"{what} versus {comp.baseline} ({AXIS_UNITS.get(comp.scale, comp.scale)})"


#: The fewest tasks a paradigm needs for a trend line: through 3-5 points a line shows a trend the ρ beside it
#: cannot carry (a reviewer's objection to lines through the known study's 4 tasks).
TREND_MIN = 6


def trend_line(ax: Axes, x: np.ndarray, y: np.ndarray, colour: str, base: float | None = None) -> int:
    """Draw the Theil-Sen line of y on x (the median of the pairwise slopes: one task far out on x cannot swing it,
    as it swings a least-squares line, and it is the fit that goes with a rank correlation) over x's range, where
    there are at least `TREND_MIN` points that differ in x; 1 when drawn, else 0. `base`: x holds log_base of
    the axis values (a log axis)."""
    from scipy.stats import theilslopes

    if x.size < TREND_MIN or np.ptp(x) == 0:
        return 0
    slope, intercept, _, _ = theilslopes(y, x)
    xs = np.linspace(x.min(), x.max(), 50)
    ax.plot(base**xs if base else xs, intercept + slope * xs, color=colour, linewidth=1.0)
    return 1


def trend_text(drawn: int, fit: str = "", *, sentence: bool = False) -> str:
    """The caption's words for the trend lines `trend_line` drew (`drawn` of them); `sentence`: capitalised."""
    what = f"Theil-Sen fit{' ' + fit if fit else ''} (the median of the pairwise slopes, robust to one outlying task)"
    if drawn:
        text = f"lines: {what}, where a paradigm has at least {TREND_MIN} tasks"
    else:
        text = f"no trend lines: no paradigm has the {TREND_MIN} tasks a {what} needs"
    return text[0].upper() + text[1:] if sentence else text
