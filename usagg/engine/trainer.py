"""The optimisation loop of one job: single-task batches, AdamW, warm-up + cosine, selection, resumable.

The trainer owns what changes during training (model, optimiser, scheduler,
sampler, RNG states, best score) and saves all of it atomically at the end of
every epoch, so a job killed at any moment resumes from its last epoch and
reaches bit-identical final weights on the CPU. It knows nothing about the
run store, paradigms or the test split.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from usagg.engine import checkpoint, progress
from usagg.engine.batches import TensorSplit
from usagg.engine.device import Compute
from usagg.engine.evaluate import EvalSet, evaluate, finite_or_none, selection_score
from usagg.engine.sampling import TaskSampler
from usagg.engine.schedule import build_scheduler
from usagg.model.m2dino import M2DINO
from usagg.spec.models import TaskSpec, TrainingSpec
from usagg.store import BEST_CHECKPOINT, LAST_CHECKPOINT

log = logging.getLogger(__name__)

#: Optimiser steps between host syncs on CUDA (loss check, progress); every step on the CPU, where syncs are free.
CUDA_SYNC_EVERY = 10


class NonFiniteLoss(RuntimeError):
    """The loss became nan or inf: training diverged (learning rate, loss weight or data too extreme)."""


@dataclass
class FitResult:
    """What training produced: the epoch whose weights the model now holds, scores and throughput."""

    selected_epoch: int
    selection: str  # "best" or "last" (what was actually used), "stopped" when fit stopped early
    best_score: float | None
    history: list[dict[str, Any]]
    steps: int
    train_images: int
    train_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)


def steps_per_epoch(training: TrainingSpec, train_sizes: dict[str, int]) -> int:
    """training.steps_per_epoch, or enough batches to see the job's training images once."""
    if training.steps_per_epoch is not None:
        return training.steps_per_epoch
    return max(1, math.ceil(sum(train_sizes.values()) / training.batch_size))


