"""Torch datasets per task: decoded images from the cache, targets in model space.

Model space: images S x S, ImageNet-normalised, 3 channels; boxes and keypoints
divided by the original width and height (so they lie in [0, 1]); masks resized
nearest-neighbour. `meta(i)` keeps the ground truth at original resolution,
because the challenge scores in original-image pixels.
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S] (or [S, S]) grayscale -> float32 [B, 3, S, S] ImageNet-normalised, on the input's device.

    One multiply-add per pixel ((x / 255 - mean) / std folded into x * scale + shift), broadcast to 3 channels.
    """
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images_u8.device).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images_u8.device).view(3, 1, 1)
    x = images_u8.unsqueeze(-3).to(torch.float32)
    return torch.addcmul(-mean / std, x, 1.0 / (255.0 * std))


class TaskDataset(Dataset):
    """The samples of one task at one input size, backed by the decode cache."""

    def __init__(self, samples: Sequence[Sample], task: TaskSpec, image_size: int, cache_dir: Path) -> None:
        self.samples = list(samples)
        self.task = task
        self.image_size = image_size
        if not self.samples:
            raise DataError(f"task {task.id} has no images in this split; nothing to build a dataset from")
        odd = [s for s in self.samples if s.task_id != task.id or s.task_type != task.type]
        if odd:
            s = odd[0]
            raise DataError(
                f"{s.csv_file} row {s.row}: sample of task {s.task_id} ({s.task_type}) given to the dataset of "
                f"task {task.id} ({task.type})"
            )
        decoded = cache.load([s.image_file for s in self.samples], image_size, cache_dir, "image")
        self._images = decoded.arrays
        self._hw = decoded.orig_hw
        self._files = {"images": decoded.path}
        self._masks: np.ndarray | None = None
        if task.type == "segmentation":
            masks = cache.load([s.label for s in self.samples], image_size, cache_dir, "mask")  # type: ignore[misc]
            self._masks = masks.arrays
            self._files["masks"] = masks.path
        self._targets = self._build_targets()

    def __getstate__(self) -> dict:
        """Pickle (DataLoader workers under spawn) without the memmaps: workers reopen the cache files."""
        state = self.__dict__.copy()
        state["_images"] = state["_masks"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._images = np.load(self._files["images"], mmap_mode="r")
        if "masks" in self._files:
            self._masks = np.load(self._files["masks"], mmap_mode="r")

    def _build_targets(self) -> np.ndarray | None:
        """Non-mask targets for every sample, in model space (masks stay in the memmap)."""
        kind = self.task.type
        if kind == "classification":
            return np.array([s.label for s in self.samples], dtype=np.int64)
        h = self._hw[:, 0:1].astype(np.float64)
        w = self._hw[:, 1:2].astype(np.float64)
        if kind == "detection":
            boxes = np.array([s.label for s in self.samples], dtype=np.float64)
            return (boxes / np.concatenate([w, h, w, h], axis=1)).astype(np.float32)
        if kind == "regression":
            pts = np.array([s.label for s in self.samples], dtype=np.float64)  # [N, K, 2]
            return (pts / np.stack([w, h], axis=-1)).astype(np.float32)
        return None

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, i: int) -> torch.Tensor:
        if self._masks is not None:
            return torch.from_numpy(np.array(self._masks[i], dtype=np.int64))
        assert self._targets is not None
        return torch.from_numpy(np.array(self._targets[i]))

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.array(self._images[i]))
        return {"image": to_model_input(image), "target": self.target(i), "index": i}

    def orig_hw(self, i: int) -> tuple[int, int]:
        return int(self._hw[i, 0]), int(self._hw[i, 1])

    def meta(self, i: int) -> dict:
        """The CSV key, original (H, W) and ground truth at original resolution, for scoring."""
        s = self.samples[i]
        gt: object
        if s.task_type == "segmentation":
            gt = cache.read_mask(s.label)  # type: ignore[arg-type]
        elif s.task_type == "classification":
            gt = int(s.label)  # type: ignore[arg-type]
        elif s.task_type == "detection":
            gt = np.array(s.label, dtype=np.float64)
        else:
            gt = np.array(s.label, dtype=np.float64)
        return {"image_path": s.image_path, "orig_hw": self.orig_hw(i), "gt": gt}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything in memory for index-based batching: images uint8 [N, S, S] and stacked targets.

        Normalise batches with `to_model_input` (on the training device, which is cheaper).
        Targets: segmentation uint8 [N, S, S] (cast to int64 per batch), classification int64 [N],
        detection float32 [N, 4], regression float32 [N, K, 2].
        """
        images = torch.from_numpy(np.array(self._images))
        if self._masks is not None:
            targets = torch.from_numpy(np.array(self._masks))
        else:
            assert self._targets is not None
            targets = torch.from_numpy(self._targets.copy())
        return {"images": images, "targets": targets, "orig_hw": torch.from_numpy(self._hw.copy())}
