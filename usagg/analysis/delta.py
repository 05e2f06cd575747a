"""Δ of every paradigm versus a baseline paradigm, per task, and its aggregates over tasks.

Δ = s · (m_p − m_base) / |m_base| · 100 %, s = +1 where higher is better, −1 otherwise,
so a positive Δ is always a gain. Seeds are averaged per task first (per fraction), then
task Δs are averaged into groups, types, data regimes and the paradigm's Δm. A missing
baseline or a zero baseline metric gives Δ = n/a with its reason, never a silent drop. A value
empty (or nan) in the table, a metric undefined for that job, leaves its seed out of the cell and
is named with its row (`Comparison.undefined`); every seed empty: Δ n/a with that reason.

A task alone in its group under a group-scope paradigm (CG: a one-task clinical group; AG: a
one-task group of the ones AG formed) is trained with exactly TS's data and only MoE added,
so its Δ measures MoE, not aggregation. Each paradigm's own one-task groups
(`Comparison.one_task_groups`, from the table's jobs) are flagged and, by default
(analysis.cg_singletons: exclude), left out of that paradigm's aggregates and tests
(`Comparison.excluded`); the per-task tables keep them. Every text that names them reads
`one_task_groups`, so what it says is what the aggregates did.

The scale of Δ is analysis.scale (relative above, log_ratio or headroom: usagg/analysis/scales.py).
A task whose baseline is not above chance (`Comparison.chance`) has no skill for a paradigm to change; by
default (analysis.chance_tasks: exclude) it is left out of every paradigm's aggregates and tests, per fraction.
Chance is the better of the metric's own chance level (AUC 0.5) and the best trivial predictor the baseline's job
scored on the same test images (metrics.json `trivial`: an empty or all-foreground mask, a whole-image or mean
training box, the mean training keypoints, the training class frequencies; usagg/tasktypes/), per seed; the
baseline is at chance where a one-sided 95 % lower bound of its margin over that level does not clear 0: the t bound
over its seeds, or with one seed the test-set bootstrap's bound of its metric over the test images its job scored
(the point estimate only where the job wrote no per-image scores) (`at_chance`, `chance_evidence`). The question is
one-sided (is the baseline above the best constant prediction?), so both standards are one-sided 95 %, and a task
does not drop out of the aggregates only because a second seed was run. A baseline seed no better than its level
beside seeds that are (a failed run of the baseline) is named as a collapse (`baseline_collapsed`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from usagg.analysis.inputs import AnalysisInput, job_name
from usagg.analysis.item_scores import load_item_scores
from usagg.analysis.scales import chance_level, change, worst_value
from usagg.analysis.task_ci import endpoint_errors, metric_draws, percentile_ci, resampling_text
from usagg.analysis.tdist import t_quantile
from usagg.errors import UsaggError
from usagg.paradigms import PARADIGMS
from usagg.tasktypes import metric_direction
from usagg.wording import counted

SEED_ORDER = "mean over seeds per task, then Δ per task"


@dataclass(frozen=True)
class Cell:
    """One task's primary metric under one paradigm and fraction, over seeds."""

    mean: float
    sd: float  # sample sd (ddof=1); NaN with one seed
    n_seeds: int


@dataclass(frozen=True)
class Delta:
    """Δ % of one task under one paradigm, or None with the reason it is not defined."""

    value: float | None
    reason: str = ""


@dataclass(frozen=True)
class TaskInfo:
    task: str
    group: str
    type: str
    metric: str
    higher_is_better: bool


@dataclass(frozen=True)
class OneTaskGroup:
    """A task its paradigm trained alone: the one task of a group of that paradigm (`Comparison.one_task_groups`)."""

    task: str
    group: str  # the group's name: its clinical group (CG), or the job's name (AG: g1, g2, ...)
    clinical: bool  # the group is the task's clinical group (CG; or a table that names no jobs of the paradigm)

    def where(self, paradigm: str) -> str:
        """The group in words, e.g. `clinical group Breast` or `AG group g1`."""
        return f"clinical group {self.group}" if self.clinical else f"{paradigm} group {self.group}"

    def text(self, paradigm: str) -> str:
        """`task (where)`, e.g. `fetal_head (AG group g1)`."""
        return f"{self.task} ({self.where(paradigm)})"


@dataclass(frozen=True)
class Aggregate:
    """Mean Δ of a set of tasks, with the tasks that had no Δ listed."""

    level: str  # group | type | regime | group regime | all
    name: str
    paradigm: str
    fraction: float
    mean: float | None
    n: int
    tasks: tuple[str, ...]
    missing: tuple[str, ...]
    order: str
    excluded: tuple[str, ...] = ()  # one-task groups left out under a group-scope paradigm
    chance: tuple[str, ...] = ()  # tasks whose baseline is at chance, left out (analysis.chance_tasks)