def build_optimizer(model: M2DINO, training: TrainingSpec, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the encoder and heads at their own learning rates; no weight decay on biases and norms."""
    groups = []
    for name, params in model.param_groups().items():
        lr = training.lr_encoder if name == "encoder" else training.lr_heads
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for ps, wd, suffix in ((decay, training.weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name + suffix})
    if not groups:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    return torch.optim.AdamW(groups, fused=device.type == "cuda")


class Trainer:
    """Trains one model on one job's tasks; `fit()` resumes from `ckpt_dir/last.pt` when it exists."""

    def __init__(
        self,
        model: M2DINO,
        train: dict[str, TensorSplit],
        select: dict[str, EvalSet],
        tasks: list[TaskSpec],
        training: TrainingSpec,
        compute: Compute,
        seed: int,
        ckpt_dir: Path,
        job_id: str = "",
    ) -> None:
        self.model = model.to(compute.device)
        self.train = train
        self.select = {t: s for t, s in select.items() if len(s.tensors) > 0}
        self.tasks = {t.id: t for t in tasks}
        self.training = training
        self.compute = compute
        self.ckpt_dir = Path(ckpt_dir)
        self.job_id = job_id
        sizes = {t: len(s) for t, s in train.items()}
        self.steps_per_epoch = steps_per_epoch(training, sizes)
        self.total_steps = training.epochs * self.steps_per_epoch
        warmup = round(training.warmup_epochs * self.steps_per_epoch)
        self.sampler = TaskSampler(sizes, training.batch_size, training.sampling, training.temperature, seed)
        self.optimizer = build_optimizer(model, training, compute.device)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, training.schedule)
        self.loss_weights = {t: float(training.loss_weights.get(t, 1.0)) for t in train}
        self.sync_every = CUDA_SYNC_EVERY if compute.device.type == "cuda" else 1
        self.epoch_task_loss: dict[str, float] = {}
        self.epoch_task_aux_loss: dict[str, float] = {}
        self.state = _State()

    # ----- checkpoints

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / LAST_CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / BEST_CHECKPOINT

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": checkpoint.rng_state(),
            "epoch": s.epoch,
            "step": s.step,
            "best_score": s.best_score,
            "best_epoch": s.best_epoch,
            "history": s.history,
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.sampler.load_state_dict(ck["sampler"])
        checkpoint.set_rng_state(ck["rng"])
        self.state = _State(ck["epoch"], ck["step"], ck["best_score"], ck["best_epoch"], list(ck["history"]))

    def resume(self) -> bool:
        """Continue from last.pt if present; True when resumed."""
        if not self.last_path.is_file():
            return False
        self.load_state_dict(checkpoint.load(self.last_path))
        log.info(
            "resumed from %s: epoch %d/%d, step %d",
            self.last_path,
            self.state.epoch,
            self.training.epochs,
            self.state.step,
        )
        return True

    # ----- training

    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One epoch of single-task batches; returns (mean loss, images, seconds).

        The mean loss is the optimised one (loss weights and the MoE auxiliary
        loss included). Per task, for tasks that got at least one batch, the
        epoch also leaves in `epoch_task_loss` the mean of the task's own loss
        (its head's loss: unweighted, without the auxiliary loss, so TS and AU
        curves of a task compare) and, for a MoE model, in `epoch_task_aux_loss`
        the mean auxiliary loss of its batches.
        """
        model, opt, sched, comp = self.model, self.optimizer, self.scheduler, self.compute
        model.train()
        clip = self.training.grad_clip
        params = [p for g in opt.param_groups for p in g["params"]]
        loss_sum = torch.zeros((), dtype=torch.float64, device=comp.device)
        # per task: [own loss, aux loss] summed on the device like the total (no extra host sync), and batches
        task_sums: dict[str, torch.Tensor] = {}
        task_steps: dict[str, int] = {}
        images, window_images, window_start = 0, 0, 0
        t0 = window_t0 = time.perf_counter()
        n = self.steps_per_epoch
        for i in range(n):
            task, idx = self.sampler.next_batch()
            x, y = self.train[task].batch(idx, comp.device)
            with comp.autocast():
                out = model(x, task, y)
            assert out.loss is not None
            w = self.loss_weights[task]
            loss = out.loss if w == 1.0 else w * (out.loss - out.aux_loss) + out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            self.state.step += 1
            loss_sum += loss.detach().double()
            aux = out.aux_loss.detach().double()
            if task not in task_sums:
                task_sums[task] = torch.zeros(2, dtype=torch.float64, device=comp.device)
            task_sums[task] += torch.stack(((out.loss.detach().double() - aux), aux))
            task_steps[task] = task_steps.get(task, 0) + 1
            images += len(idx)
            window_images += len(idx)
            if (i + 1) % self.sync_every == 0 or i + 1 == n:
                total = float(loss_sum.item())
                if not math.isfinite(total):
                    where = f"step {i + 1} (task {task})"
                    if self.sync_every > 1:  # checked once per window on CUDA: name the window
                        where = f"steps {window_start + 1}-{i + 1} (last task {task})"
                    raise NonFiniteLoss(
                        f"non-finite loss ({total}) at epoch {epoch + 1}, {where}; training diverged: "
                        "lower the learning rates or loss weights, or check the data of this task"
                    )
                now = time.perf_counter()
                progress.report(
                    progress.Progress(
                        self.job_id,
                        "train",
                        epoch,
                        self.training.epochs,
                        i + 1,
                        n,
                        loss=total / (i + 1),
                        images_per_s=window_images / max(now - window_t0, 1e-9),
                    )
                )
                window_images, window_t0, window_start = 0, now, i + 1
        if comp.device.type == "cuda":
            torch.cuda.synchronize(comp.device)
        means = {t: (task_sums[t].cpu() / task_steps[t]).tolist() for t in self.train if t in task_sums}
        self.epoch_task_loss = {t: m[0] for t, m in means.items()}
        self.epoch_task_aux_loss = {t: m[1] for t, m in means.items()} if self.model.moe else {}
        return float(loss_sum.item()) / n, images, time.perf_counter() - t0

    def fit(self, stop_after_epoch: int | None = None) -> FitResult:
        """Train to `training.epochs` (or stop after `stop_after_epoch` epochs), then load the selected weights."""
        self.resume()
        s = self.state
        images, seconds = 0, 0.0
        end = self.training.epochs if stop_after_epoch is None else min(stop_after_epoch, self.training.epochs)
        while s.epoch < end:
            epoch = s.epoch
            mean_loss, n_img, secs = self.train_epoch(epoch)
            images += n_img
            seconds += secs
            # history holds only reproducible numbers (it goes into metrics.json); speed goes to the log
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": s.step,
                "loss": mean_loss,
                "task_loss": self.epoch_task_loss,
            }
            if self.epoch_task_aux_loss:
                entry["task_aux_loss"] = self.epoch_task_aux_loss
            if self.select:
                progress.report(
                    progress.Progress(
                        self.job_id,
                        "select",
                        epoch,
                        self.training.epochs,
                        self.steps_per_epoch,
                        self.steps_per_epoch,
                        loss=mean_loss,
                    )
                )
                results = evaluate(self.model, self.select, self.compute, self.training.eval_batch_size)
                score = selection_score(results, self.tasks)
                entry["select_score"] = score if math.isfinite(score) else None
                entry["select"] = {t: finite_or_none(r.metrics) for t, r in results.items()}
                if score > s.best_score or s.best_epoch < 0:
                    s.best_score, s.best_epoch = score, epoch + 1
                    if self.training.selection == "best":
                        checkpoint.save_atomic(
                            {"model": self.model.state_dict(), "epoch": epoch + 1, "score": score}, self.best_path
                        )
            s.history.append(entry)
            s.epoch = epoch + 1
            log.info(
                "epoch %d/%d: loss %.4f, %.1f img/s%s",
                s.epoch,
                self.training.epochs,
                mean_loss,
                n_img / secs if secs > 0 else 0.0,
                f", selection score {entry['select_score']:.4f}" if entry.get("select_score") is not None else "",
            )
            checkpoint.save_atomic(self.state_dict(), self.last_path)
        if s.epoch < self.training.epochs:  # stopped early on purpose: keep the last weights, select nothing
            return FitResult(s.epoch, "stopped", None, s.history, s.step, images, seconds)
        return self._select(images, seconds)

    def _select(self, images: int, seconds: float) -> FitResult:
        """Load the weights to evaluate: the best selection epoch, or the last (asked for, or no selection split)."""
        s = self.state
        use_best = self.training.selection == "best" and bool(self.select) and self.best_path.is_file()
        selected = s.epoch
        if use_best:
            best = checkpoint.load(self.best_path)
            self.model.load_state_dict(best["model"])
            selected = int(best["epoch"])
            if selected != s.best_epoch:
                log.warning("best.pt holds epoch %d but the run recorded epoch %d as best", selected, s.best_epoch)
        return FitResult(
            selected_epoch=selected,
            selection="best" if use_best else "last",
            best_score=s.best_score if math.isfinite(s.best_score) else None,
            history=s.history,
            steps=s.step,
            train_images=images,
            train_seconds=seconds,
        )
