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
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Entry:
    """One rebuildable cache entry: its files, total size and last use (epoch seconds)."""

    kind: str
    name: str
    paths: tuple[Path, ...]
    size: int
    last_used: float
    lock: Path | None = None  # the builders' lock, taken while deleting


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _decode_entries(folder: Path) -> list[Entry]:
    """`<key>.npy` (data, refreshed on use), `<key>.hw.npy`, `<key>.lock` and leftovers of killed writers."""
    return _keyed_entries(folder, "decode", "npy")


def _trunk_entries(folder: Path) -> list[Entry]:
    """Frozen-trunk outputs (usagg/model/trunk.py): `<key>.npy`, `<key>.json` (its seal; last use), `<key>.lock`.

    The data file's mtime is part of its integrity seal and never touched, so last use is the JSON's.
    """
    return _keyed_entries(folder, "trunk", "json")


def _keyed_entries(folder: Path, kind: str, used_suffix: str) -> list[Entry]:
    """Entries whose files share a `<key>.` prefix; last use is `<key>.<used_suffix>`'s mtime when it exists."""
    by_key: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if (key := entry_key(p.name)) is not None:
            by_key.setdefault(key, []).append(p)
    out = []
    for key, paths in by_key.items():
        files = [p for p in paths if not p.name.endswith(".lock")]
        if not files:
            continue  # a lone lock file is how a pruned entry ends; it is reused by the next builder
        marker = folder / f"{key}.{used_suffix}"
        used = (marker if marker.exists() else max(files, key=lambda p: p.stat().st_mtime)).stat().st_mtime
        size = sum(_size(p) for p in files)
        out.append(Entry(kind, key, tuple(sorted(files)), size, used, folder / f"{key}.lock"))
    return out


def _synth_entries(folder: Path) -> list[Entry]:
    """Finished benchmarks (last used: their marker, refreshed on use) and unfinished temporary folders."""
    out = []
    for p in folder.iterdir():
        if not p.is_dir() or entry_key(p.name) is None:
            continue
        marker = p / SYNTH_MARKER
        used = (marker if marker.exists() else p).stat().st_mtime
        lock = None if p.name.startswith(".") else folder / f".{p.name}.lock"
        out.append(Entry("synth", p.name, (p,), _size(p), used, lock))
    return out


def _analysis_entries(folder: Path) -> list[Entry]:
    out = []
    for sub in ("stats", "figures"):
        if (folder / sub).is_dir():
            for p in (folder / sub).iterdir():
                if entry_key(p.name) is not None:
                    out.append(Entry("analysis", f"{sub}/{p.name}", (p,), _size(p), p.stat().st_mtime))
    return out


def _filehash_entries(folder: Path) -> list[Entry]:
    """Content digests of weights files (usagg/filehash.py): one small record each, recomputed when pruned."""
    return [
        Entry("filehash", p.stem, (p,), p.stat().st_size, p.stat().st_mtime)
        for p in folder.iterdir()
        if p.suffix == ".json" and entry_key(p.name) is not None
    ]


def _datacheck_entries(folder: Path) -> list[Entry]:
    """The data check's findings, a SQLite file per dataset root (usagg/data/checkcache.py); last use is its time,
    refreshed by each check."""
    out = []
    for p in folder.iterdir():
        if p.suffix == ".sqlite" and entry_key(p.name) is not None:
            extra = [q for q in (Path(f"{p}{s}") for s in ("-journal", "-wal", "-shm")) if q.exists()]
            files = (p, *extra)
            out.append(Entry("datacheck", p.stem, files, sum(_size(f) for f in files), p.stat().st_mtime))
    return out


def _compile_entries(folder: Path) -> list[Entry]:
    """Compiled code, a folder per torch version (`torch-<version>`); last use is its marker's time, refreshed by
    each job that compiles (a folder without one is a leftover, as old as its own time)."""
    out = []
    for p in folder.iterdir():
        if p.is_dir() and _COMPILE_NAME.fullmatch(p.name):
            marker = p / COMPILE_MARKER
            used = (marker if marker.exists() else p).stat().st_mtime
            out.append(Entry("compile", p.name, (p,), _size(p), used, p.parent / f"{p.name}.lock"))
    return out


def entries(root: Path, kinds: tuple[str, ...] = KINDS) -> list[Entry]:
    """Every entry of these kinds under the cache root, oldest use first."""
    listers = {
        "decode": _decode_entries,
        "synth": _synth_entries,
        "analysis": _analysis_entries,
        "filehash": _filehash_entries,
        "datacheck": _datacheck_entries,
        "trunk": _trunk_entries,
        "compile": _compile_entries,
    }
    out: list[Entry] = []
    for kind in kinds:
        folder = Path(root) / kind
        if folder.is_dir():
            out += listers[kind](folder)
    return sorted(out, key=lambda e: e.last_used)


def remove(path: Path) -> None:
    """Delete a cache file or folder; already gone is fine (another pruner got there first)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune(
    root: Path, older_than_s: float, kinds: tuple[str, ...] = KINDS, *, dry_run: bool = False
) -> tuple[list[Entry], list[Entry]]:
    """Delete entries unused for longer than `older_than_s`; returns (deleted or would be, skipped as in use)."""
    from filelock import FileLock, Timeout

    cutoff = time.time() - older_than_s
    done, busy = [], []
    for e in entries(root, kinds):
        if e.last_used > cutoff:
            continue
        if dry_run or e.lock is None:
            if not dry_run:
                for p in e.paths:
                    remove(p)
            done.append(e)
            continue
        try:
            with FileLock(str(e.lock), timeout=0):
                for p in e.paths:
                    remove(p)
            done.append(e)
        except Timeout:
            busy.append(e)
    return done, busy
