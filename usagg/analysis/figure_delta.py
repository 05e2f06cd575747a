"""Figure 3, Δ per task with its interval (a symlog axis where one bar would flatten the rest), and Δ by task type."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.delta import group_n_train
from usagg.analysis.figure_parts import LEGEND_COLUMNS, chance_tasks, delta_axis, main_fraction, new_figure, range_bar
from usagg.analysis.style import COLUMN_W, PAGE_W, TYPE_COLORS, TYPE_MARKERS, TYPE_SHORT, paradigm_color
from usagg.analysis.tables import frac_label
from usagg.analysis.uncertainty import shown_interval
from usagg.tasktypes import task_type_names

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


#: Figure 3's mark on the label of a task whose baseline is at chance (beside † for a one-task group).
CHANCE_MARK = "‡"


def _delta_order(a: Analysis, f: float) -> list[tuple[str, list[str]]]:
    """Groups largest-data first; tasks within a group by n_train, largest first."""
    comp = a.comp
    sizes = group_n_train(comp, f)
    groups = list(dict.fromkeys(t.group for t in comp.tasks))
    groups.sort(key=lambda g: -(sizes[g] if not math.isnan(sizes[g]) else -1))

    def n_of(t: str) -> float:
        n = comp.n_train.get((f, t), math.nan)
        return -1.0 if math.isnan(n) else n

    return [(g, sorted((t.task for t in comp.tasks if t.group == g), key=lambda t: -n_of(t))) for g in groups]


def fig_delta(a: Analysis) -> tuple[Figure, str] | None:
    """Δ % per task, horizontal bars by paradigm with their intervals, grouped by clinical group, type as markers.

    Error bars: the interval `uncertainty.shown_interval` picks (seeds when both paradigms ran ≥ 2,
    else the test-set bootstrap). A bar of a task its paradigm leaves out of the aggregates is drawn pale
    (`Comparison.left_out`), so no reader takes it for a result the study counts: a one-task group of
    that paradigm (a clinical group under CG, a group AG formed under AG) gets a dagger on its label
    and the caption names each paradigm's (`Comparison.excluded_text`); a task whose baseline is at
    chance gets CHANCE_MARK and is named too.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    comp, f = a.comp, main_fraction(a)
    if comp.no_delta:
        return None
    order = _delta_order(a, f)
    others = comp.others
    ypos: dict[str, float] = {}
    y, bounds = 0.0, []
    for g, tasks in order:
        start = y
        for t in tasks:
            ypos[t] = y
            y += 1.0
        bounds.append((g, start, y - 1.0))
        y += 0.6
    n_rows = len(ypos)
    fig = new_figure(PAGE_W, 1.1 + 0.17 * n_rows + 0.1 * len(order))
    strip, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [0.035, 1], "wspace": 0.0})
    k = max(1, len(others))
    h = 0.8 / k
    bars: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in others}
    pale: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in others}
    errs: list[tuple[float, float, float, float]] = []  # y, value, low, high
    sources: set[str] = set()
    for t, yy in ypos.items():
        missing = [p for p in others if comp.deltas[(f, t, p)].value is None]
        if len(missing) > 1:  # one label for the row: stacked labels would overlap at 7 pt
            ax.text(0, yy, f" n/a ({', '.join(missing)})", va="center", ha="left", fontsize=7, color="0.3")
        for j, p in enumerate(others):
            d = comp.deltas[(f, t, p)]
            yb = yy + (j - (k - 1) / 2) * h
            if d.value is not None:
                target = pale if t in comp.left_out(f, p) else bars
                target[p][0].append(yb)
                target[p][1].append(d.value)
                shown = shown_interval(a.stats, f, t, p)
                if shown is not None:
                    errs.append((yb, d.value, shown[0], shown[1]))
                    sources.add(shown[2].split(" (")[0])
            elif len(missing) == 1:
                ax.text(
                    0, yb, f" n/a ({p})", va="center", ha="left", fontsize=7, color=paradigm_color(p, comp.paradigms)
                )
    for p, (ys, vals) in bars.items():  # one call per paradigm: fewer artists, faster drawing
        ax.barh(ys, vals, h, color=paradigm_color(p, comp.paradigms), linewidth=0)
        if pale[p][0]:
            ax.barh(pale[p][0], pale[p][1], h, color=paradigm_color(p, comp.paradigms), alpha=0.35, linewidth=0)
    if errs:
        ey, _, lo, hi = (np.asarray(c, float) for c in zip(*errs, strict=True))
        range_bar(ax, ey, lo, hi, vertical=False)
    ax.axvline(0, color="black", linewidth=0.6)
    lin = symlog_threshold([v for ps in (bars, pale) for _, vals in ps.values() for v in vals])
    if lin is not None:
        _symlog_axis(ax, lin)
    flagged = {t for ts in comp.excluded.values() for t in ts}
    chance = chance_tasks(comp, f)
    labels = []
    for t in ypos:
        n = comp.n_train.get((f, t), math.nan)
        marks = "†" * (t in flagged) + CHANCE_MARK * (t in chance)
        labels.append(f"{t}{' ' + marks if marks else ''} ({'n=' + str(round(n)) if not math.isnan(n) else 'n=?'})")
    strip.set_yticks(list(ypos.values()), labels)
    for ty in task_type_names():
        ys = [yy for t, yy in ypos.items() if comp.info(t).type == ty]
        if ys:
            strip.scatter([0.5] * len(ys), ys, marker=TYPE_MARKERS[ty], s=14, color=TYPE_COLORS[ty], linewidths=0)
    strip.set_xlim(0, 1)
    strip.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        strip.spines[side].set_visible(False)
    ax.spines["left"].set_visible(False)
    ax.set_yticks([])
    strip.tick_params(axis="y", length=0)
    for axis in (strip, ax):
        axis.set_ylim(y - 0.6 + 0.3, -0.7)
    from matplotlib.transforms import blended_transform_factory

    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for i, (g, first, last) in enumerate(bounds):
        if i:
            for axis in (strip, ax):
                axis.axhline(first - 0.8, color="0.6", linewidth=0.5, linestyle=(0, (2, 2)))
        ax.text(1.005, (first + last) / 2, g, transform=tr, va="center", ha="left", fontsize=7, fontweight="bold")
    ax.grid(axis="x", color="0.9", linewidth=0.5)
    ax.set_axisbelow(True)
    at = f", fraction {frac_label(f)}" if len(comp.fractions) > 1 else ""  # the PNG alone must say which subset
    ax.set_xlabel(f"{delta_axis(comp)}, positive = gain{at}" + (f"; log beyond ±{lin:g}" if lin else ""))
    handles: list[Artist] = [Patch(color=paradigm_color(p, comp.paradigms), label=p) for p in others]
    present = list(dict.fromkeys(comp.info(t).type for t in ypos))
    handles += [
        Line2D([], [], marker=TYPE_MARKERS[ty], color=TYPE_COLORS[ty], linestyle="", markersize=4, label=ty)
        for ty in task_type_names()
        if ty in present
    ]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), LEGEND_COLUMNS), frameon=False)
    na = [(t, p, r) for ff, t, p, r in comp.not_available() if ff == f]
    cap = (
        f"Relative change Δ of {', '.join(others)} versus {comp.baseline} per task (fraction {frac_label(f)}), "
        "grouped by clinical group (largest training data first), tasks sorted by n_train within a group; "
        "marker: task type. Δ from seed means of the primary metric, sign-corrected so positive is a gain."
        + _error_bar_text(sources)
        + (
            f" †: alone in its group under the paradigm named ({comp.excluded_text()}); pale bar: that paradigm's "
            "Δ measures MoE alone and is left out of its aggregates and tests."
            if flagged
            else ""
        )
        + (
            f" {CHANCE_MARK}: {comp.baseline} at chance ({', '.join(chance)}); pale bar: no skill for a paradigm to "
            "change, so left out of every aggregate and test (analysis.chance_tasks: exclude)."
            if chance
            else ""
        )
        + (f" n/a: {len(na)} Δ not defined (see the Δ n/a table)." if na else "")
        + (
            f" The x axis is linear within ±{lin:g} % and logarithmic beyond (symlog), because the largest |Δ| is "
            f"more than {DWARF:g}× the 90th percentile of |Δ|: one bar would otherwise flatten every other row."
            if lin
            else ""
        )
    )
    return fig, cap


