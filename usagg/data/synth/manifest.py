"""The synthetic benchmark's settings and its manifest (`synth.json`): which tasks and sizes a spec asks for, what
a folder holds and what writing into it would replace. No image is rendered here: `usagg validate`, `data check`
and every read of generated data need these without the B-mode renderer and scipy (usagg/data/synth/generate.py
writes the benchmark).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from usagg.data.synth.tasks import ALL_TASKS, KNOWN_TASKS, TASKS
from usagg.errors import UsaggError
from usagg.safepath import printable
from usagg.spec.models import SynthSpec

MANIFEST = "synth.json"
#: Bump when the generator's output changes, so cached benchmarks are regenerated.
GENERATOR_VERSION = 3
SPLITS = ("train", "val")


def resolve_tasks(spec: SynthSpec, tasks: list[str] | None) -> list[str]:
    """The task ids to generate, checked against the registry (sizes may only name its tasks).

    By default the nine benchmark tasks, plus the known-answer tasks that `sizes` names (so the demo's
    settings, and the folder they key, are what they were before those tasks existed).
    """
    ids = [*TASKS, *(t for t in spec.sizes if t in KNOWN_TASKS)] if tasks is None else list(dict.fromkeys(tasks))
    unknown = [t for t in [*ids, *spec.sizes] if t not in ALL_TASKS]
    if unknown:
        raise UsaggError(
            f"unknown synthetic task(s) {', '.join(sorted(set(unknown)))}; the synthetic benchmark has: "
            f"{', '.join(ALL_TASKS)}."
        )
    if not ids:
        raise UsaggError("no synthetic tasks selected; name at least one of: " + ", ".join(TASKS) + ".")
    return ids


def split_size(spec: SynthSpec, task_id: str, split: str) -> int:
    return spec.sizes.get(task_id, spec.default_size) if split == "train" else spec.val_size


def settings(spec: SynthSpec, task_ids: list[str]) -> dict:
    """Everything that determines the output (what a cache key must cover)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "image_size": spec.image_size,
        "tasks": task_ids,
        "train_sizes": {t: split_size(spec, t, "train") for t in task_ids},
        "val_size": spec.val_size,
    }


def is_synth_output(out: Path) -> bool:
    return (out / MANIFEST).is_file()


def _check_target(out: Path) -> None:
    if out.is_symlink() and not out.exists():  # a link to nothing: "File exists" from mkdir otherwise
        raise UsaggError(
            f"{out} is a symbolic link to {os.readlink(out)}, which does not exist; give a new or empty folder for "
            "the synthetic benchmark (or make the folder the link names)."
        )
    if out.exists() and not out.is_dir():
        raise UsaggError(f"{out} exists and is not a folder; give a new or empty folder for the synthetic benchmark.")
    if out.is_dir() and any(out.iterdir()) and not is_synth_output(out):
        raise UsaggError(
            f"{out} is not empty and was not written by `usagg synth` (no {MANIFEST}); refusing to overwrite it. "
            "Give a new or empty folder, or delete this one first."
        )


def _held(out: Path) -> dict:
    """The manifest of the earlier output in `out` (empty when it cannot be read as one)."""
    try:
        held = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def described(info: dict) -> str:
    """Settings (`settings()`, or a manifest read back) in words, for messages; a manifest's values are data."""
    try:
        tasks = ", ".join(f"{t} ({info['train_sizes'][t]} train)" for t in info["tasks"])
        text = f"tasks {tasks}; {info['val_size']} val per task; seed {info['seed']}; {info['image_size']} px"
    except (KeyError, TypeError):
        return "settings that cannot be read"
    if info.get("generator_version") != GENERATOR_VERSION:
        text += f"; generator version {info.get('generator_version')} (this usagg writes {GENERATOR_VERSION})"
    return printable(text)


def replacing(out: Path, info: dict, force: bool = False) -> str | None:
    """What writing the benchmark of settings `info` into `out` replaces, in words; None when nothing is there.

    Its train/ and val/ go as a whole, so a finished benchmark of other settings (other tasks, sizes, seed) is
    refused unless `force`: another run's data is never lost unasked. The same settings again are written again
    (the same bytes, any file changed since made whole), and an interrupted run's output holds no index to lose.
    """
    _check_target(out)
    if not is_synth_output(out):
        return None
    held = _held(out)
    if held == {**info, "complete": True}:
        return "it held this same benchmark (same settings in its synth.json): written again, the same bytes"
    if held.get("complete") is False:
        return f"replaced the unfinished output of an interrupted run ({described(held)})"
    if not force:
        raise UsaggError(
            f"{out} holds an earlier synthetic benchmark of other settings (its {MANIFEST}: {described(held)}), "
            f"and this run asks for {described(info)}; writing it would delete that benchmark's train/ and val/, "
            "nothing was changed. Give another folder to keep both, or add --force to replace it."
        )
    return f"replaced the benchmark it held ({described(held)})"
