"""The selection gap (issue 25.4): Δ of every paradigm versus the baseline under each selection rule, side by side.

Under `training.selection_scope: model` a one-task TS job is tested at its task's best epoch (per-task early
stopping), a multi-task job at one compromise epoch for all its tasks: the headline Δ of CG, AU or AG then
carries a selection bias against them. Every job with a selection split records, per task, the test value of
its primary metric under each rule of `jobmetrics.SELECTION_RULES` (metrics.json `selection.rules`, written by
usagg/engine/selecting.py `RuleTests`): model (the job's best epoch), task (each task's own best) and last. Here
both sides of each Δ are taken under the same rule: mean over seeds per task, then Δ on the comparison's scale
(`Comparison.change`), then the mean over the tasks that have a Δ under all three rules, leaving out what the
headline leaves out (`Comparison.left_out`: one-task groups under CG, tasks at chance). The gap is, per task,
Δ(task) − Δ(model): for a one-task baseline both rules are one choice, so it is what the compromise epoch costs
the paradigm; its mean gets the wild cluster interval of the headline's Δm (usagg/analysis/cluster_inference.py,
a paradigm's tasks sharing a model one cluster per clinical group).

A job without a selection split has nothing to rank (`not measured`); a metrics.json written before the rules
were recorded, or an imported results table, has nothing to read (`not recorded`): the table says so per
paradigm and every other table is unaffected. Torch-free; reads metrics.json through the run store.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.cluster_inference import METHOD, ClusterMean, wild_cluster_mean
from usagg.analysis.delta import SEED_ORDER, Comparison
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.tables import Cellv, Interval, Key, Table, frac_label
from usagg.jobmetrics import NO_SELECTION_SPLIT, SELECTION_RULES, JobMetrics
from usagg.store import RunStore
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.analysis.summary import Analysis

#: How a rule reads in the tables and the headline.
RULE_NAMES = {"model": "model scope", "task": "task scope", "last": "last epoch"}
#: Why a job has no per-rule record.
NOT_RECORDED = (
    "not recorded: metrics.json has no selection.rules (written before usagg recorded them, or simulated; "
    "a rerun job records them)"
)
NO_STORE = "not recorded: an imported results table (--results) has no metrics.json to read the rules from"


@dataclass(frozen=True)
class GapRow:
    """One paradigm at one fraction: mean Δ under each rule over the same tasks, and the gap (task − model)."""

    paradigm: str
    fraction: float
    tasks: tuple[str, ...]  # with a Δ under every rule
    means: dict[str, float | None]  # rule -> mean Δ over `tasks`
    gap: ClusterMean  # mean of Δ(task) − Δ(model) over `tasks`, its wild cluster interval and p
    task_deltas: dict[str, dict[str, float]]  # task -> rule -> Δ
    status: str  # "measured", or why not (not measured / not recorded)
    shared: bool = True  # the paradigm trains tasks together (else both scopes are one choice, the gap 0)


@dataclass
class SelectionGap:
    """The selection gap of one analysed study (or one point of a sweep)."""

    baseline: str
    scale: str
    rows: list[GapRow]
    headline: str | None  # the rule the study's Δ uses (model, task, last), "mixed: ..." or None when unknown
    notes: list[str] = field(default_factory=list)
    #: (of the jobs behind a `last` headline, those without a selection split, all of them): a job under
    #: `training.selection: best` with data.selection_fraction 0 ranks no epoch and tests its last, as `last` does
    unsplit: tuple[int, int] = (0, 0)


def _job_rule(m: JobMetrics) -> str | None:
    """The rule a job's results.csv values were tested with: last, or best under its scope (a one-task job's scope
    is model, which is its task's own best too)."""
    sel = m.selection
    if sel is None:
        return None
    if sel.mode == "last":
        return "last"
    return sel.scope if sel.mode == "best" else None


def read_rules(inp: AnalysisInput) -> tuple[dict[str, dict[str, dict[str, float | None]]], dict[str, str], dict]:
    """(job -> task -> rule -> test value, job -> why it has none, job -> (its rule, its task count, whether it had
    no selection split)) for the jobs of `inp`'s table."""
    jobs = inp.table.job_ids
    if inp.run_dir is None:
        return {}, {j: NO_STORE for j in jobs}, {}
    store = RunStore(Path(inp.run_dir))
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    missing: dict[str, str] = {}
    used: dict[str, tuple[str | None, int, bool]] = {}
    for jid in jobs:
        m = store.job_metrics(jid)
        if m is None:
            missing[jid] = "not recorded: the job has no metrics.json"
            continue
        sel = m.selection
        used[jid] = (_job_rule(m), len(m.tasks), sel is not None and sel.rules_note == NO_SELECTION_SPLIT)
        if sel is not None and sel.rules:
            values[jid] = {
                t: {r: (c.test if c is not None else None) for r in SELECTION_RULES for c in [getattr(tr, r)]}
                for t, tr in sel.rules.items()
            }
        elif sel is not None and sel.rules_note:
            missing[jid] = sel.rules_note
        else:
            missing[jid] = NOT_RECORDED
    return values, missing, used


