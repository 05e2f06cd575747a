"""The advice scored: the model fitted on every task (its advice) and held out by task and by clinical group (its
accuracy), beside the trivial rules scored the same way.

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
from typing import Any

import numpy as np

from usagg.analysis.advice import BASELINE, LOGO, LOTO, MEASUREMENT, MODEL, RULE, Advice, AdviceRow, Rule
from usagg.analysis.advice_measured import Decision, decision_level
from usagg.analysis.advice_model import delta_bounds, held_out, predict
from usagg.analysis.delta import Comparison


def _argmax(pred: dict[str, float]) -> str:
    """The paradigm with the highest Δ; TS (listed first) wins a tie, as training alone costs least. NaN (no model
    for that fold) is never chosen."""
    best = BASELINE
    for p, v in pred.items():
        if v > pred[best]:
            best = p
    return best


def _folds(tasks: list[str], comp: Comparison) -> dict[str, list[list[str]]]:
    """LOTO: one task per fold; LOGO: one clinical group per fold, where there are at least two groups."""
    out = {LOTO: [[t] for t in tasks]}
    groups: dict[str, list[str]] = {}
    for t in tasks:
        groups.setdefault(comp.info(t).group, []).append(t)
    if len(groups) > 1:
        out[LOGO] = list(groups.values())
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
        rules.append(Rule(name, rule(list(best)), hits, regret, advised))
    return rules


def _regret(advised: dict[str, str], best: dict[str, str | None], measured: dict[str, dict[str, float]]) -> float:
    """Mean over the tasks with every paradigm measured of the best measured Δ minus the advised paradigm's (TS 0):
    what following the advice cost in points, where a hit or miss alone counts a +0.7 win over TS's noise like a
    +15 one."""

    def delta(t: str, p: str) -> float:
        return 0.0 if p == BASELINE else measured[p][t]

    costs = [delta(t, b) - delta(t, advised[t]) for t, b in best.items() if b is not None]
    return float(np.mean(costs)) if costs else math.nan


def fit_and_score(
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
    full = {p: predict(design[p], measured[p], tasks, [t for t in tasks if t in measured[p]], tasks, bounds)
            for p in modelled}  # fmt: skip
    held = {s: {p: held_out(design[p], measured[p], tasks, fs, bounds) for p in modelled} for s, fs in folds.items()}
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
