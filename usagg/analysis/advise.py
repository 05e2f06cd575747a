"""`usagg advise`: the paradigm each task should get, predicted from what the study measured, and how often it is right.

Which tasks and paradigms the study's results can advise on, and the advice assembled: a task's own measurement
first (usagg/analysis/advice_measured.py), else the predicted advice, a ridge model of Δ across tasks
(advice_model.py) or the trivial rule it does not beat, held out by task and by clinical group
(advice_scoring.py); what it is in advice.py, in words in advice_text.py, as a table and JSON in advice_formats.py.
A task whose TS is at chance, or whose TS value gives no Δ on the scale (a DSC of 0), is not advised on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.advice import BASELINE, Advice
from usagg.analysis.advice_measured import decide, decision_level
from usagg.analysis.advice_model import design_matrix, group_mates
from usagg.analysis.advice_scoring import fit_and_score
from usagg.analysis.advice_text import method_notes
from usagg.analysis.delta import Comparison, compare
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.stats import Stat
from usagg.analysis.tables import frac_label, ordered_tasks
from usagg.analysis.uncertainty import test_set_variances
from usagg.errors import UsaggError
from usagg.paradigms import PARADIGMS
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.analysis.summary import Analysis

#: Tasks with a TS result the advice needs: a model across tasks, checked by leaving one out.
MIN_TASKS = 4
#: Tasks with a measured Δ a paradigm needs to be modelled (two left to fit on when one is held out).
MIN_FIT = 3


class CannotAdvise(UsaggError):
    """The study's results cannot support advice (too few tasks, no TS baseline, no paradigm besides TS)."""


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
        x, names, why = design_matrix(comp, table, tasks, fraction, p, aff)
        design[p], features[p] = x, names
        if why:
            notes.append(why)
    seeds = sorted({r.seed for r in table.rows if r.fraction == fraction})
    level = decision_level(len(modelled))
    test_var = test_set_variances(inp, comp, fraction, stats)
    decisions = {t: decide(comp, fraction, t, modelled, level, test_var.get(t, {})) for t in tasks}
    adv = fit_and_score(
        inp.study, comp, tasks, fraction, seeds, {p: measured[p] for p in modelled}, design, features, decisions
    )
    adv.notes = [*method_notes(adv, comp, aff), *notes, *inp.notes]
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
