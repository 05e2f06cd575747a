"""`usagg data ...`: look at a dataset before spending GPU hours on it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from usagg.wording import command, counted

if TYPE_CHECKING:
    from rich.console import Console

    from usagg.data.fmc_uia import Problem


class LeakageChoice(str, Enum):
    error = "error"
    warn = "warn"
    off = "off"


class SplitChoice(str, Enum):
    train = "train"
    val = "val"
    all = "all"


def check(
    root: Path = typer.Argument(
        ..., metavar="ROOT", help="Dataset root in the FMC_UIA layout (holding train/ and val/)."
    ),
    split: SplitChoice = typer.Option(SplitChoice.all, "--split", help="Which split(s) to check."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    leakage: LeakageChoice = typer.Option(
        LeakageChoice.error, "--leakage", help="Near duplicates across splits: a problem, a warning, or not searched."
    ),
    near_threshold: float = typer.Option(
        0.9, "--near-threshold", min=0.0, max=1.0, help="Similarity (0..1) from which two images are near duplicates."
    ),
    recheck: bool = typer.Option(
        False,
        "--recheck",
        help="Decode every image and mask again, not only those whose row or file changed since the last check.",
    ),
) -> None:
    """Check a dataset: a summary per task and every problem, by CSV file and row. Exit 1 if any problem.

    What each file's check found is kept in usagg's cache ($USAGG_CACHE, else ~/.cache/usagg; `datacheck`),
    keyed by its row and the file's size, times and inode, so the next check (and `usagg run`'s) decodes only
    what changed; --recheck decodes everything.

    Example: usagg data check data/FMC_UIA --split train
    """

    from usagg.cachedir import cache_root
    from usagg.cli.display import data_check_spinner, line_console
    from usagg.data.check import check_dataset

    splits = ("train", "val") if split is SplitChoice.all else (split.value,)
    with data_check_spinner() as on_progress:
        report = check_dataset(
            root,
            splits=splits,
            leakage=leakage.value,
            near_duplicate_threshold=near_threshold,
            cache=None if recheck else cache_root(),
            on_progress=on_progress,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, line_console())
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from usagg.cli.display import print_table, unchanged_text
    from usagg.safepath import printable

    table = Table(title=escape(printable(f"{report.root} ({', '.join(report.splits)})")))
    for col in ("task", "type", "classes", *(f"{s} images" for s in report.splits), "image size (WxH)", "labels"):
        # a task id stays on one line (other columns fold first) so a log can be searched for it; fold, never
        # cut, where a terminal is too narrow even for it
        right = col.endswith("images") or col == "classes"
        table.add_column(col, justify="right" if right else "left", overflow="fold", no_wrap=col == "task")
    for t in sorted(report.tasks.values(), key=lambda t: t.task_id):
        counts = [str(t.images.get(s, 0)) for s in report.splits]
        cells = (printable(t.task_id), t.type, str(t.num_classes), *counts, t.size_range(), printable(t.label_text()))
        table.add_row(*(escape(c) for c in cells))  # the data's cells: printable, never escape sequences
    print_table(console, table)
    if report.leakage:
        n = report.leakage
        console.print(
            f"leakage: {n.get('leak_same_file', 0)} same file, {n.get('leak_exact_copy', 0)} exact, "
            f"{n.get('leak_near_duplicate', 0)} near duplicates"
        )
    if report.kept:
        console.print(unchanged_text(report), soft_wrap=True)
    if report.warnings:
        console.print(f"[bold yellow]{_many(len(report.warnings), 'warning')}{_grouped_note(report.warnings)}:[/]")
        print_problems(report.warnings, console)
    if report.ok:
        console.print(f"[green]no problems[/] in {counted(len(report.tasks), 'task')}")
        return
    console.print(f"[bold red]{_many(len(report.problems), 'problem')}{_grouped_note(report.problems)}:[/]")
    print_problems(report.problems, console)


def _many(n: int, noun: str) -> str:
    """`counted` with thousands separated: "3,000 problems"."""
    return f"{n:,} {noun if n == 1 else noun + 's'}"


def _grouped_note(problems: Sequence[Problem]) -> str:
    """Said after the count when some rows are shown as one entry, so no one looks for the other rows' lines."""
    from usagg.data.check import ProblemGroup, grouped

    if not any(isinstance(e, ProblemGroup) for e in grouped(problems)):
        return ""
    return " (rows with the same kind of problem in one CSV shown as one entry; --json lists every row)"


