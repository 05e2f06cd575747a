"""User-facing errors: one paragraph naming the file, field or row and what was expected.

The CLI prints them without a traceback and exits with `exit_code`.
"""

from __future__ import annotations


class UsaggError(Exception):
    """A problem the user can fix (bad spec, bad data, bad path). Exit code 2 by default."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SpecError(UsaggError):
    """The study spec or a --set override is invalid."""


class DataError(UsaggError):
    """The dataset on disk does not match what the study expects."""


def first_line(err: BaseException) -> str:
    """The first non-blank line of an error's message ('' without one), a SyntaxError's as its message with the
    file and line: what a one-paragraph message or a log line quotes of an error it reports."""
    text = str(err).strip()
    if isinstance(err, SyntaxError) and err.filename:
        text = f"{err.msg} ({err.filename}, line {err.lineno})"
    return (text.splitlines() or [""])[0]
