"""Lookahead inter-task affinity measured during training (Fifty et al. 2021), for the AG paradigm.

Every `every` optimiser steps, for each task i: one step of the shared (encoder) parameters on task i's
step-batch gradient g_i, theta -> theta_i, then Z[i->j] = 1 - L_j(theta_i) / L_j(theta) on every task j's
probe batch. Which step is `analysis.affinity.lookahead`:

- `sgd`: Fifty et al.'s step, theta_i = theta - lr * g_i (`sgd_step`).
- `adamw`: the step the job's AdamW would take were g_i the whole batch's gradient: a true
  `torch.optim.AdamW.step()` on clones of the shared parameters with a deep copy of their optimiser state
  (first and second moments, step counts) and their groups' settings (betas, eps, weight decay, fused), so
  momentum, bias correction, decay and the second-moment update are all AdamW's own (`adamw_step`). The real
  optimiser's state and the model's parameters are never touched.

`lr` is `lookahead_lr`, else the encoder's learning rate at that step (for `adamw`: each group's own rate).
The default (`sgd`) and why: docs/benchmarks.md, "Which lookahead step". A task's step batch and probe batch
are disjoint rows of its training split, so its self-affinity Z[i->i] is read on images its step did not come
from (read on the step's own batch it measured how well one step fits that batch, and the diagonal was
inflated against every other entry). The stepped parameters enter through `torch.func.functional_call`, the
model is in eval mode (no dropout, batch-norm statistics read, not updated), the step and probe batches are
fixed at the start from the training split without augmentation and drawn from a generator of their own, so
measuring leaves the training it watches bit-identical whichever step is chosen. Task heads are not stepped:
affinity is what one task's update of the shared trunk does to another task's loss.
Over a job the losses are summed before dividing, Z[i->j] = 1 - sum_t L_j(theta_i,t) / sum_t L_j(theta_t):
a task whose training loss is near zero late in training would otherwise swing the mean of ratios by
orders of magnitude. Each measurement's losses are kept besides the sums and written to the record, so the
report can resample them (usagg/grouping.py `grouping_stability`: how far the matrix determines AG's groups). The
sums and the kept losses ride in the trainer's checkpoint, so a resumed job measures the same.
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


def sgd_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], lr: float) -> list[torch.Tensor]:
    """Fifty et al.'s lookahead, theta - lr * g, as new tensors; a parameter without a gradient stays where it is."""
    return [p.detach() if g is None else p.detach() - lr * g for p, g in zip(params, grads, strict=True)]


def adamw_step(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    lr: float | None = None,
) -> list[torch.Tensor]:
    """The parameters after one true AdamW step on `grads`, as new tensors: a `torch.optim.AdamW` over clones of
    `params`, each clone in a group with its real group's settings (`lr` instead of the group's rate when given)
    and a deep copy of its real state (moments, step count), stepped once. `optimizer` is read, never changed; a
    parameter without a gradient is skipped, as AdamW skips it; one without state yet takes AdamW's first step."""
    group_of = {id(q): k for k, g in enumerate(optimizer.param_groups) for q in g["params"]}
    clones = [p.detach().clone() for p in params]
    members: dict[int, list[torch.Tensor]] = {}
    states: list[tuple[torch.Tensor, dict[str, Any]]] = []
    for p, c, g in zip(params, clones, grads, strict=True):
        if g is None:
            continue
        if id(p) not in group_of:
            raise ValueError("adamw lookahead: a shared parameter is not in the optimiser; it has no AdamW step")
        c.grad = g.detach().to(c.dtype)
        members.setdefault(group_of[id(p)], []).append(c)
        state = optimizer.state.get(p, {})
        if state:
            states.append((c, {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}))
    if not members:
        return clones
    groups = []
    for k, cs in members.items():
        settings = {key: v for key, v in optimizer.param_groups[k].items() if key != "params"}
        settings["capturable"] = False  # the copy steps eagerly, even beside a recorded step (usagg/engine/step.py)
        groups.append({**settings, "params": cs, **({"lr": lr} if lr is not None else {})})
    copy = torch.optim.AdamW(groups)
    for c, state in states:
        copy.state[c] = state
    copy.step()
    for c in clones:
        c.grad = None
    return clones


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
        # each measurement's base [n] and after [n, n]; None after resuming from a checkpoint that kept none (written
        # before they were kept) past a measurement: a part of the measurements would not resample the matrix's noise
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] | None = []
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
        """One lookahead of every task onto every task at `step`: the `lookahead` step (sgd at rate `lr`, or adamw,
        a true step of a copy of `optimizer`) on that task's step-batch gradient alone, losses read on the probe
        batches; adds the losses to the job's sums and returns this measurement's Z. Timed from when the device has
        finished the training steps queued before it (on CUDA the host runs ahead): `seconds` is measuring only."""
        if self.compute.device.type == "cuda":
            torch.cuda.synchronize(self.compute.device)
        t0 = time.perf_counter()
        if self.settings.lookahead == "adamw" and optimizer is None:
            raise ValueError("the adamw lookahead steps a copy of the job's optimiser; none was given")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                base = torch.stack([self._loss(t) for t in self.tasks]).double()
            after = torch.zeros_like(self.after)
            names = [n for n, _ in self.shared]
            tensors = [p for _, p in self.shared]
            for i, src in enumerate(self.tasks):
                grads = torch.autograd.grad(self._loss(src, step=True), tensors, allow_unused=True)
                if optimizer is not None and self.settings.lookahead == "adamw":
                    moved = adamw_step(optimizer, tensors, grads, self.settings.lookahead_lr)
                else:
                    moved = sgd_step(tensors, grads, self.settings.lookahead_lr or lr)
                stepped = dict(zip(names, moved, strict=True))
                with torch.no_grad():
                    after[i] = torch.stack([self._loss(t, stepped) for t in self.tasks]).double().cpu()
        finally:
            self.model.train(was_training)
        base = base.cpu()
        self.base += base
        self.after += after
        if self.kept is not None:
            self.kept.append((base, after))
        self.steps.append(step)
        self.seconds += time.perf_counter() - t0
        return 1.0 - after / base

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.clone(),
            "after": self.after.clone(),
            "steps": list(self.steps),
            "seconds": self.seconds,
            "kept": None if self.kept is None else [(b.clone(), a.clone()) for b, a in self.kept],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The sums and kept losses back; a checkpoint from before losses were kept keeps none from here on, unless
        it was written before the first measurement (nothing missed)."""
        self.base, self.after = state["base"].clone(), state["after"].clone()
        self.steps = list(state["steps"])
        self.seconds = float(state["seconds"])
        kept = state.get("kept", None if self.steps else [])
        self.kept = None if kept is None else [(b.clone(), a.clone()) for b, a in kept]

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
            lookahead=self.settings.lookahead,
            lookahead_lr=self.settings.lookahead_lr,
            seconds=round(self.seconds, 3),
            train_seconds=round(train_seconds, 3),
            base_losses=[[b.tolist() for b, _ in self.kept]] if self.kept else [],
            after_losses=[[a.tolist() for _, a in self.kept]] if self.kept else [],
        )
