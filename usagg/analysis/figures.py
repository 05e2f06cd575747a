"""The study's figures, drawn with matplotlib's object API (no pyplot state) and written atomically.

fig2_absolute, fig3_delta (with each task Δ's interval as error bars), fig_delta_split
(where the controls TSM / AUD ran), fig_factorial (where a 2x2 of aggregation and MoE ran),
fig_delta_vs_ntrain, fig_task_type (with two task types or more), fig_expert_usage
(where MoE usage was logged), fig_fraction (with several fractions), fig_curves
(usagg/analysis/curves.py, where jobs kept a history) and, where the study
measured inter-task affinity, fig_affinity, fig_affinity_delta and (synthetic studies with
AG) fig_recovery. Each returns a Figure and a caption, or None where its data is missing;
`render_all` saves them. Figures showing one fraction use the largest (full data).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.analysis.absolute_ci import SEEDS, TEST_SET, Interval, absolute_interval
from usagg.analysis.cluster_inference import MEAN_DELTA
from usagg.analysis.controls import ALL, controls, splits
from usagg.analysis.curves import fig_curves
from usagg.analysis.delta import Comparison, group_n_train
from usagg.analysis.factorial import EFFECTS, designs, scales_shown, stat_name
from usagg.analysis.inputs import job_name, paradigm_groups
from usagg.analysis.scales import chance_level
from usagg.analysis.stats import Stat
from usagg.analysis.style import (
    COLUMN_W,
    GROUP_FILLS,
    PAGE_W,
    TYPE_COLORS,
    TYPE_MARKERS,
    TYPE_SHORT,
    paper_style,
    paradigm_color,
    paradigm_marker,
)
from usagg.analysis.tables import affinity_order, frac_label, ordered_tasks, recovery_scores
from usagg.analysis.uncertainty import shown_interval
from usagg.atomic import write_with
from usagg.tasktypes import metric_bounds, metric_unit, task_type_names
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from usagg.affinity import Affinity
    from usagg.analysis.summary import Analysis


@dataclass(frozen=True)
class FigureOut:
    """One written figure: its name (fig3_delta), the file, and the caption the report prints under it."""

    name: str
    path: Path
    caption: str


#: Entries per row of a figure-wide legend: six paradigms and four task types would not fit one row.
LEGEND_COLUMNS = 6
#: Room past a bounded metric's end on Figure 2's axis (metric units), so a bar at 1.0 and its cap stay visible.
BOUND_MARGIN = 0.05


def _new(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _direction(hib: bool) -> str:
    return "↑ higher is better" if hib else "↓ lower is better"


def _plain_log_ticks(ax) -> None:
    """Label a log x axis with plain counts (20, 50, 100) instead of 2x10^1, without crowded minor labels."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())


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


def _main_fraction(a: Analysis) -> float:
    return max(a.comp.fractions)


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
    comp, f = a.comp, _main_fraction(a)
    tasks = representative_tasks(a)
    metrics = list(dict.fromkeys(comp.info(t).metric for t in tasks))
    widths = [max(1, sum(comp.info(t).metric == m for t in tasks)) for m in metrics]
    fig = _new(PAGE_W if len(tasks) > 2 else COLUMN_W, 2.3)
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
        _range_bar(ax, at, shown.low, shown.high, vertical=True)
    sources = {shown.source for _, _, shown, _ in intervals}
    cut = [m for _, _, shown, m in intervals if shown.clipped]
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), LEGEND_COLUMNS), frameon=False)
    seeds = sorted({c.n_seeds for (ff, t, _), c in comp.cells.items() if ff == f and t in tasks})
    bars = {
        frozenset(): " No error bars: one seed and no per-image test scores.",
        frozenset({SEEDS}): " Error bars: 95 % t interval of the seed mean.",
        frozenset({TEST_SET}): " Error bars: 95 % percentile bootstrap over the test images (one seed).",
    }.get(frozenset(sources), " Error bars: 95 % t interval of the seed mean, or with one seed the 95 % percentile "
          "bootstrap over the test images.")  # fmt: skip
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


def _range_bar(ax, at: object, lo: object, hi: object, *, vertical: bool) -> None:
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


#: Figure 3's mark on the label of a task whose baseline is at chance (beside † for a one-task group).
CHANCE_MARK = "‡"


def _chance_tasks(comp: Comparison, f: float) -> tuple[str, ...]:
    """The tasks at chance that every paradigm leaves out at fraction f: none under analysis.chance_tasks: include,
    which keeps them in the aggregates, and so in the figures."""
    return comp.chance.get(f, ()) if comp.chance_excluded else ()


def _chance_text(comp: Comparison, f: float, where: str) -> str:
    """A caption's sentence naming the tasks at chance left out of `where`; '' when none is."""
    chance = _chance_tasks(comp, f)
    return f" At chance, left out of {where} (analysis.chance_tasks): {', '.join(chance)}." if chance else ""


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

    comp, f = a.comp, _main_fraction(a)
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
    fig = _new(PAGE_W, 1.1 + 0.17 * n_rows + 0.1 * len(order))
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
        _range_bar(ax, ey, lo, hi, vertical=False)
    ax.axvline(0, color="black", linewidth=0.6)
    lin = symlog_threshold([v for ps in (bars, pale) for _, vals in ps.values() for v in vals])
    if lin is not None:
        _symlog_axis(ax, lin)
    flagged = {t for ts in comp.excluded.values() for t in ts}
    chance = _chance_tasks(comp, f)
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
    ax.set_xlabel(f"{_delta_axis(comp)}, positive = gain{at}" + (f"; log beyond ±{lin:g}" if lin else ""))
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
        return " Error bars: 95 % paired test-set bootstrap CI (test images both jobs scored)."
    return (
        " Error bars: 95 % t interval over seeds where both paradigms ran ≥ 2 seeds, else the paired test-set "
        "bootstrap CI (see the uncertainty table)."
    )


