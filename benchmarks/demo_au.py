"""The demo study's AU job, measuring affinity, in a scratch folder: what the affinity benchmarks train."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usagg.plan import Job

REPO = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int | None) -> int | None:
    """An integer benchmark setting from the environment; a clear exit, not a traceback, when it is not one."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        unset = "its default" if default is None else f"default {default}"
        raise SystemExit(f"{name}={raw!r}: expected a whole number of at least 1 (unset: {unset}).")
    return value


def demo_au_job(tmp: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Job:
    """studies/demo.yaml with AG added (so AU measures affinity), data under `tmp`, `edit` applied; its AU job."""
    import yaml

    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    spec["paradigms"] = ["AU", "AG"]
    spec["data"]["cache_dir"] = f"{tmp}/cache"
    spec["data"]["synthetic"]["out"] = f"{tmp}/synth"
    if edit is not None:
        edit(spec)
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    (au,) = [j for j in plan(load_study(path)) if j.paradigm == "AU"]
    return au
