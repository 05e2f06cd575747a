"""Where a study's images live: the user's FMC_UIA folder, or the synthetic benchmark generated on first use.

Generation goes into a temporary sibling folder that is renamed into place
only once complete (the completion marker is its last file), under a file
lock, so concurrent jobs generate once and nobody ever sees a half-written
folder that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from usagg.atomic import full_disk_named
from usagg.cachedir import SYNTH_MARKER as MARKER
from usagg.cachedir import UNWRITABLE, cache_root, entry_lock
from usagg.errors import DataError
from usagg.safepath import printable
from usagg.spec.models import DataSpec, SynthSpec


def synth_key(spec: SynthSpec) -> str:
    """Hash of every setting that changes the generated files (and of the generator version)."""
    from usagg.data.synth.manifest import resolve_tasks, settings

    blob = json.dumps(settings(spec, resolve_tasks(spec, None)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def synth_dir(data: DataSpec) -> Path:
    """Folder of the synthetic benchmark: `synthetic.out`, or `<cache>/synth/<settings hash>`."""
    assert data.synthetic is not None
    if data.synthetic.out is not None:
        return Path(data.synthetic.out)
    return cache_root(data.cache_dir) / "synth" / synth_key(data.synthetic)


def synth_complete(folder: Path, key: str, spec: SynthSpec) -> bool:
    """Whether `folder` holds the synthetic benchmark of `spec` (`key`: its `synth_key`) in full, so it is used as is:
    our completion marker with this key (its time is touched: the last use `usagg cache prune` reads), or a finished
    `usagg synth` output written with exactly these settings. `dataset_root` generates where it is False, and
    `usagg validate` / `run --dry-run`, which write nothing, say the benchmark is not generated yet.
    """
    from usagg.data.synth.manifest import MANIFEST, resolve_tasks, settings

    marker = folder / MARKER
    if marker.is_file():
        if marker.read_text().strip() != key:
            return False
        with contextlib.suppress(OSError):
            os.utime(marker)  # last use, for `usagg cache prune`
        return True
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest == {**settings(spec, resolve_tasks(spec, None)), "complete": True}


def _generate_into(target: Path, spec: SynthSpec, key: str) -> None:
    """Generate into a temp sibling, write the marker last, then rename over `target` (old copy moved aside)."""
    from usagg.data.synth import generate_benchmark

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_benchmark(tmp, spec)
        (tmp / MARKER).write_text(key + "\n")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _usagg_marked(folder: Path, spec: SynthSpec) -> bool:
    """Whether `folder` carries usagg's mark: our completion marker, or a synth.json of the generator's format (the
    keys `settings` writes and `complete`). Without it a folder shaped like a benchmark (a real FMC_UIA root has the
    same layout) is the user's."""
    from usagg.data.synth.manifest import MANIFEST, settings

    def text(name: str) -> str:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return ""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return path.read_text()
        return ""

    if re.fullmatch(r"[0-9a-f]{16}\n?", text(MARKER)):
        return True
    try:
        held = json.loads(text(MANIFEST))
    except ValueError:
        return False
    return isinstance(held, dict) and set(held) == {*settings(spec, []), "complete"}


@functools.cache
def _task_folders() -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]], frozenset[str]]:
    """The folders a benchmark's split holds (each task's folder and those above it), the image folders at their
    ends (images/, masks/), and the CSV names of csv_files/: every task the generator knows."""
    from usagg.data.synth.tasks import ALL_TASKS

    tasks = [tuple(task.folder.split("/")) for task in ALL_TASKS.values()]
    folders = frozenset(f[:n] for f in tasks for n in range(1, len(f) + 1))
    leaves = frozenset((*f, kind) for f in tasks for kind in ("images", "masks"))
    return folders, leaves, frozenset(f"{t}.csv" for t in ALL_TASKS)