def _headline_jobs(used: dict[str, tuple[str | None, int, bool]]) -> list[tuple[str | None, int, bool]]:
    """The jobs whose rule is the headline's: the multi-task ones (every job where none trains several tasks)."""
    return [u for u in used.values() if u[1] > 1] or list(used.values())


def _headline_rule(used: dict[str, tuple[str | None, int, bool]]) -> str | None:
    """The rule of the study's Δ: the one its multi-task jobs were tested with (every job's where none trains
    several tasks); "mixed: ..." when they differ."""
    rules = {r for r, _, _ in _headline_jobs(used)}
    rules.discard(None)
    if not rules:
        return None
    if len(rules) == 1:
        return next(iter(rules))
    return "mixed: " + ", ".join(sorted(r for r in rules if r))


def selection_gap(inp: AnalysisInput, comp: Comparison) -> SelectionGap:
    """Mean Δ under model scope, task scope and last per paradigm and fraction, and the gap with its interval."""
    values, missing, used = read_rules(inp)
    st = inp.settings
    # (fraction, task, paradigm) -> rule -> seed -> value; and the jobs without a record behind each cell
    cells: dict[tuple[float, str, str], dict[str, dict[int, float]]] = {}
    lacking: dict[tuple[float, str, str], set[str]] = {}
    for row in inp.table.rows:
        if row.metric != inp.primary.get(row.task) or not row.job_id:
            continue
        key = (row.fraction, row.task, row.paradigm)
        rec = values.get(row.job_id, {}).get(row.task)
        if rec is None:
            lacking.setdefault(key, set()).add(missing.get(row.job_id, NOT_RECORDED))
            continue
        for r in SELECTION_RULES:
            v = rec.get(r)
            if v is not None and math.isfinite(v):
                cells.setdefault(key, {}).setdefault(r, {})[row.seed] = v
    rows = []
    for f in comp.fractions:
        for p in comp.others:
            rows.append(_row(comp, f, p, cells, lacking, st.bootstrap, st.bootstrap_seed))
    last = [unsplit for r, _, unsplit in _headline_jobs(used) if r == "last"]
    gap = SelectionGap(comp.baseline, comp.scale, rows, _headline_rule(used), unsplit=(sum(last), len(last)))
    gap.notes = _notes(gap, missing, st.bootstrap, st.bootstrap_seed)
    return gap


def _row(
    comp: Comparison,
    f: float,
    p: str,
    cells: dict[tuple[float, str, str], dict[str, dict[int, float]]],
    lacking: dict[tuple[float, str, str], set[str]],
    resamples: int,
    seed: int,
) -> GapRow:
    skip = comp.left_out(f, p)
    per_task: dict[str, dict[str, float]] = {}
    why: set[str] = set()
    for info in comp.tasks:
        t = info.task
        if t in skip:
            continue
        mine, base = cells.get((f, t, p), {}), cells.get((f, t, comp.baseline), {})
        why |= lacking.get((f, t, p), set()) | lacking.get((f, t, comp.baseline), set())
        deltas = {}
        for r in SELECTION_RULES:
            if mine.get(r) and base.get(r):
                m_p = float(np.mean(list(mine[r].values())))
                m_b = float(np.mean(list(base[r].values())))
                d = comp.change(t, m_p, m_b).value
                if d is not None and math.isfinite(d):
                    deltas[r] = d
        if len(deltas) == len(SELECTION_RULES):
            per_task[t] = deltas
    tasks = tuple(per_task)
    means: dict[str, float | None] = {
        r: (math.fsum(per_task[t][r] for t in tasks) / len(tasks) if tasks else None) for r in SELECTION_RULES
    }
    shared = comp.shared.get(p, False)
    gaps = [per_task[t]["task"] - per_task[t]["model"] for t in tasks]
    clusters = [comp.info(t).group for t in tasks]  # a clinical group's tasks one cluster, as every mean over tasks
    ci = wild_cluster_mean(gaps, clusters, resamples, seed)
    eligible = sum(1 for info in comp.tasks if info.task not in skip)
    if tasks:
        status = "measured" if len(tasks) == eligible else f"measured on {len(tasks)} of {counted(eligible, 'task')}"
        if len(tasks) < eligible:
            status += "; " + ("; ".join(sorted(why)) if why else "the rest lack a Δ under some rule")
        if not shared:
            status += " (one task per job: both scopes pick the same epoch, so the gap is 0 by construction)"
    else:
        status = "; ".join(sorted(why)) or "not measured: no task has a Δ under every rule"
    return GapRow(p, f, tasks, means, ci, per_task, status, shared)


