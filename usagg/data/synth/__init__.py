"""The synthetic ultrasound benchmark (`usagg synth`): nine tasks in four groups, written in the FMC_UIA layout.

Modules: tasks (the registry), shapes (analytic geometry), bmode (image
formation), scenes (anatomy per group), sample (one seeded sample),
generate (the layout on disk), preview (contact sheet).
"""

from usagg.data.synth.generate import generate_benchmark
from usagg.data.synth.sample import SynthSample, make_sample
from usagg.data.synth.tasks import TASKS, SynthTask

__all__ = ["TASKS", "SynthSample", "SynthTask", "generate_benchmark", "make_sample"]