def _benchmark_entry(rel: tuple[str, ...], is_dir: bool) -> bool:
    """Whether `rel` (parts below the folder) is a path the generator writes (`generate._write_all` and the marks):
    train/ and val/ each with csv_files/<task>.csv and <task folder>/images|masks/*.png."""
    from usagg.data.synth.manifest import MANIFEST, SPLITS

    if len(rel) == 1:
        return rel[0] in SPLITS if is_dir else rel[0] in (MANIFEST, MARKER)
    if rel[0] not in SPLITS:
        return False
    below = rel[1:]
    folders, leaves, csvs = _task_folders()
    if below[0] == "csv_files":
        return is_dir if len(below) == 1 else len(below) == 2 and not is_dir and below[1] in csvs
    if is_dir:
        return below in folders or below in leaves
    return below[:-1] in leaves and below[-1].endswith(".png")


def foreign_entries(folder: Path, within: tuple[str, ...] | None = None, limit: int = 6) -> list[str]:
    """Up to `limit` paths in `folder` (relative; a foreign folder named once, not entered; links count) that a
    synthetic benchmark of usagg does not write, so replacing them would delete the user's files. `within`: only
    below these entries of `folder` (what `usagg synth` replaces: train/ and val/)."""
    found = [n for n in within or () if (folder / n).is_symlink()]  # never walked through
    roots = [folder] if within is None else [folder / n for n in within if (folder / n).is_dir() and n not in found]
    for root in roots:
        for here, dirs, files in os.walk(root):
            base = Path(here).relative_to(folder).parts
            for name in sorted(dirs):
                path = Path(here) / name
                if path.is_symlink() or not _benchmark_entry((*base, name), is_dir=True):
                    found.append(Path(*base, name).as_posix() + ("" if path.is_symlink() else "/"))
                    dirs.remove(name)  # not entered: named once
            for name in sorted(files):
                path = Path(here) / name
                if path.is_symlink() or not path.is_file() or not _benchmark_entry((*base, name), is_dir=False):
                    found.append(Path(*base, name).as_posix())
            if len(found) >= limit:
                return found[:limit]
    return found


