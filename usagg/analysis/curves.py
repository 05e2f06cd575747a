"""Training curves per job (nnU-Net's progress.png, for a whole study): each task's own loss and the selection score.

One small panel per job of the main fraction and lowest seed, in paradigm order: a line
per task (its head's loss, unweighted, so a task's TS and AU curves compare; a task keeps
its colour in every panel, so two tasks of one job stay apart and a task's TS and CG curves
are found at a glance) and, where the job had a selection split, the job's selection score
on the right axis (`usagg/engine/selection.py` `model_score`).
Negative transfer shows as a task whose loss flattens or climbs in CG/AU while it falls in TS.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from usagg.analysis.figure_parts import new_figure
from usagg.analysis.inputs import job_name
from usagg.analysis.style import PAGE_W, TYPE_SHORT, task_line_style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis

#: Panels drawn at most (the caption says how many jobs were left out).
MAX_PANELS = 40
COLUMNS = 4
#: Series of at most this many epochs are drawn with markers: a line through one point draws nothing.
SHORT = 3
#: Epoch ranges narrower than this get half an epoch of room each side, so ticks fall on whole epochs.
MIN_SPAN = 2
#: The selection score's dashed line: a dark grey, so a task's dark indigo line stays apart from it.
SCORE_COLOR = "0.4"
#: A job's loss axis is logarithmic where its largest loss is more than this many times its smallest.
LOG_RATIO = 20
#: Width of a 7 pt character and of a legend entry's line and gaps (inches), to fit the key's columns to the page.
CHAR_W = 0.055
KEY_W = 0.55
#: Markers of short series: the score's hollow, so a loss on the same spot (one epoch: both mid-panel) shows through.
LOSS_MARK: dict[str, Any] = {"marker": "o", "markersize": 2.5}
SCORE_MARK: dict[str, Any] = {"marker": "s", "markersize": 4.0, "markerfacecolor": "none", "markeredgewidth": 0.6}


def _marked(n_points: int, mark: dict[str, Any]) -> dict[str, Any]:
    """`mark` for a short series, no markers for a longer one (its line shows it)."""
    return mark if n_points <= SHORT else {}


def _jobs(a: Analysis) -> list[tuple[str, str, list[str]]]:
    """(job id, paradigm, task ids) of the jobs to draw: main fraction, lowest seed, paradigm order."""
    comp = a.comp
    fraction = max(comp.fractions)
    rows = [r for r in a.inp.table.rows if r.fraction == fraction and r.job_id in a.inp.histories]
    if not rows:
        return []
    seed = min(r.seed for r in rows)
    order = {p: i for i, p in enumerate(comp.paradigms)}
    jobs: dict[str, tuple[str, list[str]]] = {}
    for r in rows:
        if r.seed == seed:
            jobs.setdefault(r.job_id, (r.paradigm, []))
            if r.task not in jobs[r.job_id][1]:
                jobs[r.job_id][1].append(r.task)
    return sorted(((j, p, t) for j, (p, t) in jobs.items()), key=lambda x: (order.get(x[1], 99), x[0]))


def _log_ticks(ax, values: list[float]) -> None:
    """A log y axis for losses from min(values) to max(values), with at least two labelled ticks: powers of ten
    where two of them fall in the range, else 1, 2 and 5 times them (the range spans over LOG_RATIO, so at least
    three of those fall in it). Plain labels (0.05, not 5×10⁻²); unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = math.log10(min(values)), math.log10(max(values))
    decades = math.floor(hi) - math.ceil(lo) + 1  # powers of ten within the data
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades >= 2 else (1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _selection_text(short: bool) -> str:
    """The caption's sentence on the dashed line: what the selection score is."""
    return (
        "Dashed, right axis: the job's selection score, the number model-scope selection ranks its epochs by: the "
        "mean over the job's tasks of the relative change of each task's primary metric on the selection split "
        "since the first epoch, (m − m₁)/|m₁|, sign-flipped for a lower-is-better metric (so positive is better; "
        "0 = the first epoch's level, 1 = a change of 100 % of it; usagg/engine/selection.py)"
        + (f", a hollow square per epoch in jobs of at most {SHORT} epochs" if short else "")
        + ". "
    )


def fig_curves(a: Analysis) -> tuple[Figure, str] | None:
    """The panel grid, or None when no job kept a history (an imported results table)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    jobs = _jobs(a)
    if not jobs:
        return None
    shown = jobs[:MAX_PANELS]
    n_cols = min(COLUMNS, len(shown))
    n_rows = (len(shown) + n_cols - 1) // n_cols
    fig = new_figure(PAGE_W, 1.45 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    types = {r.task: r.type for r in a.inp.table.rows}
    drawn = {t for _, _, tasks in shown for t in tasks}
    order = [t.task for t in a.comp.tasks if t.task in drawn]
    order += sorted(drawn - set(order))  # a task the comparison does not know (no result row of its own)
    style = {t: task_line_style(i) for i, t in enumerate(order)}
    scored = False  # whether any panel draws a selection score: the key and the caption name it only then
    for i, (ax, (job_id, paradigm, tasks)) in enumerate(zip(axes.flat, shown, strict=False)):
        history = a.inp.histories[job_id]
        epochs = [int(h["epoch"]) for h in history]
        for task in tasks:
            losses = [(h.get("task_loss") or {}).get(task) for h in history]
            points = [(e, v) for e, v in zip(epochs, losses, strict=True) if isinstance(v, int | float)]
            if points:
                ax.plot(
                    *zip(*points, strict=True), lw=0.9, label=task, **style[task], **_marked(len(points), LOSS_MARK)
                )
        values = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
        if values and max(values) / min(values) > LOG_RATIO:  # a log axis only where losses span decades
            _log_ticks(ax, values)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        scores = [h.get("select_score") for h in history]
        if any(isinstance(s, int | float) for s in scores):
            scored = True
            twin = ax.twinx()
            ys = [s if isinstance(s, int | float) else float("nan") for s in scores]
            twin.plot(epochs, ys, "--", color=SCORE_COLOR, lw=0.7,
                      **_marked(sum(isinstance(s, int | float) for s in scores), SCORE_MARK))  # fmt: skip
            twin.tick_params(labelsize=7)
            twin.yaxis.set_major_locator(MaxNLocator(4))
            if i % n_cols == n_cols - 1 or i == len(shown) - 1:
                twin.set_ylabel("selection score", fontsize=7)
        if i % n_cols == 0:
            ax.set_ylabel("task loss", fontsize=7)
        if i >= len(shown) - n_cols:  # the lowest panel of each column
            ax.set_xlabel("epoch", fontsize=7)
        ax.set_title(f"{paradigm} {job_name(paradigm, job_id)}", fontsize=7)
        if epochs and max(epochs) - min(epochs) < MIN_SPAN:  # autoscaled, one epoch would read 0.96 to 1.05
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        # at most five ticks (10 and 12 stay apart), whole epochs only, one tick where only one whole epoch is in view
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True, min_n_ticks=1))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    short = any(len(a.inp.histories[job_id]) <= SHORT for job_id, _, _ in shown)  # the key shows the markers drawn
    typed = len({types.get(t, "") for t in order}) > 1  # the type beside each name where a study has several
    handles = [
        Line2D([], [], lw=1.2, label=f"{t} ({TYPE_SHORT[types.get(t, '')]})" if typed else t, **style[t],
               **(LOSS_MARK if short else {}))
        for t in order
    ]  # fmt: skip
    if scored:
        handles.append(Line2D([], [], color=SCORE_COLOR, ls="--", lw=0.8, label="selection score (right axis)",
                              **(SCORE_MARK if short else {})))  # fmt: skip
    widest = max(len(str(h.get_label())) for h in handles) * CHAR_W + KEY_W  # inches an entry takes at 7 pt
    cols = max(1, min(5, len(handles), int(PAGE_W // widest)))  # long names in fewer columns: none cut at the edge
    fig.legend(handles=handles, loc="outside lower center", ncols=cols, fontsize=7, frameon=False)
    left_out = len(jobs) - len(shown)
    kinds = sorted({types.get(t, "") for t in order} - {""})
    cap = (
        "Training curves of each job (lowest seed, main fraction): each task's own training loss per epoch, a task "
        "in the same colour and line style in every panel (colours here mark tasks, not paradigms"
        + ("" if typed else f"; every task is {kinds[0]}" if kinds else "")
        + f"); a log axis where a job's losses span more than a factor of {LOG_RATIO}. "
        + (_selection_text(short) if scored else "No selection score: no job had a selection split. ")
        + (f"Jobs of at most {SHORT} epochs show each epoch's loss as a dot. " if short else "")
        + "A task whose loss falls in TS but flattens or climbs in CG or AU, where it trains beside other tasks, is "
        "what negative transfer looks like in training."
        + (f" {left_out} more jobs are not drawn (history.csv in their folders)." if left_out else "")
    )
    return fig, cap
