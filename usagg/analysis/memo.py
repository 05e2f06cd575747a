"""Memoised analysis outputs: the statistics and the rendered figures, keyed by everything they depend on.

`usagg compare`, `plot` and `report` run as separate processes. Without a memo each
one imports scipy again (~0.5 s) and `report` redraws the figures `plot` just drew
(~2 s). A key hashes the analysis input (results rows, settings, primary metrics,
task order, expert usage, each job's item_scores.json, the trivial predictors' scores and selection warnings of its
metrics.json, baseline), the source of the code the analysis runs, what it
reads of the registries (every paradigm's and task type's registration: a plug-in's entries are no source of
usagg's, and a changed one must be computed afresh), the
scipy or matplotlib version and the rendering options, so a hit is what a fresh
computation would give. Entries live under <cache>/analysis/{stats,figures}/; the
least recently used beyond `keep` are pruned. The cache is an optimisation only: when
it cannot be read or written the output is computed as if it were empty. An entry is handed out as computed, so
the memo is used only in a folder no one but the user can write (usagg/cachetrust.py `vetted_folder`): a
$USAGG_CACHE others can write to would let them plant statistics. Figures are drawn into a private folder of
the memo's and stored from there (each with its sha256), so a figure another command writes into the same output
folder at the same moment never enters an entry. That folder holds its writer's lock (usagg/joblock.py) while it
draws, so the next command that asks for the entry removes one whose writer was killed, never a live one's.

This module knows no drawing code: it wraps the computations it is handed (a
`compute` or `render` callable), scikit-learn `memory=` style, and the boundary that
applies it is usagg/analysis/outputs.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg import __version__
from usagg.analysis.stats import Stat
from usagg.atomic import FULL_DISK, NoSpaceLeft, read_regular, write_bytes_atomic, write_json_atomic
from usagg.cachedir import cache_root, entry_key, remove
from usagg.joblock import JobLock
from usagg.safepath import check_component, confined

if TYPE_CHECKING:
    from usagg.analysis.inputs import AnalysisInput

log = logging.getLogger(__name__)

KEEP = 64  # entries per kind; a figure entry is ~0.5 MB of PNG
MANIFEST = "manifest.json"
#: The lock file of a draw folder's writer (`_draw_lock`), its heartbeat, and how long a writer may be silent (or a
#: folder without a lock unchanged) before `_sweep_draws` takes it for gone (as usagg/analysis/report.py `writing`).
DRAW_LOCK = ".writer.lock"
DRAW_HEARTBEAT_S = 30.0
DRAW_STALE_S = 600.0
_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FigureFile:
    """One rendered figure as the memo stores it: its name, the file it was written to, its caption."""

    name: str
    path: Path
    caption: str


def code_sources() -> list[Path]:
    """The source the analysis runs: usagg/analysis/, the task types (metric directions, units, figure style),
    usagg/paradigms.py (paradigm order), usagg/results_schema.py (the results columns), usagg/affinity.py and
    usagg/grouping.py (AG's evidence and the Rand index), usagg/wording.py (counts in the tables' text)."""
    return sorted(
        [
            *_PACKAGE.glob("analysis/*.py"),
            *_PACKAGE.glob("tasktypes/*.py"),
            _PACKAGE / "paradigms.py",
            _PACKAGE / "results_schema.py",
            _PACKAGE / "affinity.py",
            _PACKAGE / "grouping.py",
            _PACKAGE / "wording.py",
        ]
    )


def sources_digest(paths: Iterable[Path]) -> str:
    """Hash of usagg's version and each file's folder, name and bytes (not where the checkout lives)."""
    h = hashlib.sha256(__version__.encode())
    for path in paths:
        h.update("/".join(path.parts[-2:]).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Hash of `code_sources()`: a code change invalidates every entry."""
    return sources_digest(code_sources())


