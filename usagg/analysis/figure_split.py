"""Δ split into aggregation and MoE: per clinical group where a control ran (fig_delta_split, from
usagg/analysis/controls.py), and the main effects and interaction of each 2x2 design (fig_factorial, from
usagg/analysis/factorial.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.controls import ALL, controls, splits
from usagg.analysis.factorial import EFFECTS, designs, scales_shown, stat_name
from usagg.analysis.figure_parts import AXIS_UNITS, LEGEND_COLUMNS, chance_text, main_fraction, new_figure, range_bar
from usagg.analysis.style import COLUMN_W, PAGE_W, paradigm_color
from usagg.analysis.tables import frac_label
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


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
    fig = new_figure(PAGE_W if len(done) > 1 else COLUMN_W, 0.5 + 1.45 * len(shown))
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
                range_bar(ax, [e[0] for e in ends], [e[1][0] for e in ends], [e[1][1] for e in ends], vertical=True)
            ax.axhline(0, color="black", linewidth=0.6)
            drawn[r].append([*vals, *(v for e in ends for v in e[1])])
            ax.set_xticks(x, list(EFFECTS))
            ax.grid(axis="y", color="0.9", linewidth=0.5)
            ax.set_axisbelow(True)
            if r == 0:
                ax.set_title(f"{d.paradigm}: {d.cells(comp.baseline)}")
        row[0].set_ylabel(f"mean effect, {scale.replace('_', ' ')}\n({AXIS_UNITS.get(scale, scale)})")
        limits, common = _row_ylims(drawn[r])
        if not common:
            own.append(scale)
        for ax, lim in zip(row, limits, strict=True):
            if lim is not None:
                ax.set_ylim(*lim)
    n = {d.paradigm: by.get((d.paradigm, stat_name("interaction", shown[0]))) for d in done}
    tasks = ", ".join(f"{p} {counted(s.n, 'task')}" for p, s in n.items() if s is not None)
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

    comp, f = a.comp, main_fraction(a)
    ctls = controls(comp)
    if not ctls:
        return None
    panels = [(ctl, [s for s in splits(comp, f, ctl) if s.total is not None]) for ctl in ctls]
    panels = [(ctl, rows) for ctl, rows in panels if rows]  # a lone task CG leaves out has no split
    if not panels:
        return None
    ctls = [ctl for ctl, _ in panels]
    n_rows = max(len(rows) for _, rows in panels)
    fig = new_figure(PAGE_W if len(panels) > 1 else COLUMN_W, 1.0 + 0.22 * n_rows)
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
        + chance_text(comp, f, "every part")
    )
    return fig, cap
