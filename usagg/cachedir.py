"""Where usagg keeps what it can rebuild, what is there, and pruning what has not been used for a while.

The cache holds decoded images (`decode/<key>.npy`), synthetic benchmarks
(`synth/<key>/`), memoised analysis outputs (`analysis/stats`, `analysis/figures`), the data
check's findings per dataset root (`datacheck/<key>.sqlite`, usagg/data/checkcache.py) and the
encoder's compiled code on CUDA (`compile/torch-<version>/`, usagg/engine/accel.py).
Every entry is rebuilt on its next use, so pruning only costs time. Readers refresh an
entry's modification time when they use it, which is what "last used" means here.
Decode and synthetic entries are deleted under the same lock their builders take, and
one whose lock is held is skipped as in use. Only names usagg gives its entries (a hex key, or
`torch-<version>` for compiled code) are listed or deleted: a cache folder pointed at a project or a
data folder keeps every file usagg did not write.
Nothing is listed, locked or deleted through a symbolic link (a kind folder, an entry, its lock): a link in a
received or shared cache may lead anywhere, to a repository's objects or a user's files with hex names, so it is
skipped and reported (`entries`/`prune` collect it in `skipped`), and deletion opens each folder below the root
without following links (`_remove_below`).

Compiled code is executed as found (inductor unpickles it), so that folder must be one usagg can vouch for:
usagg/cachetrust.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from usagg.atomic import FULL_DISK, no_space_left
from usagg.errors import UsaggError

CACHE_ENV = "USAGG_CACHE"
KINDS = ("decode", "synth", "analysis", "filehash", "datacheck", "trunk", "compile")
COMPILE_MARKER = "usagg-compile-cache.json"  # usagg/engine/accel.py: the folder's torch version; its time, last use
SYNTH_MARKER = ".usagg-complete"  # written last into a finished synthetic benchmark (usagg.data.source)
_HEX_KEY = re.compile(r"[0-9a-f]{16,64}")  # every keyed entry: a digest's hex, 16 to 64 digits
_COMPILE_NAME = re.compile(r"torch-[0-9][0-9A-Za-z._-]*")  # usagg/engine/accel.py `compile_cache`


def entry_key(name: str) -> str | None:
    """The hex key a file or folder of usagg's cache is named by (`<key>`, `<key>.<suffixes>`, `.<key>.tmp-…` of a
    writer), None for a name usagg never gives: such a file is not the cache's to list or delete."""
    key = name.removeprefix(".").split(".", 1)[0]
    return key if _HEX_KEY.fullmatch(key) else None


def cache_root(configured: Path | str | None = None) -> Path:
    """`configured` (a study's data.cache_dir), else $USAGG_CACHE, else ~/.cache/usagg."""
    if configured is not None:
        return Path(configured)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "usagg"


#: errno values of a folder usagg may not write: a read-only mount, a folder of another user.
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def unwritable(root: Path, err: OSError) -> UsaggError:
    """The error for a cache folder usagg cannot write: which folder, which settings choose it, what to do."""
    return UsaggError(
        f"the cache folder {root} is not writable ({err.strerror or err}): usagg keeps decoded images, the synthetic "
        "benchmark and the frozen trunk there and takes a lock file beside every entry it uses, even one built "
        "already. Point USAGG_CACHE or data.cache_dir (the study's setting wins) at a writable folder (copy a "
        "read-only cache there to keep its entries), then run again"
    )


def _cache_error(root: Path, path: Path, err: OSError) -> UsaggError | None:
    """`err` met writing `path` in the cache folder `root` as the user should read it (unwritable, or full); None
    for another error, which goes on as it is."""
    if err.errno in UNWRITABLE:
        return unwritable(root, err)
    if err.errno in FULL_DISK:
        return no_space_left(path, err, cache=True)
    return None


def check_writable(root: Path) -> None:
    """`unwritable` (or NoSpaceLeft) unless a file can be made in the cache folder `root`, or in the folder its
    creation would start from: said once before a run's first job, not by every job at its first lock. The probe
    is an unnamed temporary file (O_TMPFILE where the system has it), so nothing is left behind."""
    probe = next((p for p in (root, *root.parents) if p.exists()), root)
    if not probe.is_dir():  # USAGG_CACHE naming a file: the probe's own error named a temporary file in it
        raise UsaggError(
            f"the cache folder {root} cannot be made: {probe} is a file, not a folder. Point USAGG_CACHE or "
            "data.cache_dir (the study's setting wins) at a folder, then run again"
        )
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        if (mapped := _cache_error(root, probe, err)) is None:
            raise
        raise mapped from err


@contextlib.contextmanager
def entry_lock(root: Path, lock: Path) -> Iterator[None]:
    """The builders' lock of a cache entry under the cache folder `root` (what `prune` takes before deleting), its
    folder made first: a folder usagg cannot write is `unwritable`'s paragraph, not filelock's OSError."""
    from filelock import FileLock

    held = FileLock(str(lock))
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        held.acquire()
    except OSError as err:
        if (mapped := _cache_error(root, lock, err)) is None:
            raise
        raise mapped from err
    try:
        yield
    finally:
        held.release()


