"""Figure 2: the absolute primary metric of every paradigm on the representative tasks, with Figure 2's intervals
(usagg/analysis/absolute_ci.py) and each seed's value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.absolute_ci import SEEDS, TEST_SET, Interval, absolute_interval
from usagg.analysis.figure_parts import LEGEND_COLUMNS, main_fraction, new_figure, range_bar
from usagg.analysis.scales import chance_level
from usagg.analysis.style import COLUMN_W, PAGE_W, paradigm_color
from usagg.analysis.tables import frac_label
from usagg.analysis.task_ci import resampling_text
from usagg.tasktypes import metric_bounds, metric_unit, task_type_names
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


#: Room past a bounded metric's end on Figure 2's axis (metric units), so a bar at 1.0 and its cap stay visible.
BOUND_MARGIN = 0.05


def _direction(hib: bool) -> str:
    return "↑ higher is better" if hib else "↓ lower is better"


def _wrap(name: str, width: int = 14) -> str:
    """Break a long task id at underscores so a tick label stays narrower than its bar group."""
    lines, cur = [], ""
    for part in name.split("_"):
        piece = part if not cur else f"{cur}_{part}"
        if cur and len(piece) > width:
            lines.append(cur + "_")
            cur = part
        else:
            cur = piece
    return "\n".join([*lines, cur])


def representative_tasks(a: Analysis) -> list[str]:
    """analysis.representative_tasks where they have results, else the first task of each type."""
    known = {t.task for t in a.comp.tasks}
    chosen = [t for t in a.inp.settings.representative_tasks if t in known]
    if chosen:
        return chosen
    first: dict[str, str] = {}
    for t in a.comp.tasks:
        first.setdefault(t.type, t.task)
    return [first[ty] for ty in task_type_names() if ty in first]


def fig_absolute(a: Analysis) -> tuple[Figure, str]:
    """Absolute primary metric of every paradigm on the representative tasks, one panel per metric."""
    comp, f = a.comp, main_fraction(a)
    tasks = representative_tasks(a)
    metrics = list(dict.fromkeys(comp.info(t).metric for t in tasks))
    widths = [max(1, sum(comp.info(t).metric == m for t in tasks)) for m in metrics]
    fig = new_figure(PAGE_W if len(tasks) > 2 else COLUMN_W, 2.3)
    axes = fig.subplots(1, len(metrics), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    k = len(comp.paradigms)
    width = 0.8 / k
    intervals: list[tuple[object, float, Interval, str]] = []  # axes, x, interval, metric
    dots, chances = False, []
    for ax, m in zip(axes, metrics, strict=True):
        mt = [t for t in tasks if comp.info(t).metric == m]
        hib = comp.info(mt[0]).higher_is_better
        lows = [0.0]  # the lowest bar or interval end of the panel
        for j, p in enumerate(comp.paradigms):
            x = np.arange(len(mt)) + (j - (k - 1) / 2) * width
            cells = [comp.cells.get((f, t, p)) for t in mt]
            y = [c.mean if c else np.nan for c in cells]
            ax.bar(x, y, width, color=paradigm_color(p, comp.paradigms), label=p)
            lows += [v for v in y if np.isfinite(v)]
            for xx, t in zip(x, mt, strict=True):
                shown = absolute_interval(a.inp, comp, f, t, p)
                if shown is not None:
                    intervals.append((ax, xx, shown, m))
                    lows.append(shown.low)
                per_seed = [v for _, v in sorted(comp.seed_values.get((f, t, p), {}).items()) if np.isfinite(v)]
                if len(per_seed) > 1:  # each seed's value: a mean of a bimodal spread reads otherwise
                    spread = np.linspace(-0.25, 0.25, len(per_seed)) * width
                    ax.scatter(xx + spread, per_seed, s=6, facecolors="none", edgecolors="0.15", linewidths=0.5,
                               zorder=3)  # fmt: skip
                    dots = True
                    lows += per_seed
        ax.set_xticks(np.arange(len(mt)), [_wrap(t) for t in mt])
        if len(mt) > 2:
            ax.tick_params(axis="x", labelrotation=30)
            for lab in ax.get_xticklabels():
                lab.set_horizontalalignment("right")
        unit = metric_unit(m)
        ax.set_ylabel(f"{m}{f' ({unit})' if unit else ''}")
        ax.set_title(f"{m}\n{_direction(hib)}")  # two lines: narrow panels must not clip the title
        chance = chance_level(m)
        if chance is not None:
            ax.axhline(chance, color="0.45", linestyle="--", linewidth=0.6, zorder=0)
            chances.append(f"{m} {chance:g}")
        top = metric_bounds(m)[1]
        if top is not None:  # a bounded score up to just past its best value: its intervals are cut there
            bottom = min(lows)  # below 0 only for a score that can be negative (MCC), at most to its bound
            ax.set_ylim(bottom - BOUND_MARGIN if bottom < 0 else 0.0, top + BOUND_MARGIN)
    for ax, at, shown, _ in intervals:  # an interval need not contain the mean (a skewed bootstrap): drawn as a range
        range_bar(ax, at, shown.low, shown.high, vertical=True)
    sources = {shown.source for _, _, shown, _ in intervals}
    cut = [m for _, _, shown, m in intervals if shown.clipped]
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), LEGEND_COLUMNS), frameon=False)
    seeds = sorted({c.n_seeds for (ff, t, _), c in comp.cells.items() if ff == f and t in tasks})
    st = a.inp.settings
    errors = [shown.mc for _, _, shown, _ in intervals if shown.mc is not None]
    drawn = f" ({resampling_text(st.task_bootstrap, st.bootstrap_seed, errors)})"
    bars = {
        frozenset(): " No error bars: one seed and no per-image test scores.",
        frozenset({SEEDS}): " Error bars: 95 % t interval of the seed mean.",
        frozenset({TEST_SET}): f" Error bars: 95 % percentile bootstrap over the test images, one seed{drawn}.",
    }.get(frozenset(sources), " Error bars: 95 % t interval of the seed mean, or with one seed the 95 % percentile "
          f"bootstrap over the test images{drawn}.")  # fmt: skip
    if cut:  # a t interval over few seeds knows no bound: with two seeds one of an AUC can reach 1.5
        bars += (
            f" Intervals are cut at the range their metric can take ({counted(len(cut), 'interval')} cut: "
            f"{', '.join(sorted(set(cut)))})."
        )
    cap = (
        f"Absolute performance of {', '.join(comp.paradigms)} on representative tasks "
        f"(fraction {frac_label(f)}); bars: mean over seeds (n seeds: {', '.join(map(str, seeds))})."
        + (" Circles: each seed's value." if dots else "")
        + (f" Dashed line: chance ({', '.join(chances)})." if chances else "")
        + bars
    )
    return fig, cap
