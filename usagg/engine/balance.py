"""Loss balance: how each task's loss enters the optimised sum (`training.loss_balance`), times its weight w.

One class per strategy, registered in `BALANCERS` (a usagg/registry.py registry,
LibMTL style: a new weighting is one registered subclass of `LossBalance`, never a
branch in the trainer):

- equal: w * L (the plain sum);
- initial: w * L / L0, L0 the task's loss at its first batch of the job (detached,
  kept in the checkpoint), so every task starts at 1 whatever its loss's scale (at
  initialisation one task's loss can be seven times another's);
- uncertainty (Kendall et al. 2018): w * L * exp(-s) + s with s a learned
  log-variance per task (starting at 0, in the heads' parameter group, no weight decay).

The MoE auxiliary loss is added as it is. A one-task job always uses equal: the other
modes only rescale its one loss, which would change TS results for nothing. The
checkpoint state keeps one shape for every strategy ({"initial", "log_vars"}), so a
job resumes from a checkpoint written before the strategies were split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from usagg.model.m2dino import head_key
from usagg.registry import Registry


class LossBalance(torch.nn.Module):
    """The equal strategy, and the interface of every other: combine, state, load, record."""

    mode = "equal"

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self.weights = weights

    def combine(self, task: str, loss: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The value to backpropagate from the model's `loss` (head loss + aux) and its `aux` part."""
        w = self.weights[task]
        return loss if w == 1.0 else w * (loss - aux) + aux

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps (tensors on the device)."""
        return {"initial": {}, "log_vars": {}}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore `state()` from a checkpoint."""

    def record(self) -> dict[str, Any]:
        """For metrics.json: the mode and what the strategy learned or fixed."""
        return {"mode": self.mode}


#: name -> strategy class, as `training.loss_balance` names it.
BALANCERS: Registry[type[LossBalance]] = Registry("loss balance")


def register_balance(name: str) -> Callable[[type[LossBalance]], type[LossBalance]]:
    """Register a LossBalance subclass as the strategy `name` (a class decorator)."""

    def deco(cls: type[LossBalance]) -> type[LossBalance]:
        cls.mode = name
        BALANCERS.register(name, cls)
        return cls

    return deco


def build_balance(mode: str, weights: dict[str, float]) -> LossBalance:
    """The strategy `mode` names over the job's tasks and their loss weights (equal for a one-task job)."""
    return BALANCERS.lookup(mode if len(weights) > 1 else "equal")(weights)


register_balance("equal")(LossBalance)


@register_balance("initial")
class InitialLossBalance(LossBalance):
    """w * L / L0, L0 the task's first-batch loss."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__(weights)
        self.initial: dict[str, torch.Tensor] = {}

    def combine(self, task: str, loss: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        own = loss - aux
        if task not in self.initial:
            self.initial[task] = own.detach().float().clamp_min(1e-12)
        return self.weights[task] * own / self.initial[task] + aux

    def state(self) -> dict[str, Any]:
        return {"initial": dict(self.initial), "log_vars": {}}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.initial = {t: v.to(device) for t, v in state["initial"].items()}

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "initial_loss": {t: float(v) for t, v in self.initial.items()}}


@register_balance("uncertainty")
class UncertaintyLossBalance(LossBalance):
    """w * L * exp(-s) + s, s a learned log-variance per task (Kendall et al. 2018)."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__(weights)
        self.log_vars = torch.nn.ParameterDict({head_key(t): torch.nn.Parameter(torch.zeros(())) for t in weights})

    def combine(self, task: str, loss: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[head_key(task)]
        return self.weights[task] * (loss - aux) * torch.exp(-s) + s + aux

    def state(self) -> dict[str, Any]:
        return {"initial": {}, "log_vars": {k: v.detach() for k, v in self.log_vars.items()}}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        with torch.no_grad():
            for k, v in state["log_vars"].items():
                self.log_vars[k].copy_(v)

    def record(self) -> dict[str, Any]:
        s = {t: float(self.log_vars[head_key(t)].detach()) for t in self.weights}
        return {"mode": self.mode, "log_vars": s, "weights": {t: math.exp(-v) for t, v in s.items()}}
