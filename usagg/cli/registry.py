"""`usagg registry`: what this installation can run (task types, paradigms, backbones, executors) and from where.

Plug-ins register into the same registries (usagg/tasktypes/, usagg/paradigms.py,
usagg/model/zoo.py, usagg/execute/registry.py), so this is how a user checks that
theirs was found.
"""

from __future__ import annotations

import json

import typer

from usagg.errors import UsaggError

HELP = """List the registered task types, paradigms, backbones and executors (plug-ins included).

Examples:

  usagg registry

  usagg registry task-types

  USAGG_PLUGINS=my_lab.tasks usagg registry task-types --json
"""

KINDS = ("task-types", "paradigms", "backbones", "executors")


def _rows(kind: str) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of one registry (torch-free: the registries hold plain data; plug-ins loaded)."""
    if kind == "task-types":
        from usagg.tasktypes import task_types

        rows = [
            [
                t.name,
                ", ".join(f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in t.metrics),
                t.num_classes_meaning,
                type(t).__module__,
            ]
            for t in task_types()
        ]
        return ["type", "metrics (primary first)", "num_classes", "module"], rows
    if kind == "paradigms":
        from usagg.paradigms import PARADIGMS

        return ["paradigm", "description", "module"], [
            [p.name, p.description, p.planner.__module__] for p in PARADIGMS.values()
        ]
    if kind == "backbones":
        from usagg.model.zoo import BACKBONES

        return ["backbone", "timm model", "depth", "width", "note"], [
            [n, b.timm_name, str(b.depth), str(b.embed_dim), b.note] for n, b in BACKBONES.items()
        ]
    from usagg.execute.registry import EXECUTORS

    return ["executor", "description"], [[e.name, e.description] for e in EXECUTORS.values()]


def registry(
    kind: str | None = typer.Argument(None, metavar="KIND", help="task-types, paradigms, backbones or executors."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list of objects per registry)."),
) -> None:
    if kind is not None and kind not in KINDS:
        from usagg.names import suggest

        raise UsaggError(
            f"usagg registry {kind!r}{suggest(kind, KINDS)}: choose one of {', '.join(KINDS)} (or nothing for all "
            "of them)"
        )
    kinds = [kind] if kind else list(KINDS)
    from usagg.registry import load_plugins

    load_plugins()  # entry points and USAGG_PLUGINS: the point of this command is to show they were found
    tables = {k: _rows(k) for k in kinds}
    if as_json:
        out = {k: [dict(zip(cols, row, strict=True)) for row in rows] for k, (cols, rows) in tables.items()}
        typer.echo(json.dumps(out if kind is None else out[kind], indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    from usagg.cli.display import print_table

    console = Console()
    for k, (cols, rows) in tables.items():
        table = Table(title=k)
        for i, c in enumerate(cols):
            table.add_column(c, no_wrap=i == 0, overflow="fold")  # the name whole; nothing cut off
        for row in rows:
            table.add_row(*row)
        print_table(console, table)


def register(app: typer.Typer) -> None:
    """Add `registry`."""
    app.command("registry", help=HELP)(registry)
