"""Model selection: which epoch's weights go to the test split, for the whole job or for each task.

Every epoch the selection split gives each task its primary metric and its
loss (the head's loss, in the same pass). Two scopes (`training.selection_scope`):

- model: one epoch for all tasks of a job, by `model_score`: the mean over
  tasks of the primary metric's relative change versus that task's value at
  the first selection epoch, direction-aware (positive = better), which is the
  study's own Δ. So every task weighs the same whatever its metric's scale:
  a DSC moving from 0.60 to 0.66 and an MRE moving from 20 px to 18 px both
  count +10 %; on the raw scale (or as 1 - MRE / diagonal, 0.97-0.99) a
  keypoint task barely moved the mean. The reference is floored at REL_FLOOR
  (a task starting at DSC 0 would otherwise weigh infinitely). For one task
  the ranking is that of its own metric.
- task: each task at its own best epoch by its own metric. This is optimistic
  for a multi-task job (no single model has all those weights), and the
  metrics.json says so.

Ties (scores within TIE_TOL) go to the lower selection loss (model scope: the
mean over tasks of each task's loss relative to its first-epoch loss; task
scope: the task's own), then to the later epoch: the small-split AUC ties of
issue 15 otherwise kept an early, one-class classifier.

A split too small to rank epochs is warned about (`split_warnings`).

`RULES` names the three ways a task's tested epoch can be chosen (model scope, task
scope, the last epoch) and `rule_epochs` the epoch each gives a task: every job records
the test metric under all three (usagg/engine/selecting.py `RuleTests`), so the
analysis measures what model-scope selection costs a multi-task job against TS, which
early-stops each task (usagg/analysis/selection_gap.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from usagg.jobmetrics import SELECTION_RULES
from usagg.spec.models import TaskSpec
from usagg.tasktypes import get_task_type, metric_direction

#: Scores this close count as a tie (then the loss decides, then the later epoch).
TIE_TOL = 1e-12
#: Smallest |reference| a relative change divides by.
REL_FLOOR = 0.05
#: Fewer selection images of a task than this cannot rank epochs reliably (a warning).
MIN_SELECT_IMAGES = 20

MODEL = "model"  # the key of the whole-job choice beside the task ids
#: The selection rules every job is tested under (metrics.json `selection.rules`, usagg/jobmetrics.py).
RULES = SELECTION_RULES


def _finite(v: float | None) -> TypeGuard[float]:
    return v is not None and math.isfinite(v)


def relative_change(value: float, reference: float, higher_is_better: bool) -> float:
    """(value - reference) / |reference|, sign flipped for a lower-is-better metric; |reference| >= REL_FLOOR."""
    d = (value - reference) / max(abs(reference), REL_FLOOR)
    return d if higher_is_better else -d


def model_score(primary: Mapping[str, float | None], reference: dict[str, float], tasks: dict[str, TaskSpec]) -> float:
    """Mean relative change of the tasks' primary metrics versus `reference` (see the module docstring).

    A task without a reference (undefined at the first selection epoch) or
    undefined now is left out; with none left the score is -inf (never chosen
    over a defined one).
    """
    vals = []
    for task_id, v in primary.items():
        ref = reference.get(task_id)
        if not _finite(v) or ref is None:
            continue
        vals.append(relative_change(v, ref, metric_direction(tasks[task_id].metric or "") is not False))
    return sum(vals) / len(vals) if vals else -math.inf


def task_score(value: float | None, metric: str) -> float:
    """One task's metric, higher always better; -inf when undefined."""
    if not _finite(value):
        return -math.inf
    return value if metric_direction(metric) is not False else -value


def model_loss(losses: Mapping[str, float | None], reference: dict[str, float]) -> float:
    """Mean over tasks of the selection loss relative to its first-epoch loss; nan when none is defined."""
    vals = [v / reference[t] for t, v in losses.items() if _finite(v) and reference.get(t, 0.0) > 0]
    return sum(vals) / len(vals) if vals else math.nan


