"""Task sampling: which task each batch comes from, and which of its images, from one seeded generator.

Every batch holds a single task (the challenge baseline's recipe). The task is
drawn uniformly, proportionally to training size, or with size^(1/T); images
are drawn without replacement from a per-task permutation that is refreshed
when used up. All randomness comes from one `torch.Generator`, and the whole
state (generator, permutations, cursors) is a plain dict, so a resumed job
draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

SamplingMode = Literal["uniform", "proportional", "temperature"]


def task_probabilities(sizes: dict[str, int], mode: SamplingMode, temperature: float = 2.0) -> dict[str, float]:
    """Probability of each task per batch: uniform, ∝ n, or ∝ n^(1/T) (T=1 is proportional, T→∞ uniform)."""
    if not sizes:
        raise ValueError("no tasks to sample from")
    if any(n <= 0 for n in sizes.values()):
        empty = [t for t, n in sizes.items() if n <= 0]
        raise ValueError(f"tasks without training images: {empty}")
    if mode == "uniform":
        w = {t: 1.0 for t in sizes}
    elif mode == "proportional":
        w = {t: float(n) for t, n in sizes.items()}
    elif mode == "temperature":
        w = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    total = sum(w.values())
    return {t: v / total for t, v in w.items()}


class TaskSampler:
    """Yields (task_id, image indices) batches; reproducible from a seed and resumable from `state_dict()`."""

    def __init__(
        self,
        sizes: dict[str, int],
        batch_size: int,
        mode: SamplingMode = "uniform",
        temperature: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.task_ids = list(sizes)
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.probs = task_probabilities(sizes, mode, temperature)
        self._p = torch.tensor([self.probs[t] for t in self.task_ids], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self._perm: dict[str, torch.Tensor] = {}
        self._pos: dict[str, int] = {t: 0 for t in self.task_ids}

    def next_task(self) -> str:
        """Draw the task of the next batch."""
        k = int(torch.multinomial(self._p, 1, generator=self.generator).item())
        return self.task_ids[k]

    def take(self, task_id: str, n: int | None = None) -> torch.Tensor:
        """Next `n` indices (default: batch size, capped at the task's size) from the task's running permutation."""
        size = self.sizes[task_id]
        n = min(self.batch_size if n is None else n, size)
        out: list[torch.Tensor] = []
        while n > 0:
            perm = self._perm.get(task_id)
            pos = self._pos[task_id]
            if perm is None or pos >= size:
                perm = torch.randperm(size, generator=self.generator)
                self._perm[task_id], pos = perm, 0
            chunk = perm[pos : pos + n]
            out.append(chunk)
            self._pos[task_id] = pos + len(chunk)
            n -= len(chunk)
        return torch.cat(out) if len(out) > 1 else out[0]

    def next_batch(self) -> tuple[str, torch.Tensor]:
        """One batch: a task, then that many of its image indices."""
        task = self.next_task()
        return task, self.take(task)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "perm": {t: p.clone() for t, p in self._perm.items()},
            "pos": dict(self._pos),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm = {t: p.clone() for t, p in state["perm"].items()}
        self._pos = dict(state["pos"])
