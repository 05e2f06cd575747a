"""Task sampling: which task each batch comes from, and which of its images, from one seeded generator.

Every batch holds a single task (the challenge baseline's recipe). The task is
drawn uniformly, proportionally to training size, or with size^(1/T); or, in
`matched` mode, each epoch is a seeded shuffle of a fixed multiset holding each
task as many times as its TS job steps per epoch, so every task of a multi-task
job gets exactly the optimiser updates it gets alone (issue 15: otherwise a
small task gets many more updates in CG/AU than in TS, a large one fewer).
Images are drawn without replacement from a per-task permutation that is
refreshed when used up. All randomness comes from one `torch.Generator`, and
the whole state (generator, permutations, cursors, the epoch's task order) is
a plain dict, so a resumed job draws exactly the batches an uninterrupted one
would. A one-task job draws the same batches in every mode.

The modes are registered strategies (`SAMPLERS`, a usagg/registry.py registry),
LibMTL style: a new mode is one `register_sampling` function giving each task's
weight, never a branch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from usagg.registry import Registry

SamplingMode = Literal["uniform", "proportional", "temperature", "matched"]

#: (task sizes, temperature) -> each task's unnormalised share of the batches.
TaskWeights = Callable[[dict[str, int], float], dict[str, float]]


@dataclass(frozen=True)
class Sampling:
    """A sampling strategy (`training.sampling`): how the task of each batch is drawn.

    `weights` gives independent per-batch draws; `quota` strategies have none: each
    epoch is a seeded shuffle of every task's TS steps (`matched_steps`).
    """

    name: str
    weights: TaskWeights | None = None
    quota: bool = False


#: name -> strategy, as `training.sampling` names it.
SAMPLERS: Registry[Sampling] = Registry("sampling mode")


def register_sampling(name: str) -> Callable[[TaskWeights], TaskWeights]:
    """Register a per-batch sampling strategy from its task-weight function (a decorator)."""

    def deco(fn: TaskWeights) -> TaskWeights:
        SAMPLERS.register(name, Sampling(name, fn), same=lambda old, new: old.weights is new.weights)
        return fn

    return deco


@register_sampling("uniform")
def _uniform(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    return {t: 1.0 for t in sizes}


@register_sampling("proportional")
def _proportional(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    return {t: float(n) for t, n in sizes.items()}


@register_sampling("temperature")
def _temperature(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    return {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}


SAMPLERS.register("matched", Sampling("matched", quota=True))


def matched_steps(sizes: dict[str, int], batch_size: int, steps_per_epoch: int | None = None) -> dict[str, int]:
    """Steps per epoch each task gets in its own TS job: `steps_per_epoch` when set, else ceil(n / batch_size)."""
    if steps_per_epoch is not None:
        return {t: steps_per_epoch for t in sizes}
    return {t: max(1, math.ceil(n / batch_size)) for t, n in sizes.items()}


def epoch_length(sizes: dict[str, int], batch_size: int, mode: SamplingMode, steps_per_epoch: int | None) -> int:
    """Optimiser steps per epoch of a job: the sum of the TS steps in matched mode (two tasks or more), else
    `steps_per_epoch` when set, else enough batches to see the job's training images once."""
    if SAMPLERS.lookup(mode).quota and len(sizes) > 1:
        return sum(matched_steps(sizes, batch_size, steps_per_epoch).values())
    if steps_per_epoch is not None:
        return steps_per_epoch
    return max(1, math.ceil(sum(sizes.values()) / batch_size))


def _check_sizes(sizes: dict[str, int]) -> None:
    if not sizes:
        raise ValueError("no tasks to sample from")
    if any(n <= 0 for n in sizes.values()):
        empty = [t for t, n in sizes.items() if n <= 0]
        raise ValueError(f"tasks without training images: {empty}")


def task_probabilities(sizes: dict[str, int], mode: SamplingMode, temperature: float = 2.0) -> dict[str, float]:
    """Probability of each task per batch: uniform, ∝ n, or ∝ n^(1/T) (T=1 is proportional, T→∞ uniform)."""
    _check_sizes(sizes)
    weights = SAMPLERS.lookup(mode).weights
    if weights is None:
        raise ValueError(f"sampling mode {mode!r} draws no batch independently: its epochs follow matched_steps")
    w = weights(sizes, temperature)
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
        steps_per_epoch: int | None = None,
    ) -> None:
        _check_sizes(sizes)
        self.task_ids = list(sizes)
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.mode: SamplingMode = "uniform" if len(sizes) == 1 else mode  # one task: every mode is the same draw
        self.quota = SAMPLERS.lookup(self.mode).quota
        self.steps_per_epoch = epoch_length(sizes, batch_size, self.mode, steps_per_epoch)
        quota = matched_steps(sizes, batch_size, steps_per_epoch)
        if self.quota:  # each task's share of an epoch's batches, exactly
            self.probs = {t: q / self.steps_per_epoch for t, q in quota.items()}
        else:
            self.probs = task_probabilities(sizes, self.mode, temperature)
        self._p = torch.tensor([self.probs[t] for t in self.task_ids], dtype=torch.float64)
        #: quota mode: every task index as many times as its TS steps per epoch (shuffled once per epoch)
        self._multiset = torch.repeat_interleave(torch.arange(len(self.task_ids)), torch.tensor(list(quota.values())))
        self.generator = torch.Generator().manual_seed(seed)
        self._perm: dict[str, torch.Tensor] = {}
        self._pos: dict[str, int] = {t: 0 for t in self.task_ids}
        self._order: torch.Tensor | None = None  # quota mode: this epoch's task order
        self._order_pos = 0

    def next_task(self) -> str:
        """Draw the task of the next batch (quota: the next of this epoch's shuffled order)."""
        if not self.quota:
            k = int(torch.multinomial(self._p, 1, generator=self.generator).item())
            return self.task_ids[k]
        if self._order is None or self._order_pos >= len(self._order):
            self._order = self._multiset[torch.randperm(len(self._multiset), generator=self.generator)]
            self._order_pos = 0
        k = int(self._order[self._order_pos])
        self._order_pos += 1
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
            "order": None if self._order is None else self._order.clone(),
            "order_pos": self._order_pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm = {t: p.clone() for t, p in state["perm"].items()}
        self._pos = dict(state["pos"])
        self._order = None if state["order"] is None else state["order"].clone()
        self._order_pos = int(state["order_pos"])