@dataclass(frozen=True)
class Candidate:
    """One epoch as a choice: its score (higher better) and selection loss (lower better, nan unknown)."""

    epoch: int
    score: float
    loss: float

    def beats(self, old: Candidate | None) -> bool:
        """True when this (later) epoch replaces `old`: a higher score, at a tie a lower loss, at a tie of both."""
        if old is None:
            return True
        if not math.isclose(self.score, old.score, rel_tol=TIE_TOL, abs_tol=TIE_TOL):
            return self.score > old.score
        if _finite(self.loss) and _finite(old.loss) and not math.isclose(self.loss, old.loss, rel_tol=TIE_TOL):
            return self.loss < old.loss
        return True


@dataclass
class Selector:
    """The best epoch so far for the model and for every task; a plain state for the checkpoint."""

    tasks: dict[str, TaskSpec]
    reference: dict[str, float] = field(default_factory=dict)  # primary metric at the first selection epoch
    reference_loss: dict[str, float] = field(default_factory=dict)
    best: dict[str, Candidate] = field(default_factory=dict)  # MODEL and task ids
    started: bool = False

    def update(
        self, epoch: int, primary: Mapping[str, float | None], losses: Mapping[str, float | None]
    ) -> tuple[float, set[str]]:
        """Record one epoch's selection numbers; returns its model score and the keys it became best for."""
        if not self.started:
            self.reference = {t: float(v) for t, v in primary.items() if _finite(v)}
            self.reference_loss = {t: float(v) for t, v in losses.items() if _finite(v)}
            self.started = True
        score = model_score(primary, self.reference, self.tasks)
        cands = {MODEL: Candidate(epoch, score, model_loss(losses, self.reference_loss))}
        for t, v in primary.items():
            loss = losses.get(t)
            cands[t] = Candidate(epoch, task_score(v, self.tasks[t].metric or ""), loss if _finite(loss) else math.nan)
        improved = {k for k, c in cands.items() if c.beats(self.best.get(k))}
        self.best.update({k: cands[k] for k in improved})
        return score, improved

    def epochs(self, scope: str) -> dict[str, int]:
        """The selected epoch per key: {MODEL: e} for scope model, {task: e} for scope task."""
        if scope == MODEL:
            return {MODEL: self.best[MODEL].epoch} if MODEL in self.best else {}
        return {t: c.epoch for t, c in self.best.items() if t != MODEL}

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": dict(self.reference),
            "reference_loss": dict(self.reference_loss),
            "best": {k: [c.epoch, c.score, c.loss] for k, c in self.best.items()},
            "started": self.started,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference = dict(state["reference"])
        self.reference_loss = dict(state["reference_loss"])
        self.best = {k: Candidate(int(e), float(s), float(lo)) for k, (e, s, lo) in state["best"].items()}
        self.started = bool(state["started"])


def rule_epochs(selector: Selector, task: str, multi: bool, last_epoch: int) -> dict[str, int | None]:
    """The epoch each of `RULES` tests `task` with, as `Selection.choose` would under that rule: model, the job's
    best (None before any epoch was scored); task, the task's own best in a multi-task job (the last epoch where
    it has no selection images), the job's best in a one-task job (where the scopes are one choice); last."""
    model = selector.best[MODEL].epoch if MODEL in selector.best else None
    if not multi:
        own: int | None = model
    else:
        own = selector.best[task].epoch if task in selector.best else last_epoch
    return {"model": model, "task": own, "last": last_epoch}


def split_warnings(task: TaskSpec, n_images: int, strata: set[int] | None) -> list[str]:
    """Why a task's selection split cannot rank epochs reliably.

    The rule: fewer than MIN_SELECT_IMAGES images, or, for a type whose splits
    are stratified by class (classification), a class of `num_classes` absent
    (`strata`: the classes present; its AUC is then undefined or one-sided).
    """
    out = []
    if n_images < MIN_SELECT_IMAGES:
        out.append(
            f"task {task.id}: {n_images} selection images (< {MIN_SELECT_IMAGES}) cannot rank epochs reliably; "
            "raise data.selection_fraction"
        )
    if strata is not None and get_task_type(task.type).stratified:
        missing = sorted(set(range(task.num_classes)) - strata)
        if missing:
            out.append(f"task {task.id}: the selection split has no image of class {missing}")
    return out