#: What a Δ of each analysis.scale is in, for captions (usagg/analysis/scales.py FORMULAS).
_SCALE_TEXT = {
    "relative": "relative: % of the baseline's metric",
    "log_ratio": "log ratio: log points, 100·ln of the ratio of the metrics",
    "headroom": "headroom: % of the baseline's distance to the metric's best value",
}


#: Room beyond the furthest bar or interval end on a fig_factorial panel's y axis, as a fraction of the data's span.
EFFECT_PAD = 0.08


def _effect_ylim(values: list[float]) -> tuple[float, float] | None:
    """A fig_factorial panel's y limits: zero, every bar and every interval end inside, EFFECT_PAD of the span to
    spare on each side; None when nothing finite is drawn (matplotlib's default then)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    if hi - lo <= 0:
        return None
    pad = EFFECT_PAD * (hi - lo)
    return lo - pad, hi + pad


#: A row of fig_factorial keeps one y range for its panels while that range is at most this multiple of each
#: panel's own span: designs on a like scale stay comparable bar for bar, ten times apart they get axes of their own.
COMMON_RANGE = 2.0


def _row_ylims(panels: list[list[float]]) -> tuple[list[tuple[float, float] | None], bool]:
    """One row's y limits per panel (their bars and interval ends) and whether the row shares them: the union of
    the panels' ranges where it is at most COMMON_RANGE times every panel's own span, else each panel its own."""
    own = [_effect_ylim(v) for v in panels]
    spans = [lim[1] - lim[0] for lim in own if lim is not None]
    if len(spans) < 2:
        return own, True
    union = _effect_ylim([v for vals in panels for v in vals])
    assert union is not None  # spans has entries: some value is finite and not zero
    if union[1] - union[0] > COMMON_RANGE * min(spans):
        return own, False
    return [union if lim is not None else None for lim in own], True


def _ylim_text(shown: list[str], own: list[str]) -> str:
    """fig_factorial's caption sentence on which rows share a y range."""
    if not own:
        return " The panels of a row share one y range."
    every = " Each panel has its own y range (read its ticks): bar heights compare within a panel, not across designs."
    if len(own) == len(shown):
        return every
    rows = ", ".join(sc.replace("_", " ") for sc in own)
    return (
        f" In the {rows} {'row' if len(own) == 1 else 'rows'} each panel has its own y range (read its ticks): bar "
        "heights compare within a panel, not across designs; in the other rows a row's panels share one."
    )


def fig_factorial(a: Analysis) -> tuple[Figure, str] | None:
    """The main effects and interaction of each complete 2x2 (usagg/analysis/factorial.py) with their 95 % intervals:
    a row of panels per scale (% and log points are not one axis), a column per design; None without a complete
    design. No sharey: a row's panels get one y range only where their own ranges are alike (_row_ylims), else each
    its own, labelled: one design's intervals can be ten times another's (CG's over a few clinical groups), and a
    common axis would flatten the other design's bars."""
    comp = a.comp
    f = max(comp.fractions)
    done = [d for d in designs(comp) if d.complete]
    if not done:
        return None
    shown = scales_shown(comp)
    by = {(s.paradigm, s.name): s for s in a.stats if s.fraction == f and s.name.startswith("2x2 ")}
    fig = _new(PAGE_W if len(done) > 1 else COLUMN_W, 0.5 + 1.45 * len(shown))
    grid = fig.subplots(len(shown), len(done), squeeze=False, sharex=True)  # no sharey: see docstring
    x = np.arange(len(EFFECTS), dtype=float)
    drawn: list[list[list[float]]] = [[] for _ in shown]  # per row, per panel: its bars and interval ends
    own: list[str] = []  # the scales whose row gives each panel a y range of its own
    for r, (row, scale) in enumerate(zip(grid, shown, strict=True)):
        for ax, d in zip(row, done, strict=True):
            stats = [by.get((d.paradigm, stat_name(e, scale))) for e in EFFECTS]
            vals = [s.value if s and s.value is not None else np.nan for s in stats]
            ax.bar(x, vals, 0.55, color=paradigm_color(d.paradigm, comp.paradigms), linewidth=0)
            ends = [(xx, s.ci) for xx, s in zip(x, stats, strict=True) if s and s.ci]
            if ends:  # a bootstrap interval need not contain the mean: drawn as a range, not as error bars
                _range_bar(ax, [e[0] for e in ends], [e[1][0] for e in ends], [e[1][1] for e in ends], vertical=True)
            ax.axhline(0, color="black", linewidth=0.6)
            drawn[r].append([*vals, *(v for e in ends for v in e[1])])
            ax.set_xticks(x, list(EFFECTS))
            ax.grid(axis="y", color="0.9", linewidth=0.5)
            ax.set_axisbelow(True)
            if r == 0:
                ax.set_title(f"{d.paradigm}: {d.cells(comp.baseline)}")
        row[0].set_ylabel(f"mean effect, {scale.replace('_', ' ')}\n({_AXIS_UNITS.get(scale, scale)})")
        limits, common = _row_ylims(drawn[r])
        if not common:
            own.append(scale)
        for ax, lim in zip(row, limits, strict=True):
            if lim is not None:
                ax.set_ylim(*lim)
    n = {d.paradigm: by.get((d.paradigm, stat_name("interaction", shown[0]))) for d in done}
    tasks = ", ".join(f"{p} {s.n} tasks" for p, s in n.items() if s is not None)
    cap = (
        f"Main effects of aggregation and MoE and their interaction in each 2x2 design (fraction {frac_label(f)}; "
        f"{tasks}): aggregation = (Δ_A + Δ_AM − Δ_M)/2, MoE = (Δ_M + Δ_AM − Δ_A)/2 (the two add up to the "
        "paradigm's Δ: its Shapley split), interaction = Δ_AM − Δ_A − Δ_M, mean over tasks; bars in the colour of "
        "the design's paradigm. One row per scale, each with its own axis and unit ("
        + "; ".join(_SCALE_TEXT.get(sc, sc) for sc in shown)
        + f"; the statistics' scale is {comp.scale}). Ranges: 95 % wild cluster bootstrap intervals, the tasks of "
        "one clinical group one cluster." + (_ylim_text(shown, own) if len(done) > 1 else "")
    )
    return fig, cap


