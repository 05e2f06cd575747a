"""How a count reads in a message or a report: "1 task", "2 tasks", never "1 tasks"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, the noun in the plural (`plural`, else noun + "s") unless `n` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
