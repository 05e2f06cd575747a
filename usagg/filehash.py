"""The sha256 of a file's content, cached by its path and `identity` (size, mtime, ctime, inode) so a large file is
read once.

The job hash (usagg/plan.py) covers the content of `model.weights` rather than its
name, and is computed on every `plan`, `validate`, `status` and `run`: a 1 GB checkpoint
must not be read each time. One small JSON record per file lives under
`<cache root>/filehash/` (the cache root of usagg/cachedir.py); a record whose identity
no longer matches the file is recomputed and replaced, so touching a file costs one
read and gives the same digest, and a same-size replacement whose mtime was put back
(`cp -p`, `rsync -a`, an archive) is read again: its change time and inode moved. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from usagg.atomic import write_json_atomic
from usagg.cachedir import cache_root

FOLDER = "filehash"
_CHUNK = 1 << 20
_memo: dict[tuple[str, int, int, int, int], str] = {}  # this process's digests, so one plan reads no record twice


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file's content changed without reading it, for the caches keyed on files (the data check's
    findings, usagg/data/checkcache.py; decoded images, usagg/data/cache.py): size, mtime, ctime and inode. Size and
    mtime alone miss a corrected file of the same size whose mtime was restored (`cp -p`, `rsync -a`, `tar`, an
    archive with fixed times); the change time moves on every write and a replaced file has another inode."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of the file's bytes, read in chunks and never cached: for callers that check or vouch for the
    file as it is now (a trunk file, a report's results CSV); `file_sha256` caches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(folder: Path, path: str) -> Path:
    return folder / f"{hashlib.sha256(path.encode()).hexdigest()[:32]}.json"


def file_sha256(path: Path | str, cache_dir: Path | str | None = None) -> str:
    """Hex sha256 of the file's bytes; reads it only when (path, `identity`) has no cached digest.

    `cache_dir` is a study's `data.cache_dir` (None: $USAGG_CACHE or ~/.cache/usagg). A cache
    that cannot be written (read-only home, full disk) only costs the re-read next time.
    """
    resolved = Path(path).resolve()
    now = identity(resolved.stat())
    key = (str(resolved), *now)
    if key in _memo:
        return _memo[key]
    folder = cache_root(cache_dir) / FOLDER
    record = _record_path(folder, key[0])
    try:
        saved = json.loads(record.read_text())
        if [saved.get("path"), saved.get("identity")] == [key[0], list(now)]:
            _memo[key] = str(saved["sha256"])
            return _memo[key]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # no record, an unreadable one or one of an older layout: recompute
    digest = sha256_of(resolved)
    if identity(resolved.stat()) != now:  # changed while being read: do not cache a mixed digest
        return digest
    _memo[key] = digest
    with contextlib.suppress(OSError):  # atomic: concurrent planners never read half a record
        write_json_atomic(record, {"path": key[0], "identity": list(now), "sha256": digest})
    return digest


__all__ = ["file_sha256", "identity", "sha256_of"]
