"""The fast data path: a split held as tensors, batches made by indexing (no DataLoader, no per-item calls).

`TaskDataset.tensors()` gives decoded uint8 images [N, S, S] (or [N, 3, S, S])
and stacked targets; a batch is an index gather, a copy to the device and a
normalisation there (`to_model_input`), which is what a bare PyTorch loop over
the same tensors would do. On CUDA the tensors move to the GPU once when they
fit, and nothing in a batch waits for the device: indices go through pinned
memory, constants live on the device, augmentation decisions are drawn on the host.

Training batches (a `step` is given) are augmented (usagg/engine/augment.py).
With a frozen trunk (usagg/model/trunk.py) attached, a sample left untouched is
served from the trunk and only touched ones go through the frozen blocks; the
batch is then an `EncoderInput` rather than a pixel tensor.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usagg.cachedir import cache_root
from usagg.data.datasets import TaskDataset, to_model_input
from usagg.data.splits import make_splits
from usagg.engine.augment import Augmenter
from usagg.engine.device import Compute
from usagg.engine.jobdata import JobData
from usagg.errors import UsaggError
from usagg.model.backbones import EncoderInput
from usagg.model.m2dino import M2DINO
from usagg.model.trunk import Trunk, load_or_build
from usagg.plan import Job
from usagg.tasktypes import TaskType
from usagg.tasktypes.base import GEOMETRIES

log = logging.getLogger(__name__)

#: Share of the GPU memory free when a job places its data that its trunks and splits may take there, in all.
GPU_RESIDENT_SHARE = 0.25

Batch = torch.Tensor | EncoderInput


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without a host sync: through pinned memory, asynchronously, on CUDA."""
    if device.type != "cuda" or t.device == device:
        return t.to(device)
    if not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _gather(src: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `idx` (host int64) of `src` on `device`: indexed where `src` lives, copied without a sync."""
    if src.device.type == "cuda":
        return src.index_select(0, to_device(idx, src.device)).to(device)
    if device.type != "cuda":
        return src.index_select(0, idx)
    out = torch.empty((len(idx), *src.shape[1:]), dtype=src.dtype, pin_memory=True)
    torch.index_select(src, 0, idx, out=out)
    return out.to(device, non_blocking=True)


@dataclass
class TensorSplit:
    """One task's split as tensors: uint8 images, targets (type-dependent), original (H, W); optional trunk.

    `trunk_rows` maps each sample to its row in `trunk`; `augment` is set on training splits only.
    `served` / `seen` count training samples read from the trunk / batched for training.
    """

    task_id: str
    task_type: TaskType
    images: torch.Tensor
    targets: torch.Tensor
    orig_hw: torch.Tensor
    trunk: Trunk | None = None
    trunk_rows: torch.Tensor | None = None
    augment: Augmenter | None = None
    served: int = 0
    seen: int = 0

    @classmethod
    def from_dataset(cls, ds: TaskDataset, trunk: Trunk | None = None, augment: Augmenter | None = None) -> TensorSplit:
        t = ds.tensors()
        rows = None if trunk is None else trunk.rows_of([s.image_file for s in ds.samples])
        if trunk is not None and rows is not None and trunk.on_device:
            rows = rows.to(trunk.data.device)
        if trunk is not None and rows is None:
            log.warning("task %s: some images are not in the trunk %s; recomputing this split", ds.task.id, trunk.path)
        aug = augment if augment is not None and augment.active else None
        if aug is not None and aug.geometric and ds.task_type.target_geometry not in GEOMETRIES:
            raise UsaggError(
                f"training.augmentation: flip, scale and rotation have no target transform for task {ds.task.id} "
                f"of type {ds.task_type.name!r} (its target_geometry is {ds.task_type.target_geometry!r}; one of "
                f"{', '.join(GEOMETRIES)} is needed); set hflip_p, scale_p and rotate_p to 0 for a study with it"
            )
        return cls(ds.task.id, ds.task_type, t["images"], t["targets"], t["orig_hw"], *_trunk_pair(trunk, rows), aug)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.targets.numel() * self.targets.element_size()

    def to(self, device: torch.device) -> TensorSplit:
        """Images and targets on `device` (a trunk is placed once per job by `job_trunks`, shared by splits)."""
        return dataclasses.replace(self, images=self.images.to(device), targets=self.targets.to(device))

    def batch(self, idx: torch.Tensor, device: torch.device, step: int | None = None) -> tuple[Batch, torch.Tensor]:
        """Model input on `device` (normalised images [B, 3, S, S], or an `EncoderInput` when a trunk serves
        some samples) and targets in model space. `step` (the global optimiser step) marks a training batch:
        it is augmented, drawn from (job seed, step), and counted in `served` / `seen`."""
        idx = idx.to("cpu")
        n = len(idx)
        draw = self.augment.draw(step, n) if self.augment is not None and step is not None else None
        y = _gather(self.targets, idx, device)
        if self.trunk is None or self.trunk_rows is None:
            x, y = self._pixels(idx, y, torch.arange(n), draw, device)
            return x, self.task_type.batch_targets(y)
        from_trunk = ~draw.touched if draw is not None else torch.ones(n, dtype=torch.bool)
        token_pos = torch.nonzero(from_trunk).flatten()
        pixel_pos = torch.nonzero(~from_trunk).flatten()
        if step is not None:
            self.seen += n
            self.served += len(token_pos)
        s = self.images.shape[-1]
        inp = EncoderInput(n, (s, s))
        if len(pixel_pos):
            inp.images, y = self._pixels(idx[pixel_pos], y, pixel_pos, draw, device)
            inp.image_pos = to_device(pixel_pos, device)
        if len(token_pos):
            rows_dev = self.trunk_rows.device
            rows = self.trunk_rows.index_select(0, to_device(idx[token_pos], rows_dev))
            inp.tokens = self.trunk.gather(rows, device)
            inp.token_pos = to_device(token_pos, device)
        return inp, self.task_type.batch_targets(y)

    def _pixels(
        self, idx: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, draw, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images of samples `idx` (at batch positions `pos`), augmented where the draw says;
        returns them and the batch's targets with the augmented samples' targets moved."""
        x = _gather(self.images, idx, device)
        if draw is None or self.augment is None:
            return to_model_input(x), y
        d = draw.subset(pos)
        touched = torch.nonzero(d.touched).flatten()
        if not len(touched):
            return to_model_input(x), y
        where = to_device(touched, device)
        at = to_device(pos[touched], device)
        ax, ay = self.augment.apply(
            x.index_select(0, where), y.index_select(0, at), self.task_type.target_geometry, d.subset(touched)
        )
        pixels = x.to(torch.float32).index_copy(0, where, ax)
        return to_model_input(pixels), y.index_copy(0, at, ay)

    def chunks(self, batch_size: int, device: torch.device) -> Iterator[tuple[int, Batch, torch.Tensor]]:
        """Sequential batches for evaluation (never augmented): (start index, model input, targets)."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            x, y = self.batch(idx, device)
            yield start, x, y


def _trunk_pair(trunk: Trunk | None, rows: torch.Tensor | None) -> tuple[Trunk | None, torch.Tensor | None]:
    return (trunk, rows) if rows is not None else (None, None)


class GpuRoom:
    """What a job's data may still take on its GPU: GPU_RESIDENT_SHARE of the memory free at its first placement,
    one budget for its trunks and every split, largest use first come (each placement read free memory anew
    before, so each took a quarter of what the others left: 27 tasks' trunks could take most of the card)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.left: int | None = None  # bytes, once read

    def take(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit on the GPU (then counted as taken); never on another device."""
        if self.device.type != "cuda":
            return False
        if self.left is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            self.left = int(GPU_RESIDENT_SHARE * free)
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


def place(splits: dict[str, TensorSplit], device: torch.device, room: GpuRoom | None = None) -> dict[str, TensorSplit]:
    """Move the tensors to a CUDA device when `room` (the job's budget; else one of their own) grants their bytes;
    else they stay where they are: a batch is gathered from them into pinned memory of its own (`_gather`), so
    pinning the whole split would buy nothing and cost page-locked memory (which torch's host allocator rounds up
    to a power of two: a 19 GB split would lock 32 GB)."""
    if device.type != "cuda":
        return splits
    room = room or GpuRoom(device)
    if not room.take(sum(s.nbytes for s in splits.values())):
        return splits
    return {t: s.to(device) for t, s in splits.items()}


def job_trunks(
    model: M2DINO, job: Job, data: JobData, compute: Compute, room: GpuRoom | None = None
) -> dict[str, Trunk]:
    """A trunk per task of the job over all the task's images (its splits at fraction 1.0), or {} when off;
    each on the job's GPU in bf16 where `room` (the job's budget; else one of their own) grants it.

    One file per task serves every job of the study with the same frozen weights and input, whatever its
    paradigm, fraction or seed. Off when `model.trunk` is off, nothing is frozen, or a MoE block is frozen.
    """
    if job.model.trunk == "off":
        return {}
    layout = model.encoder.trunk_layout()
    if layout is None:
        why = "no block is frozen" if model.encoder.frozen_blocks == 0 else "a MoE block is among the frozen ones"
        log.info("frozen trunk: off (%s); every sample goes through the frozen blocks", why)
        return {}
    from usagg.data.cache import load as decode

    everything = make_splits(job.data, data.root, job.tasks, 1.0, job.seed, data.rows)
    cache_dir = cache_root(job.data.cache_dir)
    room = room or GpuRoom(compute.device)
    out = {}
    for t in job.tasks:
        size, color = data.train[t.id].image_size, data.train[t.id].color  # what the pixel path decodes
        sp = everything[t.id]
        files = sorted({str(s.image_file) for part in (sp.train, sp.select, sp.test) for s in part})
        paths = [Path(f) for f in files]

        def pixels(p: list[Path] = paths, s: int = size, c: str = color) -> np.ndarray:
            return decode(p, s, cache_dir, "image", c).arrays

        trunk = load_or_build(
            model.encoder,
            paths,
            size,
            color,
            cache_dir,
            pixels,
            compute.device,
            compute.precision,
            compute.autocast,
        )
        out[t.id] = trunk.to(compute.device, room.take)
    log.info(
        "frozen trunk: blocks 0-%d, stored %s, %d images in %d file(s)",
        layout.start - 1,
        list(layout.stored),
        sum(len(tr.rows) for tr in out.values()),
        len(out),
    )
    return out


def trunk_share(splits: dict[str, TensorSplit]) -> str | None:
    """'x of y training samples (z %) served from the frozen trunk', or None without a trunk or batches."""
    seen = sum(s.seen for s in splits.values())
    if not seen or all(s.trunk is None for s in splits.values()):
        return None
    served = sum(s.served for s in splits.values())
    return f"{served} of {seen} training samples ({100 * served / seen:.1f} %) served from the frozen trunk"
