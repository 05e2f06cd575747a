"""`usagg advise`: the paradigm each task should get, predicted from what the study measured, and how often it is right.

The model, stated in every output: for each compared paradigm p that trains tasks together
(its registered scope is not "task" and it is not a control: CG, AU, AG, ...), a ridge regression across tasks of the
task's measured Δ_p versus TS (usagg/analysis/delta.py: seeds averaged per task, then Δ on the
study's analysis.scale, at the largest fraction the study ran with TS) on
  - log10 n_train,
  - the task type (one column per type),
  - the mean affinity onto the task from its group mates under p, and from the task to them
    (usagg/affinity.py; a task's group mates are the tasks sharing its job_id under p at p's
    largest fraction, usagg/analysis/inputs.py `paradigm_groups`), where the study measured it.
Features are standardised on the tasks fitted, the intercept is not penalised and the
penalty is fixed (RIDGE_PENALTY), so nothing is tuned on the tasks it is judged on.

Predictions are bounded to what the metric allows (usagg/tasktypes: `metric_bounds`), on the
scale's formula (usagg/analysis/scales.py) at the task's measured TS mean: each end is the Δ of
the metric at one of its bounds. For a metric in [0, 1] with TS at m: relative [−100, (1/m − 1)·100] %;
log_ratio (−∞, −100·ln m] (ln 0 is −∞: no lower bound); headroom [−m/D·100, 100], D the headroom
(from chance at most: an AUC's lower end is below −100). An end the metric does not bound is
infinite (a lower-is-better error in [0, ∞) has no lowest Δ on any scale).

Advice for a task of the study: its own measurement first, where that decides (`decide`). Its intervals of
Δ (usagg/analysis/uncertainty.py `seed_interval`: Welch t over seeds, with the test set's variance of the
seed-mean Δ added, from a paired bootstrap over every seed where the jobs scored their test images, as a test
set of a few dozen images moves Δ more than the seeds do) at 1 − 2·0.05/k two-sided for the k paradigms
modelled, so each bound is one-sided at 0.05/k (Bonferroni: advising a paradigm no better than TS, or TS where
one is better, has a nominal probability of at most 5 % per task): the highest measured paradigm whose interval
lies above 0 is advised (others above 0, and a higher measured one whose interval covers 0, are named; which is
best among them is untested), TS where every interval lies below 0. Otherwise (an interval covers 0, one seed of
every paradigm or of TS: training noise unmeasured, or no spread measured) the advice is the prediction below,
which is also what a task new to the study gets, never a paradigm whose interval lies below 0 for that task.
A task whose TS is at chance, or whose TS value gives no Δ on the scale (a DSC of 0), is not advised on.

Predicted advice: the paradigm with the highest predicted Δ, TS's Δ being 0 by definition; its
uncertainty is the root-mean-square leave-one-task-out (LOTO) error of that paradigm's model.
Accuracy, reported beside the advice, held out two ways: each task in turn (LOTO), and each
clinical group in turn (leave-one-group-out, LOGO: tasks trained in one model are not
independent units, so LOTO flatters a model that learns a group from its mates). Every model is
refitted on the rest and the held-out tasks advised; a hit is the best measured paradigm. The
trivial rules are scored the same way: always TS, always each modelled paradigm, the majority
(the paradigm best most often in the training folds) and the highest mean Δ in the training
folds. The model beats the trivial rules when it has more hits than every rule under every
scheme; when it does not, the advice says so first and is the best rule (most LOGO hits,
LOTO where there is one group), the model's predictions shown beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.analysis.delta import SEED_ORDER, Comparison, compare
from usagg.analysis.inputs import AnalysisInput, paradigm_groups
from usagg.analysis.results import ResultsTable
from usagg.analysis.scales import FORMULAS, UNITS
from usagg.analysis.stats import Stat
from usagg.analysis.tables import Cellv, Table, ci_end, frac_label, ordered_tasks
from usagg.analysis.uncertainty import seed_interval, test_set_variances, widest
from usagg.errors import UsaggError
from usagg.paradigms import PARADIGMS
from usagg.tasktypes import metric_bounds
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.affinity import Affinity
    from usagg.analysis.summary import Analysis

#: The paradigm every Δ is measured against; its own Δ is 0.
BASELINE = "TS"
#: Ridge penalty on the standardised features: fixed, never tuned on the tasks the model is judged on.
RIDGE_PENALTY = 1.0
#: Tasks with a TS result the advice needs: a model across tasks, checked by leaving one out.
MIN_TASKS = 4
#: Tasks with a measured Δ a paradigm needs to be modelled (two left to fit on when one is held out).
MIN_FIT = 3
#: The two ways advice is held out: one task at a time, one clinical group at a time.
LOTO, LOGO = "leave-one-task-out", "leave-one-group-out"
#: At most this many tasks, or clinical groups, to check the advice on: one task decides between the model and
#: the rules, and the report says so.
FEW_TASKS, FEW_GROUPS = 5, 2
#: A task's measured decision errs at most this often (nominally): each of its k paradigms' bounds one-sided at ALPHA/k.
DECISION_ALPHA = 0.05
#: Where a task's advice comes from: its own measurement, the model, or the trivial rule the model does not beat.
MEASUREMENT, MODEL, RULE = "measurement", "model", "rule"
#: A task's evidence where one seed (of every paradigm, or of TS) leaves its training noise unmeasured.
ONE_SEED, BASELINE_ONE_SEED = "one seed", f"{BASELINE} one seed"


def noise_unmeasured(evidence: str) -> bool:
    """Whether a task's own measurement is silent because one seed, of TS or of every paradigm, measured no spread."""
    return evidence in (ONE_SEED, BASELINE_ONE_SEED)


def one_seed_reason(rows: list[AdviceRow]) -> str:
    """Why one seed silenced these tasks' own measurements: TS's one seed where only it has one (its other seeds
    failed or were not imported), else one seed of every paradigm."""
    if all(r.evidence == BASELINE_ONE_SEED for r in rows):
        return f"{BASELINE} has one seed where the other paradigms have more, so its training noise is unmeasured"
    return "one seed leaves training noise unmeasured"


