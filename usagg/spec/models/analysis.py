"""`analysis:`: what the analysis emphasises, its hypotheses, and how AG's affinity is measured."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from usagg.paradigms import check_paradigm
from usagg.spec.jobhash import IN_HASH, NOT_IN_HASH
from usagg.spec.models.base import MAX_SEED, ParadigmName, Strict

Alternative = Literal["two-sided", "less", "greater"]


class Hypotheses(Strict):
    """Directions stated before the data: each turns the matching tests one-sided (default two-sided)."""

    delta: Annotated[dict[ParadigmName, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Δm of a paradigm against 0 (the wild cluster bootstrap-t over clinical groups; the task-level "
        "Wilcoxon is descriptive, without a p): `less` = it loses to the baseline, e.g. {CG: less}.",
    )
    scale: Annotated[dict[ParadigmName, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Δ of a paradigm with log data size (the Spearman ρ over clinical groups and the mixed model's "
        "slope; the task-level ρ has no p): `greater` = aggregation gains with data, e.g. {CG: greater}.",
    )
    paired: Annotated[dict[str, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Paired per-task Δ of two paradigms, key `A-B` (the mean of Δ_A − Δ_B, wild cluster "
        "bootstrap-t over clinical groups): `less` = A below B, e.g. {CG-AU: less}. CG-AU is always tested "
        "(two-sided unless stated).",
    )

    @field_validator("paired")
    @classmethod
    def _pair_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            a, sep, b = key.partition("-")
            if not sep or a == b:
                raise ValueError(f"a pair is two paradigms joined by '-', such as CG-AU, got {key!r}")
            check_paradigm(a)
            check_paradigm(b)
        return v


class AffinitySpec(Strict):
    """How the inter-task affinity AG groups by is measured (usagg/engine/affinity.py).

    The lookahead affinity of Fifty et al. (2021): Z[i->j] = 1 - L_j(theta after one step on task i's
    step batch) / L_j(theta), for every task pair, on fixed probe batches drawn from the training split,
    over the job's measurements (losses summed before dividing). Measuring never changes the training it
    watches (same weights, same RNG); a measuring job's id includes these settings because it writes
    affinity.json.
    """

    every: Annotated[int | Literal["auto"], IN_HASH] = Field(
        "auto",
        description="Optimiser steps between measurements; auto: a fifth of the job's steps (5 measurements).",
    )
    probe_size: Annotated[int, IN_HASH] = Field(
        4, ge=1, le=256, description="Images per task in the fixed probe batches."
    )
    probe_epochs: Annotated[int | None, NOT_IN_HASH] = Field(
        None,
        ge=1,
        le=10000,
        description="Measure in a short all-task probe run of this many epochs (largest fraction) instead of the "
        "AU job, so AG can run without AU.",
    )
    lookahead: Annotated[Literal["sgd", "adamw"], IN_HASH] = Field(
        "sgd",
        description="The lookahead step on task i's gradient g_i: sgd, Fifty et al.'s theta - lr·g_i; adamw, one "
        "true AdamW step on a copy of the job's optimiser (its moments, step counts and weight decay; the real one "
        "untouched). Default sgd, from a measurement on planted structures (python -m benchmarks lookahead: the "
        "known-answer study's groups, and four demo tasks twinned across two scan pools): AG's groups from SGD's "
        "matrix matched the planted ones at least as well as AdamW's in every seed (adjusted Rand 0.43 against 0.31 "
        "on the twins, equal on the known study) at the same cost, and AdamW's step, momentum included, overshot "
        '(a task\'s own probe loss up 0.7 %) (docs/benchmarks.md, "Which lookahead step").',
    )
    lookahead_lr: Annotated[float | None, IN_HASH] = Field(
        None,
        gt=0,
        le=1,
        description="Learning rate of the lookahead step; default: the encoder's learning rate at that step (adamw: "
        "each parameter group's own).",
    )

    @field_validator("every")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 10**9:
            raise ValueError(f"every is a number of steps from 1, or auto; got {v}")
        return v


class AnalysisSpec(Strict):
    """What `compare`, `plot` and `report` emphasise."""

    baseline: Annotated[str, NOT_IN_HASH] = Field(
        "TS", description="Paradigm Δ is measured against (a registered paradigm)."
    )
    representative_tasks: Annotated[list[str], NOT_IN_HASH] = Field(
        default_factory=list, description="Tasks of the absolute-performance figure (default: one per type)."
    )
    regime_threshold: Annotated[int, NOT_IN_HASH] = Field(
        1000, ge=1, description="n_train below this is the low-data regime, at or above it data-rich."
    )
    group_regime_threshold: Annotated[int, NOT_IN_HASH] = Field(
        5000,
        ge=1,
        description="A clinical group with fewer training images than this (sum over its tasks) is low-data, "
        "else data-rich; the default puts the study's OB (11,910) in data-rich and Breast (2,920) in low-data.",
    )
    cg_singletons: Annotated[Literal["exclude", "include"], NOT_IN_HASH] = Field(
        "exclude",
        description="Tasks a group-scope paradigm trains alone (CG: alone in their clinical group; AG: alone in a "
        "group AG formed): their Δ measures MoE alone, so by default they are flagged and left out of that "
        "paradigm's aggregates and tests.",
    )
    scale: Annotated[Literal["relative", "log_ratio", "headroom"], NOT_IN_HASH] = Field(
        "relative",
        description="Scale of each task's Δ: relative (% of the baseline metric), log_ratio (100·ln of the ratio: "
        "symmetric, for metrics that cannot be negative) or headroom (normalised change: a gain as % of the distance "
        "from the baseline to the metric's best value, from chance at most for AUC, a loss as % of the distance down "
        "to its worst value, chance for AUC; within ±100 for a bounded metric); the others are shown beside it where "
        "a mean's sign differs (usagg/analysis/scales.py).",
    )
    chance_tasks: Annotated[Literal["exclude", "include"], NOT_IN_HASH] = Field(
        "exclude",
        description="Tasks whose baseline is not above chance have no skill to change: flagged, and by default left "
        "out of every aggregate and test (negative transfer and collapse verdicts included); the per-task tables "
        "keep them. Chance is the metric's own level (AUC 0.5) or the best constant prediction the baseline's job "
        "scored on the same test images (an empty or all-foreground mask, a whole-image or mean training box, the "
        "mean training keypoints, the training class frequencies: metrics.json `trivial`), whichever is higher; the "
        "baseline is not shown above chance where a one-sided 95 % lower bound of its margin over it does not clear "
        "0: the t bound over its seeds, or with one seed the test-set bootstrap's bound of its metric over the job's "
        "test images (the point estimate where the job wrote no per-image scores).",
    )
    hypotheses: Annotated[Hypotheses, NOT_IN_HASH] = Field(
        default_factory=Hypotheses, description="Directional hypotheses (one-sided tests); default all two-sided."
    )
    primary: Annotated[list[ParadigmName] | None, NOT_IN_HASH] = Field(
        None,
        min_length=1,
        description="Paradigms whose Δm versus the baseline at the study's full data (its largest fraction; the wild "
        "cluster test) is the primary, confirmatory Holm family; every other p is exploratory, Holm-adjusted within "
        "its own family (usagg/analysis/families.py). Default: the study's question, CG and AU where the study runs "
        "them, else every paradigm compared.",
    )
    bootstrap: Annotated[int, NOT_IN_HASH] = Field(
        10000, ge=100, le=1_000_000, description="Bootstrap resamples for confidence intervals."
    )
    task_bootstrap: Annotated[int, NOT_IN_HASH] = Field(
        2000,
        ge=100,
        le=1_000_000,
        description="Resamples of the per-task test-set bootstrap of Δ (item_scores.json of each job).",
    )
    bootstrap_seed: Annotated[int, NOT_IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the bootstrap, so intervals are reproducible."
    )
    affinity: Annotated[AffinitySpec, IN_HASH] = Field(
        default_factory=AffinitySpec,
        description="Inter-task affinity measurement for AG (used only when AG is among the paradigms).",
    )

    @field_validator("baseline")
    @classmethod
    def _registered_baseline(cls, v: str) -> str:
        return check_paradigm(v)
