"""One synthetic sample: seed the RNG from (seed, task, split, index), draw the scene, image it, label it.

Seeding per image is what makes tasks independent: changing one task's size
never changes another task's images, and a larger size keeps the first ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from usagg.data.cache import read_mask
from usagg.data.synth.bmode import simulate
from usagg.data.synth.known import carries_mark, class_label, convention_flips, draw_mark, scan_key
from usagg.data.synth.scenes import SCENES
from usagg.data.synth.tasks import ALL_TASKS, SynthTask


@dataclass
class SynthSample:
    """An image and its label in FMC_UIA terms (pixels: the image spans [0, W] x [0, H])."""

    task: SynthTask
    image: np.ndarray  # uint8 (S, S)
    mask: np.ndarray | None = None  # segmentation: uint8 (S, S), 0 = background
    label: int | None = None  # classification
    box: tuple[int, int, int, int] | None = None  # detection: x_min, y_min, x_max, y_max (pixel edges)
    points: tuple[tuple[float, float], ...] | None = None  # regression: K (x, y)

    def csv_label(self, mask_rel: str | None) -> object:
        """The label as its task type writes it to the CSV (`TaskType.csv_fields`); a mask by its CSV path."""
        if self.mask is not None:
            return mask_rel
        if self.box is not None:
            return self.box
        if self.points is not None:
            return self.points
        return self.label

    @classmethod
    def from_label(cls, task: SynthTask, image: np.ndarray, label: Any) -> SynthSample:
        """Back from a label as the FMC_UIA reader parses it (a mask as its file), for drawing written data."""
        out = cls(task, image)
        if task.type == "segmentation":
            out.mask = read_mask(label)
        elif task.type == "classification":
            out.label = int(label)
        elif task.type == "detection":
            x_min, y_min, x_max, y_max = (int(v) for v in label)
            out.box = (x_min, y_min, x_max, y_max)
        else:
            out.points = tuple(label)
        return out


def sample_rng(seed: int, task_id: str, split: str, index: int) -> np.random.Generator:
    """An RNG that depends on exactly these four values (stable across Python versions and processes)."""
    digest = hashlib.sha256(f"usagg-synth/{seed}/{task_id}/{split}/{index}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box of the non-zero pixels as pixel edges: x_max, y_max are one past the last column, row."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def make_sample(task_id: str, split: str, index: int, seed: int, size: int) -> SynthSample:
    """Generate sample `index` of `task_id` in `split`; pure function of its arguments.

    A known-answer task may share its scans with another (`known.scan_key`), a share of those scans may carry a
    mark (`known.carries_mark`), and a task may read its label by its own convention (`known.class_label`,
    `known.convention_flips`, or the mark itself); for the nine benchmark tasks all are the identity.
    """
    task = ALL_TASKS[task_id]
    scan = scan_key(task_id)
    rng = sample_rng(seed, scan, split, index)
    balanced = task_id == "fetal_head_position"
    kwargs = {"direction_class": int(rng.integers(0, task.num_classes))} if balanced else {}
    scene = SCENES[task.anatomy](rng, **kwargs)
    image = simulate(scene.probe, scene.tissue, size, rng, scene.imaging)
    marked = carries_mark(scan, seed, split, index)
    out = SynthSample(task, draw_mark(image) if marked else image)
    if task.type == "classification":
        out.label = class_label(task_id, scene.cls, marked, seed, split, index)
        return out
    if task.type == "regression":
        out.points = tuple((round(px * size, 2), round(py * size, 2)) for px, py in scene.keypoints)
        return out
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    labels, view = scene.labels(c[None, :], c[:, None]), scene.probe.pixel_in_view(size)
    mask = ((labels == 0) if convention_flips(task_id, seed, split, index) else labels) * view
    if task.type == "segmentation":
        out.mask = mask.astype(np.uint8)
    else:
        out.box = mask_box(mask)
    return out
