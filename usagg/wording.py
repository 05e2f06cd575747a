"""How words read in a message or a report: "1 task", "2 tasks", never "1 tasks"; a path or a command line a user
pastes into a shell, quoted so that a folder named `t$(touch x)` is a name there, never a command."""

from __future__ import annotations

import shlex
from pathlib import Path


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, the noun in the plural (`plural`, else noun + "s") unless `n` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shown_path(path: Path | str) -> str:
    """A path as a command line takes it pasted: shell-quoted, and `./` before a leading `-` (else an option)."""
    text = Path(path).as_posix()
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def command(*words: str | Path) -> str:
    """A command line a message tells the user to paste: usagg's own words as they are, every path (a `Path`) through
    `shown_path` and any other word shell-quoted."""
    return " ".join(shown_path(w) if isinstance(w, Path) else shlex.quote(w) for w in words)
