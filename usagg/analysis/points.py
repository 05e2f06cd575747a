"""A swept study (usagg/sweep.py) analysed point by point: each point is a study of its own, compared with the
baseline of the same point, and the points are shown side by side.

results.csv carries a column per swept key (usagg/results_schema.py); `ResultsTable.points`
lists the points. Here each point becomes an `AnalysisInput` of its rows, analysed as any
study is (usagg/analysis/outputs.py memoises each), and `compare` prints a table of every
task's primary metric and Δ at every point before each point's own tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.render import md_table, md_text, render, to_csv, to_markdown
from usagg.analysis.tables import Cellv, Table, arrow, frac_label, ordered_tasks
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.analysis.summary import Analysis

#: A point as results.csv holds it: (swept key, value text) pairs in the sweep's order.
PointKey = tuple[tuple[str, str], ...]


def label(point: PointKey) -> str:
    """`training.lr_encoder=0.0001, model.moe.experts=4`."""
    return ", ".join(f"{k}={v}" for k, v in point)


def values_label(point: PointKey) -> str:
    """The point's values only (`0.0001, 4`): a column heading of the side-by-side table, whose title names the
    keys."""
    return ", ".join(v for _, v in point)


def point_input(inp: AnalysisInput, point: PointKey) -> AnalysisInput:
    """The input restricted to one point's rows: its Δ is against the baseline of the same point."""
    table = inp.table.at(point)
    jobs = set(table.job_ids)
    return dataclasses.replace(
        inp,
        table=table,
        jobs_planned=None,  # the store's plan counts every point's jobs
        notes=[*inp.notes, f"sweep point {label(point)} (one of {len(inp.table.points)})"],
        item_scores={j: p for j, p in inp.item_scores.items() if j in jobs},
        histories={j: h for j, h in inp.histories.items() if j in jobs},
        expert_usage={j: u for j, u in inp.expert_usage.items() if j in jobs},
        trivial={j: t for j, t in inp.trivial.items() if j in jobs},
        selection_warnings={j: w for j, w in inp.selection_warnings.items() if j in jobs},
    )


def analyse_points(
    inp: AnalysisInput, analyse_one: Callable[[AnalysisInput], Analysis]
) -> list[tuple[PointKey, Analysis]]:
    """Every sweep point of the input analysed by `analyse_one`; [] for a study without a sweep (or a point's
    input: one point is a study like any other)."""
    if len(inp.table.points) < 2:
        return []
    return [(point, analyse_one(point_input(inp, point))) for point in inp.table.points]


def side_by_side(points: list[tuple[PointKey, Analysis]]) -> Table:
    """Each task's primary metric (mean over seeds) and Δ versus the baseline at every point, largest fraction."""
    first = points[0][1].comp
    fraction = max(first.fractions)
    paradigms = list(dict.fromkeys(p for _, a in points for p in a.comp.paradigms))
    cols = ["Task", "Metric", "Paradigm"]
    for point, _ in points:
        cols += [values_label(point), f"Δ {values_label(point)} %"]
    rows: list[list[Cellv]] = []
    for task in ordered_tasks(first):
        info = first.info(task)
        for p in paradigms:
            row: list[Cellv] = [task, f"{info.metric} {arrow(info.higher_is_better)}", p]
            for _, a in points:
                cell = a.comp.cells.get((fraction, task, p))
                row.append(cell.mean if cell is not None else "—")
                d = a.comp.deltas.get((fraction, task, p))
                row.append("—" if p == a.comp.baseline else (d.value if d is not None else None))
            rows.append(row)
    keys = ", ".join(k for k, _ in points[0][0])
    notes = [
        f"Sweep over {keys}: {counted(len(points), 'point')}; at each point Δ is versus {first.baseline} of the "
        f"same point (fraction {frac_label(fraction)}, metric mean over seeds). Each point's own analysis follows.",
    ]
    title = f"Sweep points side by side versus {first.baseline} (columns: {keys})"
    return Table("sweep", title, cols, rows, notes)


