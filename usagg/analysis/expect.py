"""The study's expectations (`expect:` in the spec, usagg/spec/models/expect.py `Expectation`), checked on its results.

Each expectation is met, not met, or not evaluated (a job it reads did not run, or the input has no stored
spec): never met by default. Over several tasks it is met when every task meets it and not met when any task
misses it; the value shown is the worst task's, with its interval when one exists. Values are read at the
largest fraction, seeds averaged:

- metric_of: the paradigm's metric, seeds averaged.
- delta: the task's Δ % versus the baseline. With `delta.versus`: Δ of the paradigm minus Δ of the other (pp).

An interval answers whether another draw of the training seeds AND of the test images would keep the bound, so
both are in it (as in the advice, usagg/analysis/advice_measured.py): with >= 2 seeds a t interval over the seeds (a Δ:
`seed_interval`'s delta method; a difference: the paired seed differences, `Comparison.seed_deltas`) whose
variance adds the test set's, read off a percentile bootstrap of the seed-mean value over the test images the
jobs scored (item_scores.json, usagg/analysis/task_ci.py; the same resamples for every job of a value, so a Δ is
paired), never narrower than the seed interval alone (`widest`: with the test set's variance taken as known,
Welch's df grows and its smaller t quantile could shrink it); with one seed that bootstrap interval alone.
Coverage with known answers: docs/benchmarks.md, "Expectation intervals". Where the test set gives no interval
(no job scored per image: a metric other than the primary, an imported results CSV; the headroom scale; a metric
undefined on too many resamples), a seed interval is marked "seeds only"; one seed then has none. Figure 3 and the
CSV's ci_low/ci_high show the seed interval (usagg/analysis/uncertainty.py `shown_interval`); a Δ's verdict
interval is the uncertainty table's "seeds + test set" column (`BOTH`).
- ag_groups: the adjusted Rand index of AG's grouping against the expected one (usagg/grouping.py), for each seed
  AG ran at the largest fraction, averaged over those seeds; no interval.

`require: interval` makes a bound hold only when the whole interval clears it (a sign that survives the seeds);
a task without an interval then leaves the expectation not evaluated.

Evaluation is a pure function of the analysis; only `study_expectations` reads the run store.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.scales import on_scale
from usagg.analysis.tables import Cellv, Interval, Table
from usagg.analysis.task_ci import (
    endpoint_errors,
    metric_draws,
    percentile_ci,
    resampled_deltas,
    resampled_means,
    resampling_text,
)
from usagg.analysis.uncertainty import (
    LEVEL,
    MONTE_CARLO,
    TEST_SET,
    interval_variance,
    item_scores_reader,
    job_ids,
    scored_seeds,
    seed_interval,
    t_interval,
    widest,
    with_test_set,
)
from usagg.errors import UsaggError
from usagg.tasktypes import metric_bounds
from usagg.wording import counted

if TYPE_CHECKING:
    from collections.abc import Callable

    from usagg.analysis.delta import Comparison
    from usagg.analysis.inputs import AnalysisInput
    from usagg.analysis.stats import Stat
    from usagg.analysis.summary import Analysis
    from usagg.analysis.task_ci import ItemScores
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
    #: How far the worst task clears the bound (negative: misses it), in the value's units: under `require:
    #: interval` from the interval's nearer end. A thin margin is a verdict another machine's last bits can flip.
    margin: float | None = None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "not met", None: "not evaluated"}[self.met]


@dataclass(frozen=True)
class _Value:
    task: str
    value: float
    ci: tuple[float, float] | None
    seeds_only: bool = False  # an interval over >= 2 seeds without the test set's variance (no per-image scores)
    mc: float | None = None  # the Monte Carlo error of the end-points of a test-set bootstrap that entered `ci`


@dataclass(frozen=True)
class _Context:
    """What every expectation of one evaluation reads: the analysis, at its largest fraction."""

    inp: AnalysisInput
    comp: Comparison
    stats: list[Stat]
    fraction: float
    test_ci: dict[tuple[str, str], tuple[float, float]]  # (task, paradigm) -> the test-set bootstrap CI of its Δ
    test_mc: dict[tuple[str, str], float]  # (task, paradigm) -> that CI's end-points' Monte Carlo error
    scores: Callable[[str | None], dict[str, ItemScores]]
    jobs: dict[tuple[str, float, int, str], str]

    def task_scores(self, paradigm: str, task: str, seeds: list[int] | None = None) -> list[ItemScores]:
        """The task's item scores of the paradigm's job of each of `seeds` that scored it (default: every seed the
        paradigm ran), chosen as the uncertainty table's test-set intervals choose them (`scored_seeds`)."""
        ran = sorted(self.comp.seed_values.get((self.fraction, task, paradigm), {})) if seeds is None else seeds
        return [x for _, x in scored_seeds(self.scores, self.jobs, paradigm, self.fraction, task, ran)]


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
    f = max(comp.fractions, default=1.0)
    tested = [s for s in stats if s.name == TEST_SET and s.fraction == f and s.task and s.ci]
    tests = {(s.task, s.paradigm): s.ci for s in tested if s.ci}
    mc = {(s.task, s.paradigm): v for s in tested if (v := dict(s.effects).get(MONTE_CARLO)) is not None}
    ctx = _Context(inp, comp, stats, f, tests, mc, item_scores_reader(inp), job_ids(inp))
    return [_evaluate(e, ctx) for e in expectations]