def one_seed_text(rows: list[AdviceRow]) -> str:
    """`one_seed_reason` and what to run: TS's own seeds where only it has one ("with two or more seeds" read as
    nonsense beside three), else two or more seeds."""
    if all(r.evidence == BASELINE_ONE_SEED for r in rows):
        return (
            f"{one_seed_reason(rows)} (its other seeds failed or were not imported); with {BASELINE} on two or more "
            "seeds (`usagg run --retry-failed`, or its seeds in the table) a task's own Δ decides where its interval "
            "does"
        )
    return f"{one_seed_reason(rows)}; with two or more seeds a task's own Δ decides where its interval does"


class CannotAdvise(UsaggError):
    """The study's results cannot support advice (too few tasks, no TS baseline, no paradigm besides TS)."""


@dataclass(frozen=True)
class AdviceRow:
    """One task's advice, the measured Δs it is judged against and its held-out advice."""

    task: str
    group: str
    type: str
    n_train: float | None
    advised: str  # the model's advice, or the best trivial rule's when the model does not beat it
    predicted: float  # the model's Δ % for the advised paradigm (0 for TS)
    sd: float | None  # LOTO root-mean-square error of the advised paradigm's model (None for TS: its Δ is 0)
    predicted_by: dict[str, float]  # paradigm -> predicted Δ % (TS 0), within `bounds`
    measured: dict[str, float | None]  # paradigm -> measured Δ % (TS 0; None: not measured)
    best_measured: str | None  # None when some paradigm's Δ was not measured for the task
    model_advised: str  # the paradigm with the highest predicted Δ
    loto_advised: str
    loto_predicted: dict[str, float]  # paradigm -> Δ % predicted with this task held out (TS 0)
    logo_advised: str | None  # the advice with the task's clinical group held out; None with one group
    bounds: tuple[float, float]  # the Δ % the task's metric allows
    decided_by: str  # MEASUREMENT, MODEL or RULE
    intervals: dict[str, tuple[float, float] | None]  # paradigm -> interval of Δ at the decision level
    evidence: str  # what the task's own measurement says, in a few words

    @property
    def loto_hit(self) -> bool | None:
        return None if self.best_measured is None else self.loto_advised == self.best_measured

    @property
    def logo_hit(self) -> bool | None:
        return (
            None if self.best_measured is None or self.logo_advised is None else self.logo_advised == self.best_measured
        )


@dataclass(frozen=True)
class Decision:
    """What a task's own measurement decides (`decide`): a paradigm, or None where it leaves it open, and in a few words
    why."""

    choice: str | None
    intervals: dict[str, tuple[float, float] | None]
    evidence: str
    losses: tuple[str, ...] = ()  # paradigms whose interval lies below 0: never advised for the task
    test_set: bool = False  # whether the test set's variance is in an interval


@dataclass(frozen=True)
class Rule:
    """A trivial rule the model must beat: what it advises on every task, and its held-out hits per scheme."""

    name: str  # "always TS", "majority", "highest mean Δ"
    advised: str  # fitted on every task
    hits: dict[str, int]  # LOTO / LOGO -> held-out tasks advised their best measured paradigm
    regret: dict[str, float] = field(default_factory=dict)  # LOTO / LOGO -> mean held-out `_regret`


