"""`usagg advise`: the paradigm each task should get, predicted from what the study measured, and how often it is right.

The model, stated in every output: for each compared paradigm p that trains tasks together
(its registered scope is not "task" and it is not a control: CG, AU, AG, ...), a ridge regression across tasks of the
task's measured Δ_p versus TS (usagg/analysis/delta.py: seeds averaged per task, then the
relative change, at the largest fraction the study ran with TS) on
  - log10 n_train,
  - the task type (one column per type),
  - the mean affinity onto the task from its group mates under p, and from the task to them
    (usagg/affinity.py; a task's group mates are the tasks sharing its job_id under p at p's
    largest fraction, usagg/analysis/inputs.py `paradigm_groups`), where the study measured it.
Features are standardised on the tasks fitted, the intercept is not penalised and the
penalty is fixed (RIDGE_PENALTY), so nothing is tuned on the tasks it is judged on.

Advice: the paradigm with the highest predicted Δ, TS's Δ being 0 by definition; its
uncertainty is the root-mean-square leave-one-task-out (LOTO) error of that paradigm's model.
Accuracy, reported beside the advice: each task in turn is held out, every paradigm's model is
fitted on the other tasks and the held-out task advised; the share of tasks where that is the
best measured paradigm and the mean absolute error of the held-out predictions. A constant rule
(each paradigm's mean Δ over the other tasks) is scored the same way, so the model's accuracy
can be read against what knowing nothing about the task gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from usagg.analysis.delta import SEED_ORDER, Comparison, compare
from usagg.analysis.inputs import AnalysisInput, paradigm_groups
from usagg.analysis.results import ResultsTable
from usagg.analysis.tables import Cellv, Table, frac_label, ordered_tasks
from usagg.errors import UsaggError
from usagg.paradigms import PARADIGMS

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


class CannotAdvise(UsaggError):
    """The study's results cannot support advice (too few tasks, no TS baseline, no paradigm besides TS)."""


@dataclass(frozen=True)
class AdviceRow:
    """One task's advice, the measured Δs it is judged against and its leave-one-task-out advice."""

    task: str
    group: str
    type: str
    n_train: float | None
    advised: str
    predicted: float  # Δ % of the advised paradigm (0 for TS)
    sd: float  # LOTO root-mean-square error of the advised paradigm's model (0 for TS)
    predicted_by: dict[str, float]  # paradigm -> predicted Δ % (TS 0)
    measured: dict[str, float | None]  # paradigm -> measured Δ % (TS 0; None: not measured)
    best_measured: str | None  # None when some paradigm's Δ was not measured for the task
    loto_advised: str
    loto_predicted: dict[str, float]  # paradigm -> Δ % predicted with this task held out (TS 0)

    @property
    def loto_hit(self) -> bool | None:
        return None if self.best_measured is None else self.loto_advised == self.best_measured


