"""The synthetic ultrasound benchmark (`usagg synth`): nine tasks in four groups, written in the FMC_UIA layout.

Modules: tasks (the registry), shapes (analytic geometry), bmode (image
formation), scenes (anatomy per group), sample (one seeded sample),
manifest (the settings and synth.json, no rendering), generate (the layout on disk), preview (contact sheet).

The names below load on first use: the analysis reads the task registry (a synthetic study's designed groups) and
must not import scipy, which image formation needs, for it (`usagg report` stays free of scipy).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usagg.data.synth.generate import generate_benchmark
    from usagg.data.synth.sample import SynthSample, make_sample
    from usagg.data.synth.tasks import TASKS, SynthTask

_HOMES = {
    "generate_benchmark": "generate",
    "SynthSample": "sample",
    "make_sample": "sample",
    "TASKS": "tasks",
    "SynthTask": "tasks",
}

__all__ = ["TASKS", "SynthSample", "SynthTask", "generate_benchmark", "make_sample"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
