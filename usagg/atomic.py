"""Atomic file writes, shared by the store, the engine, predictions and the analysis.

Write to a temporary name in the target folder, fsync, rename over the target,
fsync the folder: a reader (or a process killed mid-write) sees the old file
or the new one, never half of one. Safe on a shared file system. A full disk
(ENOSPC, or a quota: EDQUOT) raises `NoSpaceLeft` naming the file, with the
temporary file removed, so the target keeps its previous content.

`write_json_checked` / `read_json_checked`: JSON files the store checks when they are
read (metrics.json, item_scores.json) carry a checksum of their content under
`JSON_CHECKSUM_KEY`, so an edited value is named instead of used.

The one file written in place, a job's log.txt, is opened by `open_own_log`: never through a link, never into
a file that has other names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from usagg.errors import UsaggError

#: errno values that mean the disk (or the user's quota) is full.
#: The errors of a full disk or a used-up quota, however a library raises them.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


#: How a full disk's error ends where nothing failed for good: the command, run again, goes on.
AGAIN = ", then run the command again"


class NoSpaceLeft(UsaggError):
    """A write failed because the disk or quota is full; what was there before is kept. `said`: what happened and
    where to make room; `then`: how to go on (`AGAIN`), which a failed job says otherwise (usagg/engine/runner.py
    `disk_full_error`)."""

    def __init__(self, said: str, then: str = AGAIN) -> None:
        super().__init__(said + then)
        self.said, self.then = said, then

    def __reduce__(self) -> tuple[type[NoSpaceLeft], tuple[str, str]]:
        return NoSpaceLeft, (self.said, self.then)  # pickled whole: a worker's error reaches its parent


def no_space_left(path: Path, err: OSError, *, cache: bool = False) -> NoSpaceLeft:
    """The error for a full disk at `path`: what happened, that nothing is half-written, what to do. `cache`: `path`
    is in the cache folder, whose disk may not be the run store's. The advice fits every command; a failed job's
    own way on (`--retry-failed`) is added by usagg/engine/runner.py."""
    if cache:
        where = (
            ": the cache folder's disk is full (USAGG_CACHE, or the study's data.cache_dir; ~/.cache/usagg without "
            "either)"
        )
        room = (
            "free some space there (`usagg cache prune` deletes cache entries unused for 30 days, `--older-than 0` "
            "every entry not in use) or point USAGG_CACHE or data.cache_dir at a disk with room"
        )
    else:
        where, room = "", "free some space (`usagg cache prune` deletes old cache entries)"
    return NoSpaceLeft(
        f"no space left on device at {path} ({err.strerror or err}){where}; nothing was half-written: {room}"
    )


@contextlib.contextmanager
def full_disk_named(path: Path, *, cache: bool = False) -> Iterator[None]:
    """A full disk inside the block (a library's bare OSError, an atomic write's NoSpaceLeft) as `no_space_left`
    naming `path`: numpy and PIL name no file, or a temporary one the user never sees."""
    try:
        yield
    except (OSError, NoSpaceLeft) as err:
        full = _full_disk(err)
        if full is None:
            raise
        raise no_space_left(path, full, cache=cache) from err


def reserve(tmp: Path, named: Path) -> None:
    """Allocate the blocks of `tmp`, a file about to be written through a memory map: a full disk is then
    `NoSpaceLeft` naming `named`, never a SIGBUS in the middle of the writes (the decode cache, the frozen trunk)."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS: the map's writes fill the file as before
        return
    with open(tmp, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno in FULL_DISK:
                raise no_space_left(named, err) from err
            # a file system without allocation: the map's writes fill the file as before


def _full_disk(err: BaseException) -> OSError | None:
    """The OSError saying the disk is full in an exception or its causes (torch and numpy wrap it), else None."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in FULL_DISK:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


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


def write_with(path: Path | str, writer: Callable[[BinaryIO], object]) -> Path:
    """Call writer(f) on a temporary file opened for binary writing next to `path`, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in FULL_DISK:
            raise no_space_left(path, err) from err
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any other file
        os.replace(tmp_name, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        full = _full_disk(err)
        if full is not None and not isinstance(err, NoSpaceLeft):
            raise no_space_left(path, full) from err
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


#: Key of the content checksum in a checked JSON file.
JSON_CHECKSUM_KEY = "checksum"


def json_checksum(obj: dict[str, Any]) -> str:
    """blake2b of a JSON object's canonical form (sorted keys, the checksum key left out), as `blake2b:<hex>`."""
    body = {k: v for k, v in obj.items() if k != JSON_CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "blake2b:" + hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def write_json_checked(path: Path | str, obj: dict[str, Any]) -> Path:
    """Write a JSON object atomically with the checksum of its content (as it reads back), checked on read."""
    body = json.loads(json.dumps({k: v for k, v in obj.items() if k != JSON_CHECKSUM_KEY}, default=str))
    return write_json_atomic(path, {**body, JSON_CHECKSUM_KEY: json_checksum(body)})


#: The most bytes `read_regular` reads from a store file. Far above anything usagg writes: a 27-task study's
#: metrics.json and item_scores.json hold a few MB at most, affinity.json about 20 kB per measurement (the default 5
#: measurements: 0.1 MB; 25,000 measurements of 27 tasks fit), so only a planted file reaches it, which would
#: otherwise take minutes and gigabytes to read and show.
STORE_FILE_LIMIT = 512 * 2**20


def read_regular(path: Path | str, limit: int = STORE_FILE_LIMIT) -> bytes:
    """The bytes of `path` when it is a regular file of at most `limit` bytes; OSError (EINVAL, its strerror saying
    why) for a link, a FIFO, a device or a folder at its name, or a larger file.

    A received store is data: a FIFO there would hang every read (`usagg status` waits for a writer) and
    /dev/zero would fill the memory, so the file is opened without blocking and checked before it is read. The
    store never writes a link (its writes rename a file into place), so a link at a store file's name is planted:
    read through, it would show another file's content in a message (the link is not followed; folders above
    the name may be links).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            why = "a symbolic link stands at its name, not a file usagg wrote"
            raise OSError(errno.EINVAL, why, str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or folder stands at its name)", str(path))
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)  # at most one byte past the limit, should the file grow meanwhile
    finally:
        os.close(fd)
    if len(data) > limit:
        size = max(len(data), os.stat(path, follow_symlinks=False).st_size)
        why = f"{size:,} bytes, more than the {limit:,} a store file may hold: usagg writes far less"
        raise OSError(errno.EINVAL, why, str(path))
    return data


#: Why a file cannot be appended to, by the errno of its opening: a link (O_NOFOLLOW), a FIFO nobody reads, a folder.
_NOT_APPENDABLE = {
    errno.ELOOP: "a symbolic link stands at its name, not a file usagg wrote",
    errno.ENXIO: "not a regular file (a FIFO stands at its name)",
    errno.EISDIR: "not a regular file (a folder stands at its name)",
}


def _open_appending(path: Path, flags: int) -> int:
    """A descriptor appending to the regular file at `path` (opened without following a link nor blocking on a
    FIFO); OSError (EINVAL, its strerror saying why) for a link or anything but a regular file there."""
    try:
        fd = os.open(path, flags | os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK, 0o666)
    except OSError as err:
        why = _NOT_APPENDABLE.get(err.errno or 0)
        if why is None:
            raise
        raise OSError(errno.EINVAL, why, str(path)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or folder stands at its name)", str(path))
    os.set_blocking(fd, True)
    return fd


def open_own_log(path: Path | str) -> tuple[TextIO, Path | None]:
    """`path` opened to append text to, created when absent, and where the file that was there went when it was
    set aside (None when it was not). OSError (EINVAL) for a link, a FIFO, a device or a folder at its name.

    A job's log.txt is the one store file usagg writes in place, so what stands at its name is written through:
    a symbolic link is refused, and a file with other names too (a hard link, which a received store can hold to a
    file outside it: the job's log was appended to that file) is set aside as `<name>.linked` untouched, nothing of
    it lost, and the log starts in a new file of its own.
    """
    path = Path(path)
    fd = _open_appending(path, os.O_CREAT)
    aside = None
    if os.fstat(fd).st_nlink > 1:
        os.close(fd)
        aside = set_aside(path, "linked")
        fd = _open_appending(path, os.O_CREAT | os.O_EXCL)
    return os.fdopen(fd, "a", encoding="utf-8"), aside


def parse_json(raw: bytes) -> Any:
    """The JSON value of a store file's bytes; ValueError for anything but UTF-8 JSON, nesting too deep for Python
    to parse included (a RecursionError, which would otherwise end every command that reads the store)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested deeper than Python can parse") from None


def read_json(path: Path | str, limit: int = STORE_FILE_LIMIT) -> Any:
    """Read a JSON file of the store (a regular file of at most `limit` bytes: `read_regular`); ValueError for what
    is no JSON, too deep a nesting included (`parse_json`)."""
    return parse_json(read_regular(path, limit))


def read_json_checked(path: Path | str) -> tuple[dict[str, Any] | None, str | None]:
    """(content without its checksum, None) for an intact file; (None, why) for a damaged one.

    FileNotFoundError passes through. A file written before checksums existed (no checksum key) reads as
    intact: its schema is all that can be checked.
    """
    try:
        data = parse_json(read_regular(path))
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.EINVAL and err.strerror:  # read_regular: a FIFO, device or oversized file
            return None, err.strerror
        return None, f"not readable ({type(err).__name__}: {str(err)[:120]})"
    except ValueError as err:  # UnicodeDecodeError is a ValueError
        return None, f"not readable JSON ({type(err).__name__}: {str(err)[:120]})"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__}, not an object"
    stored = data.pop(JSON_CHECKSUM_KEY, None)
    if stored is not None and stored != json_checksum(data):
        return None, "it no longer matches its checksum: a value changed after the job wrote it"
    return data, None


def set_aside(path: Path | str, why: str = "damaged") -> Path:
    """Move a file not to be read again to <name>.<why> (numbered when taken; a damaged one by default): kept to look
    at, or to go back to with the usagg that can read it."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.{why}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{why}{n}")
    os.replace(path, aside)
    return aside
