"""The optimiser of a job: AdamW over the model's parameter groups, built once, outside the training loop."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from usagg.model.m2dino import M2DINO
from usagg.spec.models import TrainingSpec


def build_optimizer(
    model: M2DINO, training: TrainingSpec, extra_heads: Iterable[torch.nn.Parameter] = ()
) -> torch.optim.AdamW:
    """AdamW with the encoder and heads at their own learning rates; no weight decay on biases and norms.

    `extra_heads`: more parameters at the heads' rate without weight decay (the loss balance's log-variances).
    """
    groups = []
    extra = list(extra_heads)
    for name, params in model.param_groups().items():
        lr = training.lr_encoder if name == "encoder" else training.lr_heads
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1] + (extra if name == "heads" else [])
        for ps, wd, suffix in ((decay, training.weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name + suffix})
    if not groups:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    return torch.optim.AdamW(groups, fused=True)  # one kernel per group and step, on the CPU as on CUDA


def encoder_lr(optimizer: torch.optim.Optimizer) -> float:
    """The encoder's learning rate now (the lookahead step's default rate)."""
    return next(float(g["lr"]) for g in optimizer.param_groups if g["name"].startswith("encoder"))