@dataclass(frozen=True)
class Entry:
    """One rebuildable cache entry: its files, disk use (`_size`) and last use (epoch seconds)."""

    kind: str
    name: str
    paths: tuple[Path, ...]
    size: int
    last_used: float
    lock: Path | None = None  # the builders' lock, taken while deleting


def _used(st: os.stat_result) -> int:
    """The disk a file takes, whole blocks (what deleting it frees): a synthetic benchmark's few-hundred-byte PNGs
    each take a 4 KB block, six times their bytes; a sparse file takes less than its length."""
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def _size(path: Path) -> int:
    """Disk use of a file, or of every file below a folder (`_used`); links count as themselves, never what they
    point at."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0  # gone meanwhile
    if not stat.S_ISDIR(st.st_mode):
        return _used(st)
    total = 0
    for folder, _, files in os.walk(path):  # follows no link
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += _used(os.lstat(os.path.join(folder, name)))
    return total


def _linked(path: Path, skipped: list[Path]) -> bool:
    """Whether `path` is a symbolic link, noted in `skipped`: it is never listed, locked or deleted through."""
    if path.is_symlink():
        if path not in skipped:  # a synth lock is met as a name and as its folder's lock
            skipped.append(path)
        return True
    return False


def _named(folder: Path, name_ok: Callable[[str], bool], skipped: list[Path]) -> list[Path]:
    """`folder`'s children with a name usagg gives (`name_ok`), links left out and noted in `skipped`."""
    return [p for p in sorted(folder.iterdir()) if name_ok(p.name) and not _linked(p, skipped)]


def _is_key(name: str) -> bool:
    return entry_key(name) is not None


def _decode_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """`<key>.npy` (data, refreshed on use), `<key>.hw.npy`, `<key>.lock` and leftovers of killed writers."""
    return _keyed_entries(folder, "decode", "npy", skipped)


def _trunk_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """Frozen-trunk outputs (usagg/model/trunk.py): `<key>.npy`, `<key>.json` (its seal; last use), `<key>.lock`.

    The data file's mtime is part of its integrity seal and never touched, so last use is the JSON's.
    """
    return _keyed_entries(folder, "trunk", "json", skipped)


def _keyed_entries(folder: Path, kind: str, used_suffix: str, skipped: list[Path]) -> list[Entry]:
    """Entries whose files share a `<key>.` prefix; last use is `<key>.<used_suffix>`'s mtime when it exists. A key
    with a link among its files (its lock included) is left whole: its lock would be taken in the link's target."""
    by_key: dict[str, list[Path]] = {}
    linked: set[str] = set()
    for p in sorted(folder.iterdir()):
        if (key := entry_key(p.name)) is None:
            continue
        if _linked(p, skipped):
            linked.add(key)
        else:
            by_key.setdefault(key, []).append(p)
    out = []
    for key, paths in by_key.items():
        files = [p for p in paths if not p.name.endswith(".lock")]
        if not files or key in linked:
            continue  # a lone lock file is how a pruned entry ends (reused by the next builder); a link: skipped
        marker = folder / f"{key}.{used_suffix}"
        used = (marker if marker in files else max(files, key=lambda p: p.stat().st_mtime)).stat().st_mtime
        size = sum(_size(p) for p in files)
        out.append(Entry(kind, key, tuple(sorted(files)), size, used, folder / f"{key}.lock"))
    return out


def _synth_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """Finished benchmarks (last used: their marker, refreshed on use) and unfinished temporary folders."""
    out = []
    for p in _named(folder, _is_key, skipped):
        if not p.is_dir():
            continue
        lock = None if p.name.startswith(".") else folder / f".{p.name}.lock"
        if lock is not None and _linked(lock, skipped):
            continue
        marker = p / SYNTH_MARKER
        used = (marker if marker.is_file() and not marker.is_symlink() else p).stat().st_mtime
        out.append(Entry("synth", p.name, (p,), _size(p), used, lock))
    return out


def _analysis_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    out = []
    for sub in _named(folder, lambda name: name in ("stats", "figures"), skipped):
        if sub.is_dir():
            for p in _named(sub, _is_key, skipped):
                out.append(Entry("analysis", f"{sub.name}/{p.name}", (p,), _size(p), p.stat().st_mtime))
    return out


def _filehash_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """Content digests of weights files (usagg/filehash.py): one small record each, recomputed when pruned."""
    return [
        Entry("filehash", p.stem, (p,), _size(p), p.stat().st_mtime)
        for p in _named(folder, _is_key, skipped)
        if p.suffix == ".json"
    ]


