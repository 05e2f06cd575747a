"""The optimisation loop of one job: single-task batches, AdamW, warm-up + cosine; everything else on hooks.

The trainer owns what changes during training (model, optimiser, scheduler,
sampler, loss balance, RNG states) and runs the loop; what watches or saves it
hangs on callbacks (usagg/engine/callbacks.py): checkpoints and resume
(usagg/engine/checkpointing.py: a job killed at any moment resumes from its last
checkpoint and reaches bit-identical final weights on the CPU), selection and the
kept epochs' weights (usagg/engine/selecting.py), affinity, progress and the
per-epoch listener. It knows nothing about the run store, paradigms or the test split.

On CUDA a steady-state step never waits for the device: losses are summed on
the device and read once per epoch, where the divergence check runs (so a
diverged job is stopped at the end of that epoch, before its checkpoint);
on the CPU, where reading is free, the check runs every step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from usagg.engine import checkpoint
from usagg.engine.affinity import LookaheadAffinity
from usagg.engine.balance import build_balance
from usagg.engine.batches import TensorSplit
from usagg.engine.callbacks import AffinityMeter, BatchEnd, Callback, EpochListener, ProgressReporter
from usagg.engine.checkpointing import CHECKPOINT_FORMAT, Checkpointing
from usagg.engine.device import Compute
from usagg.engine.evaluate import EvalSet
from usagg.engine.optim import build_optimizer
from usagg.engine.progress import ProgressFn
from usagg.engine.sampling import TaskSampler
from usagg.engine.schedule import build_scheduler
from usagg.engine.selecting import Selection
from usagg.engine.selection import MODEL, Selector
from usagg.engine.step import build_step, portable_state
from usagg.model.m2dino import M2DINO
from usagg.spec.models import AffinitySpec, TaskSpec, TrainingSpec
from usagg.wording import counted

log = logging.getLogger(__name__)

#: last.pt's entries in the order they have always been written (callbacks' entries in their places).
_CHECKPOINT_KEYS = (
    "format",
    "fingerprint",
    "model",
    "balance",
    "optimizer",
    "scheduler",
    "sampler",
    "rng",
    "epoch",
    "step",
    "selector",
    "history",
    "affinity",
    "best",
    "trained",
)


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
    # training images and seconds of the completed epochs, over every attempt (last.pt's "trained"): the span the
    # affinity's seconds, also restored on resume, are a share of; a killed attempt's unfinished epoch counts in neither
    train_images: int = 0
    train_seconds: float = 0.0


def _trained(ck: dict[str, Any]) -> tuple[int, float]:
    """last.pt's training images and seconds of its epochs; a last.pt from before they were kept gives none, so
    this job's train_seconds (and the affinity's share of them) cover only the epochs trained from here."""
    trained = ck.get("trained")
    if not isinstance(trained, dict):
        log.warning("last.pt keeps no training time (an earlier usagg wrote it): train_seconds is this run's only")
        return 0, 0.0
    return int(trained["images"]), float(trained["seconds"])


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
        callbacks: Sequence[Callback] = (),
        progress: ProgressFn | None = None,
        step_graphs: bool = False,
    ) -> None:
        """`affinity`: measure the lookahead inter-task affinity while training (usagg/engine/affinity.py);
        `on_epoch` gets the whole history after each epoch; `callbacks` watch the fit after the built-in ones
        (progress, affinity, selection, on_epoch) and before the checkpoint is written; `progress` hears the
        epoch and step (`ProgressReporter`; none: nobody listens); `step_graphs`: each task's whole step recorded as a
        CUDA graph and replayed (usagg/engine/step.py; `execution.accel: step-graphs` on CUDA)."""
        trainable_keys = checkpoint.trainable_keys(model)
        self.fingerprint = checkpoint.frozen_fingerprint(model)
        self.model = model.to(compute.device)
        self.train = train
        self.select = {t: s for t, s in select.items() if len(s.tensors) > 0}
        self.tasks = {t.id: t for t in tasks}
        self.training = training
        self.compute = compute
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
        self.optimizer = build_optimizer(model, training, self.balance.parameters())
        self.train_step = build_step(self.model, self.balance, self.optimizer, compute, training.grad_clip, step_graphs)
        self.affinity = (
            LookaheadAffinity(model, train, affinity, self.total_steps, seed, compute, job_id, job_hash)
            if affinity is not None and len(train) > 1
            else None
        )
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, training.schedule)
        self.selection = Selection(self.model, trainable_keys, tasks, self.select, training)
        self.scope = self.selection.scope
        self.warnings = self.selection.warnings
        self.checkpoints = Checkpointing(ckpt_dir, self.fingerprint, training, self.selection)
        self.callbacks: list[Callback] = [
            *([ProgressReporter(job_id, progress)] if progress is not None else []),
            *([AffinityMeter(self.affinity)] if self.affinity is not None else []),
            self.selection,
            *([EpochListener(on_epoch)] if on_epoch is not None else []),
            *callbacks,
            self.checkpoints,
        ]
        self.epoch_task_loss: dict[str, float] = {}
        self.epoch_task_aux_loss: dict[str, float] = {}
        self.epoch_task_steps: dict[str, int] = {}
        self.epoch_t0 = time.perf_counter()  # when the running epoch's training began (progress: images/s)
        self.epoch_measured0 = 0.0  # `measuring_seconds` then: the running epoch's measurements are not training
        self.resumed_from: int | None = None  # the epochs last.pt held when this fit resumed (None: a fresh start)
        self.restarted: str | None = None  # why a last.pt there was not resumed, where it is kept (`resume`)
        # every CPU thread count that trained an epoch of this job, first seen first (a resume adds its own)
        self.threads_seen: list[int] = [] if self.cpu_threads is None else [self.cpu_threads]
        self.state = _State()
        self._loaded_epoch: int | None = None
        # seconds between epochs in this fit: every callback's epoch-end hooks (selection and the kept weights, the
        # selection gap's test passes, history.csv, trackers, checkpoints), the per-epoch time training leaves out
        self.epoch_end_seconds = 0.0
        self.epoch_speed: list[tuple[int, float]] = []  # (images, seconds) of each epoch trained in this run

    # ----- checkpoints (the files: usagg/engine/checkpointing.py)

    @property
    def last_path(self) -> Path:
        return self.checkpoints.last_path

    @property
    def best_path(self) -> Path:
        return self.checkpoints.best_path

    @property
    def selector(self) -> Selector:
        """The selection state (usagg/engine/selection.py), kept by the Selection callback."""
        return self.selection.selector

    def state_dict(self, with_best: bool = True) -> dict[str, Any]:
        """Everything training changes, callbacks' entries included; `with_best`: the kept epochs' weights too (but
        the checkpoint's own epoch, which "model" holds), so a killed job resumes with them."""
        s = self.state
        best = self.selection.best
        ck: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "model": best.current(),
            "balance": self.balance.state(),
            "optimizer": portable_state(self.optimizer.state_dict()),
            "scheduler": portable_state(self.scheduler.state_dict()),
            "sampler": self.sampler.state_dict(),
            "rng": checkpoint.rng_state(self.compute.device),
            "epoch": s.epoch,
            "step": s.step,
            "history": s.history,
            "affinity": None,
            "trained": {"images": s.train_images, "seconds": s.train_seconds},
            "cpu_threads": self.cpu_threads,
            "cpu_threads_seen": list(self.threads_seen),
        }
        for cb in self.callbacks:
            ck.update(cb.state_dict())
        ck["best"] = best.state(skip=s.epoch) if with_best else {}
        return {k: ck[k] for k in _CHECKPOINT_KEYS if k in ck} | {
            k: v for k, v in ck.items() if k not in _CHECKPOINT_KEYS
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        checkpoint.load_trainable(self.model, ck["model"])
        self.balance.load(ck["balance"], self.compute.device)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.sampler.load_state_dict(ck["sampler"])
        checkpoint.set_rng_state(ck["rng"], self.compute.device)
        self.state = _State(ck["epoch"], ck["step"], list(ck["history"]), *_trained(ck))
        for cb in self.callbacks:
            cb.load_state_dict(ck)
        earlier, now = ck.get("cpu_threads"), self.cpu_threads
        seen = ck.get("cpu_threads_seen")
        seen = (
            [c for c in seen if type(c) is int] if isinstance(seen, list) else [earlier] if type(earlier) is int else []
        )
        self.threads_seen = [*seen, now] if now is not None and now not in seen else seen
        if now is not None and isinstance(earlier, int) and earlier != now:
            log.warning(
                "resumed on %s where its first %s trained on %s: a CPU job's numbers depend on its "
                "threads, so this job's differ from an uninterrupted run's (set execution.threads to keep one count "
                "on every machine and run)",
                counted(now, "CPU thread"),
                counted(self.state.epoch, "epoch"),
                " and ".join(str(c) for c in seen),
            )

    @property
    def threads_before(self) -> int | None:
        """A CPU thread count other than this run's that trained earlier epochs of the job (a resume on another
        count: its numbers differ from an uninterrupted run's), None where every epoch trained on this one."""
        return next((c for c in self.threads_seen if c != self.cpu_threads), None)

    @property
    def cpu_threads(self) -> int | None:
        """torch's intra-op threads of a CPU job (its numbers depend on them), None on a GPU."""
        return torch.get_num_threads() if self.compute.device.type == "cpu" else None

    @property
    def later_images_per_s(self) -> float | None:
        """Training images per second after this run's first epoch, which holds the warm-up (first kernels, eager
        steps before step-graphs record, the recordings): the rate a long job holds. None after one epoch."""
        later = self.epoch_speed[1:]
        seconds = sum(s for _, s in later)
        return sum(n for n, _ in later) / seconds if later and seconds > 0 else None

    def resume(self) -> bool:
        """Continue from last.pt if present and made for this model; True when resumed (fit does this itself), and
        `resumed_from` the epochs it held, which the progress sink hears (the console says so); where a last.pt
        was there but is not resumed, `restarted` says why and where it is kept, which the sink hears too."""
        resumed = self.checkpoints.resume(self)
        if resumed:
            self.resumed_from = self.state.epoch
        self.restarted = self.checkpoints.restart
        return resumed

    def measuring_seconds(self) -> float:
        """Seconds this fit's affinity measured, checkpointed attempts' included (0 without affinity)."""
        return self.affinity.seconds if self.affinity is not None else 0.0

    def epoch_step_seconds(self) -> float:
        """Seconds the running epoch's training steps took so far, its affinity measurements left out: what the
        console's img/s divides by (a measurement at an epoch's last step read as 5 img/s)."""
        measured = self.measuring_seconds() - self.epoch_measured0
        return time.perf_counter() - self.epoch_t0 - measured

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
        model, sched, comp = self.model, self.scheduler, self.compute
        model.train()
        on_cuda = comp.device.type == "cuda"
        loss_sum = torch.zeros((), dtype=torch.float64, device=comp.device)
        # per task: [own loss, aux loss] summed on the device like the total (no extra host sync), and batches
        task_sums: dict[str, torch.Tensor] = {}
        task_steps: dict[str, int] = {}
        images = 0
        self.epoch_measured0 = self.measuring_seconds()
        t0 = self.epoch_t0 = time.perf_counter()
        n = self.steps_per_epoch
        for i in range(n):
            task, idx = self.sampler.next_batch()
            x, y = self.train[task].batch(idx, comp.device, self.state.step)  # step: augmentation draw
            out = self.train_step(task, x, y)
            for cb in self.callbacks:
                cb.on_optimizer_step(self, self.state.step + 1)
            sched.step()
            self.state.step += 1
            loss_sum += out.loss.double()
            aux = out.aux.double()
            if task not in task_sums:
                task_sums[task] = torch.zeros(2, dtype=torch.float64, device=comp.device)
            task_sums[task] += torch.stack(((out.model_loss.double() - aux), aux))
            task_steps[task] = task_steps.get(task, 0) + 1
            images += idx.shape[0]  # shape is host metadata: no sync
            total = None if on_cuda else self._check_finite(loss_sum, epoch, f"step {i + 1} (task {task})")
            batch = BatchEnd(epoch, i + 1, n, task, idx.shape[0], None if total is None else total / (i + 1))
            for cb in self.callbacks:
                cb.on_train_batch_end(self, batch)
        if on_cuda:
            torch.cuda.synchronize(comp.device)
            self._check_finite(loss_sum, epoch, f"steps 1-{n} (checked once per epoch on CUDA)")
        means = {t: (task_sums[t].cpu() / task_steps[t]).tolist() for t in self.train if t in task_sums}
        self.epoch_task_loss = {t: m[0] for t, m in means.items()}
        self.epoch_task_aux_loss = {t: m[1] for t, m in means.items()} if self.model.moe else {}
        self.epoch_task_steps = {t: task_steps[t] for t in self.train if t in task_steps}
        return float(loss_sum.item()) / n, images, time.perf_counter() - t0

    def fit(self, stop_after_epoch: int | None = None) -> FitResult:
        """Train to `training.epochs`, then load the selected weights.

        `stop_after_epoch`: end after that many epochs as a killed job would (checkpoints only as scheduled).
        """
        self.resume()  # before the hooks: every callback starts from the checkpoint's state
        for cb in self.callbacks:
            cb.on_fit_start(self)
        s = self.state
        end = self.training.epochs if stop_after_epoch is None else min(stop_after_epoch, self.training.epochs)
        try:
            self._epochs(end)
        except BaseException:  # a killed job keeps the last.pt being written, or the one before: nothing torn
            self.checkpoints.wait(raise_error=False)
            raise
        self.checkpoints.wait()
        self.train_step.close()  # recorded steps' memory, before selection and the test evaluation need it
        if s.epoch < self.training.epochs:  # stopped early on purpose: keep the last weights, select nothing
            result = FitResult(s.epoch, "stopped", None, s.history, s.step, s.train_images, s.train_seconds, self.scope)
        else:
            result = self._select(s.train_images, s.train_seconds)
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _epochs(self, end: int) -> None:
        """Train epochs until `end`, each one's end-of-epoch hooks after it; their images and seconds go into the
        state (so into the next last.pt) before any hook runs."""
        s = self.state
        while s.epoch < end:
            epoch = s.epoch
            mean_loss, n_img, secs = self.train_epoch(epoch)
            t_end = time.perf_counter()  # the work between epochs, a wait for the last.pt before included
            # the last.pt of the epoch before was written while this one trained; done before any hook runs
            self.checkpoints.wait()
            s.train_images += n_img
            s.train_seconds += secs
            self.epoch_speed.append((n_img, secs))
            measured = self.measuring_seconds() - self.epoch_measured0
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
            for cb in self.callbacks:
                cb.on_train_epoch_end(self, entry)
            s.history.append(entry)
            s.epoch = epoch + 1
            select_s = self.selection.seconds
            log.info(
                "epoch %d/%d: loss %.4f, %.1f img/s%s%s%s",
                s.epoch,
                self.training.epochs,
                mean_loss,
                n_img / secs if secs > 0 else 0.0,
                f" ({measured:.2f} s of it measuring affinity)" if self.affinity is not None else "",
                f", selection score {entry['select_score']:.4f}" if entry.get("select_score") is not None else "",
                f", selection {select_s:.2f} s" if select_s is not None else "",
            )
            for cb in self.callbacks:
                cb.on_epoch_end(self, entry)
            self.epoch_end_seconds += time.perf_counter() - t_end

    def _select(self, images: int, seconds: float) -> FitResult:
        """Choose each task's epoch (its best, the job's best, or the last) and load the first one's weights."""
        s = self.state
        task_epochs, selected, use_best = self.selection.choose(s.epoch)
        self._loaded_epoch = s.epoch
        result = FitResult(
            selected_epoch=selected,
            selection="best" if use_best else "last",
            best_score=self.selection.best_score() if use_best else None,
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

    def use_weights(self, epoch: int) -> None:
        """Put the selected weights of `epoch` (one of FitResult.task_epochs) into the model."""
        if epoch == self._loaded_epoch:
            return
        self.selection.load(self.model, epoch)
        self._loaded_epoch = epoch
