"""What the data check found in each file, kept between checks, so an unchanged image is decoded once.

`check_dataset` (usagg/data/check.py) opens every image and mask of the checked splits: their
problems, sizes, label summary and leakage fingerprints. On FMC_UIA (some 40,000 ultrasound
images) that is minutes of decoding on a laptop, and `usagg run`, `run --dry-run`, `validate` and
`data check` each did it again. Here a sample's findings are kept under a key made of everything
they depend on: the CSV row as parsed (task, type, num_classes, image path, label, CSV file and
row) and the size, modification time, change time and inode of its image and of every file its
label names (a segmentation mask), with the decoders' versions (Pillow, numpy) and
`CHECK_VERSION`; for a missing file, the files its "not found" names as spelt otherwise (in
letter case or Unicode normalisation: usagg/data/fmc_uia.py `missing_twins`, a folder listing
each, cached by the folder's mtime). An edited, replaced, touched or deleted file, an edited row,
a moved dataset or a missing file's twin renamed gives another key, so it is checked afresh; a
key found is what that check found.

The leakage search over those fingerprints (8,000 val against 40,000 train images: 2.2 s on a
2-core CPU, benchmarks/bench_data.py) is kept the same way, under the keys of every sample it
compared and its settings.

One SQLite file per dataset root, `<cache root>/datacheck/<root key>.sqlite` (usagg/cachedir.py
lists and prunes it; its time is refreshed at each use; records unread for `KEEP_DAYS` go). A
damaged file is deleted and rebuilt (a warning says so); a folder that cannot be written, or a
database another process keeps locked too long, only costs the time: the check runs in full and
is correct either way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from usagg.data.fmc_uia import Sample, missing_twins
from usagg.filehash import identity

log = logging.getLogger(__name__)

#: Bump when what the file checks find changes (check.py `_check_files`, a type's `check_label` or
#: `summary_keys`, the leakage fingerprint), so findings of the old code are not reused.
#: 2: a mask's hint names its PNG mode (1-bit, palette, 16-bit, 0/255); 3: images and masks upright by their EXIF
#: orientation (sizes follow), a 16-bit image's largest value kept, a missing file's Unicode-normalised twin named;
#: 4: a TIFF not stored upright refused (its orientation was lost to `load()`); 5: 16-bit and non-grey colour masks
#: refused (`mask_format`); 6: the leakage fingerprint holds vertical gradients and which gradients are clear;
#: 7: a missing file's twin differing only in letter case named.
CHECK_VERSION = 7
#: The tables' layout (SQLite's user_version); a file of another layout is emptied on open.
SCHEMA = 1
#: Records no check has read for this many days are deleted (a dataset re-exported leaves its old keys behind).
KEEP_DAYS = 30
FOLDER = "datacheck"
#: Seconds to wait for another process's write (two `usagg run`s checking one dataset).
LOCK_WAIT_S = 30.0
_BATCH = 500  # keys per SELECT: SQLite's default limit on host parameters is far above it


@functools.cache
def _decoders() -> tuple[str, str]:
    import numpy
    import PIL

    return PIL.__version__, numpy.__version__


def _label_files(label: Any) -> Iterator[Path]:
    """The files a label names (a mask's path), which the label's check reads."""
    if isinstance(label, Path):
        yield label
    elif isinstance(label, (tuple, list)):
        for item in label:
            yield from _label_files(item)
    elif isinstance(label, dict):
        for item in label.values():
            yield from _label_files(item)


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    try:
        return identity(os.stat(path))
    except OSError:
        return None


def _file_identity(path: Path) -> tuple:
    """What a file's findings depend on: its identity, or for a missing file the twins its "not found" names (a
    file spelt otherwise, `missing_twins`), so renaming one gives another key."""
    stat = _stat(path)
    return (str(path), stat) if stat is not None else (str(path), None, missing_twins(path))


def sample_key(sample: Sample) -> str:
    """The key of one sample's findings: its parsed row, and the identity of every file its check reads.

    Pickled only to be hashed (never loaded): it takes any label a task type parses, arrays included, whole.
    """
    files = [sample.image_file, *_label_files(sample.label)]
    payload = (
        CHECK_VERSION,
        _decoders(),
        sample.task_id,
        sample.task_type,
        sample.num_classes,
        sample.image_path,
        str(sample.image_file),
        sample.label,
        str(sample.csv_file),
        sample.row,
        [_file_identity(f) for f in files],
    )
    return hashlib.blake2b(pickle.dumps(payload, protocol=5), digest_size=20).hexdigest()


def root_file(cache: Path, root: Path) -> Path:
    """The SQLite file of one dataset root."""
    return cache / FOLDER / f"{hashlib.blake2b(str(root).encode(), digest_size=12).hexdigest()}.sqlite"


def leak_key(sample_keys: Iterable[tuple[str, str]], mode: str, threshold: float, test: str) -> str:
    """The key of a leakage search: the (split, sample key) of every entry it compares, in order, and its settings."""
    payload = (CHECK_VERSION, mode, threshold, test, list(sample_keys))
    return hashlib.blake2b(pickle.dumps(payload, protocol=5), digest_size=20).hexdigest()


class CheckCache:
    """Records by key for one dataset root, in two tables: `found` (a sample's file checks) and `leaks` (a leakage
    search's result). Every failure of the store itself degrades to a miss."""

    TABLES = ("found", "leaks")

    def __init__(self, cache: Path, root: Path) -> None:
        self.file = root_file(cache, root)
        self.today = int(time.time() // 86400)
        self._writable = True
        self._db: sqlite3.Connection | None = self._open()

    def _open(self) -> sqlite3.Connection | None:
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            log.warning("data check cache %s cannot be made (%s): every file is checked", self.file.parent, err)
            return None
        for attempt in range(2):
            db = None
            try:
                db = sqlite3.connect(self.file, timeout=LOCK_WAIT_S)
                self._schema(db)
                return db
            except sqlite3.DatabaseError as err:
                if db is not None:
                    db.close()
                if attempt or not self._damaged(err):
                    log.warning("data check cache %s not used (%s): every file is checked", self.file, err)
                    return None
        return None

    def _schema(self, db: sqlite3.Connection) -> None:
        """The tables of this SCHEMA; a file of another one is emptied first (its records would not read)."""
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA:
            return
        with db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:  # another process may have just done it
                for table in self.TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                    db.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, record TEXT NOT NULL, seen INTEGER)")
                db.execute(f"PRAGMA user_version = {SCHEMA}")

    def _damaged(self, err: sqlite3.DatabaseError) -> bool:
        """Delete a damaged file (not a locked or read-only one) so it is rebuilt; True when deleted."""
        if isinstance(err, sqlite3.OperationalError):
            return False  # locked, read-only, no room: not damage
        log.warning("data check cache %s is damaged (%s): deleted, it is rebuilt by this check", self.file, err)
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.file}{suffix}")
        return True

    def _failed(self, err: sqlite3.DatabaseError) -> None:
        """Stop using the store for this check; a damaged file goes, so the next check rebuilds it."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if not self._damaged(err):
            log.warning("data check cache %s not used (%s): the rest is checked in full", self.file, err)

    def get(self, table: str, keys: Iterable[str]) -> dict[str, dict]:
        """The records found for these keys (a record that does not parse is a miss), marked seen today."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        if self._db is None:
            return found
        stale = []  # found, but last read before today
        try:
            for i in range(0, len(wanted), _BATCH):
                part = wanted[i : i + _BATCH]
                marks = ",".join("?" * len(part))
                query = f"SELECT key, record, seen FROM {table} WHERE key IN ({marks})"
                for key, text, seen in self._db.execute(query, part):
                    with contextlib.suppress(ValueError):
                        record = json.loads(text)
                        if isinstance(record, dict):
                            found[key] = record
                            if seen is None or seen < self.today:
                                stale.append((self.today, key))
        except sqlite3.DatabaseError as err:
            self._failed(err)
            return {}
        self._write(f"UPDATE {table} SET seen = ? WHERE key = ?", stale)
        return found

    def _write(self, sql: str, rows: list[tuple]) -> None:
        """One transaction; a store that cannot be written (read-only, full, locked too long) is still read."""
        if self._db is None or not self._writable or not rows:
            return
        try:
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.OperationalError as err:
            self._writable = False
            log.warning("data check cache %s cannot be written (%s): what it holds is still used", self.file, err)
        except sqlite3.DatabaseError as err:
            self._failed(err)

    def put(self, table: str, records: dict[str, dict]) -> None:
        """Keep these records (one transaction)."""
        self._write(
            f"INSERT OR REPLACE INTO {table} (key, record, seen) VALUES (?, ?, ?)",
            [(k, json.dumps(v, separators=(",", ":")), self.today) for k, v in records.items()],
        )

    def close(self) -> None:
        """Forget records no check has read for KEEP_DAYS (files since changed, rows since edited), close the store
        and mark it used now (what `usagg cache prune` reads as its last use)."""
        if self._db is None:
            return
        for table in self.TABLES:
            self._write(f"DELETE FROM {table} WHERE seen < ?", [(self.today - KEEP_DAYS,)])
        if self._db is None:
            return
        self._db.close()
        self._db = None
        with contextlib.suppress(OSError):
            os.utime(self.file)