def _notes(gap: SelectionGap, missing: dict[str, str], resamples: int, seed: int) -> list[str]:
    head = gap.headline
    if head is None:
        headline = "The study's headline Δ: its jobs do not say which rule they were tested with."
    elif head.startswith("mixed"):
        headline = f"The study's headline Δ mixes rules ({head.removeprefix('mixed: ')}): its jobs differ."
    else:
        headline = f"The study's headline Δ (every other table) uses the {RULE_NAMES.get(head, head)}{_why(gap)}."
    notes = [
        headline,
        f"Δ under a rule: the paradigm and {gap.baseline} both tested at the epoch the rule picks for the task; "
        f"{SEED_ORDER} on the {gap.scale} scale, then the mean over the tasks with a Δ under every rule (tasks the "
        "headline leaves out left out).",
        f"Gap = Δ(task scope) − Δ(model scope) per task, in percentage points: {gap.baseline} trains one task per "
        "job, where both scopes pick the same epoch, so the gap is what one compromise epoch costs a paradigm "
        "that trains tasks together; positive: model-scope selection understates its Δ.",
        f"95 % CI of the mean gap: {METHOD}; a clinical group's tasks are one cluster, {resamples} draws, seed "
        f"{seed} (every one of the 6^G draws, exact, where there are no more).",
    ]
    reasons: dict[str, int] = {}
    for why in missing.values():
        reasons[why] = reasons.get(why, 0) + 1
    notes += [f"{why} ({counted(n, 'job')})." for why, n in sorted(reasons.items())]
    if NO_SELECTION_SPLIT in reasons:
        notes.append(
            "To measure it: run with a selection split (data.selection_fraction > 0, e.g. --set "
            "data.selection_fraction=0.2); the headline keeps training.selection's rule."
        )
    return notes


def _why(gap: SelectionGap) -> str:
    """Why the headline's jobs were tested under its rule, as their metrics.json says: the spec's scope, or for the
    last epoch `training.selection: last` or no selection split (`selection.rules_note`: nothing was ranked, whatever
    training.selection says)."""
    head = gap.headline
    if head != "last":
        return f" (training.selection_scope: {head})"
    unsplit, jobs = gap.unsplit
    if unsplit and unsplit == jobs:
        return ": its jobs had no selection split (data.selection_fraction 0), so none ranked an epoch"
    if unsplit:
        return f" (training.selection: last; {unsplit} of its {jobs} jobs had no selection split to rank epochs)"
    return " (training.selection: last)"


def _interval(c: ClusterMean) -> Interval:
    if c.ci is None:
        return Interval(None, None, c.note or "—")
    return Interval(c.ci[0], c.ci[1], f"[{c.ci[0]:+.1f}, {c.ci[1]:+.1f}]")


def gap_table(gap: SelectionGap, *, multi: bool = False) -> Table:
    """The "Selection gap" table: per paradigm (and fraction), mean Δ under each rule, the gap and its interval.
    Its CSV keys are `gap_json`'s names (mean_model for its mean.model), the interval as ci_low, ci_high."""
    rows: list[list[Cellv]] = []
    for r in gap.rows:
        cells: list[Cellv] = [r.paradigm, *([frac_label(r.fraction)] if multi else [])]
        cells += [len(r.tasks), *(r.means[k] for k in SELECTION_RULES), r.gap.mean, _interval(r.gap), r.status]
        rows.append(cells)
    cols = ["Paradigm", *(["Fraction"] if multi else []), "Tasks"]
    cols += [f"Δm {RULE_NAMES[k]} %" for k in SELECTION_RULES] + ["Δ gap (task − model) pp", "95 % CI", "Status"]
    keys: list[Key] = ["paradigm", *(["fraction"] if multi else []), "n_tasks"]
    keys += [f"mean_{k}" for k in SELECTION_RULES] + ["gap", ("ci_low", "ci_high"), "status"]
    title = f"Selection gap: Δm versus {gap.baseline} under each selection rule ({_headline_rule_text(gap)})"
    return Table("selection_gap", title, cols, rows, list(gap.notes), keys)