def fig_delta_split(a: Analysis) -> tuple[Figure, str] | None:
    """Mean Δ per clinical group split into its aggregation and MoE parts, one panel per split paradigm.

    None unless a control (TSM, AUD) ran beside the paradigm it splits (usagg/analysis/controls.py) and some
    clinical group has a split; a control without one gets no panel.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    comp, f = a.comp, _main_fraction(a)
    ctls = controls(comp)
    if not ctls:
        return None
    panels = [(ctl, [s for s in splits(comp, f, ctl) if s.total is not None]) for ctl in ctls]
    panels = [(ctl, rows) for ctl, rows in panels if rows]  # a lone task CG leaves out has no split
    if not panels:
        return None
    ctls = [ctl for ctl, _ in panels]
    n_rows = max(len(rows) for _, rows in panels)
    fig = _new(PAGE_W if len(panels) > 1 else COLUMN_W, 1.0 + 0.22 * n_rows)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    moe_color = "0.55"
    for ax, (ctl, rows) in zip(axes, panels, strict=True):
        y = np.arange(len(rows), dtype=float)
        y[[i for i, r in enumerate(rows) if r.name == ALL]] += 0.4  # the overall mean set apart
        col = paradigm_color(ctl.paradigm, comp.paradigms)
        ax.barh(y - 0.19, [r.aggregation for r in rows], 0.38, color=col, linewidth=0)
        ax.barh(y + 0.19, [r.moe for r in rows], 0.38, color=moe_color, linewidth=0)
        ax.scatter([r.total for r in rows], y, marker="D", s=10, color="black", zorder=3)
        ax.set_yticks(y, [f"{r.name} ({r.n})" for r in rows])
        ax.set_ylim(y.max() + 0.7, -0.7)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.grid(axis="x", color="0.9", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.set_title(f"{ctl.paradigm} (control {ctl.control})")
        ax.set_xlabel(f"Δ versus {comp.baseline} (pp)")
    handles: list[Artist] = [
        Patch(color=paradigm_color(c.paradigm, comp.paradigms), label=f"{c.paradigm} aggregation") for c in ctls
    ]
    handles += [
        Patch(color=moe_color, label="MoE"),
        Line2D([], [], marker="D", color="black", linestyle="", markersize=3, label="total Δ"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), LEGEND_COLUMNS), frameon=False)
    formulas = "; ".join(f"{c.paradigm}: {c.formula(comp.baseline)}" for c in ctls)
    cap = (
        f"Mean Δ versus {comp.baseline} per clinical group (largest training data first; tasks in brackets) and over "
        f"all tasks, split into an aggregation part and a MoE part that add up to Δ (fraction {frac_label(f)}): "
        f"{formulas}. The control's part is measured first; an interaction of the factors is in the other part."
        + (
            f" Each paradigm's one-task groups are left out of its parts ({comp.excluded_text()}; "
            "analysis.cg_singletons)."
            if comp.excluded
            else ""
        )
        + _chance_text(comp, f, "every part")
    )
    return fig, cap


#: fig_delta_vs_ntrain's points sit side by side, one column per paradigm, in a band around their n_train at most
#: DODGE_DECADES wide, DODGE_SHARE of the narrowest gap between two n_train drawn and DODGE_COLUMN a paradigm.
DODGE_DECADES = 0.1
DODGE_SHARE = 0.6
DODGE_COLUMN = 0.03


def _dodged(points: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, np.ndarray], float]:
    """Each paradigm's x positions, moved sideways on the log axis: one column per paradigm in paradigm order, and
    tasks of one paradigm with the same n_train spread within their column; the band's half-width in decades.

    Deterministic (no random jitter): the same run store draws the same figure byte for byte."""
    sizes = np.unique(np.concatenate([n for n, _ in points.values()]))
    gaps = np.diff(np.log10(sizes))
    k = len(points)
    band = min(DODGE_DECADES, DODGE_COLUMN * k, DODGE_SHARE * float(gaps.min()) if gaps.size else DODGE_DECADES)
    col = band / k
    out = {}
    for j, (p, (n, _)) in enumerate(points.items()):
        shift = np.full(n.size, (j - (k - 1) / 2) * col)
        for size in np.unique(n):
            same = np.flatnonzero(n == size)
            if same.size > 1:  # equal n_train within a paradigm: spread over 80 % of its column
                shift[same] += (np.arange(same.size) - (same.size - 1) / 2) * 0.8 * col / same.size
        out[p] = n * 10.0**shift
    return out, band / 2


def _scale_test_text(a: Analysis, f: float, lines: int) -> str:
    """The caption's sentence on what tests Δ's relation to n_train in this study: the mixed model's slopes and the
    Spearman ρ over clinical groups where they have a p (usagg/analysis/mixed.py, stats.py), else why none could."""
    from usagg.analysis.mixed import FORMULA, SLOPE

    comp = a.comp
    slopes = {s.paradigm: s for s in a.stats if s.fraction == f and s.name == SLOPE}
    groups = {s.paradigm: s for s in a.stats if s.fraction == f and s.name == GROUP_RHO}

    def p_text(s: Stat) -> str:
        holm = f", Holm {s.p_holm:.2g}" if s.p_holm is not None else ""
        return f"p = {s.p:.2g}{holm}"

    tested = [(p, s) for p in comp.others if (s := slopes.get(p)) and s.value is not None and s.p is not None]
    ranked = [(p, s) for p in comp.others if (s := groups.get(p)) and s.value is not None and s.p is not None]
    parts = []
    if tested:
        parts.append(
            f"the mixed model's slope of Δ per tenfold n_train, in the y axis's unit ({FORMULA}): "
            + "; ".join(f"{p} {s.value:+.3g} ({p_text(s)})" for p, s in tested)
        )
    if ranked:
        lo, hi = min(s.n for _, s in ranked), max(s.n for _, s in ranked)
        parts.append(
            "Spearman ρ over clinical groups (group Δ the mean of its tasks', n_train their sum; "
            f"{', '.join(p for p, _ in ranked)}; {lo if lo == hi else f'{lo}–{hi}'} groups)"
        )
    untested = [p for p in comp.others if p not in {q for q, _ in tested} | {q for q, _ in ranked}]
    why = list(
        dict.fromkeys(
            [f"mixed model {s.note}" for p in untested if (s := slopes.get(p)) and s.note]
            + [f"Spearman ρ over clinical groups: {s.note}" for p in untested if (s := groups.get(p)) and s.note]
        )
    )
    reasons = f" ({'; '.join(why)})" if why else ""
    if not parts:
        descriptive = "the lines and ρ are" if lines else "ρ is"
        return f" No test of the relation was possible for this study{reasons}: {descriptive} descriptive."
    rest = f" No test for {', '.join(untested)}{reasons}." if untested else ""
    return f" Tests of the relation (statistics table): {'; '.join(parts)}.{rest}" + (
        " The lines are descriptive." if lines else ""
    )


#: The name of the Spearman ρ over clinical groups (usagg/analysis/stats.py), a test of Δ's relation to n_train.
GROUP_RHO = "Spearman ρ(Δ, log n_train), groups"


def fig_delta_vs_ntrain(a: Analysis) -> tuple[Figure, str] | None:
    """Δ versus n_train (log x) per paradigm, points dodged by paradigm, a Theil-Sen line in log10 n_train
    (`_trend_line`) and Spearman ρ in the legend; the caption names the tests the study has of the relation
    (`_scale_test_text`). None where no task has both a Δ and an n_train."""
    comp, f = a.comp, _main_fraction(a)
    if comp.no_delta:
        return None
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # paradigm -> (n_train, Δ) of its tasks with both
    for p in comp.others:
        names, vals = comp.delta_values(f, p)
        n = np.asarray([comp.n_train.get((f, t), math.nan) for t in names], float)
        ok = np.isfinite(n) & (n > 0)
        points[p] = (n[ok], vals[ok])
    if not any(n.size for n, _ in points.values()):  # a lone task CG leaves out: an empty panel, with only the
        return None  # dashed line to scale its x axis by (matplotlib warns of identical limits)
    fig = _new(COLUMN_W, 2.6)
    ax = fig.subplots()
    xs_at, half = _dodged(points)
    lines = 0
    rho = {s.paradigm: s for s in a.stats if s.fraction == f and s.name.endswith("tasks") and "Spearman" in s.name}
    for p, (n, vals) in points.items():
        col = paradigm_color(p, comp.paradigms)
        s = rho.get(p)
        lab = (
            f"{p}: ρ={s.value:+.2f}{'' if s.p is None else f', p={s.p:.2g}'}, n={s.n}"  # no p: tasks share a model
            if s and s.value is not None
            else f"{p}: ρ n/a ({s.note if s else 'no data'})"
        )
        ax.scatter(xs_at[p], vals, s=10, color=col, alpha=0.85, linewidths=0, label=lab)
        lines += _trend_line(ax, np.log10(n), vals, col, 10.0)  # fitted on the exact n_train, not the dodged x
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.axhline(0, color="black", linewidth=0.6)
    thr = comp.regime_threshold
    ax.axvline(thr, color="0.5", linewidth=0.6, linestyle="--")
    regime = "← low-data   data-rich →"  # above the axes: never over a point
    ax.text(thr, 1.01, regime, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7, color="0.35")
    ax.set_xlabel("training images n_train (log scale)")
    ax.set_ylabel(_delta_axis(comp))
    _legend_below(fig, ax)
    shift = 10.0**half - 1
    cap = (
        f"Δ versus training-set size per task (fraction {frac_label(f)}). Points of one n_train are set side by "
        f"side, a column per paradigm in legend order (tasks of one paradigm with equal n_train spread within it), "
        f"at most ±{100 * shift:.0f} % from their n_train, which is exact per task (see the per-task table); "
        + _trend_text(lines, "of Δ on log10 n_train at the exact values")
        + "; legend: Spearman ρ of Δ and log n_train over tasks, descriptive (no p: a clinical group's tasks are not "
        "independent), n tasks."
        + _scale_test_text(a, f, lines)
        + f" Dashed: regime threshold n_train = {thr}."
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
        + _chance_text(comp, f, "every paradigm's points")
    )
    return fig, cap


def _legend_below(fig: Figure, ax) -> None:
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
_AXIS_UNITS = {"relative": "%", "log_ratio": "log points", "headroom": "% of headroom"}


def _delta_axis(comp: Comparison, what: str = "Δ") -> str:
    """The label of a Δ axis, in the unit of the comparison's scale (log points are not %)."""
    return f"{what} versus {comp.baseline} ({_AXIS_UNITS.get(comp.scale, comp.scale)})"


