"""Δ against the amount of training data: per task against n_train (fig_delta_vs_ntrain, with the tests the study
has of the relation) and Δm against the training fraction over one task set per paradigm (fig_fraction, with the
within-task slope across fractions of usagg/analysis/fraction_trend.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.digits import ci_words, significant
from usagg.analysis.figure_parts import (
    chance_text,
    delta_axis,
    legend_below,
    main_fraction,
    new_figure,
    trend_line,
    trend_text,
)
from usagg.analysis.fraction_trend import COMMON_MEAN, FRACTION_SLOPE, common_tasks
from usagg.analysis.stats import Stat
from usagg.analysis.style import COLUMN_W, paradigm_color
from usagg.analysis.tables import frac_label
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


def _plain_log_ticks(ax) -> None:
    """Label a log x axis with plain counts (20, 50, 100) instead of 2x10^1, without crowded minor labels."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    from usagg.analysis.mixed import FORMULA, SLOPE, UNIT

    comp = a.comp
    slopes = {s.paradigm: s for s in a.stats if s.fraction == f and s.name == SLOPE}
    groups = {s.paradigm: s for s in a.stats if s.fraction == f and s.name == GROUP_RHO}

    def p_text(s: Stat) -> str:
        holm = f", Holm ({s.family}) {s.p_holm:.2g}" if s.p_holm is not None else ""
        return f"p = {s.p:.2g}{holm}"

    tested = [(p, s) for p in comp.others if (s := slopes.get(p)) and s.value is not None and s.p is not None]
    ranked = [(p, s) for p in comp.others if (s := groups.get(p)) and s.value is not None and s.p is not None]
    parts = []
    if tested:
        parts.append(
            f"the mixed model's slope of Δ {UNIT}, in the y axis's unit ({FORMULA}): "
            + "; ".join(
                f"{p} {significant(s.value, sign=True)} ({p_text(s)})" for p, s in tested if s.value is not None
            )
        )
    if ranked:
        lo, hi = min(s.n for _, s in ranked), max(s.n for _, s in ranked)
        parts.append(
            "Spearman ρ over clinical groups (group Δ the mean of its tasks', n_train their sum; "
            f"{', '.join(p for p, _ in ranked)}; {counted(lo, 'group') if lo == hi else f'{lo}–{hi} groups'})"
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
    (`trend_line`) and Spearman ρ in the legend; the caption names the tests the study has of the relation
    (`_scale_test_text`). None where no task has both a Δ and an n_train."""
    comp, f = a.comp, main_fraction(a)
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
    fig = new_figure(COLUMN_W, 2.6)
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
        lines += trend_line(ax, np.log10(n), vals, col, 10.0)  # fitted on the exact n_train, not the dodged x
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.axhline(0, color="black", linewidth=0.6)
    thr = comp.regime_threshold
    ax.axvline(thr, color="0.5", linewidth=0.6, linestyle="--")
    regime = "← low-data   data-rich →"  # above the axes: never over a point
    ax.text(thr, 1.01, regime, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7, color="0.35")
    ax.set_xlabel("training images n_train (log scale)")
    ax.set_ylabel(delta_axis(comp))
    legend_below(fig, ax)
    shift = 10.0**half - 1
    cap = (
        f"Δ versus training-set size per task (fraction {frac_label(f)}). Points of one n_train are set side by "
        f"side, a column per paradigm in legend order (tasks of one paradigm with equal n_train spread within it), "
        f"at most ±{100 * shift:.0f} % from their n_train, which is exact per task (see the per-task table); "
        + trend_text(lines, "of Δ on log10 n_train at the exact values")
        + "; legend: Spearman ρ of Δ and log n_train over tasks, descriptive (no p: a clinical group's tasks are not "
        "independent), n tasks."
        + _scale_test_text(a, f, lines)
        + f" Dashed: regime threshold n_train = {thr}."
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
        + chance_text(comp, f, "every paradigm's points")
    )
    return fig, cap


#: A point of fig_fraction: the fraction, Δm over the paradigm's common tasks, and its interval (None: none drawn).
FractionPoint = tuple[float, float, tuple[float, float] | None]


def fraction_series(a: Analysis) -> dict[str, list[FractionPoint]]:
    """fig_fraction's points: per paradigm, Δm at each fraction over the tasks it has a Δ for at every fraction
    (`fraction_trend.COMMON_MEAN`, one task set along the line), with its wild cluster interval where there is one."""
    common = {(s.paradigm, s.fraction): s for s in a.stats if s.name == COMMON_MEAN}
    series: dict[str, list[FractionPoint]] = {}
    for p in a.comp.others:
        for f in a.comp.fractions:
            s = common.get((p, f))
            if s is not None and s.value is not None and s.n:
                series.setdefault(p, []).append((f, s.value, s.ci))
    return series


def fig_fraction(a: Analysis) -> tuple[Figure, str] | None:
    """Δm versus training fraction over one task set per paradigm (`fraction_series`), with 95 % wild cluster
    bootstrap CIs where the study has the clusters for one (the caption says why a paradigm has none), and the
    within-task slope across fractions in the caption; None with a single fraction or no common task."""
    comp = a.comp
    if len(comp.fractions) < 2:
        return None
    series = fraction_series(a)
    if not series:  # no task with a Δ at every fraction: an empty panel
        return None
    fig = new_figure(COLUMN_W, 2.4)
    ax = fig.subplots()
    k = len(comp.others)
    for j, p in enumerate(comp.others):
        rows = series.get(p, [])
        if not rows:
            continue
        dodge = 10 ** (0.012 * (j - (k - 1) / 2))  # side by side on the log axis so error bars do not overlap
        xs, ys = [r[0] * dodge for r in rows], [r[1] for r in rows]
        col = paradigm_color(p, comp.paradigms)
        label = f"{p} ({counted(_n_common(a, p), 'task')})"
        if all(r[2] is not None for r in rows):
            lo = [r[1] - r[2][0] for r in rows if r[2] is not None]
            hi = [r[2][1] - r[1] for r in rows if r[2] is not None]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=col, marker="o", markersize=3, capsize=2, label=label, linewidth=1)
        else:  # no interval at some fraction: no bar anywhere, and a legend glyph without one
            ax.plot(xs, ys, color=col, marker="o", markersize=3, label=label, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xscale("log")
    ax.set_xticks(comp.fractions, [frac_label(f) for f in comp.fractions])
    ax.minorticks_off()
    ax.set_xlabel("training fraction (log scale)")
    ax.set_ylabel(delta_axis(comp, "Δm"))
    ax.legend(frameon=False)
    cap = (
        "Mean Δ (Δm) versus the share of training data, each paradigm's line over the same tasks at every fraction "
        "(those with a Δ in its aggregates at every fraction; legend: how many), so a change along it is not a "
        f"change of the tasks averaged.{_left_out_text(a)}{_bars_text(a, series)}{_slope_text(a)}"
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
    )
    return fig, cap


def _n_common(a: Analysis, paradigm: str) -> int:
    return len(common_tasks(a.comp, paradigm)[0])


def _left_out_text(a: Analysis) -> str:
    """The tasks a paradigm's line leaves out and why (at chance, or no Δ, at some fraction); one-task groups are
    named with the statistics' words."""
    parts = []
    for p in a.comp.others:
        why = {t: w for t, w in common_tasks(a.comp, p)[1].items() if w != "a one-task group"}
        if why:
            parts.append(f"{p}: {', '.join(f'{t} ({w})' for t, w in why.items())}")
    return f" Left out: {'; '.join(parts)}." if parts else ""


def _bars_text(a: Analysis, series: dict[str, list[FractionPoint]]) -> str:
    """What the error bars are, and why a paradigm has none (fewer than 3 clinical groups among its tasks)."""
    s = a.inp.settings
    drawn = [p for p, rows in series.items() if all(r[2] is not None for r in rows)]
    why = {
        st.note or "no interval"
        for st in a.stats
        if st.name == COMMON_MEAN and st.paradigm in series and st.paradigm not in drawn and st.ci is None
    }
    text = ""
    if drawn:
        text += (
            f" Error bars ({', '.join(drawn)}): 95 % wild cluster restricted bootstrap-t CI, the tasks of a clinical "
            f"group one cluster ({s.bootstrap} draws, seed {s.bootstrap_seed})."
        )
    undrawn = [p for p in series if p not in drawn]
    if undrawn:
        text += (
            f" No error bars for {', '.join(undrawn)}: {'; '.join(sorted(why))} (the wild cluster interval needs "
            "the tasks of at least 3 clinical groups)."
        )
    return text


def _slope_text(a: Analysis) -> str:
    """The within-task slope of Δ across the fractions (usagg/analysis/fraction_trend.py), per paradigm."""
    parts = []
    for st in a.stats:
        if st.name != FRACTION_SLOPE or st.value is None:
            continue
        if st.ci is not None:
            holm = f", Holm ({st.family}) {st.p_holm:.2g}" if st.p_holm is not None else ""
            p = f", p = {st.p:.2g}{holm}" if st.p is not None else ""
            parts.append(f"{st.paradigm} {significant(st.value, sign=True)} ({ci_words(st.ci)}{p})")
        else:
            parts.append(f"{st.paradigm} {significant(st.value, sign=True)} (no interval: {st.note})")
    if not parts:
        return ""
    return (
        " Within-task slope of Δ per tenfold n_train across the fractions, in the y axis's unit, mean over the same "
        f"tasks (statistics table): {'; '.join(parts)}."
    )