def evaluate_study(a: Analysis) -> list[Outcome]:
    """The stored study's expectations checked on its analysis."""
    return evaluate(study_expectations(a.inp), a.inp, a.comp, a.stats)


def _evaluate(e: Expectation, ctx: _Context) -> Outcome:
    inp, comp = ctx.inp, ctx.comp
    if e.ag_groups is not None:
        return _ag_outcome(e, inp)
    tasks = _selected(e, comp)
    if not tasks:
        return Outcome(e.name, None, None, None, None, "no task of the results matches its selection")
    values: list[_Value] = []
    missing: list[str] = []
    for t in tasks:
        v = _metric_value(e, ctx, t) if e.metric_of is not None else _delta_value(e, ctx, t)
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
    shown = [f"{v.task} {_num(v.value)}{_ci_text(v.ci)}{_qualifier(v)}" for v in values]
    if missing:
        ran = e.paradigm() if e.delta is None or e.delta.versus is None else f"{e.delta.paradigm} or {e.delta.versus}"
        shown.append(f"no result for {', '.join(missing)} ({ran} did not run there)")
    no_ci = [v.task for v in values if v.ci is None] if e.require == "interval" else []
    if no_ci:
        shown.append(f"no interval for {', '.join(no_ci)} (one seed and no per-image test scores)")
    if e.delta is not None and e.delta.versus is None and (confound := _moe_confound(comp, e.paradigm())):
        shown.append(confound)
    if errors := [v.mc for v in values if v.mc is not None]:
        st = inp.settings
        shown.append(f"test-set bootstrap of {resampling_text(st.task_bootstrap, st.bootstrap_seed, errors)}")
    detail = f"{what} {bound}: " + "; ".join(shown)
    if not values:
        return Outcome(e.name, None, None, None, None, detail)
    fails = [v for v in values if not _holds(e, v)]
    worst = min(values, key=lambda v: _margin(e, v))
    met = False if fails else (None if missing or no_ci else True)
    lo, hi = worst.ci if worst.ci is not None else (None, None)
    return Outcome(e.name, met, worst.value, lo, hi, detail, _margin(e, worst))


def _moe_confound(comp: Comparison, p: str) -> str:
    """Where a paradigm differs from the baseline in both design factors (CG and AU share tasks AND run MoE; TS does
    neither) and the study ran no control to split its Δ (usagg/analysis/controls.py): the words saying the Δ
    measures both, so a verdict is not read as the effect of sharing tasks alone."""
    from usagg.analysis.controls import control_of
    from usagg.paradigms import PARADIGMS

    base, entry = PARADIGMS.get(comp.baseline), PARADIGMS.get(p)
    if base is None or entry is None or None in (base.scope, base.moe, entry.scope, entry.moe):
        return ""
    if base.scope == entry.scope or base.moe == entry.moe or control_of(comp, p) is not None:
        return ""
    controls = [
        name
        for name, c in PARADIGMS.items()
        if (c.scope, c.moe) in ((entry.scope, base.moe), (base.scope, entry.moe)) and name not in (p, comp.baseline)
    ]
    moe = "with MoE" if entry.moe else "without MoE"
    return (
        f"Δ{p} measures sharing tasks and MoE at once ({p} trains {moe}, {comp.baseline} not): no "
        f"{' or '.join(controls) or 'control'} ran to split them"
    )


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