#: fig_task_type draws a box (the quartiles) only around a group of at least this many tasks: with fewer, a
#: quartile is an interpolation between two tasks, and a box of 3-5 points drew caps where no task lies.
BOX_MIN = 8


def fig_task_type(a: Analysis) -> tuple[Figure, str] | None:
    """Δ by task type per paradigm: every task as a point and the median as a bar, a box (quartiles) behind them only
    where a group has BOX_MIN tasks or more. None where no Δ or the tasks have one type: one column would compare
    no types, and Figure 3 shows those Δ task by task."""
    comp, f = a.comp, _main_fraction(a)
    if comp.no_delta:
        return None
    types = [ty for ty in task_type_names() if any(t.type == ty for t in comp.tasks)]
    if len(types) < 2:
        return None
    others = comp.others
    fig = _new(COLUMN_W, 2.5)
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
    ax.set_ylabel(_delta_axis(comp))
    handles, labels = ax.get_legend_handles_labels()  # above the axes: inside, it would cover a task of some study
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 4), frameon=False,
               handletextpad=0.2, columnspacing=1.0)  # fmt: skip
    chance = _chance_tasks(comp, f)
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


def _usage_panels(a: Analysis) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """paradigm -> [(task, job label, expert share)] for the lowest seed at the largest fraction."""
    table, f = a.inp.table, _main_fraction(a)
    meta = {r.job_id: (r.paradigm, r.seed, r.fraction, r.group) for r in table.rows}
    seeds: dict[str, int] = {}
    for jid in a.inp.expert_usage:
        if jid in meta and meta[jid][2] == f:
            p, s = meta[jid][0], meta[jid][1]
            seeds[p] = min(seeds.get(p, s), s)
    out: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    order = {t: i for i, t in enumerate(ordered_tasks(a.comp))}
    first: dict[tuple[str, str], int] = {}  # (paradigm, job label) -> place of its first task: its rows stay together
    for jid, usage in a.inp.expert_usage.items():
        if jid not in meta:
            continue
        p, s, ff, _ = meta[jid]
        if ff != f or s != seeds.get(p):
            continue
        label = job_name(p, jid)  # the clinical group (CG), all (AU), g1 (AG)
        first[(p, label)] = min(order.get(t, len(order)) for t in usage)
        for task, blocks in usage.items():
            counts = np.asarray(blocks, float).sum(axis=0)
            share = counts / counts.sum() if counts.sum() > 0 else counts
            out.setdefault(p, []).append((task, label, share))
    for p in out:
        out[p].sort(key=lambda r: (first[(p, r[1])], order.get(r[0], len(order))))
    return out


