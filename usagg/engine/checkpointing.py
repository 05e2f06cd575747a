"""Checkpoints as a trainer callback: write last.pt on its cadence and best.pt when the fit ends, and resume from
last.pt (`Trainer.fit` calls `resume` before any callback's on_fit_start, so every callback starts from the
checkpoint's state) (the file format: usagg/engine/checkpoint.py).

last.pt holds everything training changes (`Trainer.state_dict`, callbacks' entries included) and, until the
last epoch, the kept epochs' weights, so a job killed at any moment resumes from it and reaches bit-identical
final weights on the CPU.

A last.pt before the last epoch is written in the background (issue 24.4): at the epoch's end the state is
copied to host memory (`host_copy`: everything training goes on changing; the kept epochs' weights are host
buffers that change only when a later epoch is kept), and a thread checksums and writes it while the next
epoch trains. `Trainer.fit` waits for it when that epoch's steps are done, before any callback of its end runs
(so before a kept buffer is reused), and before it leaves, normally or not; one write is in flight at most. A
job killed meanwhile keeps the last.pt before (every write is atomic: usagg/atomic.py). The job's
`checkpoint_seconds` and the save cost `checkpoint_every: auto` weighs are the time the fit waited: the copy,
and any wait for a write the next epoch did not cover. The last epoch's best.pt and last.pt are written in
place, as the job's end waits for them anyway.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from usagg.atomic import set_aside
from usagg.engine import checkpoint
from usagg.engine.callbacks import Callback
from usagg.errors import first_line
from usagg.spec.models import AUTO_CHECKPOINT_SHARE
from usagg.store.checkpoints import CHECKPOINT_FORMAT, NOT_RESUMED
from usagg.store.layout import BEST_CHECKPOINT, LAST_CHECKPOINT
from usagg.tensorbytes import on_host

if TYPE_CHECKING:
    from usagg.engine.selecting import Selection
    from usagg.engine.trainer import FitResult, Trainer
    from usagg.spec.models import TrainingSpec

log = logging.getLogger(__name__)


def host_copy(obj: Any) -> Any:
    """A copy of a checkpoint's state that training cannot change any more: tensors copied into host memory,
    containers rebuilt, other values deep-copied."""
    if isinstance(obj, torch.Tensor):
        return on_host(obj, copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return copy.deepcopy(obj)


#: Characters of a damaged checkpoint's error a restart's line quotes (the job's log.txt has it whole).
SAID_CHARS = 80


def _said(err: BaseException, path: Path) -> str:
    """A damaged checkpoint's error as a restart's line quotes it: its first line without the file's path (the line
    names the file), cut at `SAID_CHARS`."""
    text = first_line(err).replace(f"{path} ", "").replace(str(path), "the file")
    return text if len(text) <= SAID_CHARS else text[: SAID_CHARS - 3].rstrip() + "..."


class _BackgroundWrite:
    """At most one checkpoint written on a thread; its error kept for `wait` to hand back."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, payload: dict[str, Any], path: Path) -> None:
        self._thread = threading.Thread(target=self._write, args=(payload, path), name="usagg-last.pt", daemon=True)
        self._thread.start()

    def _write(self, payload: dict[str, Any], path: Path) -> None:
        try:
            checkpoint.save_atomic(payload, path)
        except BaseException as err:  # a full disk, say: raised in the training thread by `wait`
            self._error = err

    def wait(self) -> BaseException | None:
        """Wait for the write in flight, if any; its error, if it failed."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread, err, self._error = None, self._error, None
        return err


class Checkpointing(Callback):
    """last.pt and best.pt of one fit in `ckpt_dir`; `fingerprint` names the frozen weights a checkpoint must match."""

    def __init__(self, ckpt_dir: Path, fingerprint: str, training: TrainingSpec, selection: Selection) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.fingerprint = fingerprint
        self.training = training
        self.selection = selection
        self._save_cost: float | None = None
        self._last_save_end = time.perf_counter()
        self._writing = _BackgroundWrite()
        self.seconds = 0.0  # the fit waited for last.pt and best.pt this long (metrics.json `throughput`)
        self.saves = 0  # files written (each last.pt and each best.pt)
        self.restart: str | None = None  # why a last.pt there was not resumed, and where it is kept (`resume`)

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / LAST_CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / BEST_CHECKPOINT

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        if self.should_save(trainer.state.epoch):
            self.save_last(trainer)

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        if result.selection == "stopped":  # stopped early on purpose: keep the last weights, select nothing
            self.save_best()

    def wait(self, raise_error: bool = True) -> None:
        """Wait for the last.pt being written in the background, if any; counted in `seconds` and in the save cost
        auto weighs. Its error is raised here, or, with `raise_error` False (the fit is failing already), logged."""
        t0 = time.perf_counter()
        err = self._writing.wait()
        waited = time.perf_counter() - t0
        self.seconds += waited
        if self._save_cost is not None:
            self._save_cost += waited
        if err is None:
            return
        if raise_error:
            raise err
        log.warning("%s could not be written: %s: %s", self.last_path, type(err).__name__, first_line(err))

    def mismatch(self, ck: dict[str, Any]) -> str | None:
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

    def resume(self, trainer: Trainer) -> bool:
        """Continue from last.pt if present and made for this model; True when resumed.

        A last.pt of another layout or whose frozen weights differ is not trusted: training starts over. Where a
        last.pt was there and is not resumed, `restart` says why and where it is kept (the job's progress report
        "restart" carries it to the console and job.json, for `usagg status`).
        """
        if not self.last_path.is_file():
            return False
        try:
            ck = checkpoint.load(self.last_path)
        except Exception as err:  # truncated, overwritten, not a checkpoint: set aside, never trusted
            aside = set_aside(self.last_path)
            damage = f"{type(err).__name__}: {first_line(err)}"
            log.warning(
                "%s is damaged (%s); moved to %s, training starts over from epoch 1", self.last_path, damage, aside.name
            )
            self.restart = f"{LAST_CHECKPOINT} is damaged ({_said(err, self.last_path)}), kept as {aside.name}"
            return False
        why = self.mismatch(ck)
        if why is not None:  # kept aside, not overwritten: the usagg or the model that made it can still resume it
            aside = set_aside(self.last_path, NOT_RESUMED)
            log.warning(
                "%s cannot be resumed: %s; moved to %s, training starts over from epoch 1",
                self.last_path,
                why,
                aside.name,
            )
            self.restart = f"{LAST_CHECKPOINT} cannot be resumed: {why}; kept as {aside.name}"
            return False
        best: dict[str, Any] | None = None
        if self.best_path.is_file():  # written when a fit ended: it may hold the selected epochs of a finished run
            try:
                best = checkpoint.load(self.best_path, mmap=True)
            except Exception as err:  # the selected epochs' weights are lost: only training again gives them back
                aside_best, aside_last = set_aside(self.best_path), set_aside(self.last_path)
                damage = f"{type(err).__name__}: {first_line(err)}"
                log.warning(
                    "%s is damaged (%s); moved to %s with %s, training starts over from epoch 1",
                    self.best_path,
                    damage,
                    aside_best.name,
                    aside_last.name,
                )
                said = _said(err, self.best_path)
                self.restart = (
                    f"{BEST_CHECKPOINT}, which holds the selected epochs' weights, is damaged ({said}), kept as "
                    f"{aside_best.name} ({LAST_CHECKPOINT} as {aside_last.name})"
                )
                return False
        usable = best.get("weights", {}) if best is not None and self.mismatch(best) is None else None
        kept = self.selection.kept_weights(ck, usable)
        if kept is None:
            log.warning(
                "%s selects epochs whose weights neither it nor %s holds; training starts over from epoch 1",
                self.last_path,
                self.best_path.name,
            )
            self.restart = f"{LAST_CHECKPOINT} selects epochs whose weights neither it nor {BEST_CHECKPOINT} holds"
            return False
        trainer.load_state_dict(ck)
        for e, w in kept.items():
            self.selection.best.load(e, w)
        log.info(
            "resumed from %s: epoch %d/%d, step %d",
            self.last_path,
            trainer.state.epoch,
            self.training.epochs,
            trainer.state.step,
        )
        return True

    def should_save(self, done: int) -> bool:
        """After epoch `done`: always after the last, every checkpoint_every epochs, or (auto) when the
        last save cost at most AUTO_CHECKPOINT_SHARE of the time since it (the first save measures it)."""
        every = self.training.checkpoint_every
        if done >= self.training.epochs:
            return True
        if every == "auto":
            since = time.perf_counter() - self._last_save_end
            return self._save_cost is None or self._save_cost <= AUTO_CHECKPOINT_SHARE * since
        return done % every == 0

    def save_last(self, trainer: Trainer) -> None:
        """Write last.pt with the kept epochs' weights, in the background (the module's docstring); after the last
        epoch best.pt first, and last.pt without them, in place.

        What the fit waits for (the state gathered and copied; at the end checksummed and written, best.pt
        included) goes into `seconds`, and is the save cost `should_save` weighs under auto."""
        self.wait()  # counted there (the fit has normally waited already, after the epoch's steps)
        t0 = time.perf_counter()
        final = trainer.state.epoch >= self.training.epochs
        if final:
            self._write_best()
            checkpoint.save_atomic(trainer.state_dict(with_best=False), self.last_path)
        else:
            state = trainer.state_dict(with_best=True)
            # the kept epochs' host buffers stay as they are until the fit has waited for this write
            self._writing.start({k: v if k == "best" else host_copy(v) for k, v in state.items()}, self.last_path)
        self.saves += 1
        self._last_save_end = time.perf_counter()
        self._save_cost = self._last_save_end - t0
        self.seconds += self._save_cost

    def save_best(self) -> None:
        """Write best.pt, once a fit ends (the fit has waited for last.pt): the trainable weights of the epochs
        still selected (none: no file)."""
        t0 = time.perf_counter()
        self._write_best()
        self.seconds += time.perf_counter() - t0

    def _write_best(self) -> None:
        best = self.selection.best
        if best.epochs:
            checkpoint.save_atomic(
                {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "weights": best.state()}, self.best_path
            )
            self.saves += 1
