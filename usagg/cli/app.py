"""The `usagg` entry point: builds the Typer app and turns UsaggError into a clean exit."""

from __future__ import annotations

import os
import re
import sys
import weakref
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from usagg import __version__
from usagg.cli import analysis, cache, data, init, registry, repair, runs, spec_cmds, synth, weights
from usagg.cli.stores import study_folder_checked
from usagg.errors import UsaggError
from usagg.safepath import printable
from usagg.signals import exit_on_sigterm

app = typer.Typer(
    name="usagg",
    help="Orchestrate the ultrasound task-aggregation study: TS, CG, AU and AG jobs with their controls, metrics, "
    "statistics, figures.\n\n"
    "Example: usagg run studies/demo.yaml && usagg compare && usagg plot",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
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


for _module in (init, spec_cmds, synth, data, runs, repair, analysis, cache, registry, weights):
    _module.register(app)
for _info in app.registered_commands:  # every RUN_DIR (status, compare, repair, ...): a study folder is pointed to
    if _info.callback is not None:  # the run store its spec names (usagg/cli/stores.py)
        _info.callback = study_folder_checked(_info.name or _info.callback.__name__, _info.callback)


#: typer's annotation labels and what help shows instead.
_LABELS = {"str": "TEXT", "int": "INT", "int range": "INT", "float": "FLOAT", "float range": "FLOAT", "path": "PATH"}


def plain_help(command: Any) -> Any:
    """Help that shows what a value looks like (INT, PATH, a|b), never Python types such as <bool> or <list[str]>,
    and whose prose is wrapped at the terminal's width (`reflowed`).

    typer 0.29 labels every parameter with its annotation, so a flag reads as if it took a
    value (`--json <bool>`). Each parameter's label is rewritten on the instance, for every command.
    """
    command.help = reflowed(command.help)
    for param in command.params:
        _relabel(param)
    original_help = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = original_help(ctx)
        if option is not None:
            _relabel(option)
        return option

    command.get_help_option = help_option
    for sub in (getattr(command, "commands", None) or {}).values():
        plain_help(sub)
    return command


#: A line that begins a list item or a table row: `- x`, `* x`, `--from x: ...`, `| a | b |`, `1. x`.
_LIST_LINE = re.compile(r"^(?:[-*|\u2022]|\d+[.)]\s)")
#: A line that keeps its own line within reflowed prose: an example, or an indented line (a command to copy).
_OWN_LINE = re.compile(r"^(?:\s|Examples?:)")


def reflowed(text: str | None) -> str | None:
    """`text` with the hard line breaks of each prose paragraph joined, so rich wraps it at the terminal's width.

    typer's "rich" mode keeps a docstring's single line breaks, so help read at another width than the source's
    (piped: 80 columns, or a wide terminal) breaks lines mid-sentence. Markdown mode would join them, but reads
    `*`, `_` and backticks in the help as markup. Kept as written: a paragraph with two or more list or table
    lines (`_LIST_LINE`), click's no-rewrap paragraph (starting with \\b), and an Example or indented line, which
    stays on its own line.
    """
    if not text:
        return text
    return "\n\n".join(_reflowed_paragraph(p) for p in text.split("\n\n"))


def _reflowed_paragraph(paragraph: str) -> str:
    lines = paragraph.split("\n")
    if paragraph.startswith("\b") or sum(bool(_LIST_LINE.match(line)) for line in lines) >= 2:
        return paragraph
    out: list[str] = []
    for line in lines:
        if out and line.strip() and not _OWN_LINE.match(line) and not _OWN_LINE.match(out[-1]):
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


#: The label functions `_relabel` made: a parameter showing one is not wrapped again.
_RELABELLED: weakref.WeakSet[Callable[[Any], str | None]] = weakref.WeakSet()


def _relabel(param: Any) -> None:
    """Replace one parameter's type label (see `plain_help`); a relabelled parameter is left as it is.

    typer releases before the annotation labels have no `display_type_rich`: nothing to rewrite there.
    """
    original = getattr(param, "display_type_rich", None)
    if original is None or original in _RELABELLED:
        return

    def label(ctx: Any) -> str | None:
        if getattr(param, "is_flag", False):
            return None
        text = original(ctx)
        if not text:
            return text
        inner = text.strip("<>").removesuffix("...")
        if inner.startswith("list[") and inner.endswith("]"):
            inner = inner[5:-1]
        return _LABELS.get(inner, inner)

    _RELABELLED.add(label)
    param.display_type_rich = label


def main() -> None:
    """Console-script entry: user errors become one red paragraph and their exit code, never a traceback."""
    exit_on_sigterm()  # usagg/signals.py: SIGTERM stops a run as Ctrl-C does, exit 143
    setattr(Console, "on_broken_pipe", _reader_stopped)  # noqa: B010  # this process only: the CLI's consoles
    try:
        plain_help(typer.main.get_command(app))(prog_name="usagg")
    except UsaggError as err:
        shown = escape(printable(str(err)))  # a value from data in the message must not act on the terminal
        Console(stderr=True).print(f"[bold red]error:[/] {shown}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except OSError as err:  # an output that cannot be written (read-only, full disk, impossible path)
        shown = escape(printable(os_error_text(err)))
        Console(stderr=True).print(f"[bold red]error:[/] {shown}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _reader_stopped(console: Console) -> None:
    """A reader that stops early (`usagg status | head -1`) ends the command as done, exit 0 as `compare` and
    `plan` do, rather than rich's exit 1, which `set -o pipefail` scripts would take for a failure. What is left
    goes to the null device, so Python reports no broken pipe at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)


def os_error_text(err: OSError) -> str:
    """One paragraph for a file-system error: the path, the cause, and that nothing written earlier was lost."""
    path = err.filename if err.filename is not None else "a file"
    other = f" (and {err.filename2})" if err.filename2 else ""
    cause = err.strerror or str(err)
    if isinstance(err, FileExistsError | NotADirectoryError):
        cause = f"{cause}: it is a file where a folder is needed"
    return (
        f"could not use {path}{other}: {cause}. Check that the folder exists and is writable and that the disk "
        "has room; files already written were written atomically and are unchanged."
    )


if __name__ == "__main__":
    main()