def fig_expert_usage(a: Analysis) -> tuple[Figure, str] | None:
    """Task × expert share of routed tokens (every MoE block counted together) per MoE paradigm; None without usage
    logs."""
    panels = _usage_panels(a)
    if not panels:
        return None
    ps = [p for p in a.comp.paradigms if p in panels]
    n_rows = max(len(panels[p]) for p in ps)
    n_cols = min(2, len(ps))  # two panels a row at page width: task names left, job names right of each
    grid_rows = math.ceil(len(ps) / n_cols)
    fig = _new(PAGE_W if n_cols > 1 else COLUMN_W * 1.3, grid_rows * (0.7 + 0.15 * n_rows) + 0.6)
    grid = fig.subplots(grid_rows, n_cols, squeeze=False)
    axes = list(grid.flat)[: len(ps)]
    for ax in list(grid.flat)[len(ps) :]:
        ax.set_visible(False)
    vmax = max(float(np.max(r[2])) for p in ps for r in panels[p])
    im = None
    for ax, p in zip(axes, ps, strict=True):
        rows = panels[p]
        e = max(len(r[2]) for r in rows)
        mat = np.full((len(rows), e), np.nan)
        for i, r in enumerate(rows):
            mat[i, : len(r[2])] = r[2]
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_xticks(range(e), [str(i) for i in range(e)])
        ax.set_xlabel("expert")
        jobs = list(dict.fromkeys(r[1] for r in rows))
        ax.set_title(f"{p} ({counted(len(jobs), 'job')})")
        for i in range(1, len(rows)):
            if rows[i][1] != rows[i - 1][1]:
                ax.axhline(i - 0.5, color="white", linewidth=1.5)
        if 1 < len(jobs) < len(rows):  # job names right of the panel (the layout makes room); not one job a task
            for jl in jobs:
                idx = [i for i, r in enumerate(rows) if r[1] == jl]
                ax.text(e - 0.5 + 0.15, (idx[0] + idx[-1]) / 2, jl, fontsize=7, va="center", ha="left", clip_on=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    if im is not None:  # every shown panel draws one
        fig.colorbar(im, ax=axes, location="bottom", shrink=0.5, aspect=40, label="share of the task's routed tokens")
    experts = max(len(r[2]) for p in ps for r in panels[p])
    cap = (
        "Expert usage per MoE job: the share of each task's routings (its tokens in every MoE block, counted "
        f"together) that went to each expert, so a row sums to 1 and an even spread is 1/{experts} an expert "
        f"(lowest seed, fraction {frac_label(_main_fraction(a))}); rows of one job are separated by white lines, "
        "each job named by its group (or all). Expert indices are per job: expert 3 of one job is not expert 3 of "
        "another."
    )
    return fig, cap


def fig_fraction(a: Analysis) -> tuple[Figure, str] | None:
    """Δm versus training fraction with 95 % wild cluster bootstrap CIs; None with a single fraction or no Δm."""
    comp = a.comp
    if len(comp.fractions) < 2:
        return None
    boot = {(s.paradigm, s.fraction): s for s in a.stats if s.name == MEAN_DELTA}
    series: dict[str, list[tuple[float, float, float, float]]] = {}  # paradigm -> (fraction, Δm, CI low, CI high)
    for p in comp.others:
        for f in comp.fractions:
            s = boot.get((p, f))
            if s is not None and s.value is not None:
                series.setdefault(p, []).append((f, s.value, *(s.ci or (s.value, s.value))))
    if not series:  # no Δm at any fraction (a lone task CG leaves out): an empty panel
        return None
    fig = _new(COLUMN_W, 2.4)
    ax = fig.subplots()
    k = len(comp.others)
    for j, p in enumerate(comp.others):
        dodge = 10 ** (0.012 * (j - (k - 1) / 2))  # side by side on the log axis so error bars do not overlap
        rows = series.get(p, [])
        xs, ys = [r[0] * dodge for r in rows], [r[1] for r in rows]
        lo, hi = [r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]
        col = paradigm_color(p, comp.paradigms)
        ax.errorbar(xs, ys, yerr=[lo, hi], color=col, marker="o", markersize=3, capsize=2, label=p, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xscale("log")
    ax.set_xticks(comp.fractions, [frac_label(f) for f in comp.fractions])
    ax.minorticks_off()
    ax.set_xlabel("training fraction (log scale)")
    ax.set_ylabel(_delta_axis(comp, "Δm"))
    ax.legend(frameon=False)
    cap = (
        f"Mean Δ over tasks (Δm) versus the share of training data; error bars: 95 % wild cluster restricted "
        f"bootstrap-t CI, the tasks of a clinical group one cluster where they share a model, each task its own "
        f"otherwise ({a.inp.settings.bootstrap} draws, seed {a.inp.settings.bootstrap_seed})."
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
        + _chance_by_fraction(comp)
    )
    return fig, cap


def _chance_by_fraction(comp: Comparison) -> str:
    """`_chance_text` for a figure over fractions: which tasks each fraction's Δm leaves out (they can differ)."""
    per: dict[tuple[str, ...], list[str]] = {}  # the tasks at chance -> the fractions where they are
    for f in comp.fractions:
        if tasks := _chance_tasks(comp, f):
            per.setdefault(tasks, []).append(frac_label(f))
    named = "; ".join(f"{', '.join(ts)} at fraction{'s' * (len(fs) > 1)} {', '.join(fs)}" for ts, fs in per.items())
    return f" At chance, left out of Δm (analysis.chance_tasks): {named}." if named else ""


def _measured_on(aff: Affinity) -> str:
    jobs = [j for j in aff.job_id.split(",") if j]
    return counted(len(jobs), "job") if jobs else "the measuring job"


#: The affinity colour scale ends at this percentile of the off-diagonal |Z| when the largest |Z| exceeds it
#: AFFINITY_CLIP times (one cell would wash out the rest); larger cells are then clipped and dotted.
AFFINITY_PERCENTILE = 95
AFFINITY_CLIP = 2.0


def fig_affinity(a: Analysis) -> tuple[Figure, str] | None:
    """Task × task lookahead affinity (rows: source stepped on, columns: target), tasks by clinical group, the
    cells of task pairs that AG trained together framed; None when the study measured no affinity."""
    import matplotlib
    from matplotlib.patches import Rectangle

    aff = a.inp.affinity
    if aff is None:
        return None
    blocks = affinity_order(a.comp, aff)
    order = [t for _, ts in blocks for t in ts]
    idx = [aff.tasks.index(t) for t in order]
    z = np.asarray(aff.matrix, float)[np.ix_(idx, idx)]
    off = z.copy()
    np.fill_diagonal(off, np.nan)
    mag = np.abs(off[np.isfinite(off)])
    largest = float(mag.max()) if mag.size else 0.0
    high = float(np.quantile(mag, AFFINITY_PERCENTILE / 100)) if mag.size else 0.0
    vmax = high if high > 0 and largest > AFFINITY_CLIP * high else (largest if largest > 0 else 1.0)
    clipped = np.argwhere(np.abs(np.nan_to_num(off)) > vmax)
    n = len(order)
    fig = _new(PAGE_W if n > 12 else COLUMN_W * 1.3, 1.6 + (0.16 if n > 12 else 0.24) * n)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.82")
    im = ax.imshow(off, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), order, rotation=90)
    ax.set_yticks(range(n), order)
    ax.set_xlabel("target j (task whose loss is read)")
    ax.set_ylabel("source i (task stepped on)")
    centres, start = [], 0
    for i, (_, ts) in enumerate(blocks):
        if i:
            for line in (ax.axhline, ax.axvline):
                line(start - 0.5, color="0.25", linewidth=0.7)
        centres.append(start + (len(ts) - 1) / 2)
        start += len(ts)
    names = [g for g, _ in blocks]
    top = ax.secondary_xaxis("top")  # slanted and horizontal: a one-task group's name is wider than its cell
    top.set_xticks(centres, names, rotation=60, ha="left", rotation_mode="anchor")
    top.tick_params(length=0)
    right = ax.secondary_yaxis("right")
    right.set_yticks(centres, names)
    right.tick_params(length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    pos = {t: i for i, t in enumerate(order)}
    groups = paradigm_groups(a.inp.table, "AG", a.inp.task_order)
    for label, members in groups.items():
        cells = [(pos[s], pos[t]) for s in members for t in members if s != t and s in pos and t in pos]
        for row, col in cells:
            ax.add_patch(
                Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.1, gid=f"AG {label}")
            )
    if len(clipped):  # beyond the colour scale: drawn at its end colour and marked
        ax.scatter(clipped[:, 1], clipped[:, 0], s=5, marker="o", color="white", edgecolors="black", linewidths=0.4)
    fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02, label="affinity Z[i→j] (off-diagonal)",
                 extend="both" if len(clipped) else "neither")  # fmt: skip
    framed = (
        f" Framed: the task pairs AG trained together ({', '.join(f'{k}: {len(v)} tasks' for k, v in groups.items())})."
        if groups
        else " No AG results, so no groups are framed."
    )
    cost = f" Measuring took {aff.share:.1%} of the training time." if aff.train_seconds > 0 else ""
    cap = (
        "Lookahead inter-task affinity Z[i→j] = 1 − L_j(θ after one step on task i) / L_j(θ) (Fifty et al. 2021), "
        f"averaged over {len(aff.steps)} measurements every {aff.every} steps and over {_measured_on(aff)}. "
        "Row: the task stepped on (source); column: the task whose loss is read (target); blue: a step on the "
        "source lowers the target's loss. Tasks ordered by clinical group (labels top and right); the diagonal "
        f"(a task onto itself) is grey; colours are centred at 0 and span ±{vmax:.3g}, "
        + (
            f"the {AFFINITY_PERCENTILE}th percentile of the off-diagonal |Z| (the largest, {largest:.3g}, is over "
            f"{AFFINITY_CLIP:g}× it); the {len(clipped)} cells beyond are dotted."
            if len(clipped)
            else "the largest off-diagonal |Z|."
        )
        + framed
        + cost
    )
    return fig, cap