@dataclass(frozen=True)
class BaselineTest:
    """The two-sided 90 % percentile bootstrap of a one-seed baseline's metric over its job's test images (each end
    a one-sided 95 % bound), how it was drawn, and the Monte Carlo error of the end the chance check reads."""

    low: float
    high: float
    images: int
    resamples: int
    seed: int
    mc: float | None  # how far another bootstrap of as many resamples would move the bound (95 %)


@dataclass
class Comparison:
    """Per-task cells and Δs for every (fraction, task, paradigm)."""

    baseline: str
    paradigms: list[str]  # all, baseline included
    fractions: list[float]
    tasks: list[TaskInfo]
    cells: dict[tuple[float, str, str], Cell] = field(default_factory=dict)
    deltas: dict[tuple[float, str, str], Delta] = field(default_factory=dict)
    n_train: dict[tuple[float, str], float] = field(default_factory=dict)
    regime_threshold: int = 1000
    group_regime_threshold: int = 5000
    seed_values: dict[tuple[float, str, str], dict[int, float]] = field(default_factory=dict)  # primary per seed
    steps: dict[tuple[float, str, str], float] = field(default_factory=dict)  # optimiser steps, mean over seeds
    #: (fraction, task, paradigm) -> the seeds whose job trained the task for 0 optimiser steps: their values are an
    #: untrained head's and are left out of the cell (all seeds: no cell, Δ n/a with the reason)
    untrained: dict[tuple[float, str, str], tuple[int, ...]] = field(default_factory=dict)
    #: (fraction, task, paradigm) -> (seed, table row) of each primary-metric value that is empty or nan: a metric
    #: undefined for that job (the store writes one empty), left out of the cell, and named in the exclusion notes
    #: so that a value lost from an edited table is not dropped without a word (all seeds: no cell, Δ n/a)
    undefined: dict[tuple[float, str, str], tuple[tuple[int, int], ...]] = field(default_factory=dict)
    shared: dict[str, bool] = field(default_factory=dict)  # paradigm -> some job of it trains several tasks
    units: dict[str, frozenset[frozenset[str]]] = field(default_factory=dict)  # paradigm -> its jobs' task sets
    excluded: dict[str, tuple[str, ...]] = field(default_factory=dict)  # paradigm -> tasks left out of aggregates
    #: paradigm -> the tasks it trained alone (group-scope paradigms only: TS and AU have no one-task groups), each
    #: with the group it was alone in; `excluded` is these tasks under analysis.cg_singletons: exclude
    one_task_groups: dict[str, tuple[OneTaskGroup, ...]] = field(default_factory=dict)
    scale: str = "relative"  # analysis.scale: what a Δ is (usagg/analysis/scales.py)
    chance: dict[float, tuple[str, ...]] = field(default_factory=dict)  # fraction -> tasks with a baseline at chance
    chance_excluded: bool = True  # analysis.chance_tasks: exclude
    #: (fraction, task) -> seed -> (score, predictor) of the best trivial predictor the baseline's job of that seed
    #: scored (metrics.json `trivial`, `AnalysisInput.trivial`): with the metric's chance level, what a baseline
    #: without skill reaches (`chance_reference`)
    trivial: dict[tuple[float, str], dict[int, tuple[float, str]]] = field(default_factory=dict)
    #: (fraction, task, paradigm) -> why the metric is undefined for every seed's job, where the jobs' item scores
    #: tell (an AUC on a test split holding one class: `undefined_cause`)
    undefined_why: dict[tuple[float, str, str], str] = field(default_factory=dict)
    #: (fraction, task) -> the 90 % percentile bootstrap of a one-seed baseline's metric over its job's test images
    #: (each end a one-sided 95 % bound): the test-set uncertainty `at_chance` holds it to
    baseline_test: dict[tuple[float, str], BaselineTest] = field(default_factory=dict)

    @property
    def others(self) -> list[str]:
        """Paradigms compared against the baseline."""
        return [p for p in self.paradigms if p != self.baseline]

    @property
    def no_delta(self) -> str | None:
        """Why there is no Δ at all (only the baseline has results: a TS-only study, or one whose other paradigms
        have not run yet), for the summary, the report and `usagg plot`; None where some paradigm has a Δ."""
        if self.others:
            return None
        return (
            f"Only the baseline {self.baseline} has results, so there is no Δ yet: Δ versus {self.baseline}, its "
            "tables, statistics and figures need the results of another paradigm (CG, AU, AG: the study's "
            "`paradigms:`; `usagg status` shows the jobs still to run)."
        )

    def info(self, task: str) -> TaskInfo:
        return next(t for t in self.tasks if t.task == task)

    def singletons(self) -> list[str]:
        """Tasks alone in their clinical group (among the tasks with results). Not what a paradigm leaves out:
        that is its own `one_task_groups` (AG's groups are not the clinical ones)."""
        size: dict[str, int] = {}
        for t in self.tasks:
            size[t.group] = size.get(t.group, 0) + 1
        return [t.task for t in self.tasks if size[t.group] == 1]

    def one_task_text(self, paradigm: str) -> str:
        """The paradigm's one-task groups in words, e.g. `fetal_head (AG group g1)`; '' when it has none."""
        return ", ".join(o.text(paradigm) for o in self.one_task_groups.get(paradigm, ()))

    def excluded_text(self) -> str:
        """Per paradigm, the one-task groups it leaves out of its aggregates and tests, e.g.
        `CG: breast_lesion (clinical group Breast); AG: fetal_head (AG group g1)`; '' when none is left out."""
        return "; ".join(
            f"{p}: {self.one_task_text(p)}" for p in self.excluded if self.excluded[p] and p in self.one_task_groups
        )

    def same_units(self, a: str, b: str) -> bool:
        """Whether two paradigms trained the same task sets together (CG and CGD; AG and CGD only where AG found
        the clinical groups), over the tasks both have: a job missing from one (failed, not run yet) is no other
        grouping, but a job holding both shared and unshared tasks is. True where the table names no jobs for one
        of them, as its registered scope says."""
        ua, ub = self.units.get(a), self.units.get(b)
        if ua is None or ub is None:
            return True
        shared = frozenset().union(*ua) & frozenset().union(*ub)
        within = _within(ua, shared)
        return within is not None and within == _within(ub, shared)

    def left_out(self, fraction: float, paradigm: str) -> set[str]:
        """Tasks left out of the paradigm's aggregates and tests: its one-task groups, and chance-level tasks."""
        skip = set(self.excluded.get(paradigm, ()))
        return skip | set(self.chance.get(fraction, ())) if self.chance_excluded else skip

    def undefined_places(self, fraction: float, task: str, paradigm: str) -> str:
        """Where the table leaves that cell's values empty: `seed 1, row 18 (line 19)` for each; a row made in code
        (row 0) is not named."""
        return ", ".join(
            f"seed {s}" + (f" at row {r} (line {r + 1})" if r else "")
            for s, r in self.undefined.get((fraction, task, paradigm), ())
        )

    def change(self, task: str, m_p: float, m_b: float) -> Delta:
        """Δ of a paradigm's metric m_p against the baseline's m_b for this task, on the comparison's scale."""
        info = self.info(task)
        value, why = change(self.scale, info.metric, m_p, m_b, info.higher_is_better)
        return Delta(value, why)

    def delta_values(self, fraction: float, paradigm: str) -> tuple[list[str], np.ndarray]:
        """Tasks with a defined Δ and their Δ values, in task order; tasks `left_out` of the paradigm's aggregates
        left out."""
        names, vals = [], []
        skip = self.left_out(fraction, paradigm)
        for t in self.tasks:
            if t.task in skip:
                continue
            d = self.deltas.get((fraction, t.task, paradigm))
            if d is not None and d.value is not None:
                names.append(t.task)
                vals.append(d.value)
        return names, np.asarray(vals, dtype=float)

    def not_available(self) -> list[tuple[float, str, str, str]]:
        """(fraction, task, paradigm, reason) of every Δ shown as n/a."""
        return [(f, t, p, d.reason) for (f, t, p), d in self.deltas.items() if d.value is None]

    def regime(self, fraction: float, task: str) -> str:
        n = self.n_train.get((fraction, task), math.nan)
        if math.isnan(n):
            return "unknown n_train"
        thr = self.regime_threshold
        return f"low-data (n<{thr})" if n < thr else f"data-rich (n≥{thr})"

    def group_regime(self, fraction: float, group: str) -> str:
        """The clinical group's regime by its size (sum of its tasks' n_train, analysis.group_regime_threshold)."""
        n = group_n_train(self, fraction).get(group, math.nan)
        if math.isnan(n):
            return "unknown group size"
        thr = self.group_regime_threshold
        return f"low-data group (n<{thr})" if n < thr else f"data-rich group (n≥{thr})"

    def seed_deltas(self, fraction: float, task: str, paradigm: str) -> dict[int, float]:
        """Δ % of each seed of the paradigm against the baseline's seed mean (their mean is the task's Δ)."""
        base = self.cells.get((fraction, task, self.baseline))
        if base is None or self.change(task, base.mean, base.mean).value is None:
            return {}
        vals = self.seed_values.get((fraction, task, paradigm), {})
        out = {s: self.change(task, v, base.mean).value for s, v in vals.items()}
        return {s: v for s, v in out.items() if v is not None}


