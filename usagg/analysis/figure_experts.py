"""Expert usage: the share of each task's routed tokens per expert, per MoE job (where MoE usage was logged)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.figure_parts import main_fraction, new_figure
from usagg.analysis.inputs import job_name
from usagg.analysis.style import COLUMN_W, PAGE_W
from usagg.analysis.tables import frac_label, ordered_tasks
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from usagg.analysis.summary import Analysis


def _usage_panels(a: Analysis) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """paradigm -> [(task, job label, expert share)] for the lowest seed at the largest fraction."""
    table, f = a.inp.table, main_fraction(a)
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
    fig = new_figure(PAGE_W if n_cols > 1 else COLUMN_W * 1.3, grid_rows * (0.7 + 0.15 * n_rows) + 0.6)
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
        f"(lowest seed, fraction {frac_label(main_fraction(a))}); rows of one job are separated by white lines, "
        "each job named by its group (or all). Expert indices are per job: expert 3 of one job is not expert 3 of "
        "another."
    )
    return fig, cap
