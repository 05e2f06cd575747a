"""Learning-rate schedule: linear warm-up, then cosine decay (or constant), evaluated per optimiser step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosine:
    """Multiplier of the base learning rate at step s (0-based count of steps already taken).

    Warm-up: (s + 1) / warmup for s < warmup, so the first step is not wasted at lr 0
    and step warmup - 1 reaches the full rate. Then cosine from 1 at s = warmup to
    0 at s = total (never reached: the last step taken is total - 1), or constant 1.
    A plain dataclass (not a lambda) so LambdaLR's state_dict can save it.
    """

    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying the same warm-up/cosine multiplier to every parameter group (encoder and heads)."""
    fn = WarmupCosine(total_steps, warmup_steps, kind)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [fn] * len(optimizer.param_groups))