def points_output(
    a: Analysis,
    fmt: str,
    table: str,
    one: Callable[[Analysis, str, str], str],
    named: Callable[[Analysis, str], Table],
) -> str:
    """What `usagg compare` prints for a swept study: CSV is the chosen table (`named`, summary.named_table) of
    every point with the swept columns in front; JSON every point's output; the other formats the side-by-side
    table, then each point's tables (`one`, summary.compare_output) under a heading naming it. Both are passed
    in: usagg/analysis/summary.py calls this module, not the other way round."""
    keys = [k for k, _ in a.points[0][0]]
    if fmt == "csv":
        tables = [(point, named(sub, table)) for point, sub in a.points]
        t = tables[0][1]
        rows = [[*(v for _, v in point), *row] for point, part in tables for row in part.rows]
        return render(Table(t.name, t.title, [*keys, *t.columns], rows, t.notes), "csv")
    if fmt == "json":
        return json.dumps(
            {
                "sweep": keys,
                "side_by_side": _records(side_by_side(a.points)),
                "points": [{"point": dict(point), **json.loads(one(sub, fmt, table))} for point, sub in a.points],
            },
            indent=1,
        )
    heading = {"table": "=== sweep point {} ===\n", "markdown": "## Sweep point {}\n\n", "latex": "% sweep point {}\n"}
    sep = "\n" if fmt != "latex" else "\n% ----\n"
    parts = [render(side_by_side(a.points), fmt)]
    shown = md_text if fmt == "markdown" else str  # a sweep value is data, as a table's cells are
    parts += [heading[fmt].format(shown(label(point))) + one(sub, fmt, table) for point, sub in a.points]
    return sep.join(parts)


def _records(t: Table) -> list[dict[str, Cellv]]:
    def cell(v: Cellv) -> Cellv:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return [{c: cell(v) for c, v in zip(t.columns, row, strict=True)} for row in t.rows]


def folder_name(index: int, point: PointKey) -> str:
    """A point's sub-folder of a report or figure folder: `point1_lr_encoder-0.0001`, made safe (values come from
    results.csv, which is data: no separator, no leading dot)."""
    text = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in point)
    return f"point{index + 1}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]


def point_folders(a: Analysis, folder: Path) -> list[tuple[Path, Analysis]]:
    """Each point's analysis with its sub-folder of `folder` (a planted symbolic link there is refused)."""
    from usagg.safepath import real_folder

    return [
        (real_folder(Path(folder) / folder_name(i, point), Path(folder), "sweep point folder"), sub)
        for i, (point, sub) in enumerate(a.points)
    ]


def write_points_report(a: Analysis, folder: Path, write_one: Callable[[Analysis, Path], list[Path]]) -> list[Path]:
    """A swept study's report: each point's own report in its sub-folder (`write_one`), and report.md with the
    points side by side and a link to each. The study name, the points' labels and the table come from
    results.csv, which is data: their text goes through `md_text` (no HTML, no link of theirs); a link's target is
    the point's folder, a plain name (`folder_name`)."""
    from usagg.atomic import write_text_atomic
    from usagg.safepath import real_folder

    folder = Path(folder)
    tables = real_folder(folder / "tables", folder, "usagg report: output folder")  # before any write, as in a report
    written: list[Path] = []
    links = []
    for (sub_folder, sub), (point, _) in zip(point_folders(a, folder), a.points, strict=True):
        written += write_one(sub, sub_folder)
        links.append(f"- [{md_text(label(point))}]({sub_folder.name}/report.md)")
    table = side_by_side(a.points)
    heading = f"# {md_text(a.inp.study)}: {len(a.points)} sweep points"
    text = "\n".join([heading, "", to_markdown(md_table(table)), *links, ""])
    written.append(write_text_atomic(tables / "sweep.csv", to_csv(table)))
    written.append(write_text_atomic(folder / "report.md", text))
    return written