def _datacheck_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """The data check's findings, a SQLite file per dataset root (usagg/data/checkcache.py); last use is its time,
    refreshed by each check."""
    out = []
    for p in _named(folder, _is_key, skipped):
        if p.suffix != ".sqlite":
            continue
        extra = [q for q in (Path(f"{p}{s}") for s in ("-journal", "-wal", "-shm")) if os.path.lexists(q)]
        if any(_linked(q, skipped) for q in extra):
            continue
        files = (p, *extra)
        out.append(Entry("datacheck", p.stem, files, sum(_size(f) for f in files), p.stat().st_mtime))
    return out


def _compile_entries(folder: Path, skipped: list[Path]) -> list[Entry]:
    """Compiled code, a folder per torch version (`torch-<version>`); last use is its marker's time, refreshed by
    each job that compiles (a folder without one is a leftover, as old as its own time)."""
    out = []
    for p in _named(folder, lambda name: _COMPILE_NAME.fullmatch(name) is not None, skipped):
        lock = p.parent / f"{p.name}.lock"
        if not p.is_dir() or _linked(lock, skipped):
            continue
        marker = p / COMPILE_MARKER
        used = (marker if marker.is_file() and not marker.is_symlink() else p).stat().st_mtime
        out.append(Entry("compile", p.name, (p,), _size(p), used, lock))
    return out


_LISTERS: dict[str, Callable[[Path, list[Path]], list[Entry]]] = {
    "decode": _decode_entries,
    "synth": _synth_entries,
    "analysis": _analysis_entries,
    "filehash": _filehash_entries,
    "datacheck": _datacheck_entries,
    "trunk": _trunk_entries,
    "compile": _compile_entries,
}


def entries(root: Path, kinds: tuple[str, ...] = KINDS, skipped: list[Path] | None = None) -> list[Entry]:
    """Every entry of these kinds under the cache root, oldest use first. Links (a kind folder, an entry or its lock)
    are left out and appended to `skipped`: a received or shared cache may link anywhere."""
    found: list[Path] = [] if skipped is None else skipped
    out: list[Entry] = []
    for kind in kinds:
        folder = Path(root) / kind
        if not _linked(folder, found) and folder.is_dir():
            out += _LISTERS[kind](folder, found)
    return sorted(out, key=lambda e: e.last_used)


def remove(path: Path) -> None:
    """Delete a cache file or folder, following no link: a link is removed itself, a folder's links are removed, not
    what they point at (shutil.rmtree; fd-based on Linux, so a folder swapped for a link meanwhile is refused);
    already gone is fine (another pruner got there first)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)


def _remove_below(root: Path, path: Path) -> bool:
    """Delete `path`, an entry under `root`, opening each folder from `root` down without following a link, so
    neither a link found nor one swapped in after the listing leads the deletion outside the cache. False: a link
    stood in the way, and the entry is left; other errors are ignored as before (another pruner got there first)."""
    *folders, name = path.relative_to(root).parts
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # the cache root the user chose: a link there is theirs
    except FileNotFoundError:
        return True
    try:
        for part in folders:
            inner = os.open(part, _DIR_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return False
        if stat.S_ISDIR(st.st_mode):
            _rmtree_at(fd, name)
        else:
            os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        if isinstance(err, NotADirectoryError) or err.errno == errno.ELOOP:
            return False  # a folder on the way is a link (O_NOFOLLOW refused it)
    finally:
        os.close(fd)
    return True


def _rmtree_at(dir_fd: int, name: str) -> None:
    """Remove the folder `name` of `dir_fd` and everything in it, each folder opened without following a link: a link
    is unlinked, never followed (shutil.rmtree takes dir_fd only from Python 3.11). Errors below are ignored."""
    fd = os.open(name, _DIR_NOFOLLOW, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as it:
            inner = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in inner:
            with contextlib.suppress(OSError):
                if is_dir:
                    _rmtree_at(fd, child)
                else:
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _held(lock: Path | None) -> contextlib.AbstractContextManager[object]:
    """The builders' lock of an entry, taken at once (filelock's Timeout if a builder holds it); none: nothing."""
    from filelock import FileLock

    return contextlib.nullcontext() if lock is None else FileLock(str(lock), timeout=0)


def prune(
    root: Path,
    older_than_s: float,
    kinds: tuple[str, ...] = KINDS,
    *,
    dry_run: bool = False,
    skipped: list[Path] | None = None,
) -> tuple[list[Entry], list[Entry]]:
    """Delete entries unused for longer than `older_than_s`; returns (deleted or would be, skipped as in use). Links
    are neither listed, locked nor deleted through; they are appended to `skipped` (`entries`)."""
    from filelock import Timeout

    found: list[Path] = [] if skipped is None else skipped
    cutoff = time.time() - older_than_s
    done, busy = [], []
    for e in entries(root, kinds, found):
        if e.last_used > cutoff:
            continue
        if dry_run:
            done.append(e)
            continue
        try:
            with _held(e.lock):
                gone = [_remove_below(Path(root), p) for p in e.paths]
        except Timeout:
            busy.append(e)
            continue
        if all(gone):
            done.append(e)
        else:
            found += [p for p, ok in zip(e.paths, gone, strict=True) if not ok]
    return done, busy
