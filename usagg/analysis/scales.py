"""The scale a task's Δ is measured on (analysis.scale) and the chance level a baseline must beat.

Relative Δ (s·(m_p − m_b)/|m_b|·100) mixes bounded metrics with unbounded ones (MRE in px)
and reads a baseline at chance (AUC 0.5) as a real reference. The other scales:

- log_ratio: s·ln(m_p/m_b)·100, symmetric (a gain and the loss back cancel) and additive
  across factors; it needs a metric that cannot be negative (a value of 0 gives n/a);
- headroom: s·(m_p − m_b)/D·100, Marx and Cummings' (2007) normalised change: a gain is the
  share of the distance D from the baseline to the metric's best value (`metric_bounds`: the
  upper bound where higher is better, the lower one otherwise) that the paradigm closed, a
  loss the share of the distance from the baseline down to the metric's worst value that it
  gave away, so Δ lies in [−100, 100] for a bounded metric (a loss from a baseline near the
  best is not divided by the little headroom left: a drop from 0.998 to 0.938 is −6 %, not
  −3,000 %). Chance-aware: for a metric with a chance level (AUC 0.5) a gain's distance is
  counted from chance at most (D = best − max(m_b, chance), so a baseline below chance has
  no headroom beyond chance's) and a loss from a baseline above chance is measured against
  chance (losing all skill is −100 %). A metric with no worst value (an error in px) measures
  a loss against the distance to its best, as a gain.

s = +1 where higher is better, −1 otherwise, so a positive Δ is a gain on every scale and
every scale agrees with the others in sign task by task; means over tasks can disagree.
Torch-, scipy- and spec-free. Whether a scale fits a metric (the spec's check) is `usagg.tasktypes.scale_problem`,
beside the metrics' bounds, so the spec does not import the analysis.
"""

from __future__ import annotations

import math

from usagg.tasktypes import metric_best, metric_bounds
from usagg.tasktypes.base import metric_base

SCALES = ("relative", "log_ratio", "headroom")

#: What one unit of Δ is on each scale, for table headers and notes.
UNITS = {"relative": "%", "log_ratio": "log points (100·ln ratio)", "headroom": "% of headroom"}

#: Formula of each scale, for the notes under the tables.
FORMULAS = {
    "relative": "Δ = s·(m_p − m_b)/|m_b|·100",
    "log_ratio": "Δ = s·ln(m_p/m_b)·100",
    "headroom": "Δ = s·(m_p − m_b)/D·100, D the distance from m_b to the metric's best value (from chance at "
    "most) for a gain, to its worst value (chance for AUC above chance) for a loss: normalised change",
}

#: Metrics whose value without skill is known whatever the data: AUC of a random ranking.
CHANCE = {"AUC": 0.5}


def chance_level(metric: str) -> float | None:
    """The metric's chance level (AUC 0.5, per-class variants included), None where it depends on the data."""
    return CHANCE.get(metric_base(metric))


def change(scale: str, metric: str, m_p: float, m_b: float, higher_is_better: bool) -> tuple[float | None, str]:
    """(Δ of m_p against m_b on `scale`, ''), or (None, why it is undefined)."""
    s = 1.0 if higher_is_better else -1.0
    if scale == "relative":
        if m_b == 0:
            return None, "baseline metric is 0, relative change undefined"
        return s * (m_p - m_b) / abs(m_b) * 100.0 + 0.0, ""  # + 0.0: a lower-is-better tie is 0, never -0.0
    if scale == "log_ratio":
        if m_b <= 0 or m_p <= 0:
            return None, f"a metric value ≤ 0 ({min(m_p, m_b):g}), log ratio undefined"
        return s * math.log(m_p / m_b) * 100.0 + 0.0, ""
    if scale == "headroom":
        if m_p == m_b:
            return 0.0, ""
        dist = _headroom(metric, m_p, m_b, higher_is_better)
        if dist is None or dist <= 0:
            return None, "baseline at the metric's best value (or its best is unknown), no headroom"
        return s * (m_p - m_b) / dist * 100.0 + 0.0, ""
    raise ValueError(f"unknown scale {scale!r}; one of {', '.join(SCALES)}")