def affinity_points(a: Analysis, paradigm: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tasks of `paradigm` with a Δ and model mates: the mean affinity onto each from its mates, and its Δ."""
    aff = a.inp.affinity
    if aff is None:
        return [], np.zeros(0), np.zeros(0)
    f = _main_fraction(a)
    jobs = paradigm_groups(a.inp.table, paradigm, a.inp.task_order)
    mates = {t: [m for m in g if m != t and m in aff.tasks] for g in jobs.values() for t in g}
    names, vals = a.comp.delta_values(f, paradigm)
    keep = [(t, aff.onto(t, mates[t]), v) for t, v in zip(names, vals, strict=True) if t in aff.tasks and mates.get(t)]
    return [k[0] for k in keep], np.asarray([k[1] for k in keep], float), np.asarray([k[2] for k in keep], float)


def fig_affinity_delta(a: Analysis) -> tuple[Figure, str] | None:
    """Δ versus the mean affinity onto a task from the tasks it shared a model with, per multi-task paradigm,
    a Theil-Sen line (`_trend_line`) and Spearman ρ each; None without affinity or without a paradigm that shares
    models."""
    from matplotlib.ticker import MaxNLocator

    from usagg.analysis.stats import spearman

    comp = a.comp
    if a.inp.affinity is None:
        return None
    points = {p: affinity_points(a, p) for p in comp.others if comp.shared.get(p)}
    points = {p: v for p, v in points.items() if v[0]}
    if not points:
        return None
    fig = _new(COLUMN_W, 2.6)
    ax = fig.subplots()
    power = _unit_power(np.concatenate([x for _, x, _ in points.values()]))
    lines = 0
    for p, (_, raw, y) in points.items():
        col = paradigm_color(p, comp.paradigms)
        rho, _, n, note = spearman(raw, y)  # no p: the tasks share a model (usagg/analysis/stats.py DEPENDENT)
        x = raw / 10.0**power
        lab = f"{p}: ρ={rho:+.2f}, n={n}" if rho is not None else f"{p}: ρ n/a ({note}), n={n}"
        ax.scatter(x, y, s=12, color=col, marker=paradigm_marker(p, comp.paradigms), alpha=0.85, linewidths=0,
                   label=lab)  # fmt: skip
        lines += _trend_line(ax, x, y, col)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="0.5", linewidth=0.6, linestyle="--")
    ax.xaxis.set_major_locator(MaxNLocator(5))  # small affinities have long tick labels
    ax.ticklabel_format(axis="x", useOffset=False)  # an offset text sits on the label's line, at its end
    unit = f"10{str(power).translate(SUPERSCRIPT)}"
    ax.set_xlabel("mean affinity onto the task from its model mates" + (f" (×{unit})" if power else ""))
    ax.set_ylabel(_delta_axis(comp))
    _legend_below(fig, ax)
    f = _main_fraction(a)
    cap = (
        f"Δ versus {comp.baseline} per task (fraction {frac_label(f)}) against the mean lookahead affinity onto the "
        f"task from the tasks trained in the same model ({', '.join(points)}: one point per task that shares its "
        "model; the job of the lowest seed names the mates). "
        + _trend_text(lines, sentence=True)
        + "; legend: Spearman ρ over tasks, descriptive (no p: tasks that share a model are not independent), n "
        "tasks. Affinity as in the affinity matrix figure"
        + (f", in units of {unit} (the x axis reads 3 for an affinity of 3 × {unit})." if power else ".")
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
        + _chance_text(comp, f, "every paradigm's points")
    )
    return fig, cap


#: The fewest tasks a paradigm needs for a trend line: through 3-5 points a line shows a trend the ρ beside it
#: cannot carry (a reviewer's objection to lines through the known study's 4 tasks).
TREND_MIN = 6


def _trend_line(ax: Axes, x: np.ndarray, y: np.ndarray, colour: str, base: float | None = None) -> int:
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


def _trend_text(drawn: int, fit: str = "", *, sentence: bool = False) -> str:
    """The caption's words for the trend lines `_trend_line` drew (`drawn` of them); `sentence`: capitalised."""
    what = f"Theil-Sen fit{' ' + fit if fit else ''} (the median of the pairwise slopes, robust to one outlying task)"
    if drawn:
        text = f"lines: {what}, where a paradigm has at least {TREND_MIN} tasks"
    else:
        text = f"no trend lines: no paradigm has the {TREND_MIN} tasks a {what} needs"
    return text[0].upper() + text[1:] if sentence else text


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _unit_power(values: np.ndarray) -> int:
    """The power of ten (a multiple of 3) that brings the largest |value| into [1, 1000), or 0 where plain tick
    labels read well (0.01 to 10⁴): matplotlib would write affinities near 1e-6 with an offset text '1e-6' at the end
    of the x label's line, where it runs into the label."""
    top = float(np.max(np.abs(values), initial=0.0))
    if top == 0 or 1e-2 <= top < 1e4:
        return 0
    return 3 * math.floor(math.log10(top) / 3)


def _group_colours(ref: dict[str, str], other: dict[str, str], taken: dict[str, str]) -> dict[str, str]:
    """Colours for `other`'s labels: each takes the colour of the `ref` group it overlaps most (one to one, largest
    overlap first), so identical groupings look identical; the rest take unused fills."""
    overlap = sorted(
        ((sum(1 for t in other if other[t] == lo and ref.get(t) == lr), lo, lr) for lo in set(other.values())
         for lr in set(ref.values())),
        key=lambda x: (-x[0], x[1], x[2]),
    )  # fmt: skip
    out: dict[str, str] = {}
    used: set[str] = set()
    for count, lo, lr in overlap:
        if count and lo not in out and lr not in used:
            out[lo] = taken[lr]
            used.add(lr)
    spare = itertools.chain([c for c in GROUP_FILLS if c not in out.values()], itertools.cycle(GROUP_FILLS))
    for lo in sorted(set(other.values()) - set(out)):
        out[lo] = next(spare)
    return out


def fig_recovery(a: Analysis) -> tuple[Figure, str] | None:
    """Clinical, designed and AG group of each task side by side, coloured by the designed group they overlap
    most, titled with the Rand index of AG against the designed grouping; None outside a synthetic study with AG."""
    from matplotlib.patches import Rectangle

    scores = recovery_scores(a.inp, a.comp)
    if scores is None:
        return None
    ri, ari, ri_clinical, ari_clinical = scores
    designed, ag = a.inp.designed_groups or {}, a.inp.ag_labels
    tasks = [t for t in a.inp.task_order if t in designed and t in ag]
    dgroups = list(dict.fromkeys(designed[t] for t in tasks))
    tasks.sort(key=lambda t: dgroups.index(designed[t]))
    d = {t: designed[t] for t in tasks}
    dcol = {g: GROUP_FILLS[i % len(GROUP_FILLS)] for i, g in enumerate(dgroups)}
    columns = [
        ("clinical", {t: a.comp.info(t).group for t in tasks}),
        ("designed", d),
        ("AG", {t: ag[t] for t in tasks}),
    ]
    fig = _new(COLUMN_W, 0.75 + 0.19 * len(tasks))
    ax = fig.subplots()
    for x, (_, labels) in enumerate(columns):
        colours = dcol if labels is d else _group_colours(d, labels, dcol)
        for y, t in enumerate(tasks):
            ax.add_patch(Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, facecolor=colours[labels[t]], edgecolor="white"))
            ax.text(x, y, labels[t], ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(len(tasks) - 0.5, -0.5)
    ax.set_xticks(range(len(columns)), [c for c, _ in columns])
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(tasks)), tasks)
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"AG versus designed groups\nRand index {ri:.2f}, adjusted {ari:+.2f}")
    cap = (
        "Which group each task is in: the clinical grouping (CG), the affinity structure the synthetic benchmark "
        "was designed with (usagg/data/synth/tasks.py), and the groups AG chose from the measured affinity. "
        "Colours follow the designed group a group overlaps most. Rand index: share of task pairs both "
        f"groupings treat alike (1 = identical); adjusted: corrected for chance (0 = random). AG: {ri:.2f} "
        f"(adjusted {ari:+.2f}); clinical groups for comparison: {ri_clinical:.2f} (adjusted {ari_clinical:+.2f})."
    )
    return fig, cap


