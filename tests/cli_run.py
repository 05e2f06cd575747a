"""The real `usagg` entry point run in-process, as the CLI tests share it."""

from __future__ import annotations

import sys

import pytest

from usagg.cli.app import main


def run_cli(
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: int | None = 250,
) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `usagg ARGS`; `columns` is the terminal width rich lays out for."""
    monkeypatch.setattr(sys, "argv", ["usagg", *args])
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err