def _within(units: frozenset[frozenset[str]], tasks: frozenset[str]) -> frozenset[frozenset[str]] | None:
    """The task sets holding any of `tasks`; None where one of them holds another task too (a job that trained a
    shared task beside one the other paradigm lacks: another grouping, not a missing job)."""
    touching = frozenset(u for u in units if u & tasks)
    return touching if all(u <= tasks for u in touching) else None


def relative_change(m_p: float, m_base: float, higher_is_better: bool) -> Delta:
    """Δ % of one paradigm's mean against the baseline's mean (the relative scale, whatever analysis.scale); n/a
    when the baseline is zero."""
    return Delta(*change("relative", "", m_p, m_base, higher_is_better))  # the relative scale reads no metric


def compare(inp: AnalysisInput, baseline: str | None = None) -> Comparison:
    """Seed means of every task's primary metric and Δ of every paradigm versus the baseline."""
    table = inp.table
    baseline = baseline or inp.settings.baseline
    paradigms = table.paradigms
    if baseline not in paradigms:
        from usagg.names import suggest

        hint = suggest(baseline, paradigms)  # names are case-sensitive, as in the spec: `ts` is pointed to TS
        raise UsaggError(
            f"baseline {baseline!r} has no results in {inp.source}{hint}; paradigms present: {', '.join(paradigms)}"
        )
    values: dict[tuple[float, str, str], list[float]] = {}
    per_seed: dict[tuple[float, str, str], dict[int, float]] = {}
    steps: dict[tuple[float, str, str], list[float]] = {}
    zero_step: dict[tuple[float, str, str], list[int]] = {}
    empty: dict[tuple[float, str, str], list[tuple[int, int]]] = {}
    empty_jobs: dict[tuple[float, str, str], list[str]] = {}
    trivial: dict[tuple[float, str], dict[int, tuple[float, str]]] = {}
    job_tasks: dict[tuple[str, str], set[str]] = {}
    n_train: dict[tuple[float, str], list[float]] = {}
    groups: dict[str, str] = {}
    types: dict[str, str] = {}
    direction: dict[str, bool] = {}
    for r in table.rows:
        groups.setdefault(r.task, r.group)
        types[r.task] = r.type
        if r.job_id:
            job_tasks.setdefault((r.paradigm, r.job_id), set()).add(r.task)
        if not math.isnan(r.n_train):
            n_train.setdefault((r.fraction, r.task), []).append(r.n_train)
        if r.metric != inp.primary[r.task]:
            continue
        direction[r.task] = r.higher_is_better
        if not math.isnan(r.steps):
            steps.setdefault((r.fraction, r.task, r.paradigm), []).append(r.steps)
        if r.steps == 0:  # never stepped on in this seed's job: an untrained head's value, not a result
            zero_step.setdefault((r.fraction, r.task, r.paradigm), []).append(r.seed)
            continue
        if math.isnan(r.value):  # empty in the table: undefined for this job
            empty.setdefault((r.fraction, r.task, r.paradigm), []).append((r.seed, r.row))
            empty_jobs.setdefault((r.fraction, r.task, r.paradigm), []).append(r.job_id)
        else:
            values.setdefault((r.fraction, r.task, r.paradigm), []).append(r.value)
            per_seed.setdefault((r.fraction, r.task, r.paradigm), {})[r.seed] = r.value
        if r.paradigm == baseline and (levels := inp.trivial.get(r.job_id, {}).get(r.task)):
            best = (max if r.higher_is_better else min)(levels.items(), key=lambda kv: kv[1])
            trivial.setdefault((r.fraction, r.task), {})[r.seed] = (best[1], best[0])
    for t in inp.task_order:  # a task without a primary-metric row takes the metric's registered direction
        if t not in direction:
            known = metric_direction(inp.primary[t])
            direction[t] = True if known is None else known
    tasks = [TaskInfo(t, groups[t], types[t], inp.primary[t], direction[t]) for t in inp.task_order]
    comp = Comparison(
        baseline=baseline,
        paradigms=paradigms,
        fractions=table.fractions,
        tasks=tasks,
        n_train={k: float(np.median(v)) for k, v in n_train.items()},
        regime_threshold=inp.settings.regime_threshold,
        group_regime_threshold=inp.settings.group_regime_threshold,
        seed_values=per_seed,
        steps={k: float(np.mean(v)) for k, v in steps.items()},
        untrained={k: tuple(sorted(v)) for k, v in zero_step.items()},
        undefined={k: tuple(sorted(v)) for k, v in empty.items()},
        shared={p: _shares_models(p, job_tasks) for p in paradigms},
        units={
            p: frozenset(frozenset(ts) for (pp, _), ts in job_tasks.items() if pp == p)
            for p in paradigms
            if any(pp == p for pp, _ in job_tasks)
        },
        scale=inp.settings.scale,
        chance_excluded=inp.settings.chance_tasks == "exclude",
        trivial=trivial,
    )
    for key, jobs in empty_jobs.items():
        if key not in values and (why := undefined_cause(inp, key[1], jobs)):  # every seed undefined
            comp.undefined_why[key] = why
    singletons = comp.singletons()
    for p in comp.others:
        lone = _one_task_groups(p, job_tasks, inp.task_order, singletons, groups)
        if lone:
            comp.one_task_groups[p] = lone
            if inp.settings.cg_singletons == "exclude":
                comp.excluded[p] = tuple(o.task for o in lone)
    for (f, t, p), v in values.items():
        arr = np.asarray(v, dtype=float)
        comp.cells[(f, t, p)] = Cell(float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan, arr.size)
    for f in comp.fractions:
        for info in tasks:
            base = comp.cells.get((f, info.task, baseline))
            for p in comp.others:
                cell = comp.cells.get((f, info.task, p))
                if cell is None or base is None:
                    d = (
                        untrained(comp, f, info.task, p)
                        or undefined(comp, f, info.task, p)
                        or Delta(
                            None,
                            f"no {info.metric} result for {p}"
                            if cell is None
                            else f"baseline {baseline} has no {info.metric} result",
                        )
                    )
                else:
                    d = comp.change(info.task, cell.mean, base.mean)
                comp.deltas[(f, info.task, p)] = d
        comp.baseline_test.update(_one_seed_bounds(inp, comp, f))
        comp.chance[f] = at_chance(comp, f)
    return comp