def gap_json(gap: SelectionGap) -> dict:
    """`usagg compare --format json`'s "selection_gap": the headline rule, one record per paradigm and fraction
    (per-task Δ under each rule included) and the notes."""

    def num(v: float | None) -> float | None:
        return v if v is not None and math.isfinite(v) else None

    return {
        "headline": gap.headline,
        "baseline": gap.baseline,
        "scale": gap.scale,
        "rows": [
            {
                "paradigm": r.paradigm,
                "fraction": r.fraction,
                "tasks": list(r.tasks),
                "mean": {k: num(v) for k, v in r.means.items()},
                "gap": num(r.gap.mean),
                "ci_low": r.gap.ci[0] if r.gap.ci else None,
                "ci_high": r.gap.ci[1] if r.gap.ci else None,
                "p": r.gap.p,
                "clusters": r.gap.clusters,
                "status": r.status,
                "task_delta": r.task_deltas,
            }
            for r in gap.rows
        ],
        "notes": gap.notes,
    }


def headline_line(gap: SelectionGap) -> str | None:
    """The report's headline line: each measured paradigm's gap at the largest fraction, and the rule used."""
    if not any(r.shared for r in gap.rows):
        return None
    top = max(r.fraction for r in gap.rows)
    parts = []
    unmeasured: dict[str, list[str]] = {}  # why -> paradigms, so a study without the record says it once
    for r in gap.rows:
        if r.fraction != top or not r.shared:  # one task per job: 0 by construction, said in the table
            continue
        if r.gap.mean is None:
            unmeasured.setdefault(r.status, []).append(r.paradigm)
        else:
            few = f"; {r.gap.note}" if r.gap.ci and r.gap.note else ""  # fewer clusters than its coverage's check
            ci = f" (95 % CI {r.gap.ci[0]:+.1f} to {r.gap.ci[1]:+.1f}{few})" if r.gap.ci else ""
            parts.append(f"{r.paradigm} {r.gap.mean:+.1f} pp{ci} over {counted(len(r.tasks), 'task')}")
    parts += [f"{', '.join(ps)}: {why}" for why, ps in unmeasured.items()]
    return f"**Selection gap** (Δ task scope − Δ model scope): {'; '.join(parts)}; {_headline_rule_text(gap)}."


def _headline_rule_text(gap: SelectionGap) -> str:
    """The rule the headline Δ uses, in words that read whether it is known, mixed or unknown (an imported table, a
    simulated store: no job says)."""
    head = gap.headline
    if head is None:
        return "the headline's selection rule is unknown"
    if head.startswith("mixed"):
        return f"the headline mixes rules ({head.removeprefix('mixed: ')})"
    return f"the headline uses the {RULE_NAMES.get(head, head)}"


def study_gaps(a: Analysis) -> list[tuple[str, SelectionGap, bool]]:
    """(point label, its selection gap, several fractions) for the study, or for each point of a swept study."""
    parts = a.points or [((), a)]
    return [
        (", ".join(f"{k}={v}" for k, v in point), selection_gap(sub.inp, sub.comp), len(sub.comp.fractions) > 1)
        for point, sub in parts
    ]


def _titled(t: Table, label: str) -> Table:
    return dataclasses.replace(t, title=f"{t.title} [{label}]") if label else t


def gap_tables(a: Analysis) -> list[Table]:
    """The selection gap table(s) of an analysis: one, or one per point of a swept study (its values in the title)."""
    return [_titled(gap_table(g, multi=multi), label) for label, g, multi in study_gaps(a)]


def with_selection_gap(text: str, a: Analysis, fmt: str) -> str:
    """`usagg compare`'s output with the selection gap added: a key of the JSON ("selection_gap"; a list with each
    point's values under "point" for a swept study), a table after the others; CSV prints one table, unchanged."""
    if fmt == "csv":
        return text
    if fmt == "json":
        import json

        data = json.loads(text)
        gaps = study_gaps(a)
        if a.points:
            data["selection_gap"] = [{"point": label} | gap_json(g) for label, g, _ in gaps]
        else:
            data["selection_gap"] = gap_json(gaps[0][1])
        return json.dumps(data, indent=1, default=str) + "\n"
    from usagg.analysis.render import render

    sep = "\n" if fmt != "latex" else "\n% ----\n"
    return text + "".join(sep + render(t, fmt) for t in gap_tables(a))