@dataclass
class Advice:
    """Per-task advice with the model's description, its held-out accuracy and the trivial rules beside it."""

    study: str
    fraction: float
    seeds: list[int]
    paradigms: list[str]  # the choices, TS first
    rows: list[AdviceRow]
    features: dict[str, list[str]]  # modelled paradigm -> its features
    rmse: dict[str, float]  # modelled paradigm -> LOTO root-mean-square error of its predicted Δ
    hits: dict[str, int]  # LOTO / LOGO -> tasks whose held-out advice is their best measured paradigm (LOGO: ≥2 groups)
    regret: dict[str, float]  # LOTO / LOGO -> mean held-out `_regret` of the model's advice
    n: int  # tasks with every paradigm measured (the hit share's denominator)
    mae: float  # mean |LOTO predicted Δ − measured Δ| over every measured (task, paradigm)
    n_errors: int
    constant_mae: float  # the same for each paradigm's mean Δ over the other tasks
    rules: list[Rule]
    notes: list[str]
    level: float  # the two-sided level of the intervals a task's own measurement decides by
    test_set: bool  # whether the test set's bootstrap variance is in some task's intervals

    @property
    def measured(self) -> list[AdviceRow]:
        """The tasks whose own measurement decides their advice."""
        return [r for r in self.rows if r.decided_by == MEASUREMENT]

    def measured_text(self) -> str:
        """How many tasks their own measurement decides, and on what intervals: said right after the verdict."""
        k = len(self.paradigms) - 1
        test = ", the test set's bootstrap variance added," if self.test_set else ""
        how = (
            f"Welch t intervals of Δ over seeds{test} at {100 * self.level:.1f} % two-sided, each bound one-sided at "
            f"{100 * DECISION_ALPHA / k:.3g} % (Bonferroni over the {counted(k, 'paradigm')} besides {BASELINE}: a "
            f"nominal probability of advising a paradigm no better than {BASELINE}, or {BASELINE} where one is better, "
            f"at most {100 * DECISION_ALPHA:.0f} % per task, not across tasks)"
        )
        decided = self.measured
        given = f"the {'model' if self.beats_trivial else 'rule'}'s advice"
        if not decided and all(noise_unmeasured(r.evidence) for r in self.rows):
            return (
                f"One seed: no task's own measurement can decide its advice, so every task gets {given}: "
                f"{one_seed_text(self.rows)}."
            )
        if not decided:
            return (
                f"No task's own measurement decides its advice ({how}: no paradigm's interval lies "
                f"above 0, nor every interval below), so every task gets {given}, never a paradigm measured below 0 "
                "for it."
            )
        names = ", ".join(f"{r.task} → {r.advised}" for r in decided)
        open_ = len(self.rows) - len(decided)
        rest = (
            f"The other {open_} get {given}, as a task new to the study would, never a paradigm whose interval lies "
            "below 0 for them."
            if open_
            else "The prediction below is what a task new to the study would get."
        )
        return (
            f"Measured first: the study's own measurement decides the advice of {len(decided)} of "
            f"{counted(len(self.rows), 'task')}: {names}. The highest measured paradigm whose interval lies above 0 "
            f"is advised (others above 0, or measured higher but undecided, named: which is best among them is "
            f"untested), {BASELINE} where every interval lies below 0; {how}. {rest}"
        )

    @property
    def share(self) -> float:
        return self.hits[LOTO] / self.n if self.n else math.nan

    @property
    def primary(self) -> str:
        """The scheme the rules are ranked by: LOGO where the study has several groups, else LOTO."""
        return LOGO if LOGO in self.hits else LOTO

    def _rank(self, r: Rule) -> tuple[int, float]:
        """A rule's standing under `primary`: its held-out hits, then the lower held-out regret (a rule that misses by
        1 point beats one that misses by 18 at as many hits)."""
        regret = r.regret.get(self.primary, math.nan)
        return r.hits[self.primary], -(regret if math.isfinite(regret) else math.inf)

    @property
    def best_rule(self) -> Rule:
        """The trivial rule with the most held-out hits under `primary`, the lower held-out regret breaking a tie
        (the first listed where both tie)."""
        return max(self.rules, key=lambda r: (*self._rank(r), -self.rules.index(r)))

    @property
    def tied_rules(self) -> list[str]:
        """The rules that stand as the best one does, in hits and regret (itself included): more than one, and the
        held-out tasks prefer none of them."""
        top = self._rank(self.best_rule)
        return [r.name for r in self.rules if self._rank(r) == top]

    @property
    def regret_broke_tie(self) -> bool:
        """Rules tie on hits, and the held-out regret chose between them."""
        hits = self.best_rule.hits[self.primary]
        return sum(r.hits[self.primary] == hits for r in self.rules) > len(self.tied_rules)

    @property
    def default_tie(self) -> bool:
        """Rules tie that advise different paradigms: the first listed is then a default, not a finding."""
        tied = set(self.tied_rules)
        return len({r.advised for r in self.rules if r.name in tied}) > 1

    @property
    def beats_trivial(self) -> bool:
        """More held-out hits than every trivial rule under every scheme."""
        return self.n > 0 and all(h > max(r.hits[s] for r in self.rules) for s, h in self.hits.items())

    def verdict(self) -> str:
        """Whether the model beats the trivial rules, said before anything else."""
        n, best = self.n, self.best_rule
        if not n:
            return (
                f"No task has every paradigm measured, so the model cannot be checked against the trivial rules: "
                f"the predicted advice is the rule '{best.name}' ({best.advised} for every task its own measurement "
                "leaves open)."
            )
        scores = "; ".join(
            f"{s}: model {h}, best rule {max(r.hits[s] for r in self.rules)} of {n}" for s, h in self.hits.items()
        )
        if self.beats_trivial:
            return f"The model beats every trivial rule ({scores}): the predicted advice is the model's."
        tied = self.tied_rules
        if self.default_tie:  # the held-out tasks prefer none of them: the first listed is a default, not a finding
            return (
                f"The model does not beat the trivial rules ({scores}), and {len(tied)} rules tie at "
                f"{best.hits[self.primary]} {self.primary} hits and held-out regret ({', '.join(tied)}): the held-out "
                "tasks prefer none, "
                f"so the predicted advice is the first of them, '{best.name}' ({best.advised} for every task its "
                "own measurement leaves open), a default rather than a finding; the model's own advice, its "
                "predictions and each task's measured Δ are beside it."
            )
        why = f"the rule with the most {self.primary} hits"
        if self.regret_broke_tie:
            why += f", its held-out regret ({best.regret[self.primary]:.1f} points) the lowest of those tied on hits"
        if len(tied) > 1:
            why += f"; {len(tied)} rules tie there, all advising {best.advised}"
        return (
            f"The model does not beat the trivial rule '{best.name}' ({scores}): the predicted advice is that rule, "
            f"{best.advised} for every task its own measurement leaves open ({why}); the model's own advice and "
            "predictions are shown beside it."
        )

    def accuracy_text(self) -> str:
        """The accuracy line printed beside the advice."""
        if not self.n:
            hit = "no task has every paradigm measured, so no advice could be checked"
        else:
            hit = "; ".join(
                f"{s}: the model's advice is the best measured paradigm for {h} of {self.n} tasks "
                f"({100 * h / self.n:.0f} %)"
                for s, h in self.hits.items()
            )
        rules = ", ".join(f"{r.name} {'/'.join(str(r.hits[s]) for s in self.hits)}" for r in self.rules)
        costs = ", ".join(f"{r.name} {'/'.join(f'{r.regret[s]:.1f}' for s in self.hits)}" for r in self.rules)
        model = "/".join(f"{self.regret[s]:.1f}" for s in self.hits)
        return (
            f"Held-out accuracy: {hit}. Trivial rules ({'/'.join(self.hits)} hits): {rules}. Mean held-out regret (the "
            f"best measured Δ minus the advised paradigm's, points; 0 is always right, and a near miss costs little): "
            f"model {model}; {costs}. Mean absolute error of "
            f"the LOTO predicted Δ {self.mae:.1f} points ({self.n_errors} task–paradigm pairs; each paradigm's mean Δ "
            f"over the other tasks: {self.constant_mae:.1f})."
        )

    def to_json(self) -> dict[str, Any]:
        """Plain data for `--format json` (NaN as null)."""

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else v

        return {
            "study": self.study,
            "fraction": self.fraction,
            "seeds": self.seeds,
            "paradigms": self.paradigms,
            "beats_trivial": self.beats_trivial,
            "verdict": self.verdict(),
            "predicted_advice_by": "model" if self.beats_trivial else f"rule: {self.best_rule.name}",
            "measured_first": {
                "level": self.level,
                "test_set_variance": self.test_set,
                "tasks": [r.task for r in self.measured],
                "text": self.measured_text(),
            },
            "model": {
                "kind": "ridge regression per paradigm across tasks, standardised features, unpenalised intercept",
                "penalty": RIDGE_PENALTY,
                "features": self.features,
                "loto_rmse": {p: num(v) for p, v in self.rmse.items()},
            },
            "accuracy": {
                "schemes": list(self.hits),
                "hits": self.hits[LOTO],
                "logo_hits": self.hits.get(LOGO),
                "regret": {k: num(v) for k, v in self.regret.items()},
                "n": self.n,
                "share": num(self.share),
                "mae": num(self.mae),
                "n_errors": self.n_errors,
                "constant_mae": num(self.constant_mae),
                "text": self.accuracy_text(),
            },
            "rules": [
                {
                    "name": r.name,
                    "advised": r.advised,
                    "hits": r.hits,
                    "regret": {k: num(v) for k, v in r.regret.items()},
                }
                for r in self.rules
            ],
            "tasks": [
                {
                    "task": r.task,
                    "group": r.group,
                    "type": r.type,
                    "n_train": num(r.n_train),
                    "advised": r.advised,
                    "decided_by": r.decided_by,
                    "evidence": r.evidence,
                    "intervals": {p: None if ci is None else list(ci) for p, ci in r.intervals.items()},
                    "model_advised": r.model_advised,
                    "predicted_delta": r.predicted,
                    "sd": None if r.sd is None else num(r.sd),
                    "predicted_by": r.predicted_by,
                    "delta_bounds": [num(b) for b in r.bounds],
                    "measured": {p: num(v) for p, v in r.measured.items()},
                    "best_measured": r.best_measured,
                    "loto_advised": r.loto_advised,
                    "loto_predicted": r.loto_predicted,
                    "loto_hit": r.loto_hit,
                    "logo_advised": r.logo_advised,
                    "logo_hit": r.logo_hit,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }


def advise(a: Analysis) -> Advice:
    """Advice for every task of the analysed study; CannotAdvise with the reason when its results cannot support it."""
    _require_baseline(a.inp)
    if a.comp.baseline == BASELINE:  # the analysis' statistics hold the test-set bootstrap versus TS
        return _advise(a.inp, a.comp, a.stats)
    return _advise(a.inp, compare(a.inp, BASELINE))


def advise_input(inp: AnalysisInput) -> Advice:
    """`advise` straight from the input (`usagg advise`): Δ versus TS and the test-set bootstrap it decides with,
    without the statistics `analyse` adds (mixed model, cluster bootstrap), which advice does not use."""
    _require_baseline(inp)
    return _advise(inp, compare(inp, BASELINE))


def _require_baseline(inp: AnalysisInput) -> None:
    if BASELINE not in inp.table.paradigms:
        raise CannotAdvise(
            f"cannot advise on {inp.source}: the results have no {BASELINE} baseline (paradigms present: "
            f"{', '.join(inp.table.paradigms)}). Advice is the expected Δ of each paradigm versus {BASELINE}, so the "
            f"study must run {BASELINE}: add it to `paradigms` and run the study again."
        )


def _advise(inp: AnalysisInput, comp: Comparison, stats: list[Stat] | None = None) -> Advice:
    table, where = inp.table, inp.source
    fractions = [f for (f, _, p) in comp.cells if p == BASELINE]
    if not fractions:  # TS rows whose values are all missing (empty or nan): no result to advise from
        raise CannotAdvise(
            f"cannot advise on {where}: no {BASELINE} row has a value (every {BASELINE} value is empty or nan). "
            f"Advice is the expected Δ of each paradigm versus {BASELINE}, so it needs {BASELINE}'s results."
        )
    fraction = max(fractions)
    tasks = [t for t in ordered_tasks(comp) if (fraction, t, BASELINE) in comp.cells]
    if len(tasks) < MIN_TASKS:
        raise CannotAdvise(
            f"cannot advise on {where}: only {counted(len(tasks), 'task')} "
            f"({', '.join(tasks) or 'none'}) have a {BASELINE} result at fraction {frac_label(fraction)}. Advice "
            f"fits its model across tasks and checks it by leaving one task out, which needs at least {MIN_TASKS}."
        )
    notes: list[str] = []
    chance = [t for t in tasks if t in comp.chance.get(fraction, ())] if comp.chance_excluded else []
    if chance:  # as in every aggregate: a Δ against a baseline at chance says nothing about the paradigm
        tasks = [t for t in tasks if t not in chance]
        notes.append(
            f"Not advised on: {', '.join(chance)} ({BASELINE} at chance: a Δ against it says nothing about the "
            "paradigm, so the task is left out of the models and the rules, as of every aggregate; "
            "analysis.chance_tasks)."
        )
        if len(tasks) < MIN_TASKS:
            raise CannotAdvise(
                f"cannot advise on {where}: {counted(len(tasks), 'task')} left once the tasks whose {BASELINE} is at "
                f"chance ({', '.join(chance)}) are left out; advice needs at least {MIN_TASKS}."
            )
    undefined = _undefined_baselines(comp, fraction, tasks)
    if undefined:  # as at chance: no Δ of any paradigm, so nothing to learn from or check against
        tasks = [t for t in tasks if t not in undefined]
        notes.append(
            f"Not advised on: {'; '.join(f'{t} ({why})' for t, why in undefined.items())}: no paradigm has a Δ on "
            "this scale to learn from or to check against, so the task is left out of the models and the rules."
        )
        if len(tasks) < MIN_TASKS:
            raise CannotAdvise(
                f"cannot advise on {where}: {counted(len(tasks), 'task')} left once the tasks whose {BASELINE} gives "
                f"no Δ ({', '.join(undefined)}) are left out; advice needs at least {MIN_TASKS}."
            )
    missing = [t for t in ordered_tasks(comp) if t not in tasks and t not in chance and t not in undefined]
    if missing:  # a task whose TS value is empty or nan: no Δ to learn from, and no advice for it
        notes.append(
            f"Not advised on: {', '.join(missing)} (no {BASELINE} value at fraction {frac_label(fraction)}, so no Δ "
            "to learn from or to check against)."
        )
    choices, left_out = _choices(comp)
    if left_out:
        notes.append(
            f"Not advised: {', '.join(left_out)} (controls that split a Δ into its aggregation and MoE parts, or "
            "paradigms that train every task alone: no choice of which tasks train together)."
        )
    measured: dict[str, dict[str, float]] = {p: {} for p in choices}
    for p in choices:
        for t in tasks:
            d = comp.deltas.get((fraction, t, p))
            if d is not None and d.value is not None:
                measured[p][t] = d.value
    modelled = [p for p in choices if len(measured[p]) >= MIN_FIT]
    for p in choices:
        if p not in modelled:
            notes.append(f"{p} left out: fewer than {MIN_FIT} tasks have a measured Δ{p} at fraction {fraction:g}.")
    if not modelled:
        ran = ", ".join(choices) if choices else "none"
        raise CannotAdvise(
            f"cannot advise on {where}: no paradigm besides {BASELINE} that trains tasks together has Δs to learn "
            f"from (such paradigms with results: {ran}; each needs a Δ for at least {MIN_FIT} tasks at fraction "
            f"{frac_label(fraction)}). Run CG, AU or AG beside {BASELINE}."
        )
    no_n = [t for t in tasks if not math.isfinite(comp.n_train.get((fraction, t), math.nan))]
    if no_n:
        notes.append(f"log10 n_train left out of every model: the results give no n_train for {', '.join(no_n)}.")
    for p in modelled:
        mates = group_mates(table, p)
        alone = [t for t in tasks if t in mates and not mates[t]]
        if alone and len(alone) < len(tasks):
            notes.append(
                f"Under {p}, {', '.join(alone)} trained alone (a one-task group): their Δ{p} (own data, MoE as {p} "
                f"has it) is what choosing {p} gives them, so they are modelled like the others."
            )
    aff = inp.affinity
    features: dict[str, list[str]] = {}
    design: dict[str, np.ndarray] = {}
    for p in modelled:
        x, names, why = _design(comp, table, tasks, fraction, p, aff)
        design[p], features[p] = x, names
        if why:
            notes.append(why)
    seeds = sorted({r.seed for r in table.rows if r.fraction == fraction})
    level = decision_level(len(modelled))
    test_var = test_set_variances(inp, comp, fraction, stats)
    decisions = {t: decide(comp, fraction, t, modelled, level, test_var.get(t, {})) for t in tasks}
    adv = _fit_and_score(
        inp.study, comp, tasks, fraction, seeds, {p: measured[p] for p in modelled}, design, features, decisions
    )
    adv.notes = [*_method_notes(adv, comp, aff), *notes, *inp.notes]
    return adv


def _undefined_baselines(comp: Comparison, fraction: float, tasks: list[str]) -> dict[str, str]:
    """Task -> why, for each task whose TS value gives no Δ against it on the scale (a relative change from a DSC
    of 0 at every seed): every paradigm's Δ there is undefined, so advice would fall to a rule and name TS, the
    paradigm every other one measured above."""
    out = {}
    for t in tasks:
        base = comp.cells[(fraction, t, BASELINE)]
        d = comp.change(t, base.mean, base.mean)
        if d.value is None:
            seeds = counted(base.n_seeds, "seed")
            out[t] = f"{BASELINE}'s {comp.info(t).metric} is {base.mean:g} over {seeds}: {d.reason}"
    return out


def _method_notes(adv: Advice, comp: Comparison, aff: Affinity | None) -> list[str]:
    """What the advice rests on: the data it uses, the model, and where affinity came from."""
    out = [
        adv.verdict(),
        adv.measured_text(),
        *_caveats(adv, comp),
        f"Δ versus {BASELINE}: {SEED_ORDER} (seeds {', '.join(map(str, adv.seeds))}), at fraction "
        f"{frac_label(adv.fraction)}, the largest the study ran {BASELINE} at"
        + (f" (of {', '.join(frac_label(f) for f in comp.fractions)})" if len(comp.fractions) > 1 else "")
        + f"; {BASELINE}'s Δ is 0 by definition.",
        f"Model per paradigm: ridge regression across tasks of the measured Δ (features standardised on the tasks "
        f"fitted, intercept unpenalised, fixed penalty {RIDGE_PENALTY:g}); "
        + "; ".join(f"{p}: {', '.join(names) or 'intercept only'}" for p, names in adv.features.items())
        + " (a feature constant across tasks is left out)"
        + ".",
        f"Predicted Δ bounded to what each task's metric allows on analysis.scale {comp.scale} "
        f"({FORMULAS[comp.scale]}): each end is that Δ at one of the metric's bounds, none where the metric has "
        "none or the formula none there (log_ratio at 0).",
        f"Model advice: the paradigm with the highest predicted Δ ({BASELINE} on a tie); sd: the root-mean-square "
        f"leave-one-task-out error of that paradigm's model ({BASELINE}: —, its Δ is 0 by definition; how often "
        f"advising it is right is the rules' hit count). The advice is fitted on every task; "
        "the accuracy holds each task out in turn, then each clinical group (tasks of a group share models, so "
        "they are not independent units). Trivial rules scored the same way: always "
        + ", always ".join(adv.paradigms)
        + ", the majority (the paradigm best most often in the training folds) and the highest mean Δ in the "
        "training folds.",
        adv.accuracy_text(),
    ]
    if aff is None:
        out.append(
            "No affinity measured for this study (no affinity.json of an affinity-measuring job in the run store, "
            "or a --results table without one): the models use log10 n_train and task type only, where they vary."
        )
    else:
        out.append(
            f"Affinity: the lookahead affinity of {aff.job_id or 'the measuring jobs'} (usagg/affinity.py), "
            "averaged over its seeds, onto a task from its group mates under each paradigm and from it to them."
        )
    return out


def _caveats(adv: Advice, comp: Comparison) -> list[str]:
    """What a reader must weigh against the advice: too few tasks to rank the model against the rules, and tasks
    whose own measurement went against their advice."""
    out = []
    groups = {r.group for r in adv.rows}
    if adv.n <= FEW_TASKS or len(groups) <= FEW_GROUPS:
        out.append(
            f"Few cases: the model and the rules are compared on {counted(adv.n, 'task')} in "
            f"{counted(len(groups), 'clinical group')}, so one task decides between them: treat the predicted advice "
            "as a hypothesis for the next study, not a finding of this one (a task decided by its own measurement "
            "is that task's finding)."
        )
    rows = [r for r in adv.rows if r.decided_by != MEASUREMENT and r.best_measured not in (None, r.advised)]
    if rows:
        why = (
            one_seed_reason(rows)
            if all(noise_unmeasured(r.evidence) for r in rows)
            else f"the task's own measurement does not decide at the level used ({100 * adv.level:.1f} % intervals)"
        )
        out.append(
            f"The advice is not the best measured paradigm for {', '.join(_not_best(r) for r in rows)}: {why}, so "
            "the advice is what the other tasks predict for it; its measured Δ (and interval) is the direct evidence "
            f"(Δ in {UNITS[comp.scale]})."
        )
    return out


def _not_best(r: AdviceRow) -> str:
    """A task advised other than its best measured paradigm, in words: the measured Δ and interval of the paradigm
    that is not TS (the best measured one, or the advised one where TS measured best)."""
    p = r.advised if r.best_measured in (None, BASELINE) else r.best_measured
    m = r.measured.get(p)
    measured = f"Δ{p} {'n/a' if m is None else f'{m:+.1f}'} {_interval_text(r.intervals.get(p))}"
    if r.best_measured == BASELINE:
        return f"{r.task} (advised {r.advised}, {measured}; best measured {BASELINE})"
    return f"{r.task} (advised {r.advised}; best measured {measured})"


def _interval_text(ci: tuple[float, float] | None) -> str:
    """An interval of the advice's level in words ('no interval' without one)."""
    return "no interval" if ci is None else f"[{ci_end(ci[0])}, {ci_end(ci[1])}]"


def decision_level(k: int) -> float:
    """The two-sided level of each of a task's k intervals whose bounds are one-sided tests at DECISION_ALPHA / k, so
    that its decision errs at most DECISION_ALPHA of the time, nominally (Bonferroni)."""
    return 1 - 2 * DECISION_ALPHA / k


def decide(
    comp: Comparison, fraction: float, task: str, paradigms: list[str], level: float, test_var: dict[str, float]
) -> Decision:
    """What the task's own measurement decides: the highest measured paradigm whose interval of Δ at `level` lies
    above 0 (a gain on TS beyond the noise, even where another measured higher undecided); TS, where every
    paradigm's lies below 0; else nothing (an interval covers 0, one seed of TS or of every paradigm, no spread).
    `test_var`: paradigm -> the test set's variance of its seed-mean Δ, added to the seeds'."""
    stats = {p: seed_interval(comp, fraction, task, p, level, test_var.get(p, 0.0)) for p in paradigms}
    # an interval of no width measured no spread (every seed alike): it decides nothing
    ci = {p: st.ci if st is not None and st.ci is not None and st.ci[0] < st.ci[1] else None for p, st in stats.items()}
    for p in test_var:  # never narrower than the seeds' own interval (Welch's df can grow with the added variance)
        own = ci.get(p)
        seeds = seed_interval(comp, fraction, task, p, level) if own is not None else None
        if own is not None and seeds is not None and seeds.ci is not None:
            ci[p] = widest(own, seeds.ci)
    value = {p: st.value for p, st in stats.items() if st is not None and st.value is not None}
    used = any(p in test_var for p, c in ci.items() if c is not None)
    gains = [p for p in paradigms if (c := ci[p]) is not None and c[0] > 0]
    losses = tuple(p for p in paradigms if (c := ci[p]) is not None and c[1] < 0)
    if gains:  # a gain over TS beyond the noise: the highest measured of those
        best = max(gains, key=lambda p: (value[p], -paradigms.index(p)))
        lo, hi = ci[best] or (math.nan, math.nan)
        also = [p for p in gains if p != best]
        higher = [p for p in paradigms if p in value and value[p] > value[best]]
        evidence = f"Δ{best} {value[best]:+.1f} [{ci_end(lo)}, {ci_end(hi)}]" + (
            f"; {'/'.join(also)} also > 0" if also else ""
        )
        evidence += f"; {'/'.join(higher)} measured higher, undecided" if higher else ""
        return Decision(best, ci, evidence, losses, used)
    if len(losses) == len(paradigms):
        return Decision(BASELINE, ci, "every Δ's interval < 0", losses, used)
    if not any(c is not None for c in ci.values()):
        return Decision(None, ci, _no_interval_reason(comp, fraction, task, paradigms), losses, used)
    cover = [p for p in paradigms if ci[p] is not None and p not in losses]
    parts = [f"Δ{'/'.join(losses)} < 0"] if losses else []
    parts += [f"{'/'.join(cover)} cover{'s' if len(cover) == 1 else ''} 0"] if cover else []
    parts += [f"{p}: no interval" for p in paradigms if ci[p] is None]
    return Decision(None, ci, "; ".join(parts), losses, used)


def _no_interval_reason(comp: Comparison, fraction: float, task: str, paradigms: list[str]) -> str:
    """Why no paradigm of the task has an interval: no Δ at all, one seed of every paradigm, one seed of TS (its
    training noise is as unmeasured as theirs), or seeds that all agree."""
    seeds = [len(comp.seed_deltas(fraction, task, p)) for p in paradigms]
    if not any(seeds):
        return "no Δ measured"
    if all(n < 2 for n in seeds):
        return ONE_SEED
    base = comp.cells.get((fraction, task, BASELINE))
    return BASELINE_ONE_SEED if base is not None and base.n_seeds < 2 else "no spread measured"


def _choices(comp: Comparison) -> tuple[list[str], list[str]]:
    """The paradigms advice chooses between besides TS (compared, scope not "task", not a control such as TSM or
    AUD), and those left out."""
    choices: list[str] = []
    left_out: list[str] = []
    for p in comp.paradigms:
        if p == BASELINE:
            continue
        entry = PARADIGMS.get(p)
        if entry is not None and not entry.compared:
            continue
        out = entry is not None and (entry.scope == "task" or entry.control)
        (left_out if out else choices).append(p)
    return choices, left_out


def group_mates(table: ResultsTable, paradigm: str) -> dict[str, set[str]]:
    """Task -> the tasks it trained with under `paradigm` (the jobs of usagg/analysis/inputs.py `paradigm_groups`:
    tasks sharing a job_id at the largest fraction); {} when the paradigm's rows name no job."""
    mates: dict[str, set[str]] = {}
    for members in paradigm_groups(table, paradigm, table.tasks).values():
        for t in members:
            mates[t] = set(members) - {t}
    return mates


def _design(
    comp: Comparison, table: ResultsTable, tasks: list[str], fraction: float, paradigm: str, aff: Affinity | None
) -> tuple[np.ndarray, list[str], str]:
    """The feature matrix of `paradigm`'s model (one row per task), its column names, and why a feature is missing."""
    cols: list[list[float]] = []
    names: list[str] = []
    why = ""
    n = [comp.n_train.get((fraction, t), math.nan) for t in tasks]
    if all(math.isfinite(v) for v in n):
        cols.append([math.log10(max(v, 1.0)) for v in n])
        names.append("log10 n_train")
    types = sorted({comp.info(t).type for t in tasks})
    for ty in types:
        cols.append([1.0 if comp.info(t).type == ty else 0.0 for t in tasks])
        names.append(f"type {ty}")
    if aff is not None:
        mates = group_mates(table, paradigm)
        if not mates:
            why = f"{paradigm}: its rows name no job_id, so its groups and their affinity are unknown; not used."
        else:
            needed = set(tasks).union(*(mates.get(t, set()) for t in tasks))
            missing = sorted(needed - set(aff.tasks))
            if missing:
                why = (
                    f"{paradigm}: the affinity was measured on {', '.join(aff.tasks)}, not on {', '.join(missing)}; "
                    "affinity not used."
                )
            else:
                cols.append([aff.onto(t, sorted(mates.get(t, ()))) for t in tasks])
                cols.append([aff.out_of(t, sorted(mates.get(t, ()))) for t in tasks])
                names += [f"affinity onto the task from its {paradigm} group", "affinity from the task to that group"]
    varying = [i for i, c in enumerate(cols) if max(c) - min(c) > 1e-12]  # a constant feature says nothing
    x = np.asarray([cols[i] for i in varying], dtype=float).reshape(len(varying), len(tasks)).T
    return x, [names[i] for i in varying], why


def ridge_predict(
    x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, penalty: float = RIDGE_PENALTY
) -> np.ndarray:
    """Ridge regression fitted on (x_fit, y_fit), predicting x_new: features standardised on x_fit (constant ones
    dropped), intercept the mean of y_fit and unpenalised."""
    mu, sd = x_fit.mean(axis=0), x_fit.std(axis=0)
    keep = sd > 1e-12
    z = (x_fit[:, keep] - mu[keep]) / sd[keep]
    y0 = float(y_fit.mean())
    coef = np.linalg.solve(z.T @ z + penalty * np.eye(z.shape[1]), z.T @ (y_fit - y0))
    return y0 + ((x_new[:, keep] - mu[keep]) / sd[keep]) @ coef


def _argmax(pred: dict[str, float]) -> str:
    """The paradigm with the highest Δ; TS (listed first) wins a tie, as training alone costs least. NaN (no model
    for that fold) is never chosen."""
    best = BASELINE
    for p, v in pred.items():
        if v > pred[best]:
            best = p
    return best


def delta_bounds(comp: Comparison, fraction: float, task: str) -> tuple[float, float]:
    """The Δ the task's primary metric allows against its measured TS mean, on the comparison's scale.

    Every scale's Δ rises with the metric where higher is better and falls where lower is, so its
    ends are the Δ at the metric's bounds (metric_bounds of the registry); an end is infinite where
    the metric has no bound or the scale's Δ is undefined at it (log_ratio at 0: ln 0 = −∞).
    """
    info = comp.info(task)
    base = comp.cells[(fraction, task, BASELINE)].mean
    ends = [comp.change(task, v, base).value if v is not None else None for v in metric_bounds(info.metric)]
    if not info.higher_is_better:  # a lower value is a gain: the metric's upper end is the lowest Δ
        ends.reverse()
    low, high = (e if e is not None else s * math.inf for e, s in zip(ends, (-1, 1), strict=True))
    return low, high


def _folds(tasks: list[str], comp: Comparison) -> dict[str, list[list[str]]]:
    """LOTO: one task per fold; LOGO: one clinical group per fold, where there are at least two groups."""
    out = {LOTO: [[t] for t in tasks]}
    groups: dict[str, list[str]] = {}
    for t in tasks:
        groups.setdefault(comp.info(t).group, []).append(t)
    if len(groups) > 1:
        out[LOGO] = list(groups.values())
    return out


def _predict(
    x: np.ndarray,
    y: dict[str, float],
    tasks: list[str],
    fit: list[str],
    new: list[str],
    bounds: dict[str, tuple[float, float]],
) -> dict[str, float]:
    """The `new` tasks predicted by the model fitted on the measured `fit` tasks (NaN when none), bounded."""
    if not fit:
        return {t: math.nan for t in new}
    idx = {t: i for i, t in enumerate(tasks)}
    pred = ridge_predict(x[[idx[t] for t in fit]], np.asarray([y[t] for t in fit]), x[[idx[t] for t in new]])
    return {t: float(np.clip(v, *bounds[t])) for t, v in zip(new, pred, strict=True)}


def _held_out(
    x: np.ndarray, y: dict[str, float], tasks: list[str], folds: list[list[str]], bounds: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Each fold's tasks predicted by the model fitted on the measured tasks outside it."""
    out: dict[str, float] = {}
    for fold in folds:
        out |= _predict(x, y, tasks, [t for t in tasks if t in y and t not in fold], fold, bounds)
    return out


def _rules(
    folds: dict[str, list[list[str]]], best: dict[str, str | None], measured: dict[str, dict[str, float]]
) -> list[Rule]:
    """Always TS, always each modelled paradigm, the majority and the highest mean Δ, each held out like the model."""
    choices = [BASELINE, *measured]

    def majority(train: list[str]) -> str:
        counts = [sum(best[t] == p for t in train) for p in choices]
        return choices[counts.index(max(counts))]  # the first listed on a tie (TS first)

    def highest_mean(train: list[str]) -> str:
        means = {p: float(np.mean([v for t, v in measured[p].items() if t in train] or [math.nan])) for p in measured}
        return _argmax({BASELINE: 0.0, **means})

    fitted: dict[str, Any] = {f"always {p}": (lambda _t, p=p: p) for p in choices}
    fitted |= {"majority": majority, "highest mean Δ": highest_mean}
    everything = [t for t in best if best[t] is not None]
    rules = []
    for name, rule in fitted.items():
        advised: dict[str, dict[str, str]] = {}
        for scheme, fs in folds.items():
            advised[scheme] = {}
            for fold in fs:
                advice = rule([t for t in everything if t not in fold])
                advised[scheme] |= dict.fromkeys(fold, advice)
        hits = {s: sum(best[t] == a[t] for t in everything) for s, a in advised.items()}
        regret = {s: _regret(a, best, measured) for s, a in advised.items()}
        rules.append(Rule(name, rule(list(best)), hits, regret))
    return rules


def _regret(advised: dict[str, str], best: dict[str, str | None], measured: dict[str, dict[str, float]]) -> float:
    """Mean over the tasks with every paradigm measured of the best measured Δ minus the advised paradigm's (TS 0):
    what following the advice cost in points, where a hit or miss alone counts a +0.7 win over TS's noise like a
    +15 one."""

    def delta(t: str, p: str) -> float:
        return 0.0 if p == BASELINE else measured[p][t]

    costs = [delta(t, b) - delta(t, advised[t]) for t, b in best.items() if b is not None]
    return float(np.mean(costs)) if costs else math.nan


def _fit_and_score(
    study: str,
    comp: Comparison,
    tasks: list[str],
    fraction: float,
    seeds: list[int],
    measured: dict[str, dict[str, float]],
    design: dict[str, np.ndarray],
    features: dict[str, list[str]],
    decisions: dict[str, Decision],
) -> Advice:
    """Full-data predictions (the model's advice), held-out predictions by task and by group (its accuracy), and the
    trivial rules scored the same way; `measured`: paradigm -> task -> Δ, only the tasks with one."""
    modelled = list(measured)
    bounds = {t: delta_bounds(comp, fraction, t) for t in tasks}
    folds = _folds(tasks, comp)
    full = {p: _predict(design[p], measured[p], tasks, [t for t in tasks if t in measured[p]], tasks, bounds)
            for p in modelled}  # fmt: skip
    held = {s: {p: _held_out(design[p], measured[p], tasks, fs, bounds) for p in modelled} for s, fs in folds.items()}
    rmse, errors, const_errors = {}, [], []
    for p in modelled:
        res = [held[LOTO][p][t] - v for t, v in measured[p].items()]
        rmse[p] = float(np.sqrt(np.mean(np.square(res))))
        errors += [abs(r) for r in res]
        const_errors += [
            abs(np.mean([w for u, w in measured[p].items() if u != t]) - v) for t, v in measured[p].items()
        ]
    best: dict[str, str | None] = {}
    for t in tasks:
        complete = all(t in measured[p] for p in modelled)
        best[t] = _argmax({BASELINE: 0.0, **{p: measured[p][t] for p in modelled}}) if complete else None
    rules = _rules(folds, best, measured)
    advised_by = {s: {t: _argmax({BASELINE: 0.0, **{p: held[s][p][t] for p in modelled}}) for t in tasks} for s in held}
    hits = {s: sum(best[t] is not None and a[t] == best[t] for t in tasks) for s, a in advised_by.items()}
    regret = {s: _regret(a, best, measured) for s, a in advised_by.items()}
    adv = Advice(
        study=study, fraction=fraction, seeds=seeds, paradigms=[BASELINE, *modelled], rows=[], features=features,
        rmse=rmse, hits=hits, regret=regret, n=sum(b is not None for b in best.values()), mae=float(np.mean(errors)),
        n_errors=len(errors), constant_mae=float(np.mean(const_errors)), rules=rules, notes=[],
        level=decision_level(len(modelled)), test_set=any(d.test_set for d in decisions.values()),
    )  # fmt: skip
    rule = None if adv.beats_trivial else adv.best_rule.advised
    for t in tasks:
        pred = {BASELINE: 0.0, **{p: full[p][t] for p in modelled}}
        model = _argmax(pred)
        own = decisions[t]
        if own.choice:
            advised = own.choice
        elif rule:  # a paradigm the task's own measurement puts below 0 is never advised for it
            advised = BASELINE if rule in own.losses else rule
        else:
            advised = _argmax({p: v for p, v in pred.items() if p not in own.losses})
        info = comp.info(t)
        adv.rows.append(
            AdviceRow(
                task=t,
                group=info.group,
                type=info.type,
                n_train=comp.n_train.get((fraction, t)),
                advised=advised,
                predicted=pred[advised],
                sd=rmse.get(advised),
                predicted_by=pred,
                measured={BASELINE: 0.0, **{p: measured[p].get(t) for p in modelled}},
                best_measured=best[t],
                model_advised=model,
                loto_advised=advised_by[LOTO][t],
                loto_predicted={BASELINE: 0.0, **{p: held[LOTO][p][t] for p in modelled}},
                logo_advised=advised_by[LOGO][t] if LOGO in advised_by else None,
                bounds=bounds[t],
                decided_by=MEASUREMENT if own.choice else RULE if rule else MODEL,
                intervals=own.intervals,
                evidence=own.evidence,
            )
        )
    return adv


def advice_table(adv: Advice) -> Table:
    """The advice as a table (report, `usagg advise`): whether the model beats the trivial rules first in its title
    and notes, then the held-out accuracy."""
    others = adv.paradigms[1:]
    cols = [
        "Task", "Group", "Type", "n_train", "Advice", "Advice from",
        f"Own measurement ({100 * adv.level:.1f} % interval)", "Δ predicted %", "sd of Δ (LOTO)",
        *[f"Δ{p} % measured" for p in others], "Best measured", "Model advice", "LOTO advice", "LOTO hit",
        "LOGO advice", "LOGO hit",
    ]  # fmt: skip
    yes = {True: "yes", False: "no", None: None}
    rows: list[list[Cellv]] = []
    for r in adv.rows:
        n = None if r.n_train is None or math.isnan(r.n_train) else round(r.n_train)
        rows.append([
            r.task, r.group, r.type, n, r.advised, r.decided_by, r.evidence, r.predicted, r.sd,
            *[r.measured[p] for p in others],
            r.best_measured, r.model_advised, r.loto_advised, yes[r.loto_hit], r.logo_advised, yes[r.logo_hit],
        ])  # fmt: skip
    if not adv.n:
        checked = "no task checkable"
    else:
        checked = ", ".join(f"{s} {h}/{adv.n}" for s, h in adv.hits.items()) + " advised = best measured"
    n_tied = len(adv.tied_rules)
    tie = (
        f"; {n_tied} rules tie, a default"
        if adv.default_tie
        else f"; {n_tied} rules tie, agreeing"
        if n_tied > 1
        else ""
    )
    rule = f"the rule '{adv.best_rule.name}' (the model does not beat it{tie})"
    verdict = "the model's" if adv.beats_trivial else rule
    own = f"own measurement decides {len(adv.measured)} of {len(adv.rows)}, else "
    title = f"Advice: the paradigm for each task (fraction {frac_label(adv.fraction)}; {own}{verdict}; model {checked})"
    return Table("advice", title, cols, rows, list(adv.notes))
