"""How small a Δ the planned seeds can detect: the minimum detectable effect from the spread over seeds.

Each task's Δ compares a paradigm's seed mean with the baseline's, n seeds each. With σ the
sd of one seed's Δ (the metric's sd over seeds, pooled over every paradigm that ran ≥ 2 seeds
of the task, carried to the analysis scale at the baseline's mean: usagg/analysis/scales.py
`gradient`; or given as --seed-sd in Δ units), the smallest Δ a two-sided two-sample t test
at α detects with the given power is d·σ, d the standardised effect solving the noncentral-t
power equation with 2n − 2 df (usagg/analysis/tdist.py: no scipy, which `usagg report` must not
import when it reuses memoised statistics); at 1 seed that test has no df. The study mean Δm is
tested otherwise, as compare tests it: by the wild cluster bootstrap over clinical groups
(usagg/analysis/cluster_inference.py), whose df come from the groups, not the seeds, and which
needs ≥ 3 of them. Its row is the smallest Δm that test detects when every task's true Δ is the
same and only seed noise (sd σ_t·√(2/n) per task's Δ) stands in the way, simulated on the test
itself (usagg/analysis/cluster_power.py); one row per set of tasks the paradigms' Δm average
(CG's leaves out its one-task groups).

Two task rows have a note where a number would mislead: a task whose baseline compare finds at chance
(`Comparison.chance`, its own check) is left out of every aggregate and test, so no Δ of it is tested and it is
in no Δm row; a task without spread over seeds (sd 0: each paradigm's seeds scored alike, as a metric at its best
value does) gives no detectable Δ, where d·0 = 0 would read as "any effect is detectable".
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usagg.analysis.cluster_inference import MIN_CLUSTERS
from usagg.analysis.cluster_power import STUDIES, detectable_mean
from usagg.analysis.delta import Comparison
from usagg.analysis.scales import UNITS, gradient
from usagg.analysis.tables import Cellv, Table
from usagg.analysis.tdist import two_sided_power
from usagg.errors import UsaggError
from usagg.paradigms import PARADIGMS
from usagg.wording import counted

if TYPE_CHECKING:
    from pathlib import Path

    from usagg.spec.models import Study

ALPHA = 0.05
POWER = 0.8
STUDY_MEAN = "study mean (Δm)"
#: A task row's note where its baseline is at chance and compare leaves it out (analysis.chance_tasks: exclude).
AT_CHANCE = "baseline at chance: compare leaves the task out of every aggregate and test, so no Δ of it is tested"
#: A task row's note where the seeds measured no spread: d·0 = 0 would claim that any effect is detectable.
NO_SPREAD = (
    "no spread over seeds (sd 0: each paradigm's seeds scored alike, as at a metric's best value, e.g. AUC 1.000 in "
    "every seed): no detectable Δ follows, not one of 0"
)
_BISECTIONS = 40  # halvings of d's bracket: d to 1e-12 of its bracket, power well inside the 1e-6 of its integral


@dataclass(frozen=True)
class Detectable:
    """The smallest Δ one task (or the study mean) can detect at n seeds; None with the reason where undefined."""

    name: str
    sd: float | None  # sd of one seed's Δ (Δ units); for the study mean, the SE of its seed noise
    n_seeds: int
    mde: float | None
    note: str = ""


def standardised_mde(n_seeds: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Cohen's d a two-sided two-sample t test with n per arm detects at `power`; None below 2 seeds."""
    if n_seeds < 2:
        return None

    def power_at(d: float) -> float:  # noncentrality d·√(n/2): n seeds in each arm
        return two_sided_power(d * math.sqrt(n_seeds / 2.0), 2 * n_seeds - 2, alpha)

    lo, hi = 0.0, 1.0
    while power_at(hi) < power:
        lo, hi = hi, 2.0 * hi
    for _ in range(_BISECTIONS):  # power rises with d
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return (lo + hi) / 2.0


def seed_sd(comp: Comparison, fraction: float) -> dict[str, float]:
    """task -> sd of one seed's Δ on the comparison's scale, from the metric's seed sd pooled over paradigms."""
    out = {}
    for info in comp.tasks:
        base = comp.cells.get((fraction, info.task, comp.baseline))
        num = den = 0.0
        for p in comp.paradigms:
            c = comp.cells.get((fraction, info.task, p))
            if c is not None and c.n_seeds > 1 and math.isfinite(c.sd):
                num += (c.n_seeds - 1) * c.sd**2
                den += c.n_seeds - 1
        g = gradient(comp.scale, info.metric, base.mean, base.mean, info.higher_is_better) if base else None
        if den and g is not None:
            out[info.task] = g[0] * math.sqrt(num / den)
    return out