def registrations() -> list[Any]:
    """What the analysis reads of the registries, entry by entry, and the plug-ins loaded: every paradigm's design
    (scope, MoE, compared, control) in registration order (the tables' order) and every task type's metrics
    (direction, unit, bounds), order and figure style. A plug-in's registration is no file `code_sources` hashes,
    so without this a plug-in paradigm given a scope kept the statistics computed without one (audit: plug-ins)."""
    from usagg.paradigms import PARADIGMS
    from usagg.registry import loaded_plugins
    from usagg.tasktypes import task_types

    paradigms = [
        [e.name, e.description, e.scope, e.moe, e.compared, e.control, e.staged]
        for e in (PARADIGMS[name] for name in PARADIGMS.names())
    ]
    types = [
        [t.name, type(t).__module__, [dataclasses.astuple(m) for m in t.metrics], t.order, t.marker, t.color, t.short]
        for t in task_types()
    ]
    return [paradigms, types, loaded_plugins()]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def digest(*parts: Any) -> str:
    """Stable hash of JSON-able parts (NaN allowed)."""
    blob = json.dumps(parts, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def item_scores_digest(files: dict[str, Path]) -> dict[str, str]:
    """job -> sha256 of its item_scores.json (the per-task test-set bootstrap reads them); {} without any. Read as
    every store file is (`read_regular`: no link, FIFO or file past the store's limit, which the read that follows
    refuses by name): a planted 100 GB file was read whole into memory before that refusal."""
    out = {}
    for job, path in sorted(files.items()):
        with contextlib.suppress(OSError):
            out[job] = hashlib.sha256(read_regular(path)).hexdigest()
    return out


def input_key(inp: AnalysisInput, baseline: str) -> str:
    """Key of what statistics and figures read from the input; file paths and notes are left out on purpose."""
    rows = [dataclasses.astuple(dataclasses.replace(r, row=0)) for r in inp.table.rows]
    return digest(
        rows,
        dataclasses.asdict(inp.settings),
        inp.primary,
        inp.task_order,
        inp.expert_usage,
        item_scores_digest(inp.item_scores),
        inp.histories,
        inp.trivial,
        inp.selection_warnings,
        dataclasses.asdict(inp.affinity) if inp.affinity is not None else None,
        inp.designed_groups,
        baseline,
        code_digest(),
        registrations(),
    )


class Memo:
    """One cache folder of analysis outputs (stats as JSON, figures as files plus a manifest)."""

    def __init__(self, root: Path, keep: int = KEEP, *, off: bool = False) -> None:
        self.root = Path(root) / "analysis"
        self.keep = keep
        self.off = off  # compute everything, read and write nothing (a folder others could write to)

    @classmethod
    def own(cls) -> Memo:
        """The memo in the user's own cache ($USAGG_CACHE, else ~/.cache/usagg), never in a folder a run store names.

        A received store is data: a cache folder its study.yaml names (inside the store too) could hold planted
        links under analysis/ that send the memo's writes and prunes elsewhere, or entries forged for the key
        its results give, which the memo would hand out as computed statistics and figures.
        """
        from usagg.cachetrust import Untrusted, vetted_folder

        root = cache_root(None)
        try:
            vetted_folder(root / "analysis", root, "set USAGG_CACHE to a folder of your own")
        except Untrusted as err:
            log.warning("analysis memo off: %s; statistics and figures are computed afresh (%s)", err.why, err.fix)
            return cls(root, off=True)
        return cls(root)

    def cached_statistics(self, key: str, compute: Callable[[], list[Stat]]) -> list[Stat]:
        """Cached statistics for `key` (which must cover the comparison and bootstrap settings), else compute."""
        if self.off:
            return compute()
        path = self.root / "stats" / f"{digest(key, _version('scipy'))}.json"
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            items = json.loads(path.read_text(encoding="utf-8"))
            stats = [Stat.from_json(d) for d in items]
            _touch(path)
            return stats
        stats = compute()
        with contextlib.suppress(OSError):
            write_json_atomic(path, [dataclasses.asdict(s) for s in stats])
            _prune(path.parent, self.keep)
        return stats

    def cached_figures(
        self, key: str, fmt: str, dpi: int, folder: Path, render: Callable[[Path], list[FigureFile]]
    ) -> list[FigureFile]:
        """Copy the cached figures for (key, fmt, dpi) into `folder`, or `render` them and cache them.

        `render(where)` must write every figure into `where` and return them; `key`
        must cover everything they depend on but the format and resolution. On a miss it draws into a private
        folder of the memo's, never into `folder`: the entry is stored from that drawing, so another command
        writing the same file names into `folder` meanwhile (a second `usagg plot` of another baseline) cannot put
        its bytes under this key. Each copy into `folder` is atomic.
        """
        folder = Path(folder)
        if self.off:
            return render(folder)
        entry = self.root / "figures" / digest(key, fmt, dpi, _version("matplotlib"))
        _sweep_draws(entry)
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            items = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
            blobs = [(d, _entry_bytes(entry, d)) for d in items]  # read (and verified) all before writing any
            out = [
                FigureFile(d["name"], write_bytes_atomic(folder / d["file"], data), d["caption"]) for d, data in blobs
            ]
            _touch(entry)
            return out
        shutil.rmtree(entry, ignore_errors=True)  # a damaged entry would block storing a good one
        drawing: Path | None = None
        writer = contextlib.ExitStack()
        try:
            drawing = Path(tempfile.mkdtemp(prefix=f".{entry.name}.draw-", dir=_made(entry.parent)))
            writer.enter_context(_draw_lock(drawing).held())  # whose folder it is, for `_sweep_draws`
        except OSError:  # no cache to draw in (or no room for the lock): drawn in place, as without a memo
            if drawing is not None:
                shutil.rmtree(drawing, ignore_errors=True)
            return render(folder)
        try:
            with writer:  # released before the folder is stored: an entry holds no lock
                try:
                    figs = render(drawing)
                except (NoSpaceLeft, OSError) as err:  # render writes into `drawing` only: the memo's disk
                    full = isinstance(err, NoSpaceLeft) or err.errno in FULL_DISK
                    if not full:
                        raise
                    return render(folder)  # full, and the memo only a speed-up: drawn in place, not kept
                out = [
                    FigureFile(f.name, write_bytes_atomic(folder / f.path.name, f.path.read_bytes()), f.caption)
                    for f in figs
                ]
            with contextlib.suppress(OSError):
                _store(drawing, entry, figs)
                _prune(entry.parent, self.keep)
        finally:
            shutil.rmtree(drawing, ignore_errors=True)  # gone once stored (renamed into place)
        return out


def _draw_lock(drawing: Path) -> JobLock:
    """The lock of a draw folder's writer (usagg/joblock.py: host, pid, heartbeat), held while it draws."""
    return JobLock(drawing / DRAW_LOCK, str(drawing), DRAW_HEARTBEAT_S, DRAW_STALE_S)


def _sweep_draws(entry: Path) -> None:
    """Remove the draw folders of `entry` whose writer is gone: a `usagg plot` or `report` killed mid-draw left one
    that only `usagg cache prune` removed, after 30 days. Gone: its lock's holder is not alive (on this host its pid
    no longer runs; elsewhere its heartbeat has been silent for `DRAW_STALE_S`), or it holds no lock and has not
    changed for `DRAW_STALE_S` (an older usagg's, or a writer killed in the moment between making it and locking it,
    or between unlocking it and storing it). A live writer's folder, on any host, is left alone."""
    with contextlib.suppress(OSError):
        for drawing in entry.parent.glob(f".{entry.name}.draw-*"):
            if drawing.is_symlink() or not drawing.is_dir():
                continue
            lock = _draw_lock(drawing)
            holder = lock.holder()
            if holder is None:
                if time.time() - drawing.stat().st_mtime < DRAW_STALE_S:
                    continue
            elif lock.holder_alive(holder):
                continue
            remove(drawing)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _entry_file(entry: Path, d: dict[str, Any]) -> Path:
    """The file a manifest item names inside `entry`: its name and file must be single file names (a manifest is
    data: `../x` would copy a file from, and write it to, outside the entry and the output folder)."""
    name, file = d["name"], d["file"]  # a malformed item (KeyError, TypeError) is damage: drawn again
    where = f"{entry / MANIFEST}, item {str(name)[:80]!r}"
    check_component(name, f"{where}, field 'name'")
    check_component(file, f"{where}, field 'file'")
    return confined(file, entry, f"{where}, field 'file'")


def _entry_bytes(entry: Path, d: dict[str, Any]) -> bytes:
    """A figure of the entry, its bytes checked against the sha256 the manifest recorded when it was stored
    (ValueError otherwise: damage, drawn again), so an entry holds exactly what its key drew."""
    data = _entry_file(entry, d).read_bytes()
    if hashlib.sha256(data).hexdigest() != d["sha256"]:
        raise ValueError(f"{entry / d['file']} is not the figure its manifest recorded")
    return data


def _store(drawing: Path, entry: Path, figs: list[FigureFile]) -> None:
    """Make the private `drawing` folder the entry: its manifest (each figure's caption and sha256) written last,
    then the folder renamed into place, so readers never see half of one and only this drawing is stored."""
    items = []
    for f in figs:
        if f.path.parent != drawing:
            raise OSError(f"{f.path} was not drawn into {drawing}")  # a render that wrote elsewhere is not cached
        items.append({"name": f.name, "file": f.path.name, "caption": f.caption, "sha256": _sha256(f.path)})
    write_json_atomic(drawing / MANIFEST, items)
    os.rename(drawing, entry)  # OSError when another process stored the same entry first: theirs stays


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _prune(folder: Path, keep: int) -> None:
    """Remove the least recently used entries beyond `keep` (temporary folders of live writers are left alone, and
    anything not named as the memo names its entries: usagg/cachedir.py `entry_key`)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and entry_key(p.name) is not None]
    if len(entries) <= keep:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for p in entries[: len(entries) - keep]:
        remove(p)
