"""Splitting a Δ into an aggregation part and a MoE part with the control paradigms (usagg/paradigms.py).

TS has MoE off, CG and AU on, so Δ_CG and Δ_AU mix two causes. A control differs from
the paradigm in one factor: AUD is AU without MoE, TSM is TS with MoE. With Δ measured
against TS, the parts are, in percentage points, additive by construction:

- AU (control AUD, same scope, the baseline's MoE): aggregation part = Δ_AUD,
  MoE part = Δ_AU − Δ_AUD;
- CG (control TSM, the baseline's scope, the same MoE): MoE part = Δ_TSM,
  aggregation part = Δ_CG − Δ_TSM.

Generally: a control with the paradigm's scope and the baseline's MoE measures
aggregation (preferred); else one with the baseline's scope and the paradigm's MoE
measures MoE; the other part is the remainder. The split is sequential (the part the
control measures first), so an interaction of the two factors lands in the remainder.
A paradigm that differs from the baseline in one factor only (TSM, AUD), one without
declared factors, or a study without its control is not split. An aggregation control must
have trained the same task sets as the paradigm (`Comparison.same_units`): CGD controls CG, and
AG only where AG's groups are the clinical ones.

Each part's mean over tasks gets the interval the 2x2 effects get (`split_stats`: the wild cluster bootstrap over
the tasks' parts, clinical groups as clusters, usagg/analysis/cluster_inference.py), with no p of its own (the 2x2
effects carry the tests); where that has none (too few clusters) the part is descriptive. A collapsed run of the
control or the paradigm (`delta.collapsed`) can make a part by itself: `collapsed_in` names it beside the split,
with the parts over the tasks without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usagg.analysis.cluster_inference import METHOD, draws_text, wild_cluster_mean
from usagg.analysis.delta import SEED_ORDER, Collapse, Comparison, collapsed, group_n_train
from usagg.analysis.stats import Stat
from usagg.paradigms import PARADIGMS
from usagg.wording import counted

ALL = "all tasks (Δm)"


@dataclass(frozen=True)
class Control:
    """The control of a paradigm and the part of Δ that the control's own Δ measures."""

    paradigm: str
    control: str
    measures: str  # "aggregation" or "MoE"

    def formula(self, baseline: str) -> str:
        """How the two parts are computed, in words for tables and captions."""
        p, c = self.paradigm, self.control
        if self.measures == "aggregation":
            return f"aggregation = Δ{c}, MoE = Δ{p} − Δ{c} (Δ versus {baseline})"
        return f"MoE = Δ{c}, aggregation = Δ{p} − Δ{c} (Δ versus {baseline})"


@dataclass(frozen=True)
class Split:
    """Mean total Δ and its two parts over a set of tasks (percentage points); None where a Δ is missing."""

    paradigm: str
    level: str  # group | all
    name: str
    n: int
    total: float | None
    aggregation: float | None
    moe: float | None


def control_of(comp: Comparison, paradigm: str) -> Control | None:
    """The control paradigm present in `comp` that splits `paradigm`'s Δ, or None."""
    base, entry = PARADIGMS.get(comp.baseline), PARADIGMS.get(paradigm)
    if base is None or entry is None or None in (base.scope, base.moe, entry.scope, entry.moe):
        return None
    if entry.scope == base.scope or entry.moe == base.moe:
        return None  # one factor only: its whole Δ is one part
    candidates = [(c, PARADIGMS[c]) for c in comp.others if c != paradigm and c in PARADIGMS]
    for c, e in candidates:
        if e.scope == entry.scope and e.moe == base.moe and comp.same_units(c, paradigm):
            return Control(paradigm, c, "aggregation")
    for c, e in candidates:
        if e.scope == base.scope and e.moe == entry.moe:
            return Control(paradigm, c, "MoE")
    return None


def controls(comp: Comparison) -> list[Control]:
    """Every paradigm of the comparison that its controls split, in paradigm order."""
    return [c for p in comp.others if (c := control_of(comp, p)) is not None]


