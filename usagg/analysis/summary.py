"""What `usagg compare` prints: the study summary, then every table, in one of five formats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from usagg.analysis.cluster_inference import mean_delta_stats, paired_stats
from usagg.analysis.controls import controls, split_stats
from usagg.analysis.delta import CHANCE, Comparison, chance_evidence, chance_reference, compare
from usagg.analysis.factorial import designs, effect_stats, no_design_text
from usagg.analysis.families import holm_families
from usagg.analysis.fraction_trend import fraction_trend_stats
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.mixed import interaction_model
from usagg.analysis.points import analyse_points, points_output
from usagg.analysis.power import detectable, power_table, seed_sd
from usagg.analysis.render import render
from usagg.analysis.selection_warnings import selection_warnings_table
from usagg.analysis.stats import Stat, statistics
from usagg.analysis.tables import (
    CHANCE_RULE,
    Cellv,
    Table,
    affinity_table,
    ag_group_table,
    aggregate_table,
    budget_table,
    delta_long_table,
    factorial_table,
    frac_label,
    fraction_table,
    fraction_trend_table,
    group_table,
    na_table,
    negative_table,
    ordered_tasks,
    said_once,
    scales_table,
    split_table,
    stats_table,
    task_table,
    uncertainty_table,
    unchecked_tasks,
)
from usagg.analysis.uncertainty import task_uncertainty
from usagg.errors import UsaggError
from usagg.wording import counted


@dataclass
class Analysis:
    """One analysed study: input, comparison and statistics, shared by compare, plot and report."""

    inp: AnalysisInput
    comp: Comparison
    stats: list[Stat]
    # a swept study (usagg/sweep.py): each point analysed alone (usagg/analysis/points.py); inp, comp and stats
    # are then the first point's
    points: list[tuple[tuple[tuple[str, str], ...], Analysis]] = field(default_factory=list)


def study_statistics(inp: AnalysisInput, comp: Comparison) -> list[Stat]:
    """Every statistic of `comp` under the study's analysis settings, Holm-adjusted within its family: the primary
    Δm tests of analysis.primary, or the exploratory rest (usagg/analysis/families.py).

    The tests of Δ (usagg/analysis/stats.py), Δm with the wild cluster bootstrap (cluster_inference.py), the 2x2
    effects (factorial.py), the intervals of the split's parts (controls.py, no p), the mixed model's slopes and
    interaction per fraction (mixed.py), the slope across the fractions of a sweep (fraction_trend.py), then the
    per-task intervals of Δ (uncertainty.py, no p of their own).
    """
    st = inp.settings
    tests = statistics(comp, st.hypotheses)
    tests += mean_delta_stats(comp, st.bootstrap, st.bootstrap_seed, st.hypotheses)
    tests += paired_stats(comp, st.bootstrap, st.bootstrap_seed, st.hypotheses)
    tests += effect_stats(comp, st.bootstrap, st.bootstrap_seed)
    tests += split_stats(comp, st.bootstrap, st.bootstrap_seed)  # intervals only: no p joins the family
    tests += fraction_trend_stats(comp, st.bootstrap, st.bootstrap_seed, st.hypotheses)
    for f in comp.fractions:
        tests += interaction_model(comp, f, st.hypotheses)
    return holm_families(tests, comp, st.primary) + task_uncertainty(inp, comp)


def analyse(inp: AnalysisInput, baseline: str | None = None) -> Analysis:
    """Δ versus the baseline (default: the study's analysis.baseline) and every statistic, computed afresh.

    The commands reuse earlier statistics through usagg/analysis/outputs.py instead.
    """
    parts = analyse_points(inp, lambda one: analyse(one, baseline))
    if parts:
        first = parts[0][1]
        return Analysis(first.inp, first.comp, first.stats, parts)
    comp = compare(inp, baseline)
    return Analysis(inp, comp, study_statistics(inp, comp))


def summary_table(a: Analysis) -> Table:
    """Study facts: tasks, paradigms, seeds, fractions, jobs, primary metrics, source."""
    t, comp = a.inp.table, a.comp
    by_metric: dict[str, int] = {}
    for info in comp.tasks:
        by_metric[info.metric] = by_metric.get(info.metric, 0) + 1
    jobs = f"{len(t.job_ids)} with results"
    if a.inp.jobs_planned is not None:
        jobs += f" (of {a.inp.jobs_planned} planned)"
    groups = list(dict.fromkeys(i.group for i in comp.tasks))
    rows: list[list[Cellv]] = [
        ["Study", a.inp.study],
        ["Source", a.inp.source_text],
        ["Tasks", f"{len(comp.tasks)} in {counted(len(groups), 'group')} ({', '.join(groups)})"],
        ["Paradigms", ", ".join(comp.paradigms)],
        ["Baseline", comp.baseline],
        ["Seeds", f"{len(t.seeds)} ({', '.join(map(str, t.seeds))})"],
        ["Fractions", ", ".join(frac_label(f) for f in comp.fractions)],
        ["Jobs", jobs],
        ["Primary metrics", ", ".join(f"{m} ({counted(n, 'task')})" for m, n in by_metric.items())],
        ["Regime threshold", f"n_train < {comp.regime_threshold} is low-data"],
        ["Group regime threshold", f"group n_train < {comp.group_regime_threshold} is a low-data group"],
        ["One-task groups", _singletons_text(a)],
        ["Scale of Δ", f"{comp.scale} (analysis.scale)"],
        ["Baseline at chance", _chance_text(a)],
    ]
    if a.inp.affinity is not None:
        aff = a.inp.affinity
        measured = f"{counted(len(aff.tasks), 'task')}, {counted(len(aff.steps), 'measurement')}"
        rows.append(["Affinity", f"{measured}, {aff.share:.1%} of training"])
    planned = a.inp.planned
    if planned.without_results:
        rows.append(
            ["Jobs without results", "; ".join(f"{p} ({planned.jobs_text(p)})" for p in planned.without_results)]
        )
    notes = [comp.no_delta] if comp.no_delta else []
    return Table("summary", "Study summary", ["Item", "Value"], rows, [*notes, *_lacking_notes(a), *a.inp.notes])


def _lacking_notes(a: Analysis) -> list[str]:
    """The paradigms the stored study plans (its `paradigms`) of which no job has results: named, with their jobs'
    states, so a failed control is not taken for one the study never ran."""
    planned = a.inp.planned
    lacking = planned.lacking(a.comp.paradigms)
    if not lacking:
        return []
    jobs = "; ".join(f"{p} ({planned.jobs_text(p) or 'no job in the plan'})" for p in lacking)
    return [
        f"Planned without results (the stored study's `paradigms`): {jobs}. No table has them: `usagg status` shows "
        "their jobs, `usagg run --retry-failed` runs the failed ones again."
    ]


def _singletons_text(a: Analysis) -> str:
    """Each paradigm's own one-task groups (CG: clinical groups; AG: the groups it formed), the tasks its aggregates
    and tests left out: `Comparison.one_task_groups`, which `Comparison.excluded` is made from."""
    comp = a.comp
    lone = {p: groups for p, groups in comp.one_task_groups.items() if groups}
    if not lone:
        return "none"
    where = "; ".join(f"{p}: {comp.one_task_text(p)}" for p in lone)
    rule = a.inp.settings.cg_singletons
    if not comp.excluded:  # `include` keeps them
        return f"{where}; every paradigm's aggregates and tests keep them (analysis.cg_singletons: {rule})"
    return f"{where}; each left out of that paradigm's aggregates and tests (analysis.cg_singletons: {rule})"


def _chance_text(a: Analysis) -> str:
    """The tasks whose baseline is at chance, each with the fractions where it is and what it did not beat, and the
    tasks no chance level is known for (so a reader knows what the check covered)."""
    comp = a.comp
    where: dict[str, list[float]] = {}
    for f in comp.fractions:
        for t in comp.chance.get(f, ()):
            where.setdefault(t, []).append(f)
    multi = len(comp.fractions) > 1
    named = []
    for t in ordered_tasks(comp):
        if t in where:
            ref = chance_reference(comp, where[t][0], t)
            level = "" if ref is None or ref.predictor == CHANCE else f", the {ref.predictor}"
            fractions = ", ".join(map(frac_label, where[t]))
            at = f" at fraction{'s' * (len(where[t]) > 1)} {fractions}" if multi else ""
            evidence = chance_evidence(comp, where[t][0], t)
            what = "chance" if not level else "a constant prediction"
            named.append(f"{t}{at} (not shown above {what}{level}: {evidence})")
    unchecked = unchecked_tasks(comp)
    rest = (
        f"; no chance level known for {', '.join(unchecked)} (no AUC, and their {comp.baseline} jobs recorded no "
        "trivial predictor's score: metrics.json `trivial`)"
        if unchecked
        else ""
    )
    if not named:  # the rule said even so: what "none" was checked against
        return f"none; rule: {CHANCE_RULE}" + rest
    rule = "left out of" if comp.chance_excluded else "kept in"
    return (
        f"{len(named)}: {', '.join(named)}; {rule} every aggregate and test "
        f"(analysis.chance_tasks: {a.inp.settings.chance_tasks}); rule: {CHANCE_RULE}" + rest
    )


def study_power(a: Analysis) -> Table | None:
    """The smallest Δ each task and the study mean detect at the study's seeds, from the seed spread measured;
    None where no paradigm ran 2 seeds of a task (`usagg plan --power --seed-sd` says it from a given spread)."""
    f = max(a.comp.fractions)
    sds = seed_sd(a.comp, f)
    if not sds:
        return None
    comp, st = a.comp, a.inp.settings
    source = f"sd over seeds measured in {a.inp.source}, pooled over paradigms (fraction {frac_label(f)})"
    chance = set(comp.chance.get(f, ())) if comp.chance_excluded else set()
    left = {p: {t: "trained alone" for t in comp.left_out(f, p) - chance} for p in comp.others}
    groups = {i.task: i.group for i in comp.tasks}
    rows = detectable(
        sds, len(a.inp.table.seeds), groups, st.bootstrap, st.bootstrap_seed, left_out=left or None, chance=chance
    )
    return power_table(rows, source, comp.scale)


def all_tables(a: Analysis) -> list[Table]:
    """Every table of the study, in report order."""
    return _tables(a, lambda f: any(s.task and s.fraction == f for s in a.stats))


def _tables(a: Analysis, has_intervals: Callable[[float], bool]) -> list[Table]:
    """`all_tables`, with `has_intervals(f)` saying whether fraction f gets its table of per-task intervals: the one
    table whose presence needs the statistics (`check_table` counts it before they are computed)."""
    comp = a.comp
    multi = len(comp.fractions) > 1
    tables = [summary_table(a)]
    warned = selection_warnings_table(a.inp)
    if warned is not None:
        tables.append(warned)
    ctls = controls(comp)
    for f in comp.fractions:
        tables.append(task_table(comp, f, multi=multi))
        if has_intervals(f):
            tables.append(uncertainty_table(comp, a.stats, f, multi=multi, resamples=a.inp.settings.task_bootstrap))
        if comp.steps:
            tables.append(budget_table(comp, f, multi=multi))
    for f in comp.fractions:
        tables.append(group_table(comp, f, multi=multi))
        tables.append(aggregate_table(comp, f, multi=multi))
        if ctls:
            tables.append(split_table(comp, f, ctls, a.stats, multi=multi))
        if designs(comp):
            tables.append(factorial_table(comp, a.stats, f, multi=multi, planned=a.inp.planned))
        tables.append(scales_table(comp, f, multi=multi))
    tables.append(negative_table(comp, a.stats))
    if comp.not_available():
        tables.append(na_table(comp))
    tables.append(stats_table(a.stats, comp, a.inp.settings.primary))
    if multi:
        tables.append(fraction_table(comp, a.stats))
        tables.append(fraction_trend_table(comp, a.stats))
    power = study_power(a)
    if power is not None:
        tables.append(power)
    ag = ag_group_table(a.inp, comp)
    if ag is not None:
        tables.append(ag)
    if a.inp.affinity is not None:
        tables.append(affinity_table(a.inp.affinity, comp))
    return tables


def compare_output(a: Analysis, fmt: str, table: str = "delta") -> str:
    """The text `usagg compare` prints: CSV is one table (`table`: by default the machine-readable per-task Δ,
    or any table's name, such as factorial), others every table; a swept study point by point (points.py)."""
    if a.points:
        return points_output(a, fmt, table, compare_output, named_table)
    if fmt == "csv":
        return render(named_table(a, table), "csv")
    if fmt == "json":
        return _json_output(a)
    sep = "\n" if fmt != "latex" else "\n% ----\n"
    tables = all_tables(a)
    return sep.join(render(t, fmt) for t in (tables if fmt == "latex" else said_once(tables)))


#: The tables `usagg compare` makes itself (usagg/cli/analysis.py), not from summary's: the selection gap (from the
#: jobs' metrics.json) and the spec's `expect:`, checked.
COMMAND_TABLES = ("selection_gap", "expectations")


def named_table(a: Analysis, table: str) -> Table:
    """The table `compare --format csv --table NAME` prints: `delta` (the per-task Δ) or any table's name."""
    if table == "delta":
        return delta_long_table(a.comp, a.stats)
    found = {t.name: t for t in all_tables(a)}
    if table not in found:
        raise _not_a_table(table, list(found), a.comp)
    return found[table]


def check_table(inp: AnalysisInput, table: str, baseline: str | None = None) -> None:
    """Refuse a `--table` name before the analysis, whose statistics (bootstrap, mixed model) are the slow part.

    The names come from the tables themselves, built from the comparison alone (no statistics: cheap), point by
    point for a swept study as `named_table` is asked (tens of milliseconds; AG's stability resampling, when its
    table is there, at most about a second). Whether a fraction has its table of per-task intervals (uncertainty)
    is told by the statistics themselves (seed intervals, the test-set bootstrap), so here it counts as there at
    every fraction; `named_table` refuses it after the analysis where no interval came out.
    """
    if table in ("delta", *COMMAND_TABLES):
        return
    points = analyse_points(inp, lambda one: Analysis(one, compare(one, baseline), []))
    for a in [sub for _, sub in points] or [Analysis(inp, compare(inp, baseline), [])]:
        names = [t.name for t in _tables(a, lambda f: True)]
        if table not in names:
            raise _not_a_table(table, names, a.comp)


def _not_a_table(table: str, names: list[str], comp: Comparison) -> UsaggError:
    """The one error for a `--table` name the study has no table of, listing the names it has; the factorial table
    says why the study has none (no paradigm forms a 2x2 with the baseline)."""
    from usagg.names import suggest

    known = ["delta", *names, *COMMAND_TABLES]
    if table.split("_f")[0] == "factorial" and not designs(comp):
        return UsaggError(
            f"--table {table!r}: this study has no 2x2 table: {no_design_text(comp)}; its tables: {', '.join(known)}"
        )
    return UsaggError(
        f"--table {table!r} is not a table of this study{suggest(table, known)}; its tables: {', '.join(known)}"
    )


def _json_output(a: Analysis) -> str:
    """Every table as records (column -> value; NaN as null), the per-task Δ table under "delta", and the notes."""
    import json
    import math

    def cell(v: object) -> object:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    tables = [*all_tables(a), delta_long_table(a.comp, a.stats)]
    out = {
        "study": a.inp.study,
        "baseline": a.comp.baseline,
        "tables": {
            t.name: {
                "title": t.title,
                "rows": [{c: cell(v) for c, v in zip(t.columns, row, strict=False)} for row in t.rows],
                "notes": t.notes,
            }
            for t in tables
        },
    }
    return json.dumps(out, indent=1, default=str) + "\n"