def _listed(names: list[str], limit: int = 6) -> str:
    """Names for a message, the first `limit` of them (they come from disk: control characters escaped)."""
    shown = ", ".join(printable(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _field(spec: SynthSpec) -> str:
    """What names the folder in a message: the spec's field, or the cache where the spec names none."""
    return "data.synthetic.out" if spec.out is not None else "the synthetic benchmark's cache folder"


def _refuse_foreign(target: Path, spec: SynthSpec) -> None:
    """DataError unless `target` is new, empty, or holds only a synthetic benchmark usagg wrote (its mark and its
    files): generating replaces the folder whole, so the user's files in it (notes, their own data) would go."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        what = f"a symbolic link (to {printable(os.readlink(target))})" if target.is_symlink() else "not a folder"
        raise DataError(
            f"{_field(spec)} {target} is {what}; usagg generates the synthetic benchmark beside it and renames it "
            f"into place, which would replace it. Point {_field(spec)} at a new or empty folder (for a link: at the "
            "folder it names)."
        )
    if not target.exists() or not any(target.iterdir()):
        return
    if not _usagg_marked(target, spec):
        what = f"it holds {_listed(sorted(p.name for p in target.iterdir()))}"
        reason = "that is no synthetic benchmark of usagg (no .usagg-complete marker, no synth.json of usagg's)"
    else:
        theirs = foreign_entries(target)
        if not theirs:
            return
        what = f"besides a synthetic benchmark of usagg it holds {_listed(theirs, 5)}"
        reason = "files usagg did not write"
    raise DataError(
        f"{_field(spec)} {target} is not empty and {what}: {reason}. Generating the benchmark there replaces the "
        f"folder whole: refusing to replace it, nothing was changed. Point {_field(spec)} at a new or empty folder, "
        "or move those files away (or delete the folder yourself if nothing in it is needed)."
    )


def refuse_foreign_splits(out: Path, spec: SynthSpec) -> None:
    """UsaggError where `usagg synth OUT` would delete what it did not write: it replaces OUT's train/ and val/
    whole (with or without --force), so they must be a benchmark of usagg's (its mark, only its files); other
    files beside them stay untouched and are allowed. The rule `usagg run` applies to data.synthetic.out."""
    from usagg.data.synth.manifest import SPLITS

    held = [n for n in SPLITS if (out / n).is_dir() and not (out / n).is_symlink() and any((out / n).iterdir())]
    if not held:
        return
    theirs = foreign_entries(out, within=SPLITS) if _usagg_marked(out, spec) else [f"{n}/" for n in held]
    if theirs:
        raise DataError(
            f"{out} holds {_listed(theirs, 5)}, which no synthetic benchmark of usagg wrote (its synth.json or "
            "marker, and only the generator's files); `usagg synth` replaces OUT's train/ and val/ whole, with or "
            "without --force, so it refuses and nothing was changed. Give a new or empty folder, or move those "
            "files away first."
        )


def _generation_lock(data: DataSpec, target: Path) -> contextlib.AbstractContextManager[object]:
    """The lock generating `target` takes (and `usagg cache prune` before deleting it): in the cache through
    `entry_lock`, so a cache folder usagg cannot write is said as such; beside data.synthetic.out a plain one."""
    from filelock import FileLock

    lock = target.parent / f".{target.name}.lock"
    if data.synthetic is not None and data.synthetic.out is None:
        return entry_lock(cache_root(data.cache_dir), lock)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock))


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary and set-aside siblings of `target` (`_generate_into`) that killed writers left: the caller
    holds the lock every writer holds while its siblings exist, so none is in use (as the decode and trunk caches
    clear theirs). A full benchmark's leftover takes gigabytes, which `usagg cache prune` frees only after 30 days."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp|old)-[0-9]+-[0-9a-f]{{8}}")
    for path in target.parent.iterdir():
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _out_unwritable(target: Path, spec: SynthSpec) -> Iterator[None]:
    """A data.synthetic.out usagg cannot write (read-only, no permission, a file on its path) said by the field that
    chose it, with both ways out; in the cache folder `entry_lock` says it as the cache's own paragraph."""
    try:
        yield
    except OSError as err:
        if spec.out is None or err.errno not in (*UNWRITABLE, errno.ENOTDIR, errno.EEXIST):
            raise
        where = printable(str(err.filename or target))
        file_in_way = err.errno in (errno.ENOTDIR, errno.EEXIST)
        cause = f"{where} is a file, not a folder" if file_in_way else f"{err.strerror or err}: {where}"
        raise DataError(
            f"data.synthetic.out {printable(str(target))} cannot be written ({cause}). Point data.synthetic.out at "
            "a folder you can write, or leave it out to generate the benchmark in usagg's cache; nothing was written."
        ) from err


def _synthetic_root(data: DataSpec) -> Path:
    spec = data.synthetic
    assert spec is not None
    target = synth_dir(data)
    key = synth_key(spec)
    if synth_complete(target, key, spec):
        return target
    with _out_unwritable(target, spec), _generation_lock(data, target):
        if synth_complete(target, key, spec):  # another process finished it while we waited
            return target
        _refuse_foreign(target, spec)
        _remove_stale_temporaries(target)
        with full_disk_named(target, cache=spec.out is None):  # in the cache folder: its own advice
            _generate_into(target, spec, key)
    return target


def dataset_root(data: DataSpec) -> Path:
    """The FMC_UIA root a study reads: `data.root` (checked), or the synthetic benchmark (generated once)."""
    if data.synthetic is not None:
        return _synthetic_root(data)
    if data.root is None:
        raise DataError("the study gives neither data.root nor data.synthetic; point data.root at an FMC_UIA root.")
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(f"data.root {root} does not exist or is not a folder; point it at an FMC_UIA dataset root.")
    if not (root / "train").is_dir():
        raise DataError(
            f"data.root {root} has no train/ folder; an FMC_UIA root holds train/ (and val/) with csv_files/ inside."
        )
    return root
