"""The known-answer tasks (studies/known.yaml, studies/known_conflict.yaml): effects planted where M2DINO shows them.

Each task reuses a scene builder of usagg/data/synth/scenes.py; what is planted is which scans a task sees and
how its label is read from the scene. The readers grade malignancy, except the mark readers, which grade a mark: the
thyroid and breast scenes code malignancy with the same cues (a dark, irregular lesion casting a posterior
shadow), so a reader of one helps a reader of the other. The mechanisms, and what the study's `expect:` block
declares of each (docs/benchmarks.md, "Known-answer study", has the runs behind every choice):

- Twins sharing a latent (Thyroid, data-rich as a group): `malignancy_a` (32 scans) and `malignancy_b` (192) grade
  the same rule on scans of their own (each task's images are seeded by its own id). Alone, 32 scans leave the
  encoder without the cue (TS AUC about 0.6); grouped (CG), the twin's scans teach the encoder the cue its head
  reads: positive transfer for the low-data twin, none lost by the data-rich one. Sampling is `matched`, so every
  task gets exactly its TS job's optimiser steps and a Δ comes from what is shared, not from more steps.
- A conflicting convention on the same scans (Breast, low-data): `lesion_class_alt` grades `lesion_class`'s scans
  (images seeded by the scan key `lesion_class`, byte-identical) by a convention the image does not show: for a
  hidden half of the patients (a coin of its own seed, independent of the scene) it reports the other class. Its
  labels carry nothing the scan shows (TS AUC at chance), so its steps teach the encoder nothing about malignancy:
  under CG `lesion_class` has no reader of malignancy beside it, under AU it has the thyroid readers (AU lifts
  it). A convention the image does not show does not hurt its partner in this model: with one head per task the
  head of `_alt` absorbs it; measured on outlines and classes, at 48 to 192 scans, CG with such a reader was
  within the seed spread of TS, and as good as with an agreeing one (docs/benchmarks.md).
- A conflicting convention the image shows (Breast): `lesion_mark` grades `lesion_class`'s scans, and as many
  more of the same kind (96), by a mark: a bright square a colleague left on a coin's half of them (its own seed,
  whatever the scene; `carries_mark`, `draw_mark`). Alone it reads the mark (TS AUC about 1.0). Grouped with
  readers of the lesion it loses what it read: the shared encoder follows the lesion, the convention of the
  majority, and the mark's features fade. This is negative transfer, and it grows with the lesion readers: in
  CG, one of them, it loses in some seeds; in AU, three of them, in every seed. AG, which puts it apart, gives it
  back. The mark changes `lesion_class`'s scans only by a square its reader learns to ignore.
- The same conflict under CG, diluted under AU (studies/known_conflict.yaml): `lesion_class` on 192 scans and
  `lesion_mark` on the first 96 of them, the same images, form the smaller clinical group (Breast), where the
  lesion is the convention of two scans in three. Under CG the mark reader loses the mark in every seed (negative
  transfer) and `lesion_class` loses nothing. `thyroid_mark` grades thyroid scans of its own (192) by the same mark
  (`MARKED_SHARE`, `MARK_READERS`): alone it reads it (TS AUC 1.0), and under AU it is the mark reader's ally, so
  the encoder keeps the mark and the conflict is diluted (the mark reader within a few per cent of TS). The
  conflict only shows when the lesion outnumbers the mark: with `lesion_class` on 48 scans, as in
  studies/known.yaml, CG cost the mark reader in 2 of 5 seeds, whatever the learning rate, epochs, frozen
  blocks, router or the mark's place and contrast (docs/benchmarks.md).
- The affinity: a step on any of the three readers of malignancy lowers the others' losses; a step on `_alt` or
  on the mark reader lowers none of theirs, so AG with two groups should put the three together and the two other
  conventions apart.
- The broken run (tests/test_known_answer.py): `malignancy_alt`, a reader of `malignancy_a`'s own scans by the
  hidden convention, in place of the twin: the Thyroid partner then teaches nothing and "CG helps the low-data
  twin" is not met.

The nine tasks of the demo are untouched: their scans are keyed by their own ids and their labels read as before.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Task id -> the id its scans are seeded by, where it is not its own (tasks that read the same images).
SCAN_KEY: dict[str, str] = {
    "lesion_class_alt": "lesion_class",
    "lesion_mark": "lesion_class",
    "malignancy_alt": "malignancy_a",
}

#: Tasks whose label is the scene's flipped for a hidden share of the scans (the conflicting convention): a
#: class becomes the other one (binary tasks), a mask its complement within the field of view.
FLIPPED_SHARE: dict[str, float] = {"lesion_class_alt": 0.5, "malignancy_alt": 0.5}


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


def class_label(task_id: str, scene_class: int, marked: bool, seed: int, split: str, index: int) -> int:
    """The class the task's convention reports for a scan whose scene has class `scene_class` (and which carries
    the mark or not): the mark itself for a mark reader, else the scene's class, flipped where the task's hidden
    convention says so."""
    if task_id in MARK_READERS:
        return int(marked)
    return 1 - scene_class if convention_flips(task_id, seed, split, index) else scene_class


#: Scans (by scan key) of which a share carries a mark: a bright square a colleague left on the frame, drawn on a
#: coin of its own seed, whatever the scene shows. `lesion_mark` grades lesion_class's scans by it, `thyroid_mark` its
#: own thyroid scans.
MARKED_SHARE: dict[str, float] = {"lesion_class": 0.5, "thyroid_mark": 0.5}
#: Tasks whose label is the mark, not the scene.
MARK_READERS = frozenset({"lesion_mark", "thyroid_mark"})
#: The mark: a square of side image_size // MARK_DIVISOR (8 px at 64 px), its top at a quarter of the height and
#: centred, brightened by MARK_GAIN of full scale (saturating where the tissue is bright).
MARK_DIVISOR, MARK_GAIN = 8, 0.5


def carries_mark(scan: str, seed: int, split: str, index: int) -> bool:
    """Whether this scan carries the mark: a coin of its own seed, independent of the scene and its class."""
    share = MARKED_SHARE.get(scan, 0.0)
    if share <= 0:
        return False
    digest = hashlib.sha256(f"usagg-synth-mark/{seed}/{scan}/{split}/{index}".encode()).digest()
    return bool(np.random.default_rng(np.frombuffer(digest, dtype=np.uint32)).random() < share)


def draw_mark(image: np.ndarray) -> np.ndarray:
    """The image with the mark drawn on it (uint8 in, uint8 out; a new array)."""
    size = image.shape[0]
    side = max(2, size // MARK_DIVISOR)
    top, left = size // 4, size // 2 - side // 2
    out = image.astype(np.int16)
    out[top : top + side, left : left + side] += int(MARK_GAIN * 255)
    return np.clip(out, 0, 255).astype(np.uint8)
