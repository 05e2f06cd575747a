"""The study's expectations (`expect:` in the spec, usagg/spec/models.py `Expectation`), checked on its results.

Each expectation is met, not met, or not evaluated (a job it reads did not run, or the input has no stored
spec): never met by default. Over several tasks it is met when every task meets it and not met when any task
misses it; the value shown is the worst task's, with its interval when one exists. Values are read at the
largest fraction, seeds averaged:

- metric_of: the paradigm's metric; its interval is a t interval over seeds (>= 2 seeds), else the percentile
  bootstrap over the test images the job scored (item_scores.json, usagg/analysis/task_ci.py), primary
  metric only.
- delta: the task's Δ % versus the baseline; its interval is the one the tables show
  (usagg/analysis/uncertainty.py `shown_interval`). With `delta.versus`: Δ of the paradigm minus Δ of the other
  (pp), its interval a t interval of the paired seed differences (`Comparison.seed_deltas`, >= 2 seeds), none
  with one seed.
- ag_groups: the adjusted Rand index of AG's grouping against the expected one (usagg/grouping.py), for each seed
  AG ran at the largest fraction, averaged over those seeds; no interval.

`require: interval` makes a bound hold only when the whole interval clears it (a sign that survives the seeds);
a task without an interval then leaves the expectation not evaluated.

Evaluation is a pure function of the analysis; only `study_expectations` reads the run store.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.tables import Cellv, Interval, Table
from usagg.analysis.uncertainty import LEVEL, shown_interval
from usagg.errors import UsaggError
from usagg.tasktypes import metric_bounds
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.analysis.delta import Comparison
    from usagg.analysis.inputs import AnalysisInput
    from usagg.analysis.stats import Stat
    from usagg.analysis.summary import Analysis
    from usagg.spec.models import Expectation


@dataclass(frozen=True)
class Outcome:
    """One expectation checked: met True / False, or None when it could not be evaluated (`detail` says why)."""

    name: str
    met: bool | None
    value: float | None
    ci_low: float | None
    ci_high: float | None
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "met", False: "not met", None: "not evaluated"}[self.met]


@dataclass(frozen=True)
class _Value:
    task: str
    value: float
    ci: tuple[float, float] | None


def study_expectations(inp: AnalysisInput) -> list[Expectation]:
    """The `expect:` list of the stored study (the run store's study.yaml); [] for an imported results CSV."""
    if inp.run_dir is None:
        return []
    from pydantic import TypeAdapter, ValidationError

    from usagg.spec.models import Expectation
    from usagg.store import RunStore

    store = RunStore(inp.run_dir)
    raw = store.stored_study().get("expect") or []
    try:
        return TypeAdapter(list[Expectation]).validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsaggError(
            f"{store.study_yaml}: expect.{where}: {first['msg']}; fix the spec's `expect:` list and rerun "
            "`usagg run` (done jobs are kept), or edit the stored study.yaml"
        ) from None


def evaluate(expectations: list[Expectation], inp: AnalysisInput, comp: Comparison, stats: list[Stat]) -> list[Outcome]:
    """Every expectation against the results, in the order the spec lists them."""
    return [_evaluate(e, inp, comp, stats) for e in expectations]


def evaluate_study(a: Analysis) -> list[Outcome]:
    """The stored study's expectations checked on its analysis."""
    return evaluate(study_expectations(a.inp), a.inp, a.comp, a.stats)


def _evaluate(e: Expectation, inp: AnalysisInput, comp: Comparison, stats: list[Stat]) -> Outcome:
    if e.ag_groups is not None:
        return _ag_outcome(e, inp)
    f = max(comp.fractions)
    tasks = _selected(e, comp)
    if not tasks:
        return Outcome(e.name, None, None, None, None, "no task of the results matches its selection")
    values: list[_Value] = []
    missing: list[str] = []
    for t in tasks:
        v = _metric_value(e, inp, f, t) if e.metric_of is not None else _delta_value(e, comp, stats, f, t)
        if v is None:
            missing.append(t)
        else:
            values.append(v)
    if e.metric_of is not None:
        metrics = e.metric or "/".join(sorted({inp.primary[t] for t in tasks if t in inp.primary}))
        what = f"{e.metric_of} {metrics}"
    elif e.delta is not None and e.delta.versus is not None:
        what = f"Δ % of {e.delta.paradigm} minus Δ % of {e.delta.versus} (pp, vs {comp.baseline})"
    else:
        what = f"Δ % of {e.paradigm()} vs {comp.baseline}"
    bounds = [f"> {e.above:g}"] if e.above is not None else []
    bounds += [f"< {e.below:g}"] if e.below is not None else []
    bound = " and ".join(bounds) + (", whole 95 % interval" if e.require == "interval" else "")
    shown = [f"{v.task} {_num(v.value)}{_ci_text(v.ci)}" for v in values]
    if missing:
        ran = e.paradigm() if e.delta is None or e.delta.versus is None else f"{e.delta.paradigm} or {e.delta.versus}"
        shown.append(f"no result for {', '.join(missing)} ({ran} did not run there)")
    no_ci = [v.task for v in values if v.ci is None] if e.require == "interval" else []
    if no_ci:
        shown.append(f"no interval for {', '.join(no_ci)} (one seed and no test-set bootstrap)")
    detail = f"{what} {bound}: " + "; ".join(shown)
    if not values:
        return Outcome(e.name, None, None, None, None, detail)
    fails = [v for v in values if not _holds(e, v)]
    worst = min(values, key=lambda v: _margin(e, v))
    met = False if fails else (None if missing or no_ci else True)
    lo, hi = worst.ci if worst.ci is not None else (None, None)
    return Outcome(e.name, met, worst.value, lo, hi, detail)


def _selected(e: Expectation, comp: Comparison) -> list[str]:
    """The task ids it covers among the analysed tasks (a stored spec's tasks, or all the results' tasks)."""
    if e.delta is not None and e.delta.task is not None:
        return [e.delta.task]
    if isinstance(e.tasks, list):
        return list(e.tasks)
    sel = e.tasks
    return [t.task for t in comp.tasks if sel is None or (sel.type in (None, t.type) and sel.group in (None, t.group))]


def _passes(e: Expectation, value: float) -> bool:
    return (e.above is None or value > e.above) and (e.below is None or value < e.below)


def _holds(e: Expectation, v: _Value) -> bool:
    """The bound holds for this task: its value, or under `require: interval` both ends of its interval (a task
    without an interval fails only when its value misses: it is not evaluated otherwise)."""
    if e.require == "interval" and v.ci is not None:
        return _passes(e, v.ci[0]) and _passes(e, v.ci[1])
    return _passes(e, v.value)


def _margin(e: Expectation, v: _Value) -> float:
    """How far the task clears its bounds (negative when it misses; under `require: interval`, the interval's
    nearer end): the worst task has the smallest."""
    lo, hi = v.ci if e.require == "interval" and v.ci is not None else (v.value, v.value)
    return min(lo - e.above if e.above is not None else math.inf, e.below - hi if e.below is not None else math.inf)


def _metric_value(e: Expectation, inp: AnalysisInput, f: float, task: str) -> _Value | None:
    """The paradigm's metric on the task, seeds averaged, with a seed or test-set interval."""
    metric = e.metric or inp.primary.get(task)
    rows = [
        r
        for r in inp.table.rows
        if (r.paradigm, r.task, r.metric, r.fraction) == (e.metric_of, task, metric, f) and not math.isnan(r.value)
    ]
    if not rows:
        return None
    vals = np.asarray([r.value for r in rows], float)
    mean = float(vals.mean())
    if vals.size > 1:
        from scipy.stats import t as student

        half = float(student.ppf(0.5 + LEVEL / 2, vals.size - 1)) * float(vals.std(ddof=1)) / math.sqrt(vals.size)
        low, high = metric_bounds(metric) if metric else (None, None)  # an AUC's interval ends at 1, as its mean does
        lo, hi = mean - half, mean + half
        return _Value(task, mean, (lo if low is None else max(lo, low), hi if high is None else min(hi, high)))
    job = rows[0].job_id
    ci = None
    if job and job in inp.item_scores and metric == inp.primary.get(task):
        ci = _test_set_ci(
            Path(inp.item_scores[job]).parent, task, inp.settings.task_bootstrap, inp.settings.bootstrap_seed
        )
    return _Value(task, mean, ci)


def _test_set_ci(job_dir: Path, task: str, resamples: int, seed: int) -> tuple[float, float] | None:
    """Percentile bootstrap interval of one job's metric over the test images it scored; None when undefined."""
    from usagg.analysis.task_ci import _metrics, load_item_scores

    scores = load_item_scores(job_dir).get(task)
    if scores is None or len(scores.images) < 2:
        return None
    order = sorted(range(len(scores.images)), key=lambda i: scores.images[i])  # independent of listing order
    n = len(order)
    rng = np.random.default_rng(seed)
    s = replace(scores, images=tuple(scores.images[i] for i in order), values=scores.values[order])
    vals = _metrics(s, rng.integers(0, n, size=(resamples, n)))
    vals = vals[np.isfinite(vals)]
    if vals.size < 0.9 * resamples:
        return None
    lo, hi = np.quantile(vals, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def _delta_value(e: Expectation, comp: Comparison, stats: list[Stat], f: float, task: str) -> _Value | None:
    assert e.delta is not None
    d = comp.deltas.get((f, task, e.delta.paradigm))
    if d is None or d.value is None:
        return None
    if e.delta.versus is not None:
        return _difference_value(comp, f, task, e.delta.paradigm, e.delta.versus, d.value)
    ci = shown_interval(stats, f, task, e.delta.paradigm)
    return _Value(task, d.value, None if ci is None else (ci[0], ci[1]))


def _difference_value(comp: Comparison, f: float, task: str, p: str, versus: str, dp: float) -> _Value | None:
    """Δ_p − Δ_versus (pp) on the seed means, with a t interval of the paired seed differences (>= 2 seeds)."""
    dv = comp.deltas.get((f, task, versus))
    if dv is None or dv.value is None:
        return None
    a, b = comp.seed_deltas(f, task, p), comp.seed_deltas(f, task, versus)
    diffs = np.asarray([a[s] - b[s] for s in sorted(set(a) & set(b))], float)
    value = dp - dv.value
    if diffs.size < 2:
        return _Value(task, value, None)
    from scipy.stats import t as student

    half = float(student.ppf(0.5 + LEVEL / 2, diffs.size - 1)) * float(diffs.std(ddof=1)) / math.sqrt(diffs.size)
    return _Value(task, value, (value - half, value + half))


def _ag_outcome(e: Expectation, inp: AnalysisInput) -> Outcome:
    from usagg.grouping import adjusted_rand_index

    assert e.ag_groups is not None and e.min_adjusted_rand is not None
    expected = {t: f"e{i}" for i, g in enumerate(e.ag_groups) for t in g}
    per_seed = labels_by_seed(inp, "AG")
    if not per_seed:
        return Outcome(e.name, None, None, None, None, "AG did not run")
    aris: dict[int, float] = {}
    choices: dict[str, list[int]] = {}
    for seed, found in per_seed.items():
        missing = [t for t in expected if t not in found]
        if missing:
            return Outcome(e.name, None, None, None, None, f"AG seed {seed} has no result for {', '.join(missing)}")
        aris[seed] = adjusted_rand_index(expected, {t: found[t] for t in expected})
        groups: dict[str, list[str]] = {}
        for t in inp.task_order if set(inp.task_order) >= set(found) else sorted(found):
            if t in found:
                groups.setdefault(found[t], []).append(t)
        chose = "; ".join(f"{name}: {', '.join(g)}" for name, g in groups.items())
        choices.setdefault(chose, []).append(seed)
    ari = float(np.mean(list(aris.values())))
    seeds = ", ".join(f"seed {s} {v:.2f}" for s, v in sorted(aris.items()))
    chosen = " | ".join(f"{c} (seed {', '.join(map(str, ss))})" for c, ss in choices.items())
    if len(choices) == 1 and len(aris) > 1:  # AG plans once, from the affinity averaged over the seeds
        (only,) = choices
        detail = (
            f"adjusted Rand index {ari:.2f} ≥ {e.min_adjusted_rand:g} of the one grouping AG chose for all "
            f"{counted(len(aris), 'seed')} (from their averaged affinity: one decision, not {len(aris)}; how often "
            f"resampled affinities give it back: AG stability): {only}"
        )
    else:
        mean = f"mean over {counted(len(aris), 'seed')} ≥ {e.min_adjusted_rand:g}"
        detail = f"adjusted Rand index, {mean} ({seeds}); AG chose {chosen}"
    return Outcome(e.name, ari >= e.min_adjusted_rand, ari, None, None, detail)


def labels_by_seed(inp: AnalysisInput, paradigm: str) -> dict[int, dict[str, str]]:
    """seed -> task -> the name of its `paradigm` job (g1, g2, ...) at the largest fraction: its grouping per seed."""
    from usagg.analysis.inputs import job_name

    rows = [r for r in inp.table.rows if r.paradigm == paradigm and r.job_id]
    if not rows:
        return {}
    top = max(r.fraction for r in rows)
    out: dict[int, dict[str, str]] = {}
    for r in rows:
        if r.fraction == top:
            out.setdefault(r.seed, {})[r.task] = job_name(paradigm, r.job_id)
    return dict(sorted(out.items()))


def _num(v: float) -> str:
    """As the tables show a metric (usagg/analysis/render.py `cell_text`): 0.810, not 0.81; 1.000, not 1."""
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _ci_text(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [{_num(ci[0])}, {_num(ci[1])}]"


def _interval(o: Outcome) -> Interval:
    if o.ci_low is None or o.ci_high is None:
        return Interval(None, None, "—")
    return Interval(o.ci_low, o.ci_high, _ci_text((o.ci_low, o.ci_high)).strip())


def expectations_table(outcomes: list[Outcome]) -> Table:
    """One row per expectation: verdict, value and its 95 % interval, and what was read. Its CSV keys are the JSON's
    names (`Outcome`'s fields), the interval as ci_low, ci_high."""
    rows: list[list[Cellv]] = [
        [o.name, o.verdict, math.nan if o.value is None else o.value, _interval(o), o.detail] for o in outcomes
    ]
    met = sum(o.met is True for o in outcomes)
    notes = [
        f"{met} of {len(outcomes)} met; a value is the worst task's, its 95 % interval where one exists: over the "
        "training seeds where there are two or more, each seed scored on the study's one test set, so the test set's "
        "own sampling is not in it (the advice's intervals add it); a metric's interval ends at its bounds; no "
        "correction for checking several expectations."
    ]
    return Table(
        "expectations",
        "Expectations (expect: in the spec)",
        ["Expectation", "Verdict", "Value", "95 % CI", "Detail"],
        rows,
        notes,
        ["name", "verdict", "value", ("ci_low", "ci_high"), "detail"],
    )


def with_expectations(text: str, outcomes: list[Outcome], fmt: str) -> str:
    """`usagg compare`'s output with the expectations added: a key of the JSON, a table after the others."""
    if fmt == "json":
        data = json.loads(text)
        data["expectations"] = [asdict(o) for o in outcomes]
        return json.dumps(data, indent=1, default=str) + "\n"
    if not outcomes or fmt == "csv":
        return text
    from usagg.analysis.render import render

    sep = "\n" if fmt != "latex" else "\n% ----\n"
    return text + sep + render(expectations_table(outcomes), fmt)