def task_parts(comp: Comparison, fraction: float, ctl: Control) -> dict[str, tuple[float, float, float]]:
    """task -> (total Δ, aggregation part, MoE part) where both Δs exist; the paradigm's exclusions apply."""
    names, vals = comp.delta_values(fraction, ctl.paradigm)
    out = {}
    for t, total in zip(names, vals, strict=True):
        c = comp.deltas[(fraction, t, ctl.control)].value
        if c is None:
            continue
        rest = float(total) - c
        out[t] = (float(total), c, rest) if ctl.measures == "aggregation" else (float(total), rest, c)
    return out


def splits(comp: Comparison, fraction: float, ctl: Control) -> list[Split]:
    """Mean parts by clinical group (largest data first), then over all tasks."""
    parts = task_parts(comp, fraction, ctl)
    sizes = group_n_train(comp, fraction)
    groups = list(dict.fromkeys(comp.info(t).group for t in parts))
    groups.sort(key=lambda g: -np.nan_to_num(sizes.get(g, np.nan), nan=-1.0))
    out = []
    for level, name, members in [
        *[("group", g, [t for t in parts if comp.info(t).group == g]) for g in groups],
        ("all", ALL, list(parts)),
    ]:
        if not members:
            out.append(Split(ctl.paradigm, level, name, 0, None, None, None))
            continue
        m = np.asarray([parts[t] for t in members], float).mean(axis=0)
        out.append(Split(ctl.paradigm, level, name, len(members), float(m[0]), float(m[1]), float(m[2])))
    return out


def split_order(ctl: Control, baseline: str) -> str:
    """The note under the split table: formula and aggregation order."""
    return f"{ctl.paradigm}: {ctl.formula(baseline)}; {SEED_ORDER}, then parts per task, then mean over tasks."


#: The two parts of a split, in `task_parts` order after the total.
PARTS = ("aggregation", "MoE")


def split_stat_name(part: str) -> str:
    """The name of the statistic of a split's part over all tasks (its paradigm is the Stat's)."""
    return f"split: {part} part"


def split_stats(comp: Comparison, resamples: int, seed: int) -> list[Stat]:
    """Each part's mean over all tasks per split paradigm and fraction, with the 2x2 effects' interval (wild cluster
    bootstrap, clinical groups as clusters) and no p: the Holm family stays the tests'."""
    out = []
    for f in comp.fractions:
        for ctl in controls(comp):
            parts = task_parts(comp, f, ctl)
            clusters = [comp.info(t).group for t in parts]
            for i, part in enumerate(PARTS, start=1):
                r = wild_cluster_mean([v[i] for v in parts.values()], clusters, resamples, seed)
                out.append(
                    Stat(
                        split_stat_name(part), ctl.paradigm, f, r.mean, r.n,
                        f"{part} part of the split ({ctl.formula(comp.baseline)}), mean over tasks; {METHOD}, "
                        f"{counted(r.clusters, 'clinical group')} as clusters, "
                        f"{draws_text(r.clusters, resamples, seed)}",
                        ci=r.ci, note=r.note,
                    )
                )  # fmt: skip
    return out


def collapsed_in(comp: Comparison, fraction: float, ctl: Control) -> list[Collapse]:
    """The collapsed runs (`delta.collapsed`) of the split's paradigm or its control on the tasks the split holds."""
    held = task_parts(comp, fraction, ctl)
    return [c for c in collapsed(comp, fraction) if c.paradigm in (ctl.paradigm, ctl.control) and c.task in held]


def split_without(comp: Comparison, fraction: float, ctl: Control, tasks: set[str]) -> Split | None:
    """The split's mean parts over its tasks other than `tasks` (a collapsed run's), None where none is left."""
    parts = {t: v for t, v in task_parts(comp, fraction, ctl).items() if t not in tasks}
    if not parts:
        return None
    m = np.asarray(list(parts.values()), float).mean(axis=0)
    return Split(ctl.paradigm, "all", ALL, len(parts), float(m[0]), float(m[1]), float(m[2]))