@dataclass
class Advice:
    """Per-task advice with the model's description and its leave-one-task-out accuracy."""

    study: str
    fraction: float
    seeds: list[int]
    paradigms: list[str]  # the choices, TS first
    rows: list[AdviceRow]
    features: dict[str, list[str]]  # modelled paradigm -> its features
    rmse: dict[str, float]  # modelled paradigm -> LOTO root-mean-square error of its predicted Δ
    hits: int  # tasks whose LOTO advice is their best measured paradigm
    n: int  # tasks with every paradigm measured (the hit share's denominator)
    mae: float  # mean |LOTO predicted Δ − measured Δ| over every measured (task, paradigm)
    n_errors: int
    constant_hits: int  # the same for the constant rule (mean Δ of the other tasks)
    constant_mae: float
    notes: list[str]

    @property
    def share(self) -> float:
        return self.hits / self.n if self.n else math.nan

    def accuracy_text(self) -> str:
        """The accuracy line printed beside the advice."""
        if not self.n:
            hit = "no task has every paradigm measured, so no advice could be checked"
        else:
            hit = (
                f"the advised paradigm is the best measured one for {self.hits} of {self.n} tasks "
                f"({100 * self.share:.0f} %)"
            )
        return (
            f"Leave-one-task-out accuracy: {hit}; mean absolute error of the predicted Δ {self.mae:.1f} points "
            f"({self.n_errors} task–paradigm pairs). A constant rule (each paradigm's mean Δ over the other tasks) "
            f"gets {self.constant_hits} of {self.n} and {self.constant_mae:.1f} points."
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
            "model": {
                "kind": "ridge regression per paradigm across tasks, standardised features, unpenalised intercept",
                "penalty": RIDGE_PENALTY,
                "features": self.features,
                "loto_rmse": {p: num(v) for p, v in self.rmse.items()},
            },
            "accuracy": {
                "method": "leave-one-task-out",
                "hits": self.hits,
                "n": self.n,
                "share": num(self.share),
                "mae": num(self.mae),
                "n_errors": self.n_errors,
                "constant_hits": self.constant_hits,
                "constant_mae": num(self.constant_mae),
                "text": self.accuracy_text(),
            },
            "tasks": [
                {
                    "task": r.task,
                    "group": r.group,
                    "type": r.type,
                    "n_train": num(r.n_train),
                    "advised": r.advised,
                    "predicted_delta": r.predicted,
                    "sd": r.sd,
                    "predicted_by": r.predicted_by,
                    "measured": {p: num(v) for p, v in r.measured.items()},
                    "best_measured": r.best_measured,
                    "loto_advised": r.loto_advised,
                    "loto_predicted": r.loto_predicted,
                    "loto_hit": r.loto_hit,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }


def advise(a: Analysis) -> Advice:
    """Advice for every task of the analysed study; CannotAdvise with the reason when its results cannot support it."""
    _require_baseline(a.inp)
    return _advise(a.inp, a.comp if a.comp.baseline == BASELINE else compare(a.inp, BASELINE))


def advise_input(inp: AnalysisInput) -> Advice:
    """`advise` straight from the input (`usagg advise`): Δ versus TS without the statistics `analyse` adds (bootstrap,
    mixed model), which advice does not use."""
    _require_baseline(inp)
    return _advise(inp, compare(inp, BASELINE))


def _require_baseline(inp: AnalysisInput) -> None:
    if BASELINE not in inp.table.paradigms:
        raise CannotAdvise(
            f"cannot advise on {inp.source}: the results have no {BASELINE} baseline (paradigms present: "
            f"{', '.join(inp.table.paradigms)}). Advice is the expected Δ of each paradigm versus {BASELINE}, so the "
            f"study must run {BASELINE}: add it to `paradigms` and run the study again."
        )


def _advise(inp: AnalysisInput, comp: Comparison) -> Advice:
    table, where = inp.table, inp.source
    fraction = max(f for (f, _, p) in comp.cells if p == BASELINE)
    tasks = [t for t in ordered_tasks(comp) if (fraction, t, BASELINE) in comp.cells]
    if len(tasks) < MIN_TASKS:
        raise CannotAdvise(
            f"cannot advise on {where}: only {len(tasks)} task{'s' if len(tasks) != 1 else ''} "
            f"({', '.join(tasks) or 'none'}) have a {BASELINE} result at fraction {frac_label(fraction)}. Advice "
            f"fits its model across tasks and checks it by leaving one task out, which needs at least {MIN_TASKS}."
        )
    notes: list[str] = []
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
    adv = _fit_and_score(inp.study, comp, tasks, fraction, seeds, {p: measured[p] for p in modelled}, design, features)
    adv.notes = [*_method_notes(adv, comp, aff), *notes, *inp.notes]
    return adv


def _method_notes(adv: Advice, comp: Comparison, aff: Affinity | None) -> list[str]:
    """What the advice rests on: the data it uses, the model, and where affinity came from."""
    out = [
        f"Δ versus {BASELINE}: {SEED_ORDER} (seeds {', '.join(map(str, adv.seeds))}), at fraction "
        f"{frac_label(adv.fraction)}, the largest the study ran {BASELINE} at"
        + (f" (of {', '.join(frac_label(f) for f in comp.fractions)})" if len(comp.fractions) > 1 else "")
        + f"; {BASELINE}'s Δ is 0 by definition.",
        f"Model per paradigm: ridge regression across tasks of the measured Δ (features standardised on the tasks "
        f"fitted, intercept unpenalised, fixed penalty {RIDGE_PENALTY:g}); "
        + "; ".join(f"{p}: {', '.join(names) or 'intercept only'}" for p, names in adv.features.items())
        + " (a feature constant across tasks is left out)"
        + ".",
        f"Advice: the paradigm with the highest predicted Δ ({BASELINE} on a tie); sd: the root-mean-square "
        f"leave-one-task-out error of that paradigm's model ({BASELINE}: 0). The advice is fitted on every task; "
        "the accuracy holds each task out in turn.",
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


def _choices(comp: Comparison) -> tuple[list[str], list[str]]:
    """The paradigms advice chooses between besides TS (compared, scope not "task", not a control such as TSM or
    AUD), and those left out."""
    choices, left_out = [], []
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
    """The paradigm with the highest Δ; TS (listed first) wins a tie, as training alone costs least."""
    best = BASELINE
    for p, v in pred.items():
        if v > pred[best]:
            best = p
    return best


def _fit_and_score(
    study: str,
    comp: Comparison,
    tasks: list[str],
    fraction: float,
    seeds: list[int],
    measured: dict[str, dict[str, float]],
    design: dict[str, np.ndarray],
    features: dict[str, list[str]],
) -> Advice:
    """Full-data predictions (the advice) and leave-one-task-out predictions (its accuracy) of every paradigm's
    model; `measured`: paradigm -> task -> Δ, only the tasks with one."""
    modelled = list(measured)
    idx = {t: i for i, t in enumerate(tasks)}
    have = {p: [t for t in tasks if t in measured[p]] for p in modelled}
    y = {p: np.asarray([measured[p][t] for t in have[p]], dtype=float) for p in modelled}
    full: dict[str, np.ndarray] = {}
    loto: dict[str, np.ndarray] = {}
    const: dict[str, np.ndarray] = {}
    for p in modelled:
        x = design[p]
        rows = [idx[t] for t in have[p]]
        full[p] = ridge_predict(x[rows], y[p], x)
        loto[p], const[p] = np.empty(len(tasks)), np.empty(len(tasks))
        for i, t in enumerate(tasks):
            keep = [k for k, s in enumerate(have[p]) if s != t]
            loto[p][i] = ridge_predict(x[[rows[k] for k in keep]], y[p][keep], x[[i]])[0]
            const[p][i] = float(y[p][keep].mean())
    rmse = {}
    errors, const_errors = [], []
    for p in modelled:
        res = [loto[p][idx[t]] - measured[p][t] for t in have[p]]
        rmse[p] = float(np.sqrt(np.mean(np.square(res))))
        errors += [abs(r) for r in res]
        const_errors += [abs(const[p][idx[t]] - measured[p][t]) for t in have[p]]
    out: list[AdviceRow] = []
    hits = n = constant_hits = 0
    for i, t in enumerate(tasks):
        pred = {BASELINE: 0.0, **{p: float(full[p][i]) for p in modelled}}
        held = {BASELINE: 0.0, **{p: float(loto[p][i]) for p in modelled}}
        meas: dict[str, float | None] = {BASELINE: 0.0, **{p: measured[p].get(t) for p in modelled}}
        complete = all(t in measured[p] for p in modelled)
        best = _argmax({BASELINE: 0.0, **{p: measured[p][t] for p in modelled}}) if complete else None
        advised, loto_advised = _argmax(pred), _argmax(held)
        if best is not None:
            n += 1
            hits += loto_advised == best
            constant_hits += _argmax({BASELINE: 0.0, **{p: float(const[p][i]) for p in modelled}}) == best
        info = comp.info(t)
        n_train = comp.n_train.get((fraction, t))
        out.append(
            AdviceRow(
                task=t,
                group=info.group,
                type=info.type,
                n_train=n_train,
                advised=advised,
                predicted=pred[advised],
                sd=rmse.get(advised, 0.0),
                predicted_by=pred,
                measured=meas,
                best_measured=best,
                loto_advised=loto_advised,
                loto_predicted=held,
            )
        )
    return Advice(
        study=study,
        fraction=fraction,
        seeds=seeds,
        paradigms=[BASELINE, *modelled],
        rows=out,
        features=features,
        rmse=rmse,
        hits=hits,
        n=n,
        mae=float(np.mean(errors)),
        n_errors=len(errors),
        constant_hits=constant_hits,
        constant_mae=float(np.mean(const_errors)),
        notes=[],
    )


def advice_table(adv: Advice) -> Table:
    """The advice as a table (report, `usagg advise`), the leave-one-task-out accuracy in its title and notes."""
    others = adv.paradigms[1:]
    cols = [
        "Task", "Group", "Type", "n_train", "Advice", "Δ predicted %", "sd of Δ (LOTO)",
        *[f"Δ{p} % measured" for p in others], "Best measured", "LOTO advice", "LOTO hit",
    ]  # fmt: skip
    rows: list[list[Cellv]] = []
    for r in adv.rows:
        n = None if r.n_train is None or math.isnan(r.n_train) else round(r.n_train)
        hit = None if r.loto_hit is None else ("yes" if r.loto_hit else "no")
        rows.append([
            r.task, r.group, r.type, n, r.advised, r.predicted, r.sd, *[r.measured[p] for p in others],
            r.best_measured, r.loto_advised, hit,
        ])  # fmt: skip
    checked = f"{adv.hits}/{adv.n} advised = best measured" if adv.n else "no task checkable"
    title = (
        f"Advice: the paradigm for each task (fraction {frac_label(adv.fraction)}; leave-one-task-out {checked}, "
        f"MAE {adv.mae:.1f} points)"
    )
    return Table("advice", title, cols, rows, list(adv.notes))
