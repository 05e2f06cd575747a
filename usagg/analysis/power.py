"""How small a Δ the planned seeds can detect: the minimum detectable effect from the spread over seeds.

Each task's Δ compares a paradigm's seed mean with the baseline's, n seeds each. With σ the
sd of one seed's Δ (the metric's sd over seeds, pooled over every paradigm that ran ≥ 2 seeds
of the task, carried to the analysis scale at the baseline's mean: usagg/analysis/scales.py
`gradient`; or given as --seed-sd in Δ units), the smallest Δ a two-sided two-sample t test
at α detects with the given power is d·σ, d the standardised effect solving the noncentral-t
power equation with 2n − 2 df (usagg/analysis/tdist.py: no scipy, which `usagg report` must not
import when it reuses memoised statistics). The study mean over T tasks has
seed noise SE = √(Σ 2σ_t²/n)/T, so it detects (z_{1−α/2} + z_power)·SE: seed noise only, the
spread of the true Δ between tasks and groups adds to it (the wild cluster interval of
usagg/analysis/cluster_inference.py measures both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

from usagg.analysis.delta import Comparison
from usagg.analysis.scales import UNITS, gradient
from usagg.analysis.tables import Cellv, Table
from usagg.analysis.tdist import two_sided_power
from usagg.errors import UsaggError

if TYPE_CHECKING:
    from pathlib import Path

    from usagg.spec.models import Study

ALPHA = 0.05
POWER = 0.8
STUDY_MEAN = "study mean (Δm)"
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
    alpha: float = ALPHA,
    power: float = POWER,
    *,
    not_in_mean: dict[str, str] | None = None,
) -> list[Detectable]:
    """The minimum detectable Δ of every task in `sds`, then of the study mean over the tasks Δm averages:
    `not_in_mean` (task -> why, e.g. "at chance") names those Δm leaves out, noted on their rows."""
    left = not_in_mean or {}
    d = standardised_mde(n_seeds, alpha, power)
    why = "" if d is not None else f"{n_seeds} seed per paradigm leaves the t test no df: plan ≥ 2"
    rows = [
        Detectable(t, sd, n_seeds, None if d is None else d * sd, "; ".join(filter(None, [why, left.get(t, "")])))
        for t, sd in sds.items()
    ]
    kept = [sd for t, sd in sds.items() if t not in left]
    if kept and n_seeds >= 1:
        se = math.sqrt(sum(2.0 * sd**2 / n_seeds for sd in kept)) / len(kept)
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0) + NormalDist().inv_cdf(power)
        rows.append(Detectable(STUDY_MEAN, se, n_seeds, z * se, f"over {len(kept)} tasks, seed noise only"))
    return rows


def power_table(rows: list[Detectable], source: str, scale: str) -> Table:
    """The smallest Δ each task and the study mean can detect at the planned seeds (usagg/analysis/power.py)."""
    cols = ["Task", "sd of a seed's Δ", "Seeds", "Detectable Δ", "Note"]
    body: list[list[Cellv]] = [[r.name, r.sd, r.n_seeds, r.mde, r.note] for r in rows]
    notes = [
        f"Detectable Δ: the smallest true Δ ({UNITS[scale]}, analysis.scale {scale}) a two-sided two-sample t test "
        f"of the paradigm's seeds against the baseline's detects at α {ALPHA:g} with power {POWER:g}, n seeds each.",
        "Study mean: (z_0.975 + z_0.8)·SE with SE² = Σ 2σ_t²/n / T², seed noise only (the spread of Δ between tasks "
        "adds to it).",
        f"Seed spread: {source}.",
        "`usagg advise` decides a task from its own measurement at a stricter level (one-sided 0.05/k over its k "
        "paradigms, the test set's variance added), so a Δ near this size does not decide the advice.",
    ]
    return Table("power", "Smallest detectable Δ at the planned seeds", cols, body, notes)


def planned_power(study: Study, given_sd: float | None, store_root: Path) -> Table:
    """The power table of a spec at its planned seeds: the seed spread given (Δ units, every task), else the one
    measured in the study's run store at `store_root` (the caller's: the analysis does not find stores); a
    UsaggError says how to get one where neither is there."""
    n = len(study.seeds)
    if given_sd is not None:
        sds = {t.id: given_sd for t in study.tasks}
        return power_table(
            detectable(sds, n), f"{given_sd:g} for every task, given with --seed-sd", study.analysis.scale
        )
    measured: dict[str, float] = {}
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
    if not measured:
        raise UsaggError(
            f"usagg plan --power: no seed spread to work from: the run store {store_root} holds no task run with "
            "≥ 2 seeds; give the sd of one seed's Δ with --seed-sd (in the units of analysis.scale, e.g. 1.5), or "
            "run a pilot with seeds: [0, 1, 2]"
        )
    source = f"sd over seeds measured in {store_root}, pooled over paradigms"
    return power_table(detectable(measured, n), source, comp.scale if comp is not None else study.analysis.scale)