def detectable(
    sds: dict[str, float],
    n_seeds: int,
    groups: Mapping[str, str],
    resamples: int,
    seed: int,
    alpha: float = ALPHA,
    power: float = POWER,
    *,
    left_out: Mapping[str, Mapping[str, str]] | None = None,
    chance: Collection[str] = (),
) -> list[Detectable]:
    """The minimum detectable Δ of every task in `sds`, then of the study mean Δm on compare's test of it: the
    tasks' clinical `groups` its clusters, analysis.bootstrap `resamples` and bootstrap_seed `seed` its draws.
    `left_out` (paradigm -> {task: why}, e.g. "trained alone") names the tasks each paradigm's Δm leaves out: a Δm
    row per set of tasks averaged, the tasks' rows noted. `chance`: the tasks compare leaves out of everything, their
    baseline at chance: in no Δm, and no detectable Δ (`AT_CHANCE`)."""
    left = {p: {**out, **dict.fromkeys(chance, "at chance")} for p, out in (left_out or {"": {}}).items()}
    d = standardised_mde(n_seeds, alpha, power)
    rows = [_task_row(t, sd, n_seeds, d, left, chance) for t, sd in sds.items()]
    means: dict[tuple[str, ...], list[str]] = {}  # the tasks a Δm averages -> the paradigms averaging them
    for p, out in left.items():
        means.setdefault(tuple(t for t in sds if t not in out), []).append(p)
    for kept, paradigms in means.items():
        name = STUDY_MEAN if len(means) == 1 else f"{STUDY_MEAN}, {', '.join(paradigms)}"
        if kept:
            rows.append(_mean_row(name, {t: sds[t] for t in kept}, n_seeds, groups, resamples, seed, alpha, power))
    return rows


def _task_row(
    task: str, sd: float, n_seeds: int, d: float | None, left: Mapping[str, Mapping[str, str]], chance: Collection[str]
) -> Detectable:
    """One task's row: d·sd, or no number where one would mislead (a baseline at chance, no seed spread, one seed),
    with the reason and the Δm rows it is not in."""
    if task in chance:
        return Detectable(task, sd, n_seeds, None, AT_CHANCE)
    out = _out_of(task, left)
    if not sd > 0:
        return Detectable(task, sd, n_seeds, None, _joined(NO_SPREAD, out))
    if d is None:
        why = f"{counted(n_seeds, 'seed')} per paradigm leaves the task's t test no df: plan ≥ 2"
        return Detectable(task, sd, n_seeds, None, _joined(why, out))
    return Detectable(task, sd, n_seeds, d * sd, out)


def _joined(*notes: str) -> str:
    """A row's non-empty notes as one."""
    return "; ".join(filter(None, notes))


def _out_of(task: str, left: Mapping[str, Mapping[str, str]]) -> str:
    """Which paradigms' Δm leave `task` out and why: "at chance: not in Δm", "trained alone: not in CG's Δm"."""
    by_why: dict[str, list[str]] = {}
    for p, out in left.items():
        if task in out:
            by_why.setdefault(out[task], []).append(p)
    return "; ".join(
        f"{w}: not in Δm" if len(ps) == len(left) else f"{w}: not in the Δm of {', '.join(ps)}"
        for w, ps in by_why.items()
    )


def _mean_row(
    name: str, sds: dict[str, float], n: int, groups: Mapping[str, str], resamples: int, seed: int, a: float, pw: float
) -> Detectable:
    """The study mean's row: its seed noise SE, and the Δm its wild cluster test detects, or why it has none."""
    task_sds = [sd * math.sqrt(2.0 / n) for sd in sds.values()]  # of a task's Δ: n seeds of paradigm and baseline
    se = math.sqrt(math.fsum(s**2 for s in task_sds)) / len(sds)
    clusters = [groups[t] for t in sds]
    named = sorted(set(clusters))
    if len(named) < MIN_CLUSTERS:
        note = (
            f"not testable: {counted(len(named), 'clinical group')} ({', '.join(named)}); the Δm test, a wild "
            f"cluster bootstrap over clinical groups, needs ≥ {MIN_CLUSTERS}"
        )
        return Detectable(name, se, n, None, note)
    over = f"over {counted(len(sds), 'task')} in {counted(len(named), 'clinical group')}"
    if not se > 0:
        return Detectable(name, se, n, None, f"{over}: none of them has spread over seeds, so no detectable Δm follows")
    mde = detectable_mean(task_sds, clusters, resamples, seed, a, pw)
    if mde is None:
        return Detectable(name, se, n, None, f"{over}: no Δm reaches power {pw:g} at α {a:g} with these draws")
    df = "; at 1 seed too: its df come from the groups" if n == 1 else ""
    return Detectable(name, se, n, mde, f"{over}, the wild cluster test simulated, seed noise only{df}")


