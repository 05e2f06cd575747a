"""How words read in a message or a report: "1 task", "2 tasks", never "1 tasks"; a path or a command line a user
pastes into a shell, quoted so that a folder named `t$(touch x)` is a name there, never a command."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

#: How many names a message lists before "... and N more": a study plans a hundred jobs and more, and a paragraph
#: listing them all hides the closest name.
LISTED = 8


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, the noun in the plural (`plural`, else noun + "s") unless `n` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def listed(names: Sequence[str], most: int = LISTED, sep: str = ", ") -> str:
    """The first `most` names and how many more there are; all of them when only one more would be left out.
    `sep` joins them ("\n  ": a line each, as a warning block lists its causes)."""
    if len(names) <= most + 1:
        return sep.join(names) or "none"
    return f"{sep.join(names[:most])}{sep}... and {len(names) - most} more"


def counted_named(names: Sequence[str], noun: str) -> str:
    """'2 jobs (A, B)': how many, the first three named."""
    n = len(names)
    return f"{counted(n, noun)} ({', '.join(names[:3])}{f' and {n - 3} more' if n > 3 else ''})"


def shown_path(path: Path | str) -> str:
    """A path as a command line takes it pasted: shell-quoted, and `./` before a leading `-` (else an option)."""
    text = Path(path).as_posix()
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def command(*words: str | Path) -> str:
    """A command line a message tells the user to paste: usagg's own words as they are, every path (a `Path`) through
    `shown_path` and any other word shell-quoted."""
    return " ".join(shown_path(w) if isinstance(w, Path) else shlex.quote(w) for w in words)


def row_ranges(rows: Iterable[int], shown: int = 4) -> str:
    """Row numbers as ranges, "11-3010" or "2, 5-9 and 3 more ranges"; the first `shown` ranges only."""
    spans: list[list[int]] = []
    for r in sorted(set(rows)):
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    text = [str(a) if a == b else f"{a}-{b}" for a, b in spans[:shown]]
    more = len(spans) - shown
    return ", ".join(text) + (f" and {counted(more, 'more range')}" if more > 0 else "")
