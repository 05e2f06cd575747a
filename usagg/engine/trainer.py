"""The optimisation loop of one job: single-task batches, AdamW, warm-up + cosine, selection, resumable.

The trainer owns what changes during training (model, optimiser, scheduler,
sampler, loss balance, RNG states, selection state) and saves all of it
atomically, lean (trainable weights only, usagg/engine/checkpoint.py), every
`training.checkpoint_every` epochs and after the last, so a job killed at any
moment resumes from its last checkpoint and reaches bit-identical final
weights on the CPU. It knows nothing about the run store, paradigms or the
test split.

On CUDA a steady-state step never waits for the device: losses are summed on
the device and read once per epoch, where the divergence check runs (so a
diverged job is stopped at the end of that epoch, before its checkpoint);
on the CPU, where reading is free, the check runs every step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from usagg.atomic import set_aside
from usagg.engine import checkpoint, progress
from usagg.engine.affinity import LookaheadAffinity
from usagg.engine.balance import build_balance
from usagg.engine.batches import TensorSplit
from usagg.engine.bestweights import BestWeights
from usagg.engine.device import Compute
from usagg.engine.evaluate import EvalSet, evaluate, finite_or_none
from usagg.engine.sampling import TaskSampler
from usagg.engine.schedule import build_scheduler
from usagg.engine.selection import MODEL, Selector, split_warnings
from usagg.model.m2dino import M2DINO
from usagg.spec.models import AffinitySpec, TaskSpec, TrainingSpec
from usagg.store import BEST_CHECKPOINT, LAST_CHECKPOINT
from usagg.tasktypes import get_task_type

log = logging.getLogger(__name__)

#: Steps between progress reports on CUDA (images/s only: reading the loss would wait for the device).
CUDA_PROGRESS_EVERY = 10
#: checkpoint_every: auto saves last.pt when the last save took at most this share of the time since it.
AUTO_CHECKPOINT_SHARE = 0.05
#: Version of the checkpoint layout (2: lean, with the frozen weights' fingerprint; 3: with a content checksum;
#: 4: MoE experts stacked per projection, last.pt carrying the kept best epochs). A last.pt of another layout is
#: not resumed: the job starts over.
CHECKPOINT_FORMAT = 4


class NonFiniteLoss(RuntimeError):
    """The loss became nan or inf: training diverged (learning rate, loss weight or data too extreme)."""


@dataclass
class FitResult:
    """What training produced: the epochs whose weights each task is tested with, scores and throughput.

    `selected_epoch`: the job's epoch (scope model, or the last epoch); None for scope task, where
    `task_epochs` differ per task.
    """

    selected_epoch: int | None
    selection: str  # "best" or "last" (what was actually used), "stopped" when fit stopped early
    best_score: float | None
    history: list[dict[str, Any]]
    steps: int
    train_images: int
    train_seconds: float
    scope: str = MODEL
    task_epochs: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0

    def test_groups(self) -> list[tuple[int, list[str]]]:
        """(epoch, task ids tested with that epoch's weights), in first-task order."""
        groups: dict[int, list[str]] = {}
        for t, e in self.task_epochs.items():
            groups.setdefault(e, []).append(t)
        return list(groups.items())


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)


