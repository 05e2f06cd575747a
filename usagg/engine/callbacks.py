"""The trainer's hook points (Lightning-style callbacks) and the small callbacks that watch a fit.

`Trainer.fit` (usagg/engine/trainer.py) is the loop; everything that watches or
saves training hangs on these hooks, called in list order: checkpoints and resume
(usagg/engine/checkpointing.py), selection and best weights (usagg/engine/selecting.py),
affinity, progress and per-epoch listeners (here). One fit calls, in order:

    (resume from last.pt: Trainer.load_state_dict, every callback's load_state_dict)
    on_fit_start
    per epoch:  per step: on_optimizer_step, on_train_batch_end
                on_train_epoch_end(entry)   -- the epoch's history entry, still open for more fields
                on_epoch_end(entry)         -- entry is in trainer.state.history, state.epoch counts it
    on_fit_end(result)

A resumed fit starts at the epoch after the checkpoint's. `state_dict` returns the entries
a callback adds to last.pt (top-level keys, so the checkpoint layout stays one flat dict) and
`load_state_dict` gets the whole checkpoint back on resume. Hooks must leave the model, the
optimiser and the random streams as they found them: training stays bit-identical with or
without a watcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usagg.engine import progress

if TYPE_CHECKING:
    from usagg.engine.affinity import LookaheadAffinity
    from usagg.engine.trainer import FitResult, Trainer

#: Steps between progress reports on CUDA (images/s only: reading the loss would wait for the device).
CUDA_PROGRESS_EVERY = 10


@dataclass(frozen=True)
class BatchEnd:
    """One training step as the loop saw it: `index` of `steps` in `epoch` (0-based), the task and batch size;
    `loss` the epoch's mean optimised loss so far where reading it is free (the CPU), else None."""

    epoch: int
    index: int  # steps done in this epoch
    steps: int
    task: str
    images: int
    loss: float | None


class Callback:
    """Base class: every hook does nothing; override the ones a watcher needs."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch, after a resume: `trainer.state` and `load_state_dict` hold the checkpoint's."""

    def on_optimizer_step(self, trainer: Trainer, step: int) -> None:
        """After optimiser step `step` (1-based, of the job), before the schedule moves: the model holds that step's
        weights and the optimiser's learning rates are the ones it used."""

    def on_train_batch_end(self, trainer: Trainer, batch: BatchEnd) -> None:
        """After a step, the schedule moved and `trainer.state.step` counted it."""

    def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """An epoch's steps are done; `entry` is its history entry, where a callback may add fields."""

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """The epoch is complete: `entry` is the last of `trainer.state.history`."""

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        """Training ended (result.selection "stopped" when it ended early on purpose)."""

    def state_dict(self) -> dict[str, Any]:
        """The last.pt entries this callback adds (none by default)."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Take back this callback's entries from a resumed checkpoint."""


class ProgressReporter(Callback):
    """Reports epoch, step, loss and images/s to `sink` (whoever runs the job passed it down:
    usagg/engine/progress.py); on CUDA every CUDA_PROGRESS_EVERY steps and at an epoch's last. A sink that
    raises is ignored: display problems are not training problems. A resumed fit first says from which epoch
    (phase "resume"), and a fit whose last.pt was not resumed why, and where that file is kept (phase "restart"):
    the job's start report comes before its checkpoint is read."""

    def __init__(self, job_id: str, sink: progress.ProgressFn) -> None:
        self.job_id, self.sink = job_id, sink
        self._images = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        n, epochs = trainer.steps_per_epoch, trainer.training.epochs
        if trainer.resumed_from is not None:
            progress.send(self.sink, progress.Progress(self.job_id, "resume", trainer.resumed_from, epochs, 0, n))
        elif trainer.restarted is not None:
            report = progress.Progress(self.job_id, "restart", 0, epochs, 0, n, restart=trainer.restarted)
            progress.send(self.sink, report)

    def on_train_batch_end(self, trainer: Trainer, batch: BatchEnd) -> None:
        """images/s: the epoch's images so far over its steps' seconds (`Trainer.epoch_step_seconds`: affinity
        measurements left out), so an epoch's last report is the epoch's training speed, not its last step's."""
        self._images = batch.images if batch.index == 1 else self._images + batch.images
        on_cuda = trainer.compute.device.type == "cuda"
        if on_cuda and batch.index % CUDA_PROGRESS_EVERY != 0 and batch.index != batch.steps:
            return
        progress.send(
            self.sink,
            progress.Progress(
                self.job_id,
                "train",
                batch.epoch,
                trainer.training.epochs,
                batch.index,
                batch.steps,
                loss=batch.loss,
                images_per_s=self._images / max(trainer.epoch_step_seconds(), 1e-9),
            ),
        )

    def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        if trainer.select:  # selection follows: say so before it runs
            n = trainer.steps_per_epoch
            progress.send(
                self.sink,
                progress.Progress(
                    self.job_id, "select", entry["epoch"] - 1, trainer.training.epochs, n, n, loss=entry["loss"]
                ),
            )


class AffinityMeter(Callback):
    """Measures the lookahead inter-task affinity (usagg/engine/affinity.py) at its due steps; its sums ride in
    last.pt under "affinity", so a resumed job measures the same."""

    def __init__(self, affinity: LookaheadAffinity) -> None:
        self.affinity = affinity

    def on_optimizer_step(self, trainer: Trainer, step: int) -> None:
        from usagg.engine.optim import encoder_lr

        if self.affinity.due(step):
            self.affinity.measure(step, encoder_lr(trainer.optimizer), trainer.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"affinity": self.affinity.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("affinity") is not None:
            self.affinity.load_state_dict(checkpoint["affinity"])


class EpochListener(Callback):
    """Hands the whole history to `fn` after each epoch (run_job: history.csv and the trackers)."""

    def __init__(self, fn: Callable[[list[dict[str, Any]]], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        self.fn(trainer.state.history)
