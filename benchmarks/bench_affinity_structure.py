"""Which task pairs the lookahead affinity can see at all in M2DINO (issue 11: AG recovering designed groups).

The lookahead Z[i->j] is, to first order, lr * g_j' P g_i: the inner product of two tasks' encoder
gradients in AdamW's metric P = 1 / (sqrt(v_hat) + eps) (usagg/engine/affinity.py). Two tasks can
only show affinity where their *population* gradients align. This measures that alignment directly:
during the demo's AU job, at every affinity measurement, each task's encoder gradient on two disjoint
halves of its training split (up to HALF images each), and the cosine, in that metric, of task i's
half A with task j's half B. A task with itself on other images (`self`) is the ceiling; pairs are
summarised by kind, from the synthetic catalog (usagg/data/synth/tasks.py): same anatomy and other
type (the designed groups' pairs), other anatomy and same type, other anatomy and other type.

`python -m benchmarks affinity_structure`. BENCH_STRUCTURE_EVERY sets the steps between measurements
(default 96, 7 of them on the demo); BENCH_WEIGHTS a local encoder checkpoint (`model.weights`), to
ask the same question of a pretrained encoder. Measured results and what they mean: docs/internals.md,
"What the demo's affinity measures".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.demo_au import demo_au_job, env_int

HALF = 32  # images per half; the demo's smallest task (24 images) gets 12 + 12
HALVES_SEED = 1  # the split into halves, from a generator of its own
KINDS = ("same anatomy, other type", "other anatomy, same type", "other anatomy, other type")


def _kind(a: str, b: str) -> str:
    from usagg.data.synth.tasks import TASKS

    ta, tb = TASKS[a], TASKS[b]
    if ta.anatomy == tb.anatomy:
        return KINDS[0]
    return KINDS[1] if ta.type == tb.type else KINDS[2]


def _adam_denominators(optimizer: Any, params: list[Any]) -> list[Any]:
    """AdamW's sqrt(v_hat) + eps for each parameter (its metric is the inverse), None where it has no state yet."""
    group_of = {id(q): g for g in optimizer.param_groups for q in g["params"]}
    out = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            out.append(None)
            continue
        (_, beta2), eps = group_of[id(p)]["betas"], group_of[id(p)]["eps"]
        out.append((state["exp_avg_sq"] / (1.0 - beta2 ** float(state["step"]))).sqrt() + eps)
    return out


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    import usagg.engine.trainer as trainer_module
    from usagg.engine.affinity import LookaheadAffinity
    from usagg.engine.batches import TensorSplit
    from usagg.engine.job import run_job
    from usagg.model.m2dino import M2DINO

    measurements: list[tuple[int, np.ndarray]] = []

    class Alignment(LookaheadAffinity):
        """The job's own affinity measurement, plus split-half gradient cosines at the same steps."""

        def __init__(self, model: M2DINO, train: dict[str, TensorSplit], *rest: Any) -> None:
            super().__init__(model, train, *rest)
            g = torch.Generator().manual_seed(HALVES_SEED)
            self.halves = {}
            for t, split in train.items():
                n = len(split)
                perm, h = torch.randperm(n, generator=g), min(n // 2, HALF)
                self.halves[t] = [split.batch(perm[s : s + h].sort().values, self.compute.device) for s in (0, h)]

        def _metric_gradient(self, task: str, half: int, adam: list[torch.Tensor | None]) -> torch.Tensor:
            x, y = self.halves[task][half]
            out = self.model(x, task, y)
            tensors = [p for _, p in self.shared]
            grads = torch.autograd.grad(out.loss - out.aux_loss, tensors, allow_unused=True)
            parts = [
                (torch.zeros_like(p) if g is None else g / (a.sqrt() if a is not None else 1.0)).flatten()
                for p, g, a in zip(tensors, grads, adam, strict=True)
            ]
            return torch.cat(parts).double()

        def measure(self, step: int, lr: float, optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
            z = super().measure(step, lr, optimizer)
            adam = _adam_denominators(optimizer, [p for _, p in self.shared])
            self.model.eval()
            try:
                grads = {(t, h): self._metric_gradient(t, h, adam) for t in self.tasks for h in (0, 1)}
            finally:
                self.model.train()
            n = len(self.tasks)
            cos = np.zeros((n, n))
            for i, a in enumerate(self.tasks):
                for j, b in enumerate(self.tasks):
                    u, w = grads[a, 0], grads[b, 1]
                    cos[i, j] = float(u @ w / (u.norm() * w.norm()).clamp_min(1e-30))
            measurements.append((step, cos))
            return z

    every = env_int("BENCH_STRUCTURE_EVERY", 96)
    weights = os.environ.get("BENCH_WEIGHTS") or None
    if weights is not None and not Path(weights).is_file():
        raise SystemExit(f"BENCH_WEIGHTS={weights!r}: no such file; give a local encoder checkpoint (model.weights).")

    def edit(spec: dict) -> None:
        spec.setdefault("analysis", {})["affinity"] = {"probe_size": 16, "every": every}
        if weights is not None:
            spec["model"]["weights"] = weights

    with tempfile.TemporaryDirectory(prefix="usagg-bench-structure-") as tmp:
        au = demo_au_job(Path(tmp), edit)
        original = trainer_module.LookaheadAffinity
        trainer_module.LookaheadAffinity = Alignment
        try:
            run_job(au, Path(tmp) / "job", "cpu")
        finally:
            trainer_module.LookaheadAffinity = original

    tasks = [t.id for t in au.tasks]
    rows = []
    for step, cos in measurements:
        row: dict = {"step": step, "self": round(float(np.mean(np.diag(cos))), 3)}
        for kind in KINDS:
            vals = [
                (cos[i, j] + cos[j, i]) / 2
                for i, a in enumerate(tasks)
                for j, b in enumerate(tasks)
                if i < j and _kind(a, b) == kind
            ]
            row[kind] = round(float(np.mean(vals)), 3)
        rows.append(row)
    late = rows[len(rows) // 2 :]
    summary = {k: round(float(np.mean([r[k] for r in late])), 3) for k in ("self", *KINDS)}
    print(f"split-half gradient cosine in AdamW's metric, demo AU job ({len(tasks)} tasks, halves of <= {HALF} images)")
    print(f"  weights: {weights or 'random init'}")
    header = f"  {'step':>5}  {'self':>6}  " + "  ".join(f"{k:>26}" for k in KINDS)
    print(header)
    for r in rows:
        print(f"  {r['step']:>5}  {r['self']:>+6.3f}  " + "  ".join(f"{r[k]:>+26.3f}" for k in KINDS))
    print(f"  {'late':>5}  {summary['self']:>+6.3f}  " + "  ".join(f"{summary[k]:>+26.3f}" for k in KINDS))
    return {
        "tasks": tasks,
        "weights": weights or "",
        "half_images": HALF,
        "per_measurement": rows,
        "second_half_mean": summary,
    }