#: The one-sided level of the chance check (`at_chance`): a lower bound at 95 %.
CHANCE_LEVEL = 0.95


def _one_seed_bounds(inp: AnalysisInput, comp: Comparison, f: float) -> dict[tuple[float, str], BaselineTest]:
    """(fraction, task) -> the two-sided 90 % test-set bootstrap of the baseline's metric where one seed ran it, a
    chance level is known and its job wrote per-image scores (`Comparison.baseline_test`)."""
    jobs = {(r.task, r.seed): r.job_id for r in inp.table.rows if r.paradigm == comp.baseline and r.fraction == f}
    st = inp.settings
    out = {}
    for info in comp.tasks:
        seeds = comp.seed_values.get((f, info.task, comp.baseline), {})
        if len(seeds) != 1 or chance_reference(comp, f, info.task) is None:
            continue
        path = inp.item_scores.get(jobs.get((info.task, next(iter(seeds))), ""))
        scores = load_item_scores(path.parent).get(info.task) if path is not None else None
        draws = metric_draws([scores], st.task_bootstrap, st.bootstrap_seed) if scores else None
        ci = None if draws is None else percentile_ci(draws, 2 * CHANCE_LEVEL - 1)
        if ci is not None and draws is not None and scores is not None:
            errors = endpoint_errors(draws, 2 * CHANCE_LEVEL - 1)
            mc = None if errors is None else errors[0 if info.higher_is_better else 1]  # the bound it reads
            out[(f, info.task)] = BaselineTest(
                ci[0], ci[1], len(scores.images), st.task_bootstrap, st.bootstrap_seed, mc
            )
    return out


