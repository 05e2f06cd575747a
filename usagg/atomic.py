"""Atomic file writes, shared by the store, the engine, predictions and the analysis.

Write to a temporary name in the target folder, fsync, rename over the target,
fsync the folder: a reader (or a process killed mid-write) sees the old file
or the new one, never half of one. Safe on a shared file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; best effort (some file systems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: Path | str, writer: Callable[[BinaryIO], None]) -> Path:
    """Call writer(f) on a temporary file opened for binary writing next to `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any other file
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write bytes atomically."""
    return write_with(path, lambda f: f.write(data))


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Write indented JSON atomically, so the store stays readable by people."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def set_aside(path: Path | str) -> Path:
    """Move a damaged file to <name>.damaged (numbered when taken): kept to look at, never read again."""
    path = Path(path)
    aside = path.with_name(path.name + ".damaged")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged{n}")
    os.replace(path, aside)
    return aside