def print_problems(problems: Sequence[Problem], console: Console, root: Path | None = None, limit: int = 0) -> None:
    """One entry per problem, by CSV file and row; rows of one kind in one CSV as one entry (`check.grouped`). With
    `limit`, the first `limit` entries and how many more there are, `usagg data check ROOT` listing them all (what
    `usagg run` and `validate` print)."""
    from rich.markup import escape

    from usagg.data.check import ProblemGroup, grouped
    from usagg.safepath import printable

    entries = grouped(problems)
    for entry in entries[: limit or None]:  # file names and messages carry the data's cells: printable, no escapes
        placed = isinstance(entry, ProblemGroup) or entry.row is not None  # else the message names its CSV
        where = f"[cyan]{escape(printable(entry.where()))}[/]: " if placed else ""
        text = escape(printable(entry.message))
        console.print(f"  [yellow]{entry.kind}[/] {where}{text}", highlight=False, soft_wrap=True)
    if limit and len(entries) > limit:
        check = f" ({escape(command('usagg', 'data', 'check', root))})" if root is not None else ""
        console.print(f"  ... and {len(entries) - limit} more{check}", highlight=False, soft_wrap=True)


def catalog(
    root: Path = typer.Argument(
        ..., metavar="ROOT", help="Dataset root in the FMC_UIA layout (holding train/ and val/)."
    ),
    groups: Path | None = typer.Option(
        None, "--groups", help="YAML mapping group -> task ids (e.g. `OB: [FUGC, cervix]`); else no groups."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the catalog here (default: print it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Write a task catalog (`tasks:` with ids, types, num_classes) from a dataset's CSVs; no image is read.

    Use it from a study with `tasks_from: {catalog: FILE}`.

    Example: usagg data catalog data/FMC_UIA --groups g.yaml --out mine.yaml
    """
    from usagg.atomic import write_text_atomic
    from usagg.data.catalog import catalog_text, data_tasks, read_groups
    from usagg.errors import DataError, UsaggError

    if out is not None and out.exists() and not force:
        raise UsaggError(f"--out {out} exists; give --force to overwrite it, or another path")
    found = data_tasks(root, command="usagg data catalog")
    _note_macos_metadata(root)
    if not found:  # every row had a problem (a bad task id, a control character, ...): no catalog to write
        raise DataError(
            f"no row of the CSVs of {root} names a task usagg can read; "
            f"`{command('usagg', 'data', 'check', Path(root))}` lists each row's problem"
        )
    grouping = read_groups(groups, list(found)) if groups is not None else None
    text = catalog_text(Path(root).absolute(), found, grouping)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    typer.echo(f"wrote {counted(len(found), 'task')} to {out}")


def _note_macos_metadata(root: Path) -> None:
    """The macOS metadata files the catalog skipped beside the CSVs, said on stderr (stdout may be the catalog)."""
    from rich.console import Console
    from rich.markup import escape

    from usagg.data.fmc_uia import macos_note
    from usagg.safepath import printable

    note = macos_note(root, ("train", "val"))
    if note:
        Console(stderr=True).print(f"[yellow]note[/]: {escape(printable(note))}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `data` sub-app (`usagg data check`, `usagg data catalog`)."""
    sub = typer.Typer(
        name="data",
        help="Inspect and check datasets.\n\nExample: usagg data check data/FMC_UIA && usagg data catalog data/FMC_UIA",
        no_args_is_help=True,
    )
    sub.command("check")(check)
    sub.command("catalog")(catalog)
    app.add_typer(sub, name="data")