#: Figures of the report's "Affinity groups" section.
AFFINITY_FIGURES = ("fig_affinity", "fig_affinity_delta", "fig_recovery")


FIGURES = (
    ("fig2_absolute", fig_absolute),
    ("fig3_delta", fig_delta),
    ("fig_delta_split", fig_delta_split),
    ("fig_factorial", fig_factorial),
    ("fig_delta_vs_ntrain", fig_delta_vs_ntrain),
    ("fig_task_type", fig_task_type),
    ("fig_expert_usage", fig_expert_usage),
    ("fig_fraction", fig_fraction),
    ("fig_curves", fig_curves),
    ("fig_affinity", fig_affinity),
    ("fig_affinity_delta", fig_affinity_delta),
    ("fig_recovery", fig_recovery),
)


FIGURE_DPI = 300  # plot and report share it, so report reuses what plot rendered


def render_all(a: Analysis, folder: Path, fmt: str = "png", dpi: int = FIGURE_DPI) -> list[FigureOut]:
    """Draw every applicable figure and save it atomically as folder/<name>.<fmt>; return what was written.

    Always draws: the commands reuse earlier drawings through usagg/analysis/outputs.py.
    """
    out = []
    with paper_style():
        for name, make in FIGURES:
            made = make(a)
            if made is None:
                continue
            fig, cap = made
            path = Path(folder) / f"{name}.{fmt}"
            # zlib level 6 costs ~0.1 s a figure
            kw: dict[str, Any] = {"pil_kwargs": {"compress_level": 2}} if fmt == "png" else {}
            write_with(path, functools.partial(fig.savefig, format=fmt, dpi=dpi, **kw))
            out.append(FigureOut(name, path, cap))
    return out