def build_optimizer(
    model: M2DINO, training: TrainingSpec, device: torch.device, extra_heads: Iterable[torch.nn.Parameter] = ()
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


def _split_warnings(tasks: list[TaskSpec], select: dict[str, EvalSet]) -> list[str]:
    out = []
    for t in tasks:
        es = select.get(t.id)
        tt = get_task_type(t.type)
        strata = {tt.stratum(s.label) for s in es.dataset.samples} if es is not None and tt.stratified else None
        out += split_warnings(t, 0 if es is None else len(es.tensors), strata)
    return out


class Trainer:
    """Trains one model on one job's tasks; `fit()` resumes from `ckpt_dir/last.pt` when it exists.

    The model must come with its frozen weights in place (built as the job builds it): checkpoints
    hold only what trains.
    """

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
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
        affinity: AffinitySpec | None = None,
        job_hash: str = "",
    ) -> None:
        """`affinity`: measure the lookahead inter-task affinity while training (usagg/engine/affinity.py)."""
        self.on_epoch = on_epoch  # gets the whole history after each epoch (history.csv, trackers)
        self.trainable_keys = checkpoint.trainable_keys(model)
        self.fingerprint = checkpoint.frozen_fingerprint(model)
        self.model = model.to(compute.device)
        self.train = train
        self.select = {t: s for t, s in select.items() if len(s.tensors) > 0}
        self.tasks = {t.id: t for t in tasks}
        self.training = training
        self.compute = compute
        self.ckpt_dir = Path(ckpt_dir)
        self.job_id = job_id
        sizes = {t: len(s) for t, s in train.items()}
        self.sampler = TaskSampler(
            sizes, training.batch_size, training.sampling, training.temperature, seed, training.steps_per_epoch
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = training.epochs * self.steps_per_epoch
        warmup = round(training.warmup_epochs * self.steps_per_epoch)
        self.balance = build_balance(
            training.loss_balance, {t: float(training.loss_weights.get(t, 1.0)) for t in train}
        ).to(compute.device)
        self.optimizer = build_optimizer(model, training, compute.device, self.balance.parameters())
        self.affinity = (
            LookaheadAffinity(model, train, affinity, self.total_steps, seed, compute, job_id, job_hash)
            if affinity is not None and len(train) > 1
            else None
        )
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, training.schedule)
        self.scope = training.selection_scope if len(tasks) > 1 else MODEL  # one task: the same choice
        self.selector = Selector(self.tasks)
        self.warnings = _split_warnings(tasks, self.select) if training.selection == "best" else []
        for w in self.warnings:
            log.warning("selection: %s", w)
        self.epoch_task_loss: dict[str, float] = {}
        self.epoch_task_aux_loss: dict[str, float] = {}
        self.epoch_task_steps: dict[str, int] = {}
        self.state = _State()
        self.best = BestWeights(self.model, self.trainable_keys)  # selected epochs' weights, best.pt at the end
        self._save_cost: float | None = None
        self._last_save_end = time.perf_counter()
        self._weights: dict[int, dict[str, torch.Tensor]] = {}  # selected epochs' weights, after fit
        self._loaded_epoch: int | None = None

    # ----- checkpoints

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / LAST_CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / BEST_CHECKPOINT

    def state_dict(self, with_best: bool = True) -> dict[str, Any]:
        """Everything training changes; `with_best`: the kept epochs' weights too (but the checkpoint's own epoch,
        which "model" holds), so a killed job resumes with them."""
        s = self.state
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "model": self.best.current(),
            "balance": self.balance.state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": checkpoint.rng_state(),
            "epoch": s.epoch,
            "step": s.step,
            "selector": self.selector.state_dict(),
            "history": s.history,
            "affinity": None if self.affinity is None else self.affinity.state_dict(),
            "best": self.best.state(skip=s.epoch) if with_best else {},
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        checkpoint.load_trainable(self.model, ck["model"])
        self.balance.load(ck["balance"], self.compute.device)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.sampler.load_state_dict(ck["sampler"])
        checkpoint.set_rng_state(ck["rng"])
        self.selector.load_state_dict(ck["selector"])
        self.state = _State(ck["epoch"], ck["step"], list(ck["history"]))
        if self.affinity is not None and ck.get("affinity") is not None:
            self.affinity.load_state_dict(ck["affinity"])

    def _mismatch(self, ck: dict[str, Any]) -> str | None:
        """Why a checkpoint cannot continue this model, or None."""
        if ck.get("format") != CHECKPOINT_FORMAT:
            return f"it has layout {ck.get('format', 1)}, this usagg writes {CHECKPOINT_FORMAT}"
        if ck.get("fingerprint") != self.fingerprint:
            return (
                "its frozen weights differ from this model's (fingerprint "
                f"{str(ck.get('fingerprint'))[:12]} vs {self.fingerprint[:12]}: model.weights or the seeded "
                "initialisation changed)"
            )
        return None

    def resume(self) -> bool:
        """Continue from last.pt if present and made for this model; True when resumed.

        A last.pt of another layout or whose frozen weights differ is not trusted: training starts over.
        """
        if not self.last_path.is_file():
            return False
        try:
            ck = checkpoint.load(self.last_path)
        except Exception as err:  # truncated, overwritten, not a checkpoint: set aside, never trusted
            aside = set_aside(self.last_path)
            log.warning(
                "%s is damaged (%s: %s); moved to %s, training starts over from epoch 1",
                self.last_path,
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
                aside.name,
            )
            return False
        why = self._mismatch(ck)
        if why is not None:
            log.warning("%s cannot be resumed: %s; training starts over from epoch 1", self.last_path, why)
            return False
        best: dict[str, Any] | None = None
        if self.best_path.is_file():  # written when a fit ended: it may hold the selected epochs of a finished run
            try:
                best = checkpoint.load(self.best_path, mmap=True)
            except Exception as err:  # the selected epochs' weights are lost: only training again gives them back
                aside_best, aside_last = set_aside(self.best_path), set_aside(self.last_path)
                log.warning(
                    "%s is damaged (%s: %s); moved to %s with %s, training starts over from epoch 1",
                    self.best_path,
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                    aside_best.name,
                    aside_last.name,
                )
                return False
        kept = self._kept_weights(ck, best)
        if kept is None:
            log.warning(
                "%s selects epochs whose weights neither it nor %s holds; training starts over from epoch 1",
                self.last_path,
                self.best_path.name,
            )
            return False
        self.load_state_dict(ck)
        for e, w in kept.items():
            self.best.load(e, w)
        log.info(
            "resumed from %s: epoch %d/%d, step %d",
            self.last_path,
            self.state.epoch,
            self.training.epochs,
            self.state.step,
        )
        return True

    def _kept_weights(
        self, ck: dict[str, Any], best: dict[str, Any] | None
    ) -> dict[int, dict[str, torch.Tensor]] | None:
        """The weights of the epochs last.pt `ck` selects: from its "best", its own "model" or best.pt (written when
        a fit ended); None when one is in none of them."""
        if self.training.selection != "best":
            return {}
        selector = Selector(self.tasks)
        selector.load_state_dict(ck["selector"])
        sources = [ck.get("best", {}), {ck["epoch"]: ck["model"]}]
        if best is not None and self._mismatch(best) is None:
            sources.append(best.get("weights", {}))
        kept = {}
        for e in set(selector.epochs(self.scope).values()):
            found = next((src[e] for src in sources if e in src), None)
            if found is None:
                return None
            kept[e] = found
        return kept

    def _should_save(self, done: int) -> bool:
        """After epoch `done`: always after the last, every checkpoint_every epochs, or (auto) when the
        last save cost at most AUTO_CHECKPOINT_SHARE of the time since it (the first save measures it)."""
        every = self.training.checkpoint_every
        if done >= self.training.epochs:
            return True
        if every == "auto":
            since = time.perf_counter() - self._last_save_end
            return self._save_cost is None or self._save_cost <= AUTO_CHECKPOINT_SHARE * since
        return done % every == 0

    def _save_last(self) -> None:
        """Write last.pt with the kept epochs' weights; after the last epoch best.pt first, and last.pt without them."""
        t0 = time.perf_counter()
        final = self.state.epoch >= self.training.epochs
        if final:
            self._save_best()
        checkpoint.save_atomic(self.state_dict(with_best=not final), self.last_path)
        self._last_save_end = time.perf_counter()
        self._save_cost = self._last_save_end - t0

    def _save_best(self) -> None:
        """Write best.pt, once a fit ends: the trainable weights of the epochs still selected (none: no file)."""
        if self.best.epochs:
            weights = self.best.state()
            checkpoint.save_atomic(
                {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "weights": weights}, self.best_path
            )

    # ----- training

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, where: str) -> float:
        total = float(loss_sum.item())
        if not math.isfinite(total):
            raise NonFiniteLoss(
                f"non-finite loss ({total}) at epoch {epoch + 1}, {where}; training diverged: "
                "lower the learning rates or loss weights, or check the data of this task"
            )
        return total

    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One epoch of single-task batches; returns (mean loss, images, seconds).

        The mean loss is the optimised one (loss balance, weights and the MoE
        auxiliary loss included). Per task, for tasks that got at least one
        batch, the epoch also leaves in `epoch_task_loss` the mean of the task's
        own loss (its head's loss: unweighted, without the auxiliary loss, so TS
        and AU curves of a task compare), in `epoch_task_steps` its optimiser
        steps and, for a MoE model, in `epoch_task_aux_loss` the mean auxiliary
        loss of its batches.
        """
        model, opt, sched, comp = self.model, self.optimizer, self.scheduler, self.compute
        model.train()
        clip = self.training.grad_clip
        params = [p for g in opt.param_groups for p in g["params"]]
        on_cuda = comp.device.type == "cuda"
        loss_sum = torch.zeros((), dtype=torch.float64, device=comp.device)
        # per task: [own loss, aux loss] summed on the device like the total (no extra host sync), and batches
        task_sums: dict[str, torch.Tensor] = {}
        task_steps: dict[str, int] = {}
        images, window_images = 0, 0
        t0 = window_t0 = time.perf_counter()
        n = self.steps_per_epoch
        for i in range(n):
            task, idx = self.sampler.next_batch()
            x, y = self.train[task].batch(idx, comp.device, self.state.step)  # step: augmentation draw
            with comp.autocast():
                out = model(x, task, y)
            assert out.loss is not None
            loss = self.balance.combine(task, out.loss, out.aux_loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            measure = self.affinity is not None and self.affinity.due(self.state.step + 1)
            lr = self._encoder_lr() if measure else 0.0  # the rate of the step just taken, before the schedule moves
            sched.step()
            self.state.step += 1
            if measure and self.affinity is not None:
                self.affinity.measure(self.state.step, lr, opt)
            loss_sum += loss.detach().double()
            aux = out.aux_loss.detach().double()
            if task not in task_sums:
                task_sums[task] = torch.zeros(2, dtype=torch.float64, device=comp.device)
            task_sums[task] += torch.stack(((out.loss.detach().double() - aux), aux))
            task_steps[task] = task_steps.get(task, 0) + 1
            images += idx.shape[0]  # shape is host metadata: no sync
            window_images += idx.shape[0]
            if on_cuda and (i + 1) % CUDA_PROGRESS_EVERY != 0 and i + 1 != n:
                continue
            total = None if on_cuda else self._check_finite(loss_sum, epoch, f"step {i + 1} (task {task})")
            now = time.perf_counter()
            progress.report(
                progress.Progress(
                    self.job_id,
                    "train",
                    epoch,
                    self.training.epochs,
                    i + 1,
                    n,
                    loss=None if total is None else total / (i + 1),
                    images_per_s=window_images / max(now - window_t0, 1e-9),
                )
            )
            window_images, window_t0 = 0, now
        if on_cuda:
            torch.cuda.synchronize(comp.device)
            self._check_finite(loss_sum, epoch, f"steps 1-{n} (checked once per epoch on CUDA)")
        means = {t: (task_sums[t].cpu() / task_steps[t]).tolist() for t in self.train if t in task_sums}
        self.epoch_task_loss = {t: m[0] for t, m in means.items()}
        self.epoch_task_aux_loss = {t: m[1] for t, m in means.items()} if self.model.moe else {}
        self.epoch_task_steps = {t: task_steps[t] for t in self.train if t in task_steps}
        return float(loss_sum.item()) / n, images, time.perf_counter() - t0

    def _encoder_lr(self) -> float:
        """The encoder's learning rate (the lookahead step's default rate)."""
        return next(float(g["lr"]) for g in self.optimizer.param_groups if g["name"].startswith("encoder"))

    def _select_epoch(self, epoch: int, entry: dict[str, Any], mean_loss: float) -> float:
        """Score the selection split (primary metrics and losses), record it in `entry`, save best weights;
        returns the seconds it took (for the log only: history holds reproducible numbers)."""
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
        t0 = time.perf_counter()
        results = evaluate(self.model, self.select, self.compute, self.training.eval_batch_size, for_selection=True)
        primary = {t: r.metrics.get(self.tasks[t].metric or "") for t, r in results.items()}
        losses = {t: r.loss for t, r in results.items()}
        score, improved = self.selector.update(epoch + 1, primary, losses)
        entry["select_score"] = score if math.isfinite(score) else None
        entry["select"] = {t: finite_or_none(r.metrics) for t, r in results.items()}
        entry["select_loss"] = finite_or_none(losses)
        keys = {MODEL} if self.scope == MODEL else set(self.tasks)
        if self.training.selection == "best" and improved & keys:
            self.best.keep(epoch + 1, set(self.selector.epochs(self.scope).values()))
        return time.perf_counter() - t0

    def fit(self, stop_after_epoch: int | None = None) -> FitResult:
        """Train to `training.epochs`, then load the selected weights.

        `stop_after_epoch`: end after that many epochs as a killed job would (checkpoints only as scheduled).
        """
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
                "task_steps": self.epoch_task_steps,
            }
            if self.epoch_task_aux_loss:
                entry["task_aux_loss"] = self.epoch_task_aux_loss
            select_s = self._select_epoch(epoch, entry, mean_loss) if self.select else None
            s.history.append(entry)
            s.epoch = epoch + 1
            if self.on_epoch is not None:
                self.on_epoch(s.history)
            log.info(
                "epoch %d/%d: loss %.4f, %.1f img/s%s%s",
                s.epoch,
                self.training.epochs,
                mean_loss,
                n_img / secs if secs > 0 else 0.0,
                f", selection score {entry['select_score']:.4f}" if entry.get("select_score") is not None else "",
                f", selection {select_s:.2f} s" if select_s is not None else "",
            )
            if self._should_save(s.epoch):
                self._save_last()
        if s.epoch < self.training.epochs:  # stopped early on purpose: keep the last weights, select nothing
            self._save_best()
            return FitResult(s.epoch, "stopped", None, s.history, s.step, images, seconds, self.scope)
        return self._select(images, seconds)

    def _select(self, images: int, seconds: float) -> FitResult:
        """Choose each task's epoch (its best, the job's best, or the last) and load the first one's weights."""
        s = self.state
        chosen = self.selector.epochs(self.scope)
        use_best = self.training.selection == "best" and bool(chosen)
        if use_best:
            if not set(chosen.values()) <= set(self.best.epochs):
                raise RuntimeError(f"the weights of the selected epochs {sorted(set(chosen.values()))} were not kept")
            if self.scope == MODEL:
                task_epochs = {t: chosen[MODEL] for t in self.tasks}
            else:  # a task without a selection split keeps the last epoch
                task_epochs = {t: chosen.get(t, s.epoch) for t in self.tasks}
            if s.epoch in set(task_epochs.values()) - set(self.best.epochs):  # the last epoch's, still in the model
                self.best.keep(s.epoch, set(task_epochs.values()))
            self._weights = {e: self.best.weights(e) for e in set(task_epochs.values())}
            selected = chosen[MODEL] if self.scope == MODEL else None
        else:
            task_epochs = {t: s.epoch for t in self.tasks}
            selected = s.epoch
        self._loaded_epoch = s.epoch
        result = FitResult(
            selected_epoch=selected,
            selection="best" if use_best else "last",
            best_score=self._best_score() if use_best else None,
            history=s.history,
            steps=s.step,
            train_images=images,
            train_seconds=seconds,
            scope=self.scope,
            task_epochs=task_epochs,
            warnings=self.warnings,
        )
        self.use_weights(result.test_groups()[0][0])
        return result

    def _best_score(self) -> float | None:
        best = self.selector.best.get(MODEL)
        return best.score if best is not None and math.isfinite(best.score) else None

    def use_weights(self, epoch: int) -> None:
        """Put the selected weights of `epoch` (one of FitResult.task_epochs) into the model."""
        if epoch == self._loaded_epoch:
            return
        checkpoint.load_trainable(self.model, self._weights[epoch])
        self._loaded_epoch = epoch
