"""`usagg data ...`: look at a dataset before spending GPU hours on it."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer


class SplitChoice(str, Enum):
    train = "train"
    val = "val"
    all = "all"


def check(
    root: Path = typer.Argument(..., help="Dataset root in the FMC_UIA layout (holding train/ and val/)."),
    split: SplitChoice = typer.Option(SplitChoice.all, "--split", help="Which split(s) to check."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
) -> None:
    """Check a dataset: a summary per task and every problem, by CSV file and row. Exit 1 if any problem.

    Example: usagg data check data/FMC_UIA --split train
    """
    from rich.console import Console

    from usagg.data.check import check_dataset

    splits = ("train", "val") if split is SplitChoice.all else (split.value,)
    report = check_dataset(root, splits=splits)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, Console())
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report, console) -> None:  # type: ignore[no-untyped-def]
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{report.root} ({', '.join(report.splits)})"))
    for col in ("task", "type", "classes", *(f"{s} images" for s in report.splits), "image size (WxH)", "labels"):
        table.add_column(col, justify="right" if col.endswith("images") or col == "classes" else "left")
    for t in sorted(report.tasks.values(), key=lambda t: t.task_id):
        counts = [str(t.images.get(s, 0)) for s in report.splits]
        table.add_row(escape(t.task_id), t.type, str(t.num_classes), *counts, t.size_range(), escape(t.label_text()))
    console.print(table)
    if report.ok:
        console.print(f"[green]no problems[/] in {len(report.tasks)} task(s)")
        return
    console.print(f"[bold red]{len(report.problems)} problem(s):[/]")
    for p in report.problems:
        where = f"[cyan]{escape(p.where())}[/]: " if p.row else ""
        console.print(f"  [yellow]{p.kind}[/] {where}{escape(p.message)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `data` sub-app (`usagg data check`)."""
    sub = typer.Typer(name="data", help="Inspect and check datasets.", no_args_is_help=True)
    sub.command("check")(check)
    app.add_typer(sub, name="data")
