"""The known-answer study's tasks (studies/known.yaml): effects planted where M2DINO can express them.

Each task reuses a scene builder of usagg/data/synth/scenes.py; what is planted is which scans a task sees and
how its labels are read from the scene. The mechanisms, and the sign the study's `expect:` block declares:

- Twins sharing a latent (`head_outline_a/_b` in the data-rich Fetal group, `nodule_outline_a/_b` in the
  low-data Thyroid group): two readers outline the same structure (the fetal skull; the thyroid nodule) by the
  same convention, each on scans of its own (each task's images are seeded by its own id). CG trains each twin on
  twice the scans of its latent and twice the encoder steps: positive transfer (Δ > 0) while TS has not
  converged in its epochs. Their decoders learn the same read-out of the same features, which is what AG's
  affinity should find (the study expects it; docs/benchmarks.md has what it measured).
- Conflicting conventions on the same scans (`lesion_mask`, `lesion_mask_alt`, the low-data Breast group): both
  segment the same breast scans (images seeded by the scan key `lesion_mask`, byte-identical between them).
  `lesion_mask` outlines the lesion. `_alt` follows a reader convention the image does not show: for a hidden
  half of the patients (a coin of its own seed, independent of the scene) it outlines the tissue around the
  lesion instead (the complement within the field of view). Whether a scan's mask is the lesion or its
  complement cannot be read from the scan, so `_alt`'s loss stays high and its gradient is, per image, a whole
  mask's worth of push towards one convention or the other: loud, coherent within an image and random across
  images. Trained with it (CG), `lesion_mask` shares the encoder and AdamW's moments with that noise, which
  swamps its own updates: negative transfer (Δ < 0) is what the study declares. Measured (docs/benchmarks.md,
  "Known-answer study"): at 4 epochs CG hurts `lesion_mask` with the agreeing reader as much (MoE on, low data),
  at 8 it does not hurt; without MoE (CGD) the conflicting reader costs about 0.09 DSC against the agreeing one.
  Under AU `_alt` is one of six tasks, so its share of the moments is a third of CG's: the damage is diluted
  (Δ_AU above Δ_CG). A step on `_alt` helps no other task, so AG leaves it apart.
- The control (`lesion_mask_agree`): the same scans with the masks of `lesion_mask`. Put in place of `_alt`
  it removes the conflict (a twin on the same scans); the negative transfer under CG should go with it.

The nine tasks of the demo are untouched: their scans are keyed by their own ids and their labels read as before.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Task id -> the id its scans are seeded by, where it is not its own (tasks that read the same images).
SCAN_KEY: dict[str, str] = {"lesion_mask_alt": "lesion_mask", "lesion_mask_agree": "lesion_mask"}

#: Tasks whose label is the scene's flipped for a hidden share of the scans (the conflicting convention): a
#: class becomes the other one (binary tasks), a mask its complement within the field of view.
FLIPPED_SHARE: dict[str, float] = {"lesion_mask_alt": 0.5}

#: Classification tasks that draw their class first and the scene for it (balanced classes), as
#: fetal_head_position does (none of the known-answer tasks so far).
BALANCED_CLASSES: frozenset[str] = frozenset()


def scan_key(task_id: str) -> str:
    """The id a task's images are seeded by (usagg/data/synth/sample.py `sample_rng`): its own, or its scan key."""
    return SCAN_KEY.get(task_id, task_id)


def convention_flips(task_id: str, seed: int, split: str, index: int) -> bool:
    """Whether the task's reader convention reports the opposite label on this scan: a coin of its own seed,
    drawn apart from the scene (the image stays byte-identical to the scans it shares)."""
    share = FLIPPED_SHARE.get(task_id, 0.0)
    if share <= 0:
        return False
    digest = hashlib.sha256(f"usagg-synth-convention/{seed}/{task_id}/{split}/{index}".encode()).digest()
    return bool(np.random.default_rng(np.frombuffer(digest, dtype=np.uint32)).random() < share)


def class_label(task_id: str, scene_class: int, seed: int, split: str, index: int) -> int:
    """The class the task's convention reports for a scan whose scene has class `scene_class`."""
    return 1 - scene_class if convention_flips(task_id, seed, split, index) else scene_class
