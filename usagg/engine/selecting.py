"""Selection as a trainer callback: score the selection split after every epoch, keep the selected epochs' weights,
choose each task's epoch when the fit ends (the rules: usagg/engine/selection.py; the buffers:
usagg/engine/bestweights.py). `RuleTests` records, for the selection gap (issue 25.4), the test metric each task
would have had under every rule (model scope, task scope, last), whichever rule the job uses."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch

from usagg.engine import checkpoint
from usagg.engine.bestweights import BestWeights
from usagg.engine.callbacks import Callback
from usagg.engine.evaluate import EvalSet, evaluate, finite_or_none, predict, score
from usagg.engine.selection import MODEL, RULES, Selector, rule_epochs, split_warnings
from usagg.spec.models import TaskSpec, TrainingSpec
from usagg.tasktypes import get_task_type

if TYPE_CHECKING:
    from usagg.engine.trainer import Trainer

log = logging.getLogger(__name__)


def _split_warnings(tasks: list[TaskSpec], select: dict[str, EvalSet]) -> list[str]:
    out = []
    for t in tasks:
        es = select.get(t.id)
        tt = get_task_type(t.type)
        strata = {tt.stratum(s.label) for s in es.dataset.samples} if es is not None and tt.stratified else None
        out += split_warnings(t, 0 if es is None else len(es.tensors), strata)
    return out


class Selection(Callback):
    """Scores `trainer.select` after each epoch; the selector's state ("selector" in last.pt) and the kept epochs'
    weights (`best`); `seconds`: the last epoch's selection time (the log only), None before any. Over the fit
    (metrics.json `throughput`): `eval_seconds` scoring the selection split, `keep_seconds` copying improved
    epochs' weights into host memory (`BestWeights.keep`, a cost per improved epoch whatever the images)."""

    def __init__(
        self,
        model: torch.nn.Module,
        keys: list[str],
        tasks: list[TaskSpec],
        select: dict[str, EvalSet],
        training: TrainingSpec,
    ) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.training = training
        self.scope = training.selection_scope if len(tasks) > 1 else MODEL  # one task: the same choice
        self.selector = Selector(self.tasks)
        self.best = BestWeights(model, keys)  # selected epochs' weights, best.pt at the end
        # Without a selection split (data.selection_fraction 0) nothing is ranked and the last epoch is tested:
        # there is no split too small to warn of (the run says it once, usagg/run/notes.py `no_selection_text`).
        self.warnings = _split_warnings(tasks, select) if training.selection == "best" and select else []
        for w in self.warnings:
            log.warning("selection: %s", w)
        if training.selection == "best" and not select:
            log.info("selection: no selection split (data.selection_fraction 0): the last epoch is tested")
        self.seconds: float | None = None
        self.eval_seconds = 0.0
        self.keep_seconds = 0.0
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # selected epochs' weights, after `choose`
        self.improved: set[str] = set()  # the keys (MODEL, task ids) the last scored epoch became best for

    def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """Score the selection split (primary metrics and losses), record it in `entry`, keep improved weights."""
        self.seconds = None
        self.improved = set()
        if not trainer.select:
            return
        t0, kept = time.perf_counter(), self.keep_seconds
        epoch = entry["epoch"]
        results = evaluate(
            trainer.model, trainer.select, trainer.compute, self.training.eval_batch_size, for_selection=True
        )
        primary = {t: r.metrics.get(self.tasks[t].metric or "") for t, r in results.items()}
        losses = {t: r.loss for t, r in results.items()}
        score, improved = self.selector.update(epoch, primary, dict(losses))
        self.improved = improved
        entry["select_score"] = score if math.isfinite(score) else None
        entry["select"] = {t: finite_or_none(r.metrics) for t, r in results.items()}
        entry["select_loss"] = finite_or_none(losses)
        keys = {MODEL} if self.scope == MODEL else set(self.tasks)
        if self.training.selection == "best" and improved & keys:
            self._keep(epoch, set(self.selector.epochs(self.scope).values()))
        self.seconds = time.perf_counter() - t0
        self.eval_seconds += self.seconds - (self.keep_seconds - kept)

    def _keep(self, epoch: int, selected: set[int]) -> None:
        t0 = time.perf_counter()
        self.best.keep(epoch, selected)
        self.keep_seconds += time.perf_counter() - t0

    def state_dict(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.selector.load_state_dict(checkpoint["selector"])

    def kept_weights(
        self, ck: dict[str, Any], best: dict[str, Any] | None
    ) -> dict[int, dict[str, torch.Tensor]] | None:
        """The weights of the epochs last.pt `ck` selects: from its "best", its own "model" or `best` (best.pt's
        "weights", written when a fit ended); None when one is in none of them."""
        if self.training.selection != "best":
            return {}
        selector = Selector(self.tasks)
        selector.load_state_dict(ck["selector"])
        sources = [ck.get("best", {}), {ck["epoch"]: ck["model"]}]
        if best is not None:
            sources.append(best)
        kept = {}
        for e in set(selector.epochs(self.scope).values()):
            found = next((src[e] for src in sources if e in src), None)
            if found is None:
                return None
            kept[e] = found
        return kept

    def choose(self, last_epoch: int) -> tuple[dict[str, int], int | None, bool]:
        """Each task's epoch (its best, the job's best, or the last), the job's epoch (None for scope task) and
        whether the best were used; keeps those epochs' weights for `use_weights`."""
        chosen = self.selector.epochs(self.scope)
        if not (self.training.selection == "best" and chosen):
            return {t: last_epoch for t in self.tasks}, last_epoch, False
        if not set(chosen.values()) <= set(self.best.epochs):
            raise RuntimeError(f"the weights of the selected epochs {sorted(set(chosen.values()))} were not kept")
        if self.scope == MODEL:
            task_epochs = {t: chosen[MODEL] for t in self.tasks}
        else:  # a task without a selection split keeps the last epoch
            task_epochs = {t: chosen.get(t, last_epoch) for t in self.tasks}
        if last_epoch in set(task_epochs.values()) - set(self.best.epochs):  # the last epoch's, still in the model
            self._keep(last_epoch, set(task_epochs.values()))
        self.weights = {e: self.best.weights(e) for e in set(task_epochs.values())}
        return task_epochs, chosen[MODEL] if self.scope == MODEL else None, True

    def best_score(self) -> float | None:
        best = self.selector.best.get(MODEL)
        return best.score if best is not None and math.isfinite(best.score) else None

    def load(self, model: torch.nn.Module, epoch: int) -> None:
        """Put the chosen weights of `epoch` into `model`."""
        checkpoint.load_trainable(model, self.weights[epoch])


class RuleTests(Callback):
    """The test metric of every task at the epoch each selection rule picks for it (`selection.RULES`: model scope,
    task scope, last), so the selection gap is measured, not assumed (issue 25.4).

    Exact at the cost of test evaluations, not of weights: after an epoch becomes a rule's choice for a task (the
    selector's model-scope best, the task's own best in a multi-task job) and after the last epoch, that task's
    primary metric is computed on the test split with the weights the model holds then, the very weights a kept
    copy would give back. Keeping every rule's weights instead would hold up to tasks + 1 copies of the trainable
    weights in host memory and in last.pt. The cost per task is one primary-metric pass over its test split per
    epoch that improved one of its rules, plus the last; the log gives the seconds. The numbers are only recorded
    (metrics.json `selection.rules`): no choice reads them, and they stay out of the history. Nothing is measured
    without a selection split (no epoch is ranked). Their values ride in last.pt ("rule_tests"), so a resumed job
    ends with the same record.
    """

    def __init__(self, tasks: list[TaskSpec], test: dict[str, EvalSet], training: TrainingSpec) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.test = {t: s for t, s in test.items() if len(s.tensors) > 0}
        self.training = training
        self.values: dict[str, dict[int, float | None]] = {}  # task -> epoch -> its primary metric on the test split
        self.passes = 0  # task test passes this fit (the log)
        self.seconds = 0.0

    def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """After Selection scored the epoch: test the tasks for which this epoch became a rule's choice."""
        if not trainer.select:
            return
        epoch = entry["epoch"]
        improved = trainer.selection.improved
        need = set(self.tasks) if MODEL in improved or epoch == self.training.epochs else set()
        if len(self.tasks) > 1:  # one task: task scope is model scope (Selection's own rule)
            need |= improved & set(self.tasks)
        t0 = time.perf_counter()
        for t in sorted(need & set(self.test)):
            es = self.test[t]
            p = predict(trainer.model, es.tensors, trainer.compute, self.training.eval_batch_size)
            value = score(es, p.preds, None, [es.task.metric or ""]).get(es.task.metric or "")
            self.values.setdefault(t, {})[epoch] = value if value is not None and math.isfinite(value) else None
            self.passes += 1
        self.seconds += time.perf_counter() - t0
        self._forget(trainer.selection.selector, epoch)

    def _forget(self, selector: Selector, epoch: int) -> None:
        """Keep only the epochs some rule still picks (and this one, which may be the last)."""
        for t, by_epoch in self.values.items():
            keep = set(rule_epochs(selector, t, len(self.tasks) > 1, epoch).values())
            for e in [e for e in by_epoch if e not in keep]:
                del by_epoch[e]

    def record(self, selector: Selector, last_epoch: int) -> dict[str, Any]:
        """metrics.json `selection.rules`: task -> its primary metric and, per rule, the epoch and its test value."""
        out: dict[str, Any] = {}
        for t, spec in self.tasks.items():
            epochs = rule_epochs(selector, t, len(self.tasks) > 1, last_epoch)
            by_epoch = self.values.get(t, {})
            out[t] = {"metric": spec.metric} | {
                r: {"epoch": e, "test": None if e is None else by_epoch.get(e)} for r in RULES for e in [epochs[r]]
            }
        return out

    def log_cost(self, train_seconds: float) -> None:
        share = f", {100 * self.seconds / train_seconds:.1f} % of training" if train_seconds > 0 else ""
        log.info("selection gap: %d test pass(es) at the rules' epochs, %.2f s%s", self.passes, self.seconds, share)

    def state_dict(self) -> dict[str, Any]:
        """last.pt's "rule_tests" once something was tested (a job without a selection split adds nothing)."""
        return {"rule_tests": {t: dict(v) for t, v in self.values.items()}} if self.values else {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("rule_tests") or {}  # a last.pt from before: the epochs it tested are unknown
        self.values = {str(t): {int(e): v for e, v in by.items()} for t, by in stored.items()}
