"""Torch datasets per task: decoded images from the cache, targets in model space.

Model space: images S x S, ImageNet-normalised, 3 channels (grayscale images
are kept as one channel and broadcast at input); targets as the
task's type encodes them (`TaskType.targets`, usagg/tasktypes/). `meta(i)` keeps
the ground truth at original resolution, because the challenge scores in
original-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from usagg.data import cache
from usagg.data.fmc_uia import Sample
from usagg.errors import DataError
from usagg.spec.models import TaskSpec
from usagg.tasktypes import get_task_type

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) [3, 1, 1] float32 on `device`, made once per device: no host-to-device copy per batch."""
    if device not in _CONSTANTS:
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        _CONSTANTS[device] = ((-mean / std).to(device), (1.0 / (255.0 * std)).to(device))
    return _CONSTANTS[device]


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Pixels 0..255 -> float32 [B, 3, S, S] ImageNet-normalised, on the input's device.

    uint8 (or float, for augmented pixels) [B, S, S] or [S, S] is grayscale, broadcast to 3 channels;
    [B, 3, S, S] is colour. One multiply-add per pixel ((x / 255 - mean) / std folded into x * scale + shift).
    """
    shift, scale = _normalisation(images.device)
    x = images.to(torch.float32)
    if images.ndim < 4:
        x = x.unsqueeze(-3)
    return torch.addcmul(shift, x, scale)


class TaskDataset(Dataset):
    """The samples of one task at one input size, backed by the decode cache.

    `color` (`data.color`): `auto` keeps RGB when some image has colour, `gray` forces luminance, `rgb` forces
    3 channels; grayscale data are one channel in the cache under every mode but `rgb`.
    """

    def __init__(
        self, samples: Sequence[Sample], task: TaskSpec, image_size: int, cache_dir: Path, color: str = "auto"
    ) -> None:
        self.samples = list(samples)
        self.task = task
        self.image_size = image_size
        self.color = color
        if not self.samples:
            raise DataError(f"task {task.id} has no images in this split; nothing to build a dataset from")
        odd = [s for s in self.samples if s.task_id != task.id or s.task_type != task.type]
        if odd:
            s = odd[0]
            raise DataError(
                f"{s.csv_file} row {s.row}: sample of task {s.task_id} ({s.task_type}) given to the dataset of "
                f"task {task.id} ({task.type})"
            )
        self.task_type = get_task_type(task.type)
        decoded = cache.load([s.image_file for s in self.samples], image_size, cache_dir, "image", color)
        self._images = decoded.arrays
        self._hw = decoded.orig_hw
        self._targets = self.task_type.targets(self.samples, self._hw, image_size, cache_dir)

    def __getstate__(self) -> dict:
        """Pickle (DataLoader workers under spawn) without memmaps: workers reopen the cache files by name."""
        state = self.__dict__.copy()
        for key in ("_images", "_targets"):
            if isinstance(state[key], np.memmap):
                state[key] = Path(state[key].filename)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for key in ("_images", "_targets"):
            if isinstance(state[key], Path):
                setattr(self, key, np.load(state[key], mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, i: int) -> torch.Tensor:
        """One target in model space, as the head's loss takes it."""
        return self.task_type.batch_targets(torch.from_numpy(np.array(self._targets[i])))

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.array(self._images[i : i + 1]))
        return {"image": to_model_input(image)[0], "target": self.target(i), "index": i}

    def orig_hw(self, i: int) -> tuple[int, int]:
        return int(self._hw[i, 0]), int(self._hw[i, 1])

    def meta(self, i: int) -> dict:
        """The CSV key, original (H, W) and ground truth at original resolution, for scoring."""
        s = self.samples[i]
        return {"image_path": s.image_path, "orig_hw": self.orig_hw(i), "gt": self.task_type.ground_truth(s)}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything in memory for index-based batching: images uint8 [N, S, S] (or [N, 3, S, S]), stacked targets.

        Normalise batches with `to_model_input` (on the training device, which is cheaper) and
        targets with `task_type.batch_targets` (a dtype cast, e.g. uint8 masks to int64).
        """
        images = torch.from_numpy(np.array(self._images))
        targets = torch.from_numpy(np.array(self._targets))
        return {"images": images, "targets": targets, "orig_hw": torch.from_numpy(self._hw.copy())}