def untrained(comp: Comparison, f: float, task: str, paradigm: str) -> Delta | None:
    """The reason of a Δ n/a when every seed of the paradigm's (or the baseline's) jobs trained the task for 0
    optimiser steps: its metric is an untrained head's, and a Δ of it (−100 % on DSC) would count as negative
    transfer. None otherwise (seeds of 0 steps beside trained ones are left out of the cell: `Comparison.untrained`)."""
    for p in (paradigm, comp.baseline):
        if (f, task, p) in comp.untrained and (f, task, p) not in comp.cells:
            return Delta(
                None,
                f"{p} trained {task} for 0 optimiser steps, so its metric is an untrained head's (the job had fewer "
                "steps than tasks to share them: raise training.steps_per_epoch, or use training.sampling: matched)",
            )
    return None


def undefined(comp: Comparison, f: float, task: str, paradigm: str) -> Delta | None:
    """The reason of a Δ n/a when every seed's value of the paradigm (or the baseline) is empty or nan in the table:
    undefined for each job (an AUC without both classes in the test split), or lost from an edited table. None
    otherwise (empty seeds beside defined ones are left out of the cell: `Comparison.undefined`)."""
    for p in (paradigm, comp.baseline):
        if (f, task, p) in comp.undefined and (f, task, p) not in comp.cells:
            why = comp.undefined_why.get((f, task, p))
            return Delta(
                None,
                f"{p}'s {comp.info(task).metric} of {task} is empty in the table for every seed "
                f"({comp.undefined_places(f, task, p)}): undefined for its jobs" + (f": {why}" if why else ""),
            )
    return None


