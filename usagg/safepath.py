"""The path and value policies for everything read from data: a spec, a results table, a run store, a cache manifest.

A received run store, an imported results CSV or a cache entry is data, never an
instruction: none of it may point a write (or a read that ends up in a report) outside
the folder it belongs to, and no value of it may start a new line of a script or name
a file in another folder. Two policies, used wherever such a value becomes a path or
a script line:

- the value policy (`check_text`, `check_component`): no control characters (newline,
  carriage return, NUL, escape, ...) in a value that reaches a file name or a script line,
  and for a single file-name component also no separator and no `.` / `..`;
- the path policy (`confined`, `real_folder`): resolved with links followed, the path
  must stay inside its folder; a folder usagg writes into must not be a symbolic link
  planted below the folder it belongs to.

Each refusal is an `UnsafePath` (a `UsaggError`, exit 2) naming where the value came from
(file, field or row), the value, and the folder it must stay in. No torch, no I/O beyond
`os.path` lookups and `no_links`' walk of a folder.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

from usagg.errors import UsaggError

_SHOWN = 120  # characters of a refused value quoted in a message


class UnsafePath(UsaggError):
    """A value from a spec, results table, run store or cache manifest that would lead a write or a line elsewhere."""


def _shown(value: object) -> str:
    text = repr(str(value))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"


def _control(ch: str) -> bool:
    """Whether `ch` is a control character (Cc) or a format character (Cf: zero-width spaces and joiners, the
    bidirectional controls that reorder the text around them, a soft hyphen): a name holding a format character
    displays as another name ("Trojan Source", two job ids that look alike), so both count as control here."""
    return unicodedata.category(ch) in ("Cc", "Cf") or ch in ("\u2028", "\u2029")


def control_characters(value: str) -> list[str]:
    """The control characters in `value` (C0, DEL, C1, line and paragraph separators, format characters such as
    zero-width and bidirectional controls), as escapes, in order."""
    found = [ch for ch in value if _control(ch)]
    return [ascii(ch)[1:-1] for ch in dict.fromkeys(found)]


def printable(text: str) -> str:
    """`text` with every control character but newline and tab shown as its escape, for text read from data that
    reaches a terminal or a report (an error a job recorded, a task name, a file name in a message): an escape
    sequence there would move the cursor, clear the screen or set the window title."""
    return "".join(ascii(ch)[1:-1] if _control(ch) and ch not in "\n\t" else ch for ch in text)


def check_text(value: str, source: str) -> str:
    """`value` unchanged when it carries no control character; else UnsafePath naming `source` and the characters.

    For strings that reach a file name or a line of a generated script (a newline there starts a new line).
    """
    bad = control_characters(str(value))
    if bad:
        raise UnsafePath(
            f"{source}: {_shown(value)} contains control characters ({', '.join(bad)}); a value that becomes a "
            "file name or a line of a generated script must be printable text on one line"
        )
    return value


def component_problem(value: str) -> str | None:
    """Why `value` is not a single plain file-name component, or None when it is one."""
    if not value:
        return "it is empty"
    if control_characters(value):
        return f"it contains control characters ({', '.join(control_characters(value))})"
    if "/" in value or "\\" in value:
        return "it contains a path separator"
    if value in (".", ".."):
        return "it names a folder ('.' or '..'), not a file"
    return None


def check_component(value: str, source: str) -> str:
    """`value` unchanged when it is one file-name component (no separator, not `.`/`..`, no control character)."""
    why = component_problem(str(value)) if isinstance(value, str) else "it is not text"
    if why:
        raise UnsafePath(
            f"{source}: {_shown(value)} is not a single file name ({why}); it must name a file inside its folder"
        )
    return value


def inside(path: Path | str, folder: Path | str) -> bool:
    """Whether `path`, links followed, is `folder` itself or lies below it (links followed too)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def confined(value: Path | str, folder: Path | str, source: str) -> Path:
    """`folder / value` (an absolute `value` as is) when, links followed, it stays inside `folder`; else UnsafePath.

    The value policy applies first: a control character is refused whatever the path.
    """
    check_text(str(value), source)
    path = Path(folder) / value
    if not inside(path, folder):
        raise UnsafePath(
            f"{source}: {_shown(value)} resolves to {os.path.realpath(path)}, outside {folder}, the folder it "
            "must stay in (a path read from data may not point elsewhere, through '..', an absolute path or a "
            "symbolic link)"
        )
    return path


def real_folder(folder: Path | str, base: Path | str, source: str) -> Path:
    """`folder` when no part of it below `base` is a symbolic link and it stays inside `base`; else UnsafePath.

    For the folders usagg writes into (report and figure folders): `base` is the folder the user chose (or
    the default `reports/`), the parts below it come from data (a study name, `figures`), and a link planted
    there would send every write through it. `base` itself may be a link: the user chose it.
    """
    folder, base = Path(folder), Path(base)
    check_text(str(folder), source)
    try:
        below = folder.relative_to(base).parts
    except ValueError:
        raise UnsafePath(f"{source}: {folder} is not inside {base}, the folder it must stay in") from None
    step = base
    for part in below:
        check_component(part, source)
        step = step / part
        if step.is_symlink():
            raise UnsafePath(
                f"{source}: {step} is a symbolic link (to {os.readlink(step)}); usagg writes into {folder} and will "
                f"not write through a link planted inside {base}: remove the link (or give another output folder)"
            )
    return folder


def no_links(folder: Path | str, source: str, allowed: Callable[[Path], bool] | None = None) -> Path:
    """`folder` when neither it nor anything below it is a symbolic link (none followed) but those `allowed` passes;
    else UnsafePath naming the first link.

    For the folders usagg alone writes into (a job's folder, submitit's folder of a run store): it makes no links
    there, so one was planted (a received store), and the job's log, checkpoints or deletions would go through it.
    `allowed`: the links a library usagg runs there makes itself (usagg/store/links.py `submitit_link`).
    """
    folder = Path(folder)
    link = folder if folder.is_symlink() else None
    walk = os.walk(folder) if link is None else iter(())  # os.walk follows no link
    for root, dirs, files in walk:
        found = (Path(root, n) for n in sorted(dirs + files) if Path(root, n).is_symlink())
        link = next((p for p in found if allowed is None or not allowed(p)), None)
        if link is not None:
            break
    if link is not None:
        raise UnsafePath(
            f"{source}: {link} is a symbolic link (to {os.readlink(link)}); usagg makes no links in {folder} and "
            "will not write, append or delete through one planted there: remove the link (a run store received "
            "from elsewhere may carry one) and run again"
        )
    return folder
