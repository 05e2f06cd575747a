"""The figures of the report's "Affinity groups" section: the task x task affinity matrix, Δ against the affinity
onto a task from its model mates, and (synthetic studies with AG) the groups AG recovered beside the designed
ones.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.figure_parts import (
    chance_text,
    delta_axis,
    legend_below,
    main_fraction,
    new_figure,
    trend_line,
    trend_text,
)
from usagg.analysis.inputs import paradigm_groups
from usagg.analysis.style import COLUMN_W, GROUP_FILLS, PAGE_W, paradigm_color, paradigm_marker
from usagg.analysis.tables import affinity_order, frac_label, recovery_scores
from usagg.wording import counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from usagg.affinity import Affinity
    from usagg.analysis.summary import Analysis


def _measured_on(aff: Affinity) -> str:
    jobs = [j for j in aff.job_id.split(",") if j]
    return counted(len(jobs), "job") if jobs else "the measuring job"


#: The affinity colour scale ends at this percentile of the off-diagonal |Z| when the largest |Z| exceeds it
#: AFFINITY_CLIP times (one cell would wash out the rest); larger cells are then clipped and dotted.
AFFINITY_PERCENTILE = 95
AFFINITY_CLIP = 2.0


def fig_affinity(a: Analysis) -> tuple[Figure, str] | None:
    """Task × task lookahead affinity (rows: source stepped on, columns: target); None when the study measured no
    affinity. With AG results, tasks by AG group, each group's block framed, and each task's name shaded by its
    clinical group: framed in clinical-group order, a group whose tasks are not neighbours there fell apart into
    scattered cells (audit F9). Without them, tasks by clinical group, the groups named."""
    import matplotlib

    aff = a.inp.affinity
    if aff is None:
        return None
    clinical = affinity_order(a.comp, aff)
    groups = paradigm_groups(a.inp.table, "AG", a.inp.task_order)
    blocks = ag_blocks(clinical, groups) if groups else clinical
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
    fig = new_figure(PAGE_W if n > 12 else COLUMN_W * 1.3, 1.6 + (0.16 if n > 12 else 0.24) * n)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.82")
    im = ax.imshow(off, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), order, rotation=90)
    ax.set_yticks(range(n), order)
    ax.set_xlabel("target j (task whose loss is read)")
    ax.set_ylabel("source i (task stepped on)")
    _name_blocks(ax, blocks, framed=set(groups))
    if groups:
        _shade_clinical(fig, ax, clinical)
    if len(clipped):  # beyond the colour scale: drawn at its end colour and marked
        ax.scatter(clipped[:, 1], clipped[:, 0], s=5, marker="o", color="white", edgecolors="black", linewidths=0.4)
    fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02, label="affinity Z[i→j] (off-diagonal)",
                 extend="both" if len(clipped) else "neither")  # fmt: skip
    framed = (
        " Tasks ordered by the groups AG trained together (framed, AG's names on the right), within a group by "
        "clinical group; each task's name is shaded by its clinical group (legend). AG's groups: "
        + "; ".join(f"{k}: {counted(len(v), 'task')} ({_clinical_mix(a, v)})" for k, v in groups.items())
        + "."
        if groups
        else " Tasks ordered by clinical group (labels top and right). No AG results, so no groups are framed."
    )
    cost = f" Measuring took {aff.share:.1%} of the training time." if aff.train_seconds > 0 else ""
    cap = (
        "Lookahead inter-task affinity Z[i→j] = 1 − L_j(θ after one step on task i) / L_j(θ) (Fifty et al. 2021), "
        f"averaged over {counted(len(aff.steps), 'measurement')} every {counted(aff.every, 'step')} and over "
        f"{_measured_on(aff)}. "
        "Row: the task stepped on (source); column: the task whose loss is read (target); blue: a step on the "
        "source lowers the target's loss. The diagonal "
        f"(a task onto itself) is grey; colours are centred at 0 and span ±{vmax:.3g}, "
        + (
            f"the {AFFINITY_PERCENTILE}th percentile of the off-diagonal |Z| (the largest, {largest:.3g}, is over "
            f"{AFFINITY_CLIP:g}× it); "
            + ("the cell beyond is dotted." if len(clipped) == 1 else f"the {len(clipped)} cells beyond are dotted.")
            if len(clipped)
            else "the largest off-diagonal |Z|."
        )
        + framed
        + cost
    )
    return fig, cap


#: The block of the affinity's tasks AG trained in no group (its results lack them).
NO_AG_GROUP = "no AG group"


def ag_blocks(clinical: list[tuple[str, list[str]]], groups: dict[str, tuple[str, ...]]) -> list[tuple[str, list[str]]]:
    """The affinity's tasks (`clinical`: by clinical group) by AG group, so that each group is one block on the
    diagonal: its tasks in clinical-group order, groups by their first task there; tasks AG trained in no group
    last, as NO_AG_GROUP."""
    order = [t for _, ts in clinical for t in ts]
    out = [(g, [t for t in order if t in members]) for g, members in groups.items()]
    out = sorted(((g, ts) for g, ts in out if ts), key=lambda b: order.index(b[1][0]))
    rest = [t for t in order if not any(t in ts for _, ts in out)]
    return out + ([(NO_AG_GROUP, rest)] if rest else [])


def _name_blocks(ax, blocks: list[tuple[str, list[str]]], framed: set[str]) -> None:
    """Lines between the blocks of tasks, their names on the right (and on top, where none is framed), and a frame
    round each block in `framed` (its gid "AG <name>")."""
    from matplotlib.patches import Rectangle

    centres, start = [], 0
    for i, (name, ts) in enumerate(blocks):
        if i:
            for line in (ax.axhline, ax.axvline):
                line(start - 0.5, color="0.25", linewidth=0.7)
        if name in framed:
            ax.add_patch(Rectangle((start - 0.5, start - 0.5), len(ts), len(ts), fill=False, edgecolor="black",
                                   linewidth=1.6, zorder=3, gid=f"AG {name}"))  # fmt: skip
        centres.append(start + (len(ts) - 1) / 2)
        start += len(ts)
    names = [g for g, _ in blocks]
    if not framed:  # a frame on the diagonal is named by its row: no slanted names over the columns to clip
        top = ax.secondary_xaxis("top")  # slanted and horizontal: a one-task group's name is wider than its cell
        top.set_xticks(centres, names, rotation=60, ha="left", rotation_mode="anchor")
        top.tick_params(length=0)
    right = ax.secondary_yaxis("right")
    right.set_yticks(centres, names)
    right.tick_params(length=0)
    if framed:
        right.set_ylabel("AG's group", rotation=270, va="bottom")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)


def _shade_clinical(fig: Figure, ax, clinical: list[tuple[str, list[str]]]) -> None:
    """Each task's name on both axes shaded by its clinical group's fill, the groups in a legend under the figure
    (the constrained layout makes room for it below the x label)."""
    from matplotlib.patches import Patch

    fill = {g: GROUP_FILLS[i % len(GROUP_FILLS)] for i, (g, _) in enumerate(clinical)}
    of = {t: g for g, ts in clinical for t in ts}
    for label in (*ax.get_xticklabels(), *ax.get_yticklabels()):
        label.set_bbox({"facecolor": fill[of[label.get_text()]], "edgecolor": "none", "pad": 1.0})
    handles = [Patch(facecolor=fill[g], label=g) for g, _ in clinical]
    fig.set_figheight(fig.get_figheight() + 0.2 + 0.15 * math.ceil(len(handles) / 4))  # the matrix keeps its size
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False,
               title="clinical group (task names shaded)", handlelength=1.2)  # fmt: skip


def _clinical_mix(a: Analysis, members: tuple[str, ...]) -> str:
    """The clinical groups of an AG group's tasks, as "Fetal, Breast"."""
    return ", ".join(dict.fromkeys(a.comp.info(t).group for t in members))