def power_table(rows: list[Detectable], source: str, scale: str) -> Table:
    """The smallest Δ each task and the study mean can detect at the planned seeds (usagg/analysis/power.py)."""
    cols = ["Task", "sd of a seed's Δ", "Seeds", "Detectable Δ", "Note"]
    body: list[list[Cellv]] = [[r.name, r.sd, r.n_seeds, r.mde, r.note] for r in rows]
    notes = [
        f"Detectable Δ: the smallest true Δ ({UNITS[scale]}, analysis.scale {scale}) a two-sided two-sample t test "
        f"of the paradigm's seeds against the baseline's detects at α {ALPHA:g} with power {POWER:g}, n seeds each.",
        f"Study mean (Δm): the smallest Δm compare's test of it (a wild cluster bootstrap-t, a clinical group's "
        f"tasks one cluster, ≥ {MIN_CLUSTERS} groups) rejects at α {ALPHA:g}, before Holm's adjustment, in "
        f"{POWER * 100:g} % of {STUDIES:,} simulated studies where every task's true Δ is that Δm and only seed noise "
        "of the sd given (sd column: its SE) moves them; a true Δ that differs between groups needs a larger Δm.",
        f"Seed spread: {source}.",
        "`usagg advise` decides a task from its own measurement at a stricter level (one-sided 0.05/k over its k "
        "paradigms, the test set's variance added), so a Δ near this size does not decide the advice.",
    ]
    return Table("power", "Smallest detectable Δ at the planned seeds", cols, body, notes)


def planned_power(study: Study, given_sd: float | None, store_root: Path) -> Table:
    """The power table of a spec at its planned seeds: the seed spread given (Δ units, every task), else the one
    measured in the study's run store at `store_root` (the caller's: the analysis does not find stores); a
    UsaggError says how to get one where neither is there."""
    if given_sd is not None:
        sds = {t.id: given_sd for t in study.tasks}
        return _planned_table(
            study, sds, f"{given_sd:g} for every task, given with --seed-sd", study.analysis.scale, set()
        )
    measured: dict[str, float] = {}
    chance: set[str] = set()  # compare's own check on the pilot: left out of every aggregate and test
    comp = None
    if store_root.is_dir():
        from usagg.analysis.delta import compare
        from usagg.analysis.inputs import load_input

        try:
            comp = compare(load_input(store_root, None))
        except UsaggError:
            comp = None
        if comp is not None:
            measured = seed_sd(comp, max(comp.fractions))
            chance = set(comp.chance.get(max(comp.fractions), ())) if comp.chance_excluded else set()
    if not measured:
        raise UsaggError(
            f"usagg plan --power: no seed spread to work from: the run store {store_root} holds no task run with "
            "≥ 2 seeds; give the sd of one seed's Δ with --seed-sd (in the units of analysis.scale, e.g. 1.5), or "
            "run a pilot with seeds: [0, 1, 2]"
        )
    source = f"sd over seeds measured in {store_root}, pooled over paradigms"
    scale = comp.scale if comp is not None else study.analysis.scale
    return _planned_table(study, measured, source, scale, chance)


def _planned_table(study: Study, sds: dict[str, float], source: str, scale: str, chance: set[str]) -> Table:
    """The power table of the spec's seeds, groups and paradigms: CG's Δm and CGD's without the one-task clinical
    groups under analysis.cg_singletons: exclude, as compare leaves them out, and every paradigm's without the
    `chance` tasks, whose baseline the pilot's compare found at chance."""
    st = study.analysis
    groups = {t.id: t.group or "-" for t in study.tasks}
    lone = {t for t in groups if list(groups.values()).count(groups[t]) == 1}
    left: dict[str, dict[str, str]] = {}
    for p in study.paradigms:
        entry = PARADIGMS.get(p)
        clinical = entry is not None and entry.scope == "group" and entry.needs is None  # CG, CGD: not AG's own
        if p != st.baseline:
            left[p] = {t: "trained alone" for t in lone} if clinical and st.cg_singletons == "exclude" else {}
    rows = detectable(
        sds, len(study.seeds), groups, st.bootstrap, st.bootstrap_seed, left_out=left or None, chance=chance
    )
    table = power_table(rows, source, scale)
    staged = [p for p in left if (e := PARADIGMS.get(p)) is not None and e.scope == "group" and e.needs is not None]
    if staged:
        table.notes.append(
            f"{', '.join(staged)}: its Δm also leaves out the tasks it trains alone, known once the jobs it needs "
            "have run; counted here over every task."
        )
    return table
