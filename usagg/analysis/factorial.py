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
groups, chance-level baselines). The mean over tasks carries a wild cluster bootstrap interval
and p (usagg/analysis/cluster_inference.py) with tasks of one clinical group as one cluster:
three of the four paradigms train tasks together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from usagg.analysis.cluster_inference import METHOD, draws_text, wild_cluster_mean
from usagg.analysis.delta import Comparison, rescaled
from usagg.analysis.stats import Stat
from usagg.paradigms import PARADIGMS

EFFECTS = ("aggregation", "MoE", "interaction")


@dataclass(frozen=True)
class Design:
    """A two-factor paradigm and its controls: `aggregation` (its scope, the baseline's MoE) and `moe` (the
    baseline's scope, its MoE); `missing` names the registered paradigms to add where a control did not run."""

    paradigm: str
    aggregation: str | None
    moe: str | None
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.aggregation is not None and self.moe is not None

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
        if any(ran[k] and found[k] is None for k in want):
            continue  # the control ran with other task sets (CGD's clinical groups are not AG's): no 2x2 to add
        missing = tuple(
            (_registered(*want[k]) or [f"a paradigm with scope {want[k][0]}, MoE {'on' if want[k][1] else 'off'}"])[0]
            for k in ("moe", "aggregation")
            if found[k] is None
        )
        out.append(Design(p, found["aggregation"], found["moe"], missing))
    return out


def task_effects(comp: Comparison, fraction: float, d: Design) -> dict[str, tuple[float, float, float, float]]:
    """task -> (Δ of the paradigm, aggregation, MoE, interaction) on `comp`'s scale, over the tasks all four have."""
    assert d.aggregation is not None and d.moe is not None
    four = (d.paradigm, d.aggregation, d.moe)
    skip = set().union(*(comp.left_out(fraction, p) for p in four))
    out = {}
    for info in comp.tasks:
        deltas = [comp.deltas.get((fraction, info.task, p)) for p in four]
        vals = [d.value for d in deltas if d is not None and d.value is not None]
        if info.task in skip or len(vals) < len(four):
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
    only the study's scale carries a p (one test per effect in the Holm family), the others an interval."""
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
                            f"{r.clusters} clinical groups as clusters, {draws_text(r.clusters, resamples, seed)}",
                            p=r.p if scale == comp.scale else None, ci=r.ci, note=r.note,
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


def missing_notes(comp: Comparison) -> list[str]:
    """One sentence per design a control is missing from: which paradigm to add."""
    return [
        f"{d.paradigm}: no 2x2 of aggregation and MoE without {' and '.join(d.missing)}: add "
        f"{' and '.join(d.missing)} to `paradigms` (the split table still shows what the study ran)."
        for d in designs(comp)
        if not d.complete
    ]


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


def headline(comp: Comparison, stats: Sequence[Stat], fraction: float) -> list[str]:
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
            ci = f" (95 % CI {s.ci[0]:+.1f} to {s.ci[1]:+.1f})" if s.ci else f" ({s.note})"
            if s.ci and s.note:  # said once per design: fewer clusters than the intervals' coverage was checked at
                few.add(s.note)
            parts.append(f"{effect} {s.value:+.1f}{ci}")
            n = s.n
        if parts:
            lines.append(
                f"**{d.paradigm} 2x2** ({d.cells(comp.baseline)}, {comp.scale} scale, {n} tasks): "
                + ", ".join(parts)
                + "; the main effects add up to the paradigm's Δ"
                + "".join(f"; intervals over {note}" for note in sorted(few))
                + "."
            )
    return lines + missing_notes(comp)
