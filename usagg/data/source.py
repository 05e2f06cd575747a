"""Where a study's images live: the user's FMC_UIA folder, or the synthetic benchmark generated on first use.

Generation goes into a temporary sibling folder that is renamed into place
only once complete (the completion marker is its last file), under a file
lock, so concurrent jobs generate once and nobody ever sees a half-written
folder that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from usagg.cachedir import SYNTH_MARKER as MARKER
from usagg.cachedir import cache_root
from usagg.errors import DataError
from usagg.spec.models import DataSpec, SynthSpec


def synth_key(spec: SynthSpec) -> str:
    """Hash of every setting that changes the generated files (and of the generator version)."""
    from usagg.data.synth.generate import resolve_tasks, settings

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
    from usagg.data.synth.generate import MANIFEST, resolve_tasks, settings

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


def _synthetic_root(data: DataSpec) -> Path:
    from filelock import FileLock

    from usagg.data.synth.generate import is_synth_output

    spec = data.synthetic
    assert spec is not None
    target = synth_dir(data)
    key = synth_key(spec)
    if synth_complete(target, key, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if synth_complete(target, key, spec):  # another process finished it while we waited
            return target
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not is_synth_output(target))):
            raise DataError(
                f"synthetic.out {target} exists and holds something other than a usagg synthetic benchmark; "
                "refusing to replace it. Point synthetic.out at a new folder or remove this one."
            )
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
