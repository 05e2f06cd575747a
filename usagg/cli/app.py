"""The `usagg` entry point: builds the Typer app and turns UsaggError into a clean exit."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from usagg import __version__
from usagg.cli import analysis, cache, data, init, registry, runs, spec_cmds, synth
from usagg.errors import UsaggError

app = typer.Typer(
    name="usagg",
    help="Orchestrate the ultrasound task-aggregation study: TS / CG / AU jobs, metrics, statistics, figures.\n\n"
    "Example: usagg run studies/demo.yaml && usagg compare --baseline TS && usagg plot",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"usagg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """usagg: one YAML study spec in, the whole task-aggregation study out."""


for _module in (init, spec_cmds, synth, data, runs, analysis, cache, registry):
    _module.register(app)


def main() -> None:
    """Console-script entry: user errors become one red paragraph and their exit code, never a traceback."""
    try:
        app()
    except UsaggError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
