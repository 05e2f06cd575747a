"""The two Holm families of a report: the primary (confirmatory) tests the study is run for, and the rest.

Holm over every printed p (slopes, group Spearmans, fraction trends, 2x2 effects, paired comparisons) made the
family so large that, with a handful of clinical groups, every adjusted p was near 1 and the study's own question
drowned among the questions around it. So the tests are split before the data, as a confirmatory analysis plan
would: the primary family is Δm of each `analysis.primary` paradigm versus the baseline at the study's full data
(its largest fraction, 1 where it runs every image), the wild cluster test of usagg/analysis/cluster_inference.py;
by default the study's own question, whether aggregating by clinical group (CG) or over all tasks (AU) changes
performance against task-specific models (the paper's Figure 3: README.md), so CG and AU where the study compares
them, else every compared paradigm. Holm adjusts within it; every other p is exploratory, Holm-adjusted within its
own family and labelled so: it was not declared before the data, and suggests rather than confirms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from usagg.analysis.cluster_inference import MEAN_DELTA
from usagg.analysis.delta import Comparison
from usagg.analysis.stats import Stat, holm, holm_reach
from usagg.wording import counted

PRIMARY = "primary"
EXPLORATORY = "exploratory"
#: The study's own question: Δ of CG and AU against TS (study.md: "the relative change Δ (%) of CG and AU").
STUDY_QUESTION = ("CG", "AU")


def primary_paradigms(declared: Sequence[str] | None, comp: Comparison) -> list[str]:
    """The paradigms whose Δm forms the primary family: `analysis.primary` (those compared here), else CG and AU
    where the study compares them, else every compared paradigm."""
    if declared:
        return [p for p in declared if p in comp.others]
    return [p for p in STUDY_QUESTION if p in comp.others] or list(comp.others)


def is_primary(s: Stat, paradigms: Sequence[str], comp: Comparison) -> bool:
    """Whether `s` is a primary test: Δm of a primary paradigm at the largest fraction."""
    return s.name == MEAN_DELTA and not s.task and s.paradigm in paradigms and s.fraction == max(comp.fractions)


def holm_families(stats: list[Stat], comp: Comparison, declared: Sequence[str] | None) -> list[Stat]:
    """Every statistic with a p labelled primary or exploratory, its Holm-adjusted p within its own family."""
    primary = primary_paradigms(declared, comp)
    out = list(stats)
    for family in (PRIMARY, EXPLORATORY):
        wanted = family == PRIMARY
        tested = [i for i, s in enumerate(stats) if s.p is not None and is_primary(s, primary, comp) == wanted]
        for i, a in zip(tested, holm([stats[i].p or 0.0 for i in tested]), strict=True):
            out[i] = dataclasses.replace(stats[i], p_holm=a, family=family)
    return out


def family_lines(stats: Sequence[Stat], comp: Comparison | None, declared: Sequence[str] | None) -> list[str]:
    """What the two families are and why, as the statistics table's notes and the report's "Holm family" lines:
    which tests are primary (and on whose word), that the others are exploratory, and, per family, where no test
    of it can reach 0.05 whatever the data (`holm_reach`)."""
    if comp is None or comp.no_delta:
        return []
    tested = [s for s in stats if s.p is not None and not s.task]
    primary = [s for s in tested if s.family == PRIMARY]
    rest = [s for s in tested if s.family != PRIMARY]
    names = primary_paradigms(declared, comp)
    f = max(comp.fractions)
    at = "fraction 1 (the study's full data)" if f == 1 else f"fraction {f:g} (the largest the study ran)"
    why = (
        "analysis.primary"
        if declared
        else "the default, the study's own question: does aggregating tasks change performance against "
        f"{comp.baseline}; analysis.primary can declare others"
    )
    lacking = [p for p in declared or () if p not in comp.others]
    without = f"; {_and(lacking)} named there but without a Δ here" if lacking else ""
    over = "this one test" if len(primary) == 1 else f"these {len(primary)} tests"
    if primary:
        head = (
            f"Primary (confirmatory): Δm of {_and([s.paradigm for s in primary])} versus {comp.baseline} at {at}, "
            f"the wild cluster test ({why}{without}); Holm over {over}."
        )
    else:
        head = (
            f"Primary (confirmatory): no test: Δm of {_and(names) or 'no paradigm'} versus {comp.baseline} at "
            f"{at} has no p ({why}{without})."
        )
    lines = [head]
    if rest:
        lines.append(
            f"Exploratory: the other {counted(len(rest), 'test')} (such as slopes, group Spearmans, paired "
            f"comparisons, 2x2 effects, other paradigms' Δm{', other fractions' if len(comp.fractions) > 1 else ''}), "
            "Holm within them: not declared before the data, they suggest rather than confirm."
        )
    for label, family in (("primary", primary), ("exploratory", rest)):
        note = holm_reach(family, label)
        if note:
            lines.append(note[0].upper() + note[1:] + ".")
    return lines


def _and(names: Sequence[str]) -> str:
    """'CG', 'CG and AU', 'CG, AU and AG'."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)