#: Figure 3 switches to a symlog x axis when the largest |Δ| exceeds this multiple of the 90th percentile of |Δ|.
DWARF = 4.0


def _nice(v: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ v."""
    k = 10.0 ** math.floor(math.log10(v))
    return next(m * k for m in (1, 2, 5, 10) if m * k >= v * (1 - 1e-9))


def symlog_threshold(values: list[float]) -> float | None:
    """The linear half-width of a symlog axis (the 90th percentile of |values| rounded up to 1, 2, 5 × 10^k) when
    the largest |value| is more than DWARF times that percentile; None when a linear axis shows every bar."""
    mag = np.abs(np.asarray(values, float))
    mag = mag[np.isfinite(mag)]
    if mag.size < 2:
        return None
    p90 = float(np.quantile(mag, 0.9))
    return _nice(p90) if p90 > 0 and mag.max() > DWARF * p90 else None


def _symlog_axis(ax, lin: float) -> None:
    """Symlog x: the linear part as wide as a decade on each side, ticks every lin/2 inside and 1-2-5 beyond."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("symlog", linthresh=lin, linscale=1.5)
    lo, hi = ax.get_xlim()
    top = max(abs(lo), abs(hi))
    decades = range(math.floor(math.log10(lin)), math.ceil(math.log10(top)) + 1)
    outer = [m * 10.0**e for e in decades for m in (1, 2, 5) if 1.5 * lin <= m * 10.0**e <= top]
    ticks = [*(-v for v in outer[::-1]), *np.arange(-lin, lin * 1.01, lin / 2), *outer]
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _error_bar_text(sources: set[str]) -> str:
    if not sources:
        return " No error bars: one seed and no per-image test scores."
    if sources == {"seeds"}:
        return " Error bars: 95 % t interval over seeds (both paradigms' seed spread)."
    if sources == {"test-set bootstrap"}:
        return (
            " Error bars: 95 % paired test-set bootstrap CI (test images both jobs scored), a test-set interval of one "
            "training run: training (seed) noise left out, often several times larger, so a bar below 0 is no "
            "verdict on the paradigm; run several seeds."
        )
    return (
        " Error bars: 95 % t interval over seeds where both paradigms ran ≥ 2 seeds, else the paired test-set "
        "bootstrap CI of one training run, which leaves training (seed) noise out (see the uncertainty table)."
    )


#: fig_task_type draws a box (the quartiles) only around a group of at least this many tasks: with fewer, a
#: quartile is an interpolation between two tasks, and a box of 3-5 points drew caps where no task lies.
BOX_MIN = 8


def fig_task_type(a: Analysis) -> tuple[Figure, str] | None:
    """Δ by task type per paradigm: every task as a point and the median as a bar, a box (quartiles) behind them only
    where a group has BOX_MIN tasks or more. None where no Δ or the tasks have one type: one column would compare
    no types, and Figure 3 shows those Δ task by task."""
    comp, f = a.comp, main_fraction(a)
    if comp.no_delta:
        return None
    types = [ty for ty in task_type_names() if any(t.type == ty for t in comp.tasks)]
    if len(types) < 2:
        return None
    others = comp.others
    fig = new_figure(COLUMN_W, 2.5)
    ax = fig.subplots()
    k = max(1, len(others))
    w = 0.8 / k
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    boxed = False
    for j, p in enumerate(others):
        col = paradigm_color(p, comp.paradigms)
        names, vals = comp.delta_values(f, p)
        for i, ty in enumerate(types):
            v = np.asarray([d for t, d in zip(names, vals, strict=True) if comp.info(t).type == ty])
            x = i + (j - (k - 1) / 2) * w
            if not v.size:
                continue
            if v.size >= BOX_MIN:
                boxed = True
                q1, q3 = np.quantile(v, [0.25, 0.75])
                ax.bar(x, q3 - q1, w * 0.8, bottom=q1, color=col, alpha=0.3, linewidth=0)
            ax.hlines(float(np.median(v)), x - w * 0.4, x + w * 0.4, color=col, linewidth=1.6, zorder=2)
            ax.scatter(x + rng.uniform(-w * 0.25, w * 0.25, v.size), v, s=7, color=col, linewidths=0, zorder=3)
        ax.scatter([], [], s=12, color=col, label=p)
    ax.plot([], [], marker="_", linestyle="", color="0.3", markersize=7, markeredgewidth=1.6, label="median")
    counts = {ty: sum(t.type == ty for t in comp.tasks) for ty in types}
    ax.set_xticks(range(len(types)), [f"{TYPE_SHORT[ty]}\n(n={counts[ty]})" for ty in types])
    ax.set_xlim(-0.6, len(types) - 0.4)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(delta_axis(comp))
    handles, labels = ax.get_legend_handles_labels()  # above the axes: inside, it would cover a task of some study
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 4), frameon=False,
               handletextpad=0.2, columnspacing=1.0)  # fmt: skip
    chance = chance_tasks(comp, f)
    left = "; ".join(
        filter(None, [comp.excluded_text(), f"every paradigm: {', '.join(chance)} (at chance)" * bool(chance)])
    )
    cap = (
        f"Δ versus {comp.baseline} by task type (fraction {frac_label(f)}): each point is a task (spread sideways "
        "within its paradigm's column so equal values stay apart), each dash the median of the paradigm's tasks of "
        + (
            f"the type; a shaded box spans the quartiles where a paradigm has at least {BOX_MIN} tasks of a type "
            "(fewer give no stable quartiles)"
            if boxed
            else f"the type (no boxes: no paradigm has {BOX_MIN} tasks of a type, too few for stable quartiles)"
        )
        + "; n = tasks of the type, of which a paradigm's column leaves out the tasks it leaves out of its "
        "aggregates" + (f" ({left})." if left else " (none here).")
    )
    return fig, cap
