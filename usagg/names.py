"""Did-you-mean for names users type: spec keys, registered types, paradigms, executors, catalogs."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def suggest(name: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, known: Sequence[str]) -> str:
    """The message for a name no registry holds: what was given, the closest match, and every registered name."""
    return f"unknown {kind} {name!r}{suggest(name, known)}; registered {kind}s: {', '.join(known)}"
