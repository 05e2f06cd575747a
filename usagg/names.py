"""Did-you-mean for names users type: spec keys, registered types, paradigms, executors, catalogs."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

#: A plain name (study, task, group): what may become part of a path or a job id; the spec's `Name` pattern.
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: `PLAIN_NAME` in words, as a message says it: ASCII said, since `é` is a letter to a user, not to the pattern.
PLAIN_NAME_RULE = "ASCII letters, digits, '_', '.' and '-', starting with a letter or digit"


def is_plain_name(value: object) -> bool:
    """Whether `value` is a plain name: ASCII letters, digits, '_', '.', '-', starting with a letter or digit, <= 80
    long."""
    return isinstance(value, str) and len(value) <= 80 and bool(PLAIN_NAME.match(value))


def suggest(name: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists (the same name in another case first: `ts` for TS, which
    difflib scores far apart), else ''."""
    names = [str(c) for c in choices]
    same = [c for c in names if c.casefold() == str(name).casefold() and c != str(name)]
    close = same or difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, known: Sequence[str]) -> str:
    """The message for a name no registry holds: what was given, the closest match, and every registered name."""
    return f"unknown {kind} {name!r}{suggest(name, known)}; registered {kind}s: {', '.join(known)}"