def _headroom(metric: str, m_p: float, m_b: float, higher_is_better: bool) -> float | None:
    """The distance D a Δ on the headroom scale divides by: for a loss, from the baseline to the worst value
    (`worst_value`) where the metric has one; else from the baseline to the best value, from chance at most."""
    s = 1.0 if higher_is_better else -1.0
    if s * (m_p - m_b) < 0 and (worst := worst_value(metric, m_b, higher_is_better)) is not None:
        return abs(m_b - worst)
    best = metric_best(metric, higher_is_better)
    if best is None:
        return None
    chance = chance_level(metric)
    ref = max(m_b, chance) if chance is not None and higher_is_better else m_b
    return abs(best - ref)


def worst_value(metric: str, m_b: float, higher_is_better: bool) -> float | None:
    """What a loss from `m_b` is measured down to: chance for a baseline above it (AUC 0.5), else the metric's worst
    bound (the lower one where higher is better); None where the metric has none (an error in px)."""
    lo, hi = metric_bounds(metric)
    if not higher_is_better:
        return hi
    chance = chance_level(metric)
    return chance if chance is not None and m_b > chance else lo


def gradient(scale: str, metric: str, m_p: float, m_b: float, higher_is_better: bool) -> tuple[float, float] | None:
    """|∂Δ/∂m_p| and |∂Δ/∂m_b| at (m_p, m_b), for the delta-method standard error; None where Δ is undefined."""
    if change(scale, metric, m_p, m_b, higher_is_better)[0] is None:
        return None
    if scale == "relative":
        return 100.0 / abs(m_b), 100.0 * abs(m_p) / m_b**2
    if scale == "log_ratio":
        return 100.0 / m_p, 100.0 / m_b
    s = 1.0 if higher_is_better else -1.0
    # at the kink between a gain's and a loss's distance (m_p = m_b): the gain's side where it has room, else the loss's
    gain = bool(_headroom(metric, m_b + s * 1e-12, m_b, higher_is_better)) if m_p == m_b else s * (m_p - m_b) > 0
    worst = worst_value(metric, m_b, higher_is_better)
    end = metric_best(metric, higher_is_better) if gain or worst is None else worst  # worst: fixed (chance or a bound)
    dist = _headroom(metric, m_b + (s if gain else -s) * abs(m_p - m_b or 1e-12), m_b, higher_is_better)
    assert dist and end is not None
    clipped = abs(end - m_b) != dist  # a gain from below chance: the distance does not move with the baseline
    return 100.0 / dist, 100.0 / dist if clipped else 100.0 * abs(end - m_p) / dist**2


def from_relative(scale: str, r: float, higher_is_better: bool) -> float | None:
    """The Δ on `scale` of a relative Δ r (the same pair, a positive baseline), where it is a function of r alone:
    relative and log_ratio (monotone in r, so percentile intervals carry over); None for headroom."""
    if scale == "relative":
        return r
    if scale == "log_ratio":
        ratio = 1.0 + r / 100.0 if higher_is_better else 1.0 - r / 100.0
        if ratio <= 0:
            return None
        s = 1.0 if higher_is_better else -1.0
        return s * math.log(ratio) * 100.0
    return None


def on_scale(scale: str, r: float, higher_is_better: bool) -> float:
    """`from_relative` for a bootstrap draw: nan where the Δ has none on `scale` (headroom, a ratio <= 0) or the draw
    is undefined (nan), so a percentile interval leaves it out."""
    v = None if math.isnan(r) else from_relative(scale, r, higher_is_better)
    return math.nan if v is None else v


def interval_on_scale(scale: str, ci: tuple[float, float] | None, higher_is_better: bool) -> tuple[float, float] | None:
    """A relative-change interval carried to `scale` (`from_relative` is monotone, so a percentile interval's limits
    map over); None where an end has no value there."""
    if ci is None:
        return None
    lo, hi = on_scale(scale, ci[0], higher_is_better), on_scale(scale, ci[1], higher_is_better)
    return None if math.isnan(lo) or math.isnan(hi) else (lo, hi)
