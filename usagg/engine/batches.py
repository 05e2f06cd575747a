"""The fast data path: a split held as tensors, batches made by indexing (no DataLoader, no per-item calls).

`TaskDataset.tensors()` gives decoded uint8 images [N, S, S] and stacked
targets; a batch is an index gather, a copy to the device and a normalisation
there (`to_model_input`), which is what a bare PyTorch loop over the same
tensors would do. On CUDA the tensors move to the GPU once when they fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from usagg.data.datasets import TaskDataset, to_model_input
from usagg.tasktypes import TaskType

#: Share of free GPU memory the training tensors of a job may take to live on the GPU.
GPU_RESIDENT_SHARE = 0.25


@dataclass
class TensorSplit:
    """One task's split as tensors: uint8 images [N, S, S], targets (type-dependent), original (H, W)."""

    task_id: str
    task_type: TaskType
    images: torch.Tensor
    targets: torch.Tensor
    orig_hw: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: TaskDataset) -> TensorSplit:
        t = ds.tensors()
        return cls(ds.task.id, ds.task_type, t["images"], t["targets"], t["orig_hw"])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.targets.numel() * self.targets.element_size()

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.task_id, self.task_type, self.images.to(device), self.targets.to(device), self.orig_hw)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images float32 [B, 3, S, S] normalised on `device`, targets in model space on `device`."""
        if self.images.device != idx.device:
            idx = idx.to(self.images.device)
        x = self.images.index_select(0, idx).to(device, non_blocking=True)
        y = self.targets.index_select(0, idx).to(device, non_blocking=True)
        return to_model_input(x), self.task_type.batch_targets(y)

    def chunks(self, batch_size: int, device: torch.device) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Sequential batches for evaluation: (start index, images, targets)."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            x, y = self.batch(idx, device)
            yield start, x, y


def place(splits: dict[str, TensorSplit], device: torch.device) -> dict[str, TensorSplit]:
    """Move the tensors to a CUDA device when they take under GPU_RESIDENT_SHARE of its free memory."""
    if device.type != "cuda":
        return splits
    free, _ = torch.cuda.mem_get_info(device)
    if sum(s.nbytes for s in splits.values()) > GPU_RESIDENT_SHARE * free:
        return {
            t: TensorSplit(s.task_id, s.task_type, s.images.pin_memory(), s.targets.pin_memory(), s.orig_hw)
            for t, s in splits.items()
        }
    return {t: s.to(device) for t, s in splits.items()}