def _metric_value(e: Expectation, ctx: _Context, task: str) -> _Value | None:
    """The paradigm's metric on the task, seeds averaged, with its interval over seeds and test images."""
    assert e.metric_of is not None
    inp, f = ctx.inp, ctx.fraction
    metric = e.metric or inp.primary.get(task)
    rows = sorted(
        (
            r
            for r in inp.table.rows
            if (r.paradigm, r.task, r.metric, r.fraction) == (e.metric_of, task, metric, f) and not math.isnan(r.value)
        ),
        key=lambda r: r.seed,
    )
    if not rows:
        return None
    vals = np.asarray([r.value for r in rows], float)
    mean = float(vals.mean())
    # per-image scores recompute the primary metric only
    scored = ctx.task_scores(e.metric_of, task, [r.seed for r in rows]) if metric == inp.primary.get(task) else []
    st = inp.settings
    draws = metric_draws(scored, st.task_bootstrap, st.bootstrap_seed)
    test = None if draws is None else percentile_ci(draws, LEVEL)
    errors = None if draws is None or test is None else endpoint_errors(draws, LEVEL)
    mc = max(errors) if errors else None
    if vals.size > 1:
        n = int(vals.size)
        terms, dfs = [float(vals.var(ddof=1)) / n], [n - 1]
        ci = t_interval(mean, terms, dfs)
        if test is not None:
            ci = widest(t_interval(mean, terms, dfs, interval_variance(test)), ci)
        low, high = metric_bounds(metric) if metric else (None, None)  # an AUC's interval ends at 1, as its mean does
        lo, hi = ci if low is None else (max(ci[0], low), ci[1])
        return _Value(task, mean, (lo, hi if high is None else min(hi, high)), seeds_only=test is None, mc=mc)
    return _Value(task, mean, test, mc=mc)


def _delta_value(e: Expectation, ctx: _Context, task: str) -> _Value | None:
    assert e.delta is not None
    comp, f, p = ctx.comp, ctx.fraction, e.delta.paradigm
    d = comp.deltas.get((f, task, p))
    if d is None or d.value is None:
        return None
    if e.delta.versus is not None:
        return _difference_value(ctx, task, p, e.delta.versus, d.value)
    test, mc = ctx.test_ci.get((task, p)), ctx.test_mc.get((task, p))
    seeds = seed_interval(comp, f, task, p)
    if seeds is not None and seeds.ci is not None and seeds.n > 1:
        both = None if test is None else with_test_set(comp, f, task, p, test)
        return _Value(task, d.value, both or seeds.ci, seeds_only=both is None, mc=mc if both else None)
    return _Value(task, d.value, test, mc=mc if test else None)  # one seed: the test-set bootstrap alone


def _difference_value(ctx: _Context, task: str, p: str, versus: str, dp: float) -> _Value | None:
    """Δ_p − Δ_versus (pp) on the seed means, with a t interval of the paired seed differences (>= 2 seeds), its
    variance adding the test set's: Δ_p and Δ_versus recomputed on the same resamples of the test images."""
    comp, f = ctx.comp, ctx.fraction
    dv = comp.deltas.get((f, task, versus))
    if dv is None or dv.value is None:
        return None
    a, b = comp.seed_deltas(f, task, p), comp.seed_deltas(f, task, versus)
    seeds = sorted(set(a) & set(b))
    diffs = np.asarray([a[s] - b[s] for s in seeds], float)
    value = dp - dv.value
    test, mc = _difference_test_ci(ctx, task, p, versus)
    if diffs.size < 2:
        return _Value(task, value, test, mc=mc)
    n = int(diffs.size)
    terms, dfs = [float(diffs.var(ddof=1)) / n], [n - 1]
    ci = t_interval(value, terms, dfs)
    if test is not None:
        ci = widest(t_interval(value, terms, dfs, interval_variance(test)), ci)
    return _Value(task, value, ci, seeds_only=test is None, mc=mc)


