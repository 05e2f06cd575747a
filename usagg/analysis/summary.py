"""What `usagg compare` prints: the study summary, then every table, in one of four formats."""

from __future__ import annotations

from dataclasses import dataclass

from usagg.analysis.delta import Comparison, compare
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.render import render
from usagg.analysis.stats import Stat, statistics
from usagg.analysis.tables import (
    Table,
    aggregate_table,
    delta_long_table,
    frac_label,
    fraction_table,
    group_table,
    na_table,
    negative_table,
    stats_table,
    task_table,
)


@dataclass
class Analysis:
    """One analysed study: input, comparison and statistics, shared by compare, plot and report."""

    inp: AnalysisInput
    comp: Comparison
    stats: list[Stat]


def study_statistics(inp: AnalysisInput, comp: Comparison) -> list[Stat]:
    """Every statistic of `comp` under the study's bootstrap settings (analysis.bootstrap, bootstrap_seed)."""
    return statistics(comp, inp.settings.bootstrap, inp.settings.bootstrap_seed)


def analyse(inp: AnalysisInput, baseline: str | None = None) -> Analysis:
    """Δ versus the baseline (default: the study's analysis.baseline) and every statistic, computed afresh.

    The commands reuse earlier statistics through usagg/analysis/outputs.py instead.
    """
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
    rows = [
        ["Study", a.inp.study],
        ["Source", a.inp.source],
        ["Tasks", f"{len(comp.tasks)} in {len(groups)} groups ({', '.join(groups)})"],
        ["Paradigms", ", ".join(comp.paradigms)],
        ["Baseline", comp.baseline],
        ["Seeds", f"{len(t.seeds)} ({', '.join(map(str, t.seeds))})"],
        ["Fractions", ", ".join(frac_label(f) for f in comp.fractions)],
        ["Jobs", jobs],
        ["Primary metrics", ", ".join(f"{m} ({n} tasks)" for m, n in by_metric.items())],
        ["Regime threshold", f"n_train < {comp.regime_threshold} is low-data"],
    ]
    return Table("summary", "Study summary", ["Item", "Value"], rows, list(a.inp.notes))


def all_tables(a: Analysis) -> list[Table]:
    """Every table of the study, in report order."""
    comp = a.comp
    multi = len(comp.fractions) > 1
    tables = [summary_table(a)]
    for f in comp.fractions:
        tables.append(task_table(comp, f, multi=multi))
    for f in comp.fractions:
        tables.append(group_table(comp, f, multi=multi))
        tables.append(aggregate_table(comp, f, multi=multi))
    tables.append(negative_table(comp))
    if comp.not_available():
        tables.append(na_table(comp))
    tables.append(stats_table(a.stats))
    if multi:
        tables.append(fraction_table(comp, a.stats))
    return tables


def compare_output(a: Analysis, fmt: str) -> str:
    """The text `usagg compare` prints: CSV is the machine-readable per-task Δ table, others every table."""
    if fmt == "csv":
        return render(delta_long_table(a.comp), "csv")
    sep = "\n" if fmt != "latex" else "\n% ----\n"
    return sep.join(render(t, fmt) for t in all_tables(a))
