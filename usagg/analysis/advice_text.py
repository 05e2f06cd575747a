"""The advice in words: whether the model beats the trivial rules (said first), what the tasks' own measurements
decide, the held-out accuracy, and the notes on what the advice rests on and what to weigh against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from usagg.analysis.advice import BASELINE, MEASUREMENT, Advice, AdviceRow
from usagg.analysis.advice_measured import BASELINE_ONE_SEED, DECISION_ALPHA, noise_unmeasured
from usagg.analysis.advice_model import RIDGE_PENALTY
from usagg.analysis.advice_uncertainty import uncertainty_text
from usagg.analysis.delta import SEED_ORDER, Comparison
from usagg.analysis.scales import FORMULAS, UNITS
from usagg.analysis.tables import ci_end, frac_label
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.affinity import Affinity

#: At most this many tasks, or clinical groups, to check the advice on: one task decides between the model and
#: the rules, and the report says so.
FEW_TASKS, FEW_GROUPS = 5, 2


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


def measured_text(adv: Advice) -> str:
    """How many tasks their own measurement decides, and on what intervals: said right after the verdict."""
    k = len(adv.paradigms) - 1
    test = ", the test set's bootstrap variance added," if adv.test_set else ""
    how = (
        f"Welch t intervals of Δ over seeds{test} at {100 * adv.level:.1f} % two-sided, each bound one-sided at "
        f"{100 * DECISION_ALPHA / k:.3g} % (Bonferroni over the {counted(k, 'paradigm')} besides {BASELINE}: a "
        f"nominal probability of advising a paradigm no better than {BASELINE}, or {BASELINE} where one is better, "
        f"at most {100 * DECISION_ALPHA:.0f} % per task, not across tasks)"
    )
    decided = adv.measured
    given = f"the {'model' if adv.beats_trivial else 'rule'}'s advice"
    if not decided and all(noise_unmeasured(r.evidence) for r in adv.rows):
        return (
            f"One seed: no task's own measurement can decide its advice, so every task gets {given}: "
            f"{one_seed_text(adv.rows)}."
        )
    if not decided:
        return (
            f"No task's own measurement decides its advice ({how}: no paradigm's interval lies "
            f"above 0, nor every interval below), so every task gets {given}, never a paradigm measured below 0 "
            "for it."
        )
    names = ", ".join(f"{r.task} → {r.advised}" for r in decided)
    open_ = len(adv.rows) - len(decided)
    rest = (
        f"The other {open_} get {given}, as a task new to the study would, never a paradigm whose interval lies "
        "below 0 for them."
        if open_
        else "The prediction below is what a task new to the study would get."
    )
    return (
        f"Measured first: the study's own measurement decides the advice of {len(decided)} of "
        f"{counted(len(adv.rows), 'task')}: {names}. The highest measured paradigm whose interval lies above 0 "
        f"is advised (others above 0, or measured higher but undecided, named: which is best among them is "
        f"untested), {BASELINE} where every interval lies below 0; {how}. {rest}"
    )


def verdict(adv: Advice) -> str:
    """Whether the model beats the trivial rules, said before anything else."""
    n, best = adv.n, adv.best_rule
    if not n:
        return (
            f"No task has every paradigm measured, so the model cannot be checked against the trivial rules: "
            f"the predicted advice is the rule '{best.name}' ({best.advised} for every task its own measurement "
            "leaves open)."
        )
    scores = "; ".join(
        f"{s}: model {h}, best rule {max(r.hits[s] for r in adv.rules)} of {n}" for s, h in adv.hits.items()
    )
    return f"{_verdict(adv, scores)} {uncertainty_text(adv)}".strip()


def _verdict(adv: Advice, scores: str) -> str:
    """The verdict on the hit counts alone (`verdict` adds their uncertainty)."""
    best = adv.best_rule
    if adv.beats_trivial:
        return f"The model beats every trivial rule ({scores}): the predicted advice is the model's."
    tied = adv.tied_rules
    if adv.default_tie:  # the held-out tasks prefer none of them: the first listed is a default, not a finding
        return (
            f"The model does not beat the trivial rules ({scores}), and {len(tied)} rules tie at "
            f"{best.hits[adv.primary]} {adv.primary} hits and held-out regret ({', '.join(tied)}): the held-out "
            "tasks prefer none, "
            f"so the predicted advice is the first of them, '{best.name}' ({best.advised} for every task its "
            "own measurement leaves open), a default rather than a finding; the model's own advice, its "
            "predictions and each task's measured Δ are beside it."
        )
    why = f"the rule with the most {adv.primary} hits"
    if adv.regret_broke_tie:
        why += f", its held-out regret ({best.regret[adv.primary]:.1f} points) the lowest of those tied on hits"
    if len(tied) > 1:
        why += f"; {len(tied)} rules tie there, all advising {best.advised}"
    return (
        f"The model does not beat the trivial rule '{best.name}' ({scores}): the predicted advice is that rule, "
        f"{best.advised} for every task its own measurement leaves open ({why}); the model's own advice and "
        "predictions are shown beside it."
    )


def accuracy_text(adv: Advice) -> str:
    """The accuracy line printed beside the advice."""
    if not adv.n:
        hit = "no task has every paradigm measured, so no advice could be checked"
    else:
        hit = "; ".join(
            f"{s}: the model's advice is the best measured paradigm for {h} of {counted(adv.n, 'task')} "
            f"({100 * h / adv.n:.0f} %)"
            for s, h in adv.hits.items()
        )
    rules = ", ".join(f"{r.name} {'/'.join(str(r.hits[s]) for s in adv.hits)}" for r in adv.rules)
    costs = ", ".join(f"{r.name} {'/'.join(f'{r.regret[s]:.1f}' for s in adv.hits)}" for r in adv.rules)
    model = "/".join(f"{adv.regret[s]:.1f}" for s in adv.hits)
    return (
        f"Held-out accuracy: {hit}. Trivial rules ({'/'.join(adv.hits)} hits): {rules}. Mean held-out regret (the "
        f"best measured Δ minus the advised paradigm's, points; 0 is always right, and a near miss costs little): "
        f"model {model}; {costs}. Mean absolute error of "
        f"the LOTO predicted Δ {adv.mae:.1f} points ({counted(adv.n_errors, 'task–paradigm pair')}; each "
        f"paradigm's mean Δ over the other tasks: {adv.constant_mae:.1f})."
    )


def method_notes(adv: Advice, comp: Comparison, aff: Affinity | None) -> list[str]:
    """What the advice rests on: the data it uses, the model, and where affinity came from."""
    out = [
        verdict(adv),
        measured_text(adv),
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
        accuracy_text(adv),
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