def _difference_test_ci(
    ctx: _Context, task: str, p: str, versus: str
) -> tuple[tuple[float, float] | None, float | None]:
    """The percentile bootstrap CI over the test images of Δ_p − Δ_versus of the seed means (on the comparison's
    scale, none on headroom), every job of the three paradigms scored on the same resamples, and its end-points'
    Monte Carlo error. Each paradigm brings its own seeds, as the value's Δs average them: the seeds p and versus
    both ran (seed 0 alone, with versus at one seed and p at three) centred the interval on seed 0's difference,
    beside the value and off it."""
    comp = ctx.comp
    sides = [ctx.task_scores(q, task) for q in (comp.baseline, p, versus)]
    if not all(sides):
        return None, None
    st = ctx.inp.settings
    drawn = resampled_means(sides, st.task_bootstrap, st.bootstrap_seed)
    if drawn is None:
        return None, None
    hib = comp.info(task).higher_is_better
    dp, dv = ([on_scale(comp.scale, r, hib) for r in resampled_deltas(drawn[0], 0, k, hib)] for k in (1, 2))
    draws = np.asarray(dp, dtype=float) - np.asarray(dv, dtype=float)
    ci, errors = percentile_ci(draws, LEVEL), endpoint_errors(draws, LEVEL)
    return ci, (max(errors) if ci is not None and errors else None)


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
    return Outcome(e.name, ari >= e.min_adjusted_rand, ari, None, None, detail, ari - e.min_adjusted_rand)


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


def _qualifier(v: _Value) -> str:
    """What the reader of a task's interval needs beside it: seeds only, or no spread at all (every seed and
    resample alike, as an AUC of 1 in every seed: an interval of no width is no evidence of precision)."""
    if v.ci is not None and v.ci[0] == v.ci[1]:
        return " (no spread: every seed and resample alike)"
    return " (seeds only)" if v.seeds_only else ""


def _margin_cell(o: Outcome) -> float:
    """The margin as the table shows it: nan (—) where there is none; signed, in the value's units."""
    return math.nan if o.margin is None or math.isinf(o.margin) else o.margin


def _interval(o: Outcome) -> Interval:
    if o.ci_low is None or o.ci_high is None:
        return Interval(None, None, "—")
    return Interval(o.ci_low, o.ci_high, _ci_text((o.ci_low, o.ci_high)).strip())


def expectations_table(outcomes: list[Outcome]) -> Table:
    """One row per expectation: verdict, value and its 95 % interval, and what was read. Its CSV keys are the JSON's
    names (`Outcome`'s fields), the interval as ci_low, ci_high."""
    rows: list[list[Cellv]] = [
        [o.name, o.verdict, math.nan if o.value is None else o.value, _interval(o), _margin_cell(o), o.detail]
        for o in outcomes
    ]
    met = sum(o.met is True for o in outcomes)
    notes = [
        f"{met} of {len(outcomes)} met; a value is the worst task's, with its 95 % interval where one exists: a t "
        "interval over the training seeds (two or more) whose variance adds the test set's, from a bootstrap of the "
        "test images the jobs scored, so it asks whether other seeds and other test images would keep the bound; "
        "never narrower than the seed interval (a Δ's is the uncertainty table's 'seeds + test set' column; "
        "'seeds only' where the test set gives none: no per-image scores, the headroom scale, or a metric undefined "
        "on too many resamples); with one seed the test-set bootstrap alone (its resamples and the Monte Carlo "
        "error of its end-points in Detail); a metric's interval ends at its bounds; "
        "no correction for checking several expectations. Margin: how far the worst task clears the bound, from its "
        "interval's nearer end under 'whole 95 % interval' (negative: missed), in the value's units."
    ]
    return Table(
        "expectations",
        "Expectations (expect: in the spec)",
        ["Expectation", "Verdict", "Value", "95 % CI", "Margin", "Detail"],
        rows,
        notes,
        ["name", "verdict", "value", ("ci_low", "ci_high"), "margin", "detail"],
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