def affinity_points(a: Analysis, paradigm: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tasks of `paradigm` with a Δ and model mates: the mean affinity onto each from its mates, and its Δ."""
    aff = a.inp.affinity
    if aff is None:
        return [], np.zeros(0), np.zeros(0)
    f = main_fraction(a)
    jobs = paradigm_groups(a.inp.table, paradigm, a.inp.task_order)
    mates = {t: [m for m in g if m != t and m in aff.tasks] for g in jobs.values() for t in g}
    names, vals = a.comp.delta_values(f, paradigm)
    keep = [(t, aff.onto(t, mates[t]), v) for t, v in zip(names, vals, strict=True) if t in aff.tasks and mates.get(t)]
    return [k[0] for k in keep], np.asarray([k[1] for k in keep], float), np.asarray([k[2] for k in keep], float)


def fig_affinity_delta(a: Analysis) -> tuple[Figure, str] | None:
    """Δ versus the mean affinity onto a task from the tasks it shared a model with, per multi-task paradigm,
    a Theil-Sen line (`trend_line`) and Spearman ρ each; None without affinity or without a paradigm that shares
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
    fig = new_figure(COLUMN_W, 2.6)
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
        lines += trend_line(ax, x, y, col)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="0.5", linewidth=0.6, linestyle="--")
    ax.xaxis.set_major_locator(MaxNLocator(5))  # small affinities have long tick labels
    ax.ticklabel_format(axis="x", useOffset=False)  # an offset text sits on the label's line, at its end
    unit = f"10{str(power).translate(SUPERSCRIPT)}"
    ax.set_xlabel("mean affinity onto the task from its model mates" + (f" (×{unit})" if power else ""))
    ax.set_ylabel(delta_axis(comp))
    legend_below(fig, ax)
    f = main_fraction(a)
    cap = (
        f"Δ versus {comp.baseline} per task (fraction {frac_label(f)}) against the mean lookahead affinity onto the "
        f"task from the tasks trained in the same model ({', '.join(points)}: one point per task that shares its "
        "model; the job of the lowest seed names the mates). "
        + trend_text(lines, sentence=True)
        + "; legend: Spearman ρ over tasks, descriptive (no p: tasks that share a model are not independent), n "
        "tasks. Affinity as in the affinity matrix figure"
        + (f", in units of {unit} (the x axis reads 3 for an affinity of 3 × {unit})." if power else ".")
        + (f" One-task groups left out, as in the statistics: {comp.excluded_text()}." if comp.excluded else "")
        + chance_text(comp, f, "every paradigm's points")
    )
    return fig, cap


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
    fig = new_figure(COLUMN_W, 0.75 + 0.19 * len(tasks))
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