def undefined_cause(inp: AnalysisInput, task: str, jobs: list[str]) -> str | None:
    """Why a task's metric is undefined for every one of `jobs`, from their item scores where they tell: an AUC whose
    test split holds one class (a data property `usagg data check` warns of as val_scoring, not a failed job). None
    where the jobs wrote no item scores or these show no cause."""
    classes: set[int] = set()
    images = 0
    for job in jobs:
        path = inp.item_scores.get(job)
        scores = load_item_scores(path.parent).get(task) if path is not None else None
        if scores is None or scores.kind != "auc":
            return None
        classes |= {int(c) for c in scores.values[:, 0]}
        images = max(images, len(scores.images))
    if len(classes) != 1:
        return None
    (only,) = classes
    return (
        f"its test split holds images of class {only} only ({counted(images, 'image')}), and an AUC needs images of "
        "two classes (a property of the data, which `usagg data check` warns of as val_scoring; ACC, F1 and MCC are "
        "computed as usual)"
    )


def rescaled(comp: Comparison, scale: str) -> Comparison:
    """The same comparison with every Δ on another scale (cells, exclusions and chance flags kept)."""
    out = dataclasses.replace(comp, scale=scale, deltas={})
    for (f, t, p), d in comp.deltas.items():
        base, cell = comp.cells.get((f, t, comp.baseline)), comp.cells.get((f, t, p))
        out.deltas[(f, t, p)] = d if base is None or cell is None else out.change(t, cell.mean, base.mean)
    return out


@dataclass(frozen=True)
class ChanceReference:
    """What a task's baseline is held against at one fraction: per seed of the baseline, the better of the metric's
    chance level (AUC 0.5) and the best trivial predictor that seed's job scored; `predictor` names the one most
    seeds were held against ("chance" for the metric's own level)."""

    levels: dict[int, float]
    predictor: str

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.levels.values())))


#: The `ChanceReference.predictor` of a metric's own chance level (AUC 0.5: `scales.chance_level`).
CHANCE = "chance"


def chance_reference(comp: Comparison, fraction: float, task: str) -> ChanceReference | None:
    """The level each seed of the task's baseline is held against at this fraction (`ChanceReference`): None where
    none is known (no chance level for the metric, and the baseline's jobs recorded no trivial predictor's score:
    an imported table, jobs written before they did, or a plug-in type declaring none)."""
    info = comp.info(task)
    seeds = comp.seed_values.get((fraction, task, comp.baseline), {})
    const = chance_level(info.metric) if info.higher_is_better else None
    recorded = comp.trivial.get((fraction, task), {})
    pick = max if info.higher_is_better else min
    levels, names = {}, []
    for seed in sorted(seeds):
        candidates = ([(const, CHANCE)] if const is not None else []) + ([recorded[seed]] if seed in recorded else [])
        if candidates:  # on a tie the metric's own chance is named: it needs no predictor to explain it
            levels[seed], name = pick(candidates, key=lambda c: c[0])
            names.append(name)
    if not levels:
        return None
    return ChanceReference(levels, max(dict.fromkeys(names), key=names.count))


def _margin_bound(comp: Comparison, fraction: float, task: str) -> float | None:
    """The one-sided 95 % lower bound of the margin by which the task's baseline beats its chance level (its value
    minus the level; the level minus its value where lower is better): the t bound over seeds, with one seed the
    test-set bootstrap's bound (the margin itself without per-image scores); None where no level is known."""
    ref = chance_reference(comp, fraction, task)
    if ref is None:
        return None
    info = comp.info(task)
    values = comp.seed_values[(fraction, task, comp.baseline)]
    sign = 1.0 if info.higher_is_better else -1.0
    margin = np.asarray([sign * (values[s] - level) for s, level in ref.levels.items()], dtype=float)
    low = float(margin.mean())
    if margin.size > 1:  # tdist, not scipy
        return low - t_quantile(CHANCE_LEVEL, margin.size - 1) * float(margin.std(ddof=1)) / math.sqrt(margin.size)
    test = comp.baseline_test.get((fraction, task))
    if test is None:
        return low
    (level,) = ref.levels.values()
    return sign * ((test.low if info.higher_is_better else test.high) - level)


