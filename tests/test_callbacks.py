"""The trainer's hooks (usagg/engine/callbacks.py) on a real tiny fit: the order a callback hears, its state riding
in last.pt across a kill, progress through a callback's sink, and watching that leaves training bit-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_study import FETAL_HEAD, MALIGNANCY, write_tiny_study
from usagg.engine import checkpoint
from usagg.engine.callbacks import BatchEnd, Callback, ProgressReporter
from usagg.engine.device import resolve_compute, seed_everything
from usagg.engine.job import build_trainer
from usagg.engine.progress import Progress
from usagg.engine.trainer import FitResult, Trainer
from usagg.plan import Job, plan
from usagg.spec.load import load_study

pytestmark = pytest.mark.slow  # trains real tiny jobs
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    d = tmp_path_factory.mktemp("hooks")
    spec = write_tiny_study(
        d / "study.yaml",
        "hooks",
        d,
        paradigms=("AU",),
        tasks=(MALIGNANCY, FETAL_HEAD),
        epochs=2,
        steps=2,
        synthetic={"default_size": 12},
        model={"heads": {"hidden": 16, "decoder_channels": 8}},
        training={"batch_size": 4, "checkpoint_every": 1},
    )
    return plan(load_study(spec))[0]


def _trainer(job: Job, ckpt: Path, callbacks: list[Callback]) -> Trainer:
    """The job's Trainer on the CPU in fp32 (no augmentation, no trunk), wired as run_job wires it."""
    seed_everything(job.seed, CPU)
    return build_trainer(job, ckpt, resolve_compute("fp32", CPU), callbacks=callbacks)


class Recorder(Callback):
    """Writes down every hook it hears, with what the trainer's state says at that moment; counts steps in last.pt."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.steps = 0
        self.loaded: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.calls.append(("fit_start", trainer.state.epoch))

    def on_optimizer_step(self, trainer: Trainer, step: int) -> None:
        assert trainer.state.step == step - 1  # before the loop counts it
        self.calls.append(("optimizer_step", step))

    def on_train_batch_end(self, trainer: Trainer, batch: BatchEnd) -> None:
        self.steps += 1
        assert batch.loss is not None and batch.images == 4 and batch.task in trainer.train
        self.calls.append(("batch_end", batch.epoch, batch.index, batch.steps, trainer.state.step))

    def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        assert "select_score" in entry  # selection, an earlier callback, already scored the epoch
        self.calls.append(("train_epoch_end", entry["epoch"], len(trainer.state.history)))

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        assert trainer.state.history[-1] is entry
        self.calls.append(("epoch_end", entry["epoch"], trainer.state.epoch))

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        self.calls.append(("fit_end", result.selection, result.steps))

    def state_dict(self) -> dict[str, Any]:
        return {"recorder_steps": self.steps}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.loaded = {"recorder_steps": checkpoint["recorder_steps"], "epoch": checkpoint["epoch"]}
        self.steps = checkpoint["recorder_steps"]


def _epoch(e: int, first_step: int) -> list[tuple[Any, ...]]:
    s = first_step
    return [
        ("optimizer_step", s),
        ("batch_end", e, 1, 2, s),
        ("optimizer_step", s + 1),
        ("batch_end", e, 2, 2, s + 1),
        ("train_epoch_end", e + 1, e),
        ("epoch_end", e + 1, e + 1),
    ]


def test_a_callback_hears_the_hooks_of_a_fit_in_order(job: Job, tmp_path: Path) -> None:
    rec = Recorder()
    fit = _trainer(job, tmp_path / "ck", [rec]).fit()
    assert rec.calls == [("fit_start", 0), *_epoch(0, 1), *_epoch(1, 3), ("fit_end", fit.selection, 4)]
    assert fit.selection in {"best", "last"}
    assert checkpoint.load(tmp_path / "ck" / "last.pt")["recorder_steps"] == 4  # its state rides in last.pt


def test_a_callbacks_state_comes_back_on_resume_and_watching_changes_nothing(job: Job, tmp_path: Path) -> None:
    straight = _trainer(job, tmp_path / "plain", []).fit()  # nobody watching

    first = Recorder()
    stopped = _trainer(job, tmp_path / "ck", [first]).fit(stop_after_epoch=1)
    assert stopped.selection == "stopped" and first.calls[-1] == ("fit_end", "stopped", 2)

    again = Recorder()
    fit = _trainer(job, tmp_path / "ck", [again]).fit()
    assert again.loaded == {"recorder_steps": 2, "epoch": 1}
    assert again.calls == [("fit_start", 1), *_epoch(1, 3), ("fit_end", fit.selection, 4)]
    assert again.steps == 4
    assert fit.history == straight.history and fit.task_epochs == straight.task_epochs


def test_progress_reaches_a_callbacks_sink(job: Job, tmp_path: Path) -> None:
    heard: list[Progress] = []
    _trainer(job, tmp_path / "ck", [ProgressReporter("mine", heard.append)]).fit()
    phases = [(p.phase, p.epoch, p.step) for p in heard]
    assert phases == [(phase, e, step) for e in (0, 1) for phase, step in (("train", 1), ("train", 2), ("select", 2))]
    assert all(p.job_id == "mine" and p.epochs == 2 and p.steps == 2 for p in heard)
    assert all(p.loss is not None and p.images_per_s is not None and p.images_per_s > 0 for p in heard[:2])
