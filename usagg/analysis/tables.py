"""The study's tables as plain data (Table), built from a Comparison and its statistics.

Cells hold numbers where they are numbers, so CSV keeps full precision and the text,
Markdown, LaTeX and HTML renderers (render.py) format them the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from usagg.analysis.delta import SEED_ORDER, Comparison, aggregates, group_n_train, negative_transfer
from usagg.analysis.stats import Stat
from usagg.tasktypes import metric_unit

Cellv = str | float | int | None


@dataclass
class Table:
    """A titled grid with notes; `name` is its file stem in reports (tables/<name>.csv)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Cellv]]
    notes: list[str] = field(default_factory=list)


def fmt_metric(v: float, ref: float | None = None) -> str:
    """Three decimals for [0, 1] scores, one for pixel errors; `ref` formats an sd like its mean."""
    return f"{v:.3f}" if abs(v if ref is None else ref) < 10 else f"{v:.1f}"


def fmt_delta(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f}"


def frac_label(f: float) -> str:
    return f"{f:g}"


def ordered_tasks(comp: Comparison) -> list[str]:
    """Tasks grouped by clinical group (first appearance), study order within a group."""
    groups = list(dict.fromkeys(t.group for t in comp.tasks))
    return [t.task for g in groups for t in comp.tasks if t.group == g]


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def task_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """The paper-style results table: metric mean ± sd of every paradigm and Δ % side by side."""
    cols = ["Task", "Group", "Type", "Metric", "n_train"]
    for p in comp.paradigms:
        cols.append(p)
        if p != comp.baseline:
            cols.append(f"Δ{p} %")
    rows: list[list[Cellv]] = []
    na_notes: list[str] = []
    for task in ordered_tasks(comp):
        info = comp.info(task)
        n = comp.n_train.get((fraction, task), math.nan)
        unit = metric_unit(info.metric)
        metric = f"{info.metric}{' (' + unit + ')' if unit else ''} {arrow(info.higher_is_better)}"
        row: list[Cellv] = [task, info.group, info.type, metric, None if math.isnan(n) else round(n)]
        for p in comp.paradigms:
            cell = comp.cells.get((fraction, task, p))
            if cell is None:
                row.append("—")
            elif cell.n_seeds > 1:
                row.append(f"{fmt_metric(cell.mean)} ± {fmt_metric(cell.sd, cell.mean)}")
            else:
                row.append(fmt_metric(cell.mean))
            if p != comp.baseline:
                d = comp.deltas[(fraction, task, p)]
                row.append(d.value if d.value is not None else "n/a")
                if d.value is None:
                    na_notes.append(f"{task} / {p}: Δ n/a, {d.reason}")
        rows.append(row)
    seeds = sorted({c.n_seeds for (f, _, _), c in comp.cells.items() if f == fraction})
    notes = [
        f"Metric: mean ± sd over seeds (n seeds per cell: {', '.join(map(str, seeds))}); "
        "↑ higher is better, ↓ lower is better.",
        f"Δ % = s·(m_p − m_{comp.baseline})/|m_{comp.baseline}|·100, s = −1 for ↓ metrics; {SEED_ORDER}.",
        *na_notes,
    ]
    title = f"Per-task results versus {comp.baseline}" + (f" (fraction {frac_label(fraction)})" if multi else "")
    return Table("tasks" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def _agg_rows(comp: Comparison, fraction: float, level: str) -> tuple[list[list[Cellv]], list[str]]:
    per_p = {p: aggregates(comp, fraction, p, level) for p in comp.others}
    rows, notes = [], []
    first = per_p[comp.others[0]] if comp.others else []
    for i, agg in enumerate(first):
        row: list[Cellv] = [level, agg.name, len(agg.tasks) + len(agg.missing)]
        ns = []
        for p in comp.others:
            a = per_p[p][i]
            row.append(a.mean)
            ns.append(a.n)
            if a.missing:
                notes.append(f"{level} {a.name} / {p}: left out (no Δ): {', '.join(a.missing)}")
        n_txt = str(ns[0]) if len(set(ns)) == 1 else "/".join(f"{p} {n}" for p, n in zip(comp.others, ns, strict=True))
        row.append(f"seeds → task Δ → mean of {n_txt} task{'' if n_txt == '1' else 's'}")
        rows.append(row)
    return rows, notes


def aggregate_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Mean Δ by clinical group, task type, data regime and over all tasks (Δm)."""
    cols = ["Level", "Name", "Tasks", *[f"Δ{p} %" for p in comp.others], "Aggregation"]
    rows: list[list[Cellv]] = []
    notes = [
        f"Each aggregate: {SEED_ORDER}, then the unweighted mean over the tasks of the row.",
        f"Regime: n_train < {comp.regime_threshold} is low-data (analysis.regime_threshold).",
    ]
    for level in ("group", "type", "regime", "all"):
        r, n = _agg_rows(comp, fraction, level)
        rows += r
        notes += n
    title = f"Mean Δ versus {comp.baseline} by group, type, regime" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    return Table("aggregates" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def group_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Clinical groups with their data scale and mean Δ, largest groups first."""
    sizes = group_n_train(comp, fraction)
    cols = ["Group", "Tasks", "n_train (sum)", *[f"Δ{p} %" for p in comp.others], "Aggregation"]
    rows, notes = _agg_rows(comp, fraction, "group")
    out: list[list[Cellv]] = []
    for r in rows:
        n = sizes.get(str(r[1]), math.nan)
        out.append([r[1], r[2], None if math.isnan(n) else round(n), *r[3:]])
    out.sort(key=lambda r: -(r[2] if isinstance(r[2], int) else -1))
    title = f"Mean Δ versus {comp.baseline} per clinical group" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    notes = [f"Group Δ: {SEED_ORDER}, then mean over the group's tasks; group n_train = sum over its tasks.", *notes]
    return Table("groups" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, out, notes)


def negative_table(comp: Comparison) -> Table:
    """Tasks with negative transfer (Δ < 0) per paradigm and fraction."""
    rows: list[list[Cellv]] = []
    for f in comp.fractions:
        for p in comp.others:
            k, n = negative_transfer(comp, f, p)
            names = [t for t, v in zip(*comp.delta_values(f, p), strict=True) if v < 0]
            rows.append([p, frac_label(f), k, n, ", ".join(names) or "—"])
    return Table(
        "negative_transfer",
        f"Negative transfer (Δ < 0 versus {comp.baseline})",
        ["Paradigm", "Fraction", "Tasks with Δ<0", "of n", "Tasks"],
        rows,
        [f"Counted over tasks with a defined Δ ({SEED_ORDER})."],
    )


def na_table(comp: Comparison) -> Table:
    """Every Δ that could not be computed, with its reason."""
    rows: list[list[Cellv]] = [[frac_label(f), t, p, r] for f, t, p, r in comp.not_available()]
    return Table("delta_na", "Δ not available", ["Fraction", "Task", "Paradigm", "Reason"], rows)


def stats_table(stats: list[Stat]) -> Table:
    """Every statistic with its n and method."""
    rows: list[list[Cellv]] = []
    for s in stats:
        if s.ci is not None:
            extra = f"95% CI [{s.ci[0]:+.1f}, {s.ci[1]:+.1f}]"
        elif s.p is not None:
            extra = f"p = {s.p:.3g}"
        else:
            extra = s.note or "—"
        rows.append([s.paradigm, frac_label(s.fraction), s.name, s.value, extra, s.n, s.method])
    return Table(
        "statistics",
        "Statistics of Δ",
        ["Paradigm", "Fraction", "Statistic", "Value", "p / CI", "n", "Method"],
        rows,
        ["n: tasks (or groups) with a defined Δ entering the statistic."],
    )


def fraction_table(comp: Comparison, stats: list[Stat]) -> Table:
    """Δm as a function of the training fraction (data-scale sweep)."""
    boot = {(s.paradigm, s.fraction): s for s in stats if s.name.startswith("mean Δ")}
    rows: list[list[Cellv]] = []
    for p in comp.others:
        for f in comp.fractions:
            s = boot.get((p, f))
            ci = f"[{s.ci[0]:+.1f}, {s.ci[1]:+.1f}]" if s and s.ci else (s.note if s else "—")
            rows.append([p, frac_label(f), s.value if s else None, ci, s.n if s else 0])
    return Table(
        "fractions",
        f"Δm versus {comp.baseline} by training fraction",
        ["Paradigm", "Fraction", "Δm %", "95% bootstrap CI", "n tasks"],
        rows,
        [f"Δm: {SEED_ORDER}, then mean over tasks, per fraction."],
    )


def delta_long_table(comp: Comparison) -> Table:
    """Machine-readable: one row per (fraction, task, paradigm) with mean, sd, seeds, n_train and Δ."""
    cols = [
        "fraction", "task", "group", "type", "metric", "higher_is_better", "n_train",
        "paradigm", "mean", "sd", "n_seeds", "baseline", "delta_pct", "delta_note",
    ]  # fmt: skip
    rows: list[list[Cellv]] = []
    for f in comp.fractions:
        for task in ordered_tasks(comp):
            info = comp.info(task)
            n = comp.n_train.get((f, task), math.nan)
            for p in comp.paradigms:
                cell = comp.cells.get((f, task, p))
                d = comp.deltas.get((f, task, p))
                rows.append([
                    f, task, info.group, info.type, info.metric, str(info.higher_is_better).lower(),
                    None if math.isnan(n) else n, p,
                    cell.mean if cell else None,
                    cell.sd if cell and not math.isnan(cell.sd) else None,
                    cell.n_seeds if cell else 0, comp.baseline,
                    d.value if d else None, (d.reason if d else "baseline"),
                ])  # fmt: skip
    return Table("delta", f"Δ versus {comp.baseline}, per task", cols, rows)