def at_chance(comp: Comparison, fraction: float) -> tuple[str, ...]:
    """Tasks whose baseline is not shown above chance at this fraction (`chance_reference`): the one-sided 95 % lower
    bound of its margin over the level (`_margin_bound`; `chance_evidence` says it in words) is at most 0."""
    out = []
    for info in comp.tasks:
        low = _margin_bound(comp, fraction, info.task)
        if low is not None and low <= 0:
            out.append(info.task)
    return tuple(out)


def chance_evidence(comp: Comparison, fraction: float, task: str) -> str:
    """What the chance check of a task rested on, in words: `one-sided 95 % t over 3 seeds`, `one-sided 95 % test-set
    bootstrap of one training run, 48 images, 2000 resamples, seed 0; bound ± 0.012 (Monte Carlo 95 %)`, or one
    run's point estimate without per-image scores."""
    n = len(comp.seed_values.get((fraction, task, comp.baseline), {}))
    if n > 1:
        return f"one-sided 95 % t over {n} seeds"
    test = comp.baseline_test.get((fraction, task))
    if test is not None:
        drawn = resampling_text(test.resamples, test.seed, () if test.mc is None else (test.mc,), "bound")
        return f"one-sided 95 % test-set bootstrap of one training run, {counted(test.images, 'image')}, {drawn}"
    return "one run's point estimate: no per-image test scores"


def baseline_collapsed(comp: Comparison, fraction: float) -> list[Collapse]:
    """Every seed of the baseline no better than its own chance level (`chance_reference`) on a task where another
    seed of it is: a failed baseline run, named as other paradigms' collapses are (its `baseline` field: the level)."""
    out = []
    for info in comp.tasks:
        ref = chance_reference(comp, fraction, info.task)
        if ref is None:
            continue
        values = comp.seed_values[(fraction, info.task, comp.baseline)]
        sign = 1.0 if info.higher_is_better else -1.0
        failed = [s for s, level in ref.levels.items() if sign * (values[s] - level) <= 0]
        if failed and len(failed) < len(ref.levels):
            mean = comp.cells[(fraction, info.task, comp.baseline)].mean
            out += [
                Collapse(info.task, comp.baseline, s, values[s], mean, ref.predictor, ref.levels[s]) for s in failed
            ]
    return out


#: A job lost at least this share of the baseline's skill (its distance to the metric's worst value, chance for an
#: AUC above it): a failed training run, or a transfer that took all of it, named for a reader to tell which.
COLLAPSE_SHARE = 0.9


@dataclass(frozen=True)
class Collapse:
    """One seed of a paradigm on a task whose metric fell to (nearly) the metric's worst from the baseline's."""

    task: str
    paradigm: str
    seed: int
    value: float
    baseline: float
    #: the predictor an error metric's collapse is measured to (`collapsed`: metrics.json `trivial`), or the one whose
    #: score a failed baseline seed did not beat (`baseline_collapsed`; "chance" for the metric's own level), and its
    #: score; '' and None where the metric's worst value was the measure
    reference: str = ""
    level: float | None = None


def collapsed(comp: Comparison, fraction: float) -> list[Collapse]:
    """Every seed of a paradigm whose metric lost >= COLLAPSE_SHARE of the baseline's seed mean's distance to the
    metric's worst value (`scales.worst_value`), on tasks whose baseline is not at chance. A metric with no worst (an
    error in px, unbounded) is measured to the best trivial predictor the baseline's jobs scored instead (mean over
    seeds: metrics.json `trivial`, the mean training keypoints), so a diverged regression head is named; its
    `reference` says so. None where neither is known."""
    out = []
    chance = set(comp.chance.get(fraction, ()))
    for info in comp.tasks:
        base = comp.cells.get((fraction, info.task, comp.baseline))
        if base is None or info.task in chance or not math.isfinite(base.mean):
            continue
        worst = worst_value(info.metric, base.mean, info.higher_is_better)
        reference = ""
        recorded = comp.trivial.get((fraction, info.task), {})
        if worst is None and recorded:
            worst = float(np.mean([v for v, _ in recorded.values()]))
            reference = next(iter(recorded.values()))[1]
        if worst is None or worst == base.mean:
            continue
        for p in comp.others:
            for seed, v in sorted(comp.seed_values.get((fraction, info.task, p), {}).items()):
                if math.isfinite(v) and (base.mean - v) / (base.mean - worst) >= COLLAPSE_SHARE:
                    out.append(Collapse(info.task, p, seed, v, base.mean, reference, worst if reference else None))
    return out


