"""Lookahead inter-task affinity measured during training (Fifty et al. 2021), for the AG paradigm.

Every `every` optimiser steps, for each task i: one step of the shared (encoder)
parameters on task i's step batch, theta_i = theta - lr * w * g_i / (sqrt(v_hat) + eps), then
Z[i->j] = 1 - L_j(theta_i) / L_j(theta) on every task j's probe batch. A task's step batch and
probe batch are disjoint rows of its training split, so its self-affinity Z[i->i] is read on
images its step did not come from (read on the step's own batch it measured how well one step
fits that batch, and the diagonal was inflated against every other entry). The step is the one
AdamW takes on task i's gradient g_i in one optimiser step: g_i enters the bias-corrected first
moment with weight w = (1 - beta1) / (1 - beta1^t) at optimiser step t, and the optimiser's current second moments
v_hat (bias-corrected, read, never changed) precondition it; no weight decay. (A plain SGD step
lr * g is some 1e-4 of the steps training really takes, so its change of a loss drowns in float32
rounding. The whole preconditioned gradient, w = 1, is the displacement g_i causes over all the
steps momentum spreads it across, about 1 / (1 - beta1) = 10 times one step: on the demo it
overshoots, a task's step on its own probe batch then raises its own loss (detection's
self-affinity came out -1 %), and the matrix measures curvature more than which tasks help
each other. A parameter without optimiser state yet gets Adam's first step, lr * sign(g).) The step is
virtual (`torch.func.functional_call` with the stepped tensors; the model's own
parameters are never touched), the model is in eval mode (no dropout, batch-norm
statistics read, not updated), the step and probe batches are fixed at the start from the
training split without augmentation and drawn from a generator of their own, so
measuring leaves the training it watches bit-identical. Task heads are not stepped:
affinity is what one task's update of the shared trunk does to another task's loss.
Over a job the losses are summed before dividing, Z[i->j] = 1 - sum_t L_j(theta_i,t) / sum_t L_j(theta_t):
a task whose training loss is near zero late in training would otherwise swing the mean of ratios by
orders of magnitude. The sums ride in the trainer's checkpoint, so a resumed job measures the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call

from usagg.affinity import Affinity
from usagg.engine.batches import TensorSplit
from usagg.engine.device import Compute
from usagg.model.m2dino import M2DINO
from usagg.spec.models import AffinitySpec

log = logging.getLogger(__name__)

#: `every: auto` spreads this many measurements over a job (about 10 % of a 9-task demo AU job on 2 CPU cores).
AUTO_MEASUREMENTS = 5


def probe_rows(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (probe, step) rows of a split of n samples, disjoint, from a seeded generator of their own: `size`
    each, or the split halved when it has fewer than 2 * size rows (one row: the same row, nothing to hold apart).
    The probe rows are those the measurement read before step batches existed."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = size if n >= 2 * size else max(1, (n + 1) // 2)
    step = perm[k : 2 * k] if n > 1 else perm[:1]
    return perm[:k].sort().values, step.sort().values


def _adam_steps(
    optimizer: torch.optim.Optimizer | None, params: Sequence[torch.Tensor]
) -> list[tuple[torch.Tensor, float] | None]:
    """(sqrt(v_hat) + eps, w) of Adam(W) for each parameter, w = (1 - beta1) / (1 - beta1^t) being the weight of
    a new gradient in the bias-corrected first moment at its next step t; None where it has no state yet."""
    if optimizer is None:
        return [None] * len(params)
    group_of = {id(q): g for g in optimizer.param_groups for q in g["params"]}
    out: list[tuple[torch.Tensor, float] | None] = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            out.append(None)
            continue
        (beta1, beta2), eps = group_of[id(p)]["betas"], group_of[id(p)]["eps"]
        t = float(state["step"])
        denom = (state["exp_avg_sq"] / (1.0 - beta2**t)).sqrt() + eps
        out.append((denom, (1.0 - beta1) / (1.0 - beta1 ** (t + 1.0))))
    return out


class LookaheadAffinity:
    """Measures and accumulates Z over a job; `record()` is what affinity.json holds."""

    def __init__(
        self,
        model: M2DINO,
        train: dict[str, TensorSplit],
        settings: AffinitySpec,
        total_steps: int,
        seed: int,
        compute: Compute,
        job_id: str = "",
        job_hash: str = "",
    ) -> None:
        self.model = model
        self.compute = compute
        self.settings = settings
        self.tasks = list(train)
        self.every = max(1, total_steps // AUTO_MEASUREMENTS) if settings.every == "auto" else int(settings.every)
        self.total_steps = total_steps
        self.job_id, self.job_hash = job_id, job_hash
        rows = {t: probe_rows(len(train[t]), settings.probe_size, seed + i) for i, t in enumerate(self.tasks)}
        self.probes = {t: train[t].batch(rows[t][0], compute.device) for t in self.tasks}  # losses read here
        self.step_probes = {t: train[t].batch(rows[t][1], compute.device) for t in self.tasks}  # gradients from here
        enc = {id(p) for p in model.param_groups()["encoder"]}
        self.shared = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) in enc]
        if not self.shared:
            raise ValueError("affinity needs trainable shared (encoder) parameters; every encoder block is frozen")
        n = len(self.tasks)
        self.base = torch.zeros(n, dtype=torch.float64)  # sum over measurements of L_j(theta)
        self.after = torch.zeros((n, n), dtype=torch.float64)  # sum of L_j(theta stepped on task i)
        self.steps: list[int] = []
        self.seconds = 0.0

    def due(self, step: int) -> bool:
        """Every `every` steps, and at the last step of a job too short for any."""
        return step % self.every == 0 or (step == self.total_steps and not self.steps)

    def _loss(self, task: str, params: dict[str, torch.Tensor] | None = None, step: bool = False) -> torch.Tensor:
        x, y = (self.step_probes if step else self.probes)[task]
        with self.compute.autocast():
            out = self.model(x, task, y) if params is None else functional_call(self.model, params, (x, task, y))
        assert out.loss is not None
        return (out.loss - out.aux_loss).float()

    def measure(self, step: int, lr: float, optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """One lookahead of every task onto every task at `step` with rate `lr`: the step `optimizer` (Adam's) would
        take on that task's step-batch gradient alone, losses read on the probe batches; adds the losses to the job's
        sums and returns this measurement's Z."""
        t0 = time.perf_counter()
        lr = self.settings.lookahead_lr or lr
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                base = torch.stack([self._loss(t) for t in self.tasks]).double()
            after = torch.zeros_like(self.after)
            names = [n for n, _ in self.shared]
            tensors = [p for _, p in self.shared]
            adam = _adam_steps(optimizer, tensors)
            for i, src in enumerate(self.tasks):
                grads = torch.autograd.grad(self._loss(src, step=True), tensors, allow_unused=True)
                stepped = {
                    n: (p if g is None else p.detach() - lr * (g.sign() if a is None else a[1] * g / a[0]))
                    for n, p, g, a in zip(names, tensors, grads, adam, strict=True)
                }
                with torch.no_grad():
                    after[i] = torch.stack([self._loss(t, stepped) for t in self.tasks]).double().cpu()
        finally:
            self.model.train(was_training)
        base = base.cpu()
        self.base += base
        self.after += after
        self.steps.append(step)
        self.seconds += time.perf_counter() - t0
        return 1.0 - after / base

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.clone(),
            "after": self.after.clone(),
            "steps": list(self.steps),
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base, self.after = state["base"].clone(), state["after"].clone()
        self.steps = list(state["steps"])
        self.seconds = float(state["seconds"])

    def record(self, train_seconds: float) -> Affinity:
        """Z over the measurements taken (losses summed before dividing)."""
        mean = 1.0 - self.after / self.base.clamp_min(1e-12)
        return Affinity(
            tasks=list(self.tasks),
            matrix=mean.tolist(),
            job_id=self.job_id,
            job_hash=self.job_hash,
            every=self.every,
            steps=list(self.steps),
            probe_size={t: int(self.probes[t][1].shape[0]) for t in self.tasks},
            lookahead_lr=self.settings.lookahead_lr,
            seconds=round(self.seconds, 3),
            train_seconds=round(train_seconds, 3),
        )
