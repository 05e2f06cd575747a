"""Help read piped or at another width than the source's: prose wrapped at the terminal's width, never broken where
the docstring had a hard line break; Example lines, lists and tables kept on their own lines (usagg/cli/app.py
`reflowed`)."""

from __future__ import annotations

import inspect
from itertools import pairwise

import cli_run
import click
import pytest
import typer

from usagg.cli.app import app, reflowed

COLUMNS = 100


def _commands() -> dict[str, click.Command]:
    """Every command and group by the words naming it ('' for `usagg` itself), with the help its docstring gives."""

    def walk(cmd: click.Command, words: str, ctx: click.Context) -> dict[str, click.Command]:
        found = {words: cmd}
        if hasattr(cmd, "list_commands"):  # a group (typer's own group class, whichever click it builds on)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                found |= walk(sub, f"{words} {name}".strip(), click.Context(sub, parent=ctx))
        return found

    root = typer.main.get_command(app)
    return walk(root, "", click.Context(root))


COMMANDS = _commands()


def _doc(command: click.Command) -> str:
    return inspect.cleandoc(command.help or "").partition("\f")[0]


def _is_list(paragraph: str) -> bool:
    return sum(line.startswith(("-", "*", "|")) for line in paragraph.splitlines()) >= 2


def _own_lines(doc: str) -> list[str]:
    """The docstring lines help must start a line with: examples, indented lines, the lines of a list."""
    return [
        line.strip()
        for paragraph in doc.split("\n\n")
        for i, line in enumerate(paragraph.splitlines())
        if i == 0 or _is_list(paragraph) or line.startswith((" ", "Example"))
    ]


def _prose(text: str) -> list[str]:
    """The rendered help's text between its usage line and its first panel, without rich's one-column margin."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    return [line[1:].rstrip() for line in lines[start:end]]


def _ragged(lines: list[str], own: list[str]) -> list[str]:
    """Line breaks the wrapping did not need: the next line's first word would have fitted (the widest line is at
    most the width rich wraps at), and the next line starts no line the docstring keeps on its own."""
    width = max(len(line) for line in lines)
    return [
        f"{line!r} / {after!r}"
        for line, after in pairwise(lines)
        if line.strip()
        and after.strip()
        and len(line) + 1 + len(after.split()[0]) <= width
        and not any(after.strip().startswith(kept[:40]) for kept in own)
    ]


@pytest.mark.parametrize("words", list(COMMANDS), ids=lambda w: w or "usagg")
def test_help_prose_is_wrapped_at_the_terminal_width(
    words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped at 100 columns: the docstring's words all there in order, no line ending mid-sentence where the
    docstring had a hard break, and every Example line starting a line of its own."""
    doc = _doc(COMMANDS[words])
    code, text = cli_run.run_cli([*words.split(), "--help"], monkeypatch, capsys, columns=COLUMNS)
    assert code == 0, text
    prose = _prose(text)
    assert " ".join(" ".join(prose).split()) == " ".join(doc.split())
    assert not _ragged(prose, _own_lines(doc)), "\n".join(prose)
    examples = [line for line in doc.splitlines() if line.startswith("Example")]
    assert examples, doc
    for example in examples:
        assert any(line.strip().startswith(example[: COLUMNS // 2]) for line in prose), (example, prose)


def test_command_list_shows_each_first_paragraph_wrapped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg --help` lists each command with its docstring's first paragraph, wrapped in the description column
    (typer's rich mode kept the hard breaks there too: 'resuming where it' / 'stopped.')."""
    code, text = cli_run.run_cli(["--help"], monkeypatch, capsys, columns=COLUMNS)
    assert code == 0, text
    panel = text[text.index("╭─ Commands") :].partition("╰")[0].splitlines()[1:]
    rows: dict[str, list[str]] = {}
    name = ""
    for line in panel:
        inner = line[1:-1]  # between the panel's borders
        if inner[1] != " ":  # a command's name starts its row
            name, _, inner = inner.strip().partition(" ")
            rows[name] = []
        rows[name].append(inner.strip())
    for name, lines in rows.items():
        first = _doc(COMMANDS[name]).split("\n\n")[0]
        assert " ".join(lines) == " ".join(first.split()), name
        assert not _ragged(lines, []), (name, lines)


def test_reflowed_joins_prose_and_keeps_examples_lists_and_tables() -> None:
    doc = (
        "First line\nof a sentence.\n\n"
        "Prose that goes\non.\nExample: usagg plan x.yaml\n\n"
        "- one item\n- another item\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "\b\nkept\nas written\n\n"
        "Examples:\n  usagg run x.yaml\n  usagg run y.yaml"
    )
    assert reflowed(doc) == (
        "First line of a sentence.\n\n"
        "Prose that goes on.\nExample: usagg plan x.yaml\n\n"
        "- one item\n- another item\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "\b\nkept\nas written\n\n"
        "Examples:\n  usagg run x.yaml\n  usagg run y.yaml"
    )
    assert reflowed(None) is None and reflowed("") == ""
    assert reflowed(reflowed(doc)) == reflowed(doc)


@pytest.mark.parametrize("words", list(COMMANDS))
def test_every_example_fits_a_piped_80_column_help(words: str) -> None:
    """An example line is copied whole: inside the help's margins at 80 columns (rich's width in a pipe or a CI log)
    it never wraps (a comment beside a long command wrapped it, the rest of the line losing its indent)."""
    examples = [
        line.strip() for line in _doc(COMMANDS[words]).splitlines() if line.strip().startswith(("usagg ", "Example"))
    ]
    assert all(len(line) <= 76 for line in examples), [line for line in examples if len(line) > 76]