def _one_task_groups(
    paradigm: str,
    job_tasks: dict[tuple[str, str], set[str]],
    order: list[str],
    lone: list[str],
    clinical: dict[str, str],
) -> tuple[OneTaskGroup, ...]:
    """The tasks a group-scope paradigm trained alone, in task order, each with its group: the table's jobs say it
    when they group tasks at all (AG's groups are not the clinical ones; a job's name is its group's, as
    usagg/plan.py names it); a table with one job id per task row says nothing, so the clinical groups do
    (`lone`: the tasks alone in their clinical group, `Comparison.singletons`)."""
    entry = PARADIGMS.get(paradigm)
    if entry is None or entry.scope != "group":
        return ()
    jobs = {jid: ts for (pp, jid), ts in job_tasks.items() if pp == paradigm}
    if not any(len(ts) > 1 for ts in jobs.values()):
        return tuple(OneTaskGroup(t, clinical[t], True) for t in lone)
    name: dict[str, str] = {}
    for jid, ts in jobs.items():
        if len(ts) == 1:
            name.setdefault(next(iter(ts)), job_name(paradigm, jid))
    out = []
    for t in order:
        if t in name:
            # a clinical group: the job is named after it (usagg/plan.py), or the paradigm is planned from the spec
            # alone (CG, CGD group clinically; a staged one such as AG forms its own groups)
            own = name[t] == clinical.get(t) or (entry.needs is None and t in lone)
            out.append(OneTaskGroup(t, clinical[t], True) if own else OneTaskGroup(t, name[t], False))
    return tuple(out)


def _shares_models(paradigm: str, job_tasks: dict[tuple[str, str], set[str]]) -> bool:
    """Whether a paradigm trains tasks together: from its jobs when the table names them, else its registered scope."""
    jobs = [ts for (p, _), ts in job_tasks.items() if p == paradigm]
    if jobs:
        return any(len(ts) > 1 for ts in jobs)
    entry = PARADIGMS.get(paradigm)
    return entry is not None and entry.scope in ("group", "all")


def _aggregate(comp: Comparison, f: float, p: str, level: str, name: str, members: list[str]) -> Aggregate:
    have, vals, missing, excluded, chance = [], [], [], [], []
    skip = set(comp.excluded.get(p, ()))
    at = comp.left_out(f, p) - skip
    for t in members:
        d = comp.deltas[(f, t, p)]
        if t in skip:
            excluded.append(t)
        elif d.value is None:
            missing.append(t)
        elif t in at:
            chance.append(t)
        else:
            have.append(t)
            vals.append(d.value)
    mean = float(np.mean(vals)) if vals else None
    order = f"{SEED_ORDER}, then mean over {counted(len(vals), 'task')}"
    if missing:
        order += f" ({len(missing)} without Δ left out)"
    if excluded:
        order += f" ({counted(len(excluded), 'one-task group')} left out)"
    if chance:
        order += f" ({len(chance)} at chance left out)"
    return Aggregate(
        level, name, p, f, mean, len(vals), tuple(have), tuple(missing), order, tuple(excluded), tuple(chance)
    )


def aggregates(comp: Comparison, fraction: float, paradigm: str, level: str) -> list[Aggregate]:
    """Mean task Δ by `group`, `type`, `regime` (task size), `group regime` (group size) or `all` (Δm)."""
    keyed: dict[str, list[str]] = {}
    for t in comp.tasks:
        if level == "group":
            key = t.group
        elif level == "type":
            key = t.type
        elif level == "regime":
            key = comp.regime(fraction, t.task)
        elif level == "group regime":
            key = comp.group_regime(fraction, t.group)
        elif level == "all":
            key = "all tasks (Δm)"
        else:
            raise ValueError(f"unknown aggregation level {level!r}")
        keyed.setdefault(key, []).append(t.task)
    return [_aggregate(comp, fraction, paradigm, level, k, v) for k, v in keyed.items()]


def negative_transfer(comp: Comparison, fraction: float, paradigm: str) -> tuple[int, int]:
    """(tasks with Δ < 0, tasks with a Δ) for one paradigm, its excluded one-task groups left out."""
    _, vals = comp.delta_values(fraction, paradigm)
    return int((vals < 0).sum()), int(vals.size)


def group_n_train(comp: Comparison, fraction: float) -> dict[str, float]:
    """Group data scale: sum of its tasks' n_train (NaN if any task lacks one)."""
    out: dict[str, float] = {}
    for t in comp.tasks:
        out[t.group] = out.get(t.group, 0.0) + comp.n_train.get((fraction, t.task), math.nan)
    return out
