"""The 2x2 designs of aggregation and MoE: main effects and their interaction, with intervals.

A paradigm that differs from the baseline in both registered factors (usagg/paradigms.py:
`scope` and `moe`; AU and CG against TS) forms a 2x2 with two controls: the paradigm's scope
with the baseline's MoE (AUD for AU, CGD for CG) and the baseline's scope with the paradigm's
MoE (TSM for both), each having trained the same task sets as the cell it stands beside (so AG,
whose groups are not CGD's clinical ones, has no 2x2 unless it found them). With each task's Δ
of the three against the baseline (0 for the baseline itself) on one scale, per task:

- aggregation main effect = (Δ_A + (Δ_AM − Δ_M)) / 2, the scope change averaged over MoE off and on;
- MoE main effect        = (Δ_M + (Δ_AM − Δ_A)) / 2;
- interaction            = Δ_AM − Δ_A − Δ_M.

The two main effects add up to Δ_AM and are its Shapley split (each factor's contribution
averaged over both orders), so unlike the sequential split of usagg/analysis/controls.py
neither part holds the interaction, and CG's and AU's parts are comparable. Effects are shown
on the relative scale, on the log-ratio scale (where the interaction is the log of a ratio of
ratios, free of the baseline's level) and on the study's analysis.scale. A task enters a design
where all four paradigms have its Δ and none of them leaves it out of its aggregates (one-task
groups, chance-level baselines); a task some paradigm has no result for (a failed job) is left
out and named in a note (`left_out_notes`), and the design stays: a control's task sets are
compared over the tasks both have (`Comparison.same_units`). Where no 2x2 can be computed a note
says why (`missing_notes`): a control to add, one planned whose jobs have no results, or one that
trained other task sets. The mean over tasks carries a wild cluster bootstrap interval
and p (usagg/analysis/cluster_inference.py) with tasks of one clinical group as one cluster:
three of the four paradigms train tasks together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from usagg.analysis.cluster_inference import METHOD, draws_text, monte_carlo, wild_cluster_mean
from usagg.analysis.delta import Comparison, rescaled
from usagg.analysis.digits import ci_words, significant
from usagg.analysis.inputs import Planned
from usagg.analysis.stats import Stat
from usagg.paradigms import PARADIGMS
from usagg.wording import counted

EFFECTS = ("aggregation", "MoE", "interaction")


@dataclass(frozen=True)
class Design:
    """A two-factor paradigm and its controls: `aggregation` (its scope, the baseline's MoE) and `moe` (the
    baseline's scope, its MoE); `missing` names the registered paradigms to add where a control did not run,
    `unmatched` each (control, the paradigm it stands beside) where the control ran with other task sets."""

    paradigm: str
    aggregation: str | None
    moe: str | None
    missing: tuple[str, ...]
    unmatched: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        return self.aggregation is not None and self.moe is not None

    @property
    def three(self) -> tuple[str, str, str]:
        """A complete design's paradigm and controls, whose Δ versus the baseline make its 2x2."""
        assert self.aggregation is not None and self.moe is not None
        return self.paradigm, self.aggregation, self.moe

    def cells(self, baseline: str) -> str:
        """The four paradigms in design order, for titles: 'TS, TSM, AUD, AU'."""
        return f"{baseline}, {self.moe or '?'}, {self.aggregation or '?'}, {self.paradigm}"


def _registered(scope: str | None, moe: bool | None) -> list[str]:
    return [
        n for n in PARADIGMS.names() if PARADIGMS[n].compared and (PARADIGMS[n].scope, PARADIGMS[n].moe) == (scope, moe)
    ]


def designs(comp: Comparison) -> list[Design]:
    """Every compared paradigm differing from the baseline in both factors, with the controls the study ran."""
    base = PARADIGMS.get(comp.baseline)
    if base is None or base.scope is None or base.moe is None:
        return []
    out = []
    for p in comp.others:
        e = PARADIGMS.get(p)
        if e is None or e.control or e.scope is None or e.moe is None or e.scope == base.scope or e.moe == base.moe:
            continue
        want = {"aggregation": (e.scope, base.moe), "moe": (base.scope, e.moe)}
        like = {"aggregation": p, "moe": comp.baseline}  # whose task sets a control must have trained
        ran = {k: [c for c in _registered(*f) if c in comp.others] for k, f in want.items()}
        found = {k: next((c for c in ran[k] if comp.same_units(c, like[k])), None) for k in want}
        # a control that ran with other task sets (CGD's clinical groups are not AG's): nothing to add, said why
        unmatched = tuple((c, like[k]) for k in want if found[k] is None for c in ran[k])
        missing = tuple(
            (_registered(*want[k]) or [f"a paradigm with scope {want[k][0]}, MoE {'on' if want[k][1] else 'off'}"])[0]
            for k in ("moe", "aggregation")
            if found[k] is None and not ran[k]
        )
        out.append(Design(p, found["aggregation"], found["moe"], missing, unmatched))
    return out


def no_design_text(comp: Comparison) -> str:
    """Why `designs` finds none: the baseline declares no factors, or no compared paradigm differs from it in both."""
    base = PARADIGMS.get(comp.baseline)
    if base is None or base.scope is None or base.moe is None:
        return (
            f"the baseline {comp.baseline} declares no design factors (scope and MoE, usagg/paradigms.py), so no "
            "paradigm forms a 2x2 with it"
        )
    return (
        f"no compared paradigm differs from the baseline {comp.baseline} in both factors (scope and MoE), as AU and "
        "CG do from TS"
    )


def task_effects(comp: Comparison, fraction: float, d: Design) -> dict[str, tuple[float, float, float, float]]:
    """task -> (Δ of the paradigm, aggregation, MoE, interaction) on `comp`'s scale, over the tasks all four have."""
    skip = _left_out(comp, fraction, d)
    out = {}
    for info in comp.tasks:
        deltas = [comp.deltas.get((fraction, info.task, p)) for p in d.three]
        vals = [d.value for d in deltas if d is not None and d.value is not None]
        if info.task in skip or len(vals) < len(d.three):
            continue
        am, a, m = (float(v) for v in vals)
        out[info.task] = (am, (a + am - m) / 2.0, (m + am - a) / 2.0, am - a - m)
    return out


def scales_shown(comp: Comparison) -> list[str]:
    """Relative, log ratio, and the study's scale when it is another."""
    return list(dict.fromkeys(["relative", "log_ratio", comp.scale]))


def stat_name(effect: str, scale: str) -> str:
    """The name of an effect's statistic (its design is the Stat's paradigm)."""
    return f"2x2 {effect} effect, {scale} scale"


def effect_stats(comp: Comparison, resamples: int, seed: int) -> list[Stat]:
    """The mean over tasks of each main effect and the interaction, per complete design, scale and fraction;
    only the study's scale carries a p (one test per effect in the exploratory Holm family), the others an interval."""
    out = []
    for scale in scales_shown(comp):
        c = rescaled(comp, scale) if scale != comp.scale else comp
        for f in comp.fractions:
            for d in designs(comp):
                if not d.complete:
                    continue
                per = task_effects(c, f, d)
                clusters = [comp.info(t).group for t in per]
                for i, effect in enumerate(EFFECTS, start=1):
                    r = wild_cluster_mean([v[i] for v in per.values()], clusters, resamples, seed)
                    out.append(
                        Stat(
                            stat_name(effect, scale), d.paradigm, f, r.mean, r.n,
                            f"{effect} of the 2x2 {d.cells(comp.baseline)}, mean over tasks; {METHOD}, "
                            f"{counted(r.clusters, 'clinical group')} as clusters, "
                            f"{draws_text(r.clusters, resamples, seed)}{monte_carlo(r)}",
                            p=r.p if scale == comp.scale else None, ci=r.ci, note=r.note,
                            p_floor=r.p_floor if scale == comp.scale and r.p is not None else None,
                            clusters=r.clusters,
                        )
                    )  # fmt: skip
    return out


def group_means(comp: Comparison, fraction: float, d: Design) -> list[tuple[str, int, np.ndarray]]:
    """(clinical group, tasks, mean of (Δ, aggregation, MoE, interaction)) per group, in task order."""
    per = task_effects(comp, fraction, d)
    groups: dict[str, list[tuple[float, ...]]] = {}
    for t, v in per.items():
        groups.setdefault(comp.info(t).group, []).append(v)
    return [(g, len(v), np.asarray(v).mean(axis=0)) for g, v in groups.items()]


def missing_notes(comp: Comparison, planned: Planned | None = None) -> list[str]:
    """Why each design with a control missing has no 2x2: the paradigm to add, or, where the stored study plans it
    (`planned`), its jobs without results and how to run them again; a control that trained other task sets."""
    out = []
    for d in designs(comp):
        if d.complete:
            continue
        plans = (planned or Planned()).paradigms
        unplanned = [m for m in d.missing if m not in plans]
        joined = " and ".join(unplanned)
        why = [f"without {joined}: add {joined} to `paradigms`"] if unplanned else []
        why += [_missing_text(m, planned or Planned()) for m in d.missing if m in plans]
        why += [
            f"{c} trained other task sets than {like} (its jobs group the tasks otherwise)" for c, like in d.unmatched
        ]
        out.append(
            f"{d.paradigm}: no 2x2 of aggregation and MoE: {'; '.join(why)} (the split table still shows what the "
            "study ran)."
        )
    return out


def _missing_text(control: str, planned: Planned) -> str:
    """Why a control the stored study plans is missing: none of its jobs has a result (its jobs, how to rerun them)."""
    jobs = planned.jobs_text(control)
    return (
        f"{control} was planned (the stored study's `paradigms`) but none of its jobs has results"
        + (f" ({jobs})" if jobs else "")
        + ": `usagg run --retry-failed` runs the failed ones again, `usagg status` shows the rest"
    )


def incomplete_text(comp: Comparison, planned: Planned | None = None) -> str:
    """Why no 2x2 is complete, in a few words for an empty factorial table: '' where one is."""
    ds = designs(comp)
    if not ds or any(d.complete for d in ds):
        return ""
    plans = (planned or Planned()).paradigms
    if all(not d.unmatched and not set(d.missing) & set(plans) for d in ds):
        needs = "; ".join(f"{d.paradigm} needs {' and '.join(d.missing)}" for d in ds)
        return f"{needs}: add them to `paradigms`"
    return "; ".join(
        f"{d.paradigm} needs "
        + " and ".join([*(f"{m}{' (planned, no results)' if m in plans else ''}" for m in d.missing),
                        *(f"a {c} that trained {like}'s task sets" for c, like in d.unmatched)])
        for d in ds
    )  # fmt: skip


def left_out_notes(comp: Comparison, fraction: float) -> list[str]:
    """Per complete design, the tasks left out because one of its four paradigms has no Δ for them (a failed or
    missing job), each with the reason: the 2x2 is over the tasks all four have. Tasks an aggregate leaves out
    (one-task groups, chance) are named by the exclusion notes."""
    out = []
    for d in designs(comp):
        if not d.complete:
            continue
        skip = _left_out(comp, fraction, d)
        kept = task_effects(comp, fraction, d)
        gone = [
            f"{t.task} ({_no_delta(comp, fraction, t.task, d.three)})"
            for t in comp.tasks
            if t.task not in kept and t.task not in skip
        ]
        if gone:
            at = f" at fraction {fraction:g}" if len(comp.fractions) > 1 else ""
            out.append(
                f"{d.paradigm} 2x2 ({d.cells(comp.baseline)}){at}: over the {counted(len(kept), 'task')} all four "
                f"paradigms have a Δ for; left out: {', '.join(gone)}."
            )
    return out


def _left_out(comp: Comparison, fraction: float, d: Design) -> set[str]:
    """The tasks an aggregate of any of the design's paradigms leaves out (one-task groups, chance)."""
    return set().union(*(comp.left_out(fraction, p) for p in d.three))


def _no_delta(comp: Comparison, fraction: float, task: str, paradigms: Sequence[str]) -> str:
    """Why a task has no Δ under one of `paradigms`: the first such Δ's reason."""
    for p in paradigms:
        d = comp.deltas.get((fraction, task, p))
        if d is None or d.value is None:
            return d.reason if d is not None else f"no result for {p}"
    return "no Δ"


def effect_table_rows(comp: Comparison, stats: Sequence[Stat], fraction: float) -> list[list[str | float | int | None]]:
    """Rows of the factorial table: per design and scale, each effect over all tasks (interval, p) then per group."""
    by = {(s.paradigm, s.name): s for s in stats if s.fraction == fraction and s.name.startswith("2x2 ")}
    rows: list[list[str | float | int | None]] = []
    for d in designs(comp):
        if not d.complete:
            continue
        for scale in scales_shown(comp):
            c = rescaled(comp, scale) if scale != comp.scale else comp
            for i, effect in enumerate(EFFECTS, start=1):
                s = by.get((d.paradigm, stat_name(effect, scale)))
                if s is not None:
                    ci = s.ci or (None, None)
                    rows.append([d.paradigm, d.cells(comp.baseline), scale, effect, "all", "all tasks", s.n,
                                 s.value, ci[0], ci[1], s.p, s.p_holm, s.note or ""])  # fmt: skip
                for g, n, m in group_means(c, fraction, d):
                    rows.append([d.paradigm, d.cells(comp.baseline), scale, effect, "group", g, n, float(m[i]),
                                 None, None, None, None, ""])  # fmt: skip
    return rows


def headline(comp: Comparison, stats: Sequence[Stat], fraction: float, planned: Planned | None = None) -> list[str]:
    """One line per complete design on the study's scale (effects with their intervals), then what is missing."""
    by = {(s.paradigm, s.name): s for s in stats if s.fraction == fraction and s.name.startswith("2x2 ")}
    lines = []
    for d in designs(comp):
        if not d.complete:
            continue
        parts, few = [], set()
        for effect in EFFECTS:
            s = by.get((d.paradigm, stat_name(effect, comp.scale)))
            if s is None or s.value is None:
                continue
            ci = f" ({ci_words(s.ci)})" if s.ci else f" ({s.note})"  # as the 2x2 table shows them
            if s.ci and s.note:  # said once per design: fewer clusters than the intervals' coverage was checked at
                few.add(s.note)
            parts.append(f"{effect} {significant(s.value, sign=True)}{ci}")
            n = s.n
        if parts:
            lines.append(
                f"**{d.paradigm} 2x2** ({d.cells(comp.baseline)}, {comp.scale} scale, {counted(n, 'task')}): "
                + ", ".join(parts)
                + "; the main effects add up to the paradigm's Δ"
                + "".join(f"; intervals over {note}" for note in sorted(few))
                + "."
            )
    return lines + left_out_notes(comp, fraction) + missing_notes(comp, planned)
