"""Uncertainty of each task's Δ: the spread over training seeds and a test-set bootstrap.

Seeds: Δ_s of each seed of the paradigm against the baseline's seed mean (their mean is
the task's Δ, `Comparison.seed_deltas`), with their sd; with ≥ 2 seeds a t interval whose
standard error adds both paradigms' seed variances (delta method on the comparison's scale:
SE² = (∂Δ/∂m_p)² s_p²/n_p + (∂Δ/∂m_b)² s_b²/n_b, usagg/analysis/scales.py `gradient`; relative:
(100/|m̄_b|)² · (s_p²/n_p + (m̄_p/m̄_b)² · s_b²/n_b)) and Welch-Satterthwaite degrees of
freedom. One seed on either side has no interval: the baseline's training noise is as unmeasured as the
paradigm's (a baseline seed variance of 0 made the interval too narrow and its verdict hang on which seed
survived).

Test set: the CI of the relative change of the seed means from resampling the test images the
jobs share (usagg/analysis/task_ci.py, from each job's item_scores.json), every seed both
paradigms ran and scored on the same resamples; on the log_ratio scale its limits are carried
over (a monotone function of the relative change), on the headroom scale there is none (the
distance moves with the baseline).
The interval a table or figure shows for a task (`shown_interval`) is the
seed interval when both paradigms ran ≥ 2 seeds, else the test-set one, else none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from usagg.analysis.delta import Comparison, Delta
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.scales import from_relative, gradient, interval_on_scale
from usagg.analysis.stats import Stat
from usagg.analysis.tdist import t_quantile
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.analysis.task_ci import ItemScores

SEEDS = "Δ seed interval"
TEST_SET = "Δ test-set bootstrap"
BOTH = "Δ seeds and test set"
#: The `effects` key of a test-set interval's Monte Carlo error: the larger 95 % half-width of its two end-points.
MONTE_CARLO = "end-point Monte Carlo error"
LEVEL = 0.95


def seed_interval(
    comp: Comparison, f: float, task: str, p: str, level: float = LEVEL, extra_var: float = 0.0
) -> Stat | None:
    """Mean and sd of the seed-level Δ, and its t interval at `level` (95 % in every table) with ≥ 2 seeds of both
    the paradigm and the baseline (one seed of either leaves training noise unmeasured); None without a Δ.
    `extra_var` is a variance known without error (the test set's, from its bootstrap) added to the seeds' in the
    standard error: it adds to no degree of freedom's uncertainty (Welch with infinite df)."""
    d = comp.deltas.get((f, task, p))
    base = comp.cells.get((f, task, comp.baseline))
    seeds = comp.seed_deltas(f, task, p)
    if d is None or d.value is None or base is None or not seeds:
        return None
    vals = np.asarray([seeds[s] for s in sorted(seeds)], float)
    n = int(vals.size)
    effects = (("sd", float(vals.std(ddof=1))),) if n > 1 else ()
    method = "t interval over seeds, SE from both paradigms' seed sd (delta method), Welch df"
    if n < 2:
        return Stat(SEEDS, p, f, d.value, n, method, note="one seed: no spread", effects=effects, task=task)
    if base.n_seeds < 2:  # the baseline's training noise is unmeasured, not 0: no interval, as for one seed of p
        note = f"baseline {comp.baseline}: one seed, no spread"
        return Stat(SEEDS, p, f, d.value, n, method, note=note, effects=effects, task=task)
    cell = comp.cells[(f, task, p)]
    info = comp.info(task)
    g = gradient(comp.scale, info.metric, cell.mean, base.mean, info.higher_is_better)
    if g is None:
        return Stat(SEEDS, p, f, d.value, n, method, note="Δ undefined at the seed means", effects=effects, task=task)
    terms = [(g[0] * cell.sd) ** 2 / n, (g[1] * base.sd) ** 2 / base.n_seeds]
    lo, hi = t_interval(d.value, terms, [n - 1, base.n_seeds - 1], extra_var, level)
    return Stat(SEEDS, p, f, d.value, n, method, ci=(lo, hi), effects=effects, task=task)


def t_interval(
    value: float, terms: list[float], dfs: list[int], extra_var: float = 0.0, level: float = LEVEL
) -> tuple[float, float]:
    """`value` ± t · SE, SE² the sum of the sampled variance `terms` (each with its degrees of freedom in `dfs`) and
    `extra_var`, a variance known without error (a test-set bootstrap's); Welch-Satterthwaite df."""
    se = math.sqrt(sum(terms) + extra_var)
    if se == 0:
        return value, value
    # Welch-Satterthwaite lies in [min df, sum df]; rounding put it at 0.9999999999999998 for one term of df 1
    df = max(se**4 / sum(t**2 / v for t, v in zip(terms, dfs, strict=True)), min(dfs)) if any(terms) else math.inf
    half = t_quantile(0.5 + level / 2, df) * se  # no scipy: `usagg report` reuses the analysis without it
    return value - half, value + half


def interval_variance(ci: tuple[float, float], level: float = LEVEL) -> float:
    """The variance a normal interval of this width at `level` has: ((high − low) / (2 z))². Read off a percentile
    bootstrap interval, it is the bootstrap's variance without the pull of its few extreme draws."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return ((ci[1] - ci[0]) / (2 * z)) ** 2


def job_ids(inp: AnalysisInput) -> dict[tuple[str, float, int, str], str]:
    """(paradigm, fraction, seed, task) -> job id, from the results rows."""
    return {(r.paradigm, r.fraction, r.seed, r.task): r.job_id for r in inp.table.rows if r.job_id}


def item_scores_reader(inp: AnalysisInput) -> Callable[[str | None], dict[str, ItemScores]]:
    """A job id -> its item scores by task ({} without them or without a job), each job's file read once."""
    from usagg.analysis.task_ci import load_item_scores

    loaded: dict[str, dict[str, ItemScores]] = {}

    def scores(job: str | None) -> dict[str, ItemScores]:
        if job is None or job not in inp.item_scores:
            return {}
        if job not in loaded:
            loaded[job] = load_item_scores(Path(inp.item_scores[job]).parent)
        return loaded[job]

    return scores


def scored_seeds(
    scores: Callable[[str | None], dict[str, ItemScores]],
    jobs: dict[tuple[str, float, int, str], str],
    paradigm: str,
    f: float,
    task: str,
    seeds: Iterable[int],
) -> list[tuple[int, ItemScores]]:
    """Each of `seeds` whose `paradigm` job scored `task` per image, with those scores: what a test-set bootstrap of
    a Δ, or of a difference of two Δ, resamples for that side (`item_scores_reader`, `job_ids`). A Δ passes each
    paradigm's own seeds: the seeds both ran, with TS (or CG) at one seed and AU at three, centred the interval on
    seed 0's Δ beside the table's three-seed one."""
    return [(s, x) for s in seeds if (x := scores(jobs.get((paradigm, f, s, task))).get(task)) is not None]


def test_set_intervals(inp: AnalysisInput, comp: Comparison, resamples: int, seed: int) -> list[Stat]:
    """The test-set bootstrap CI of every task Δ whose jobs wrote item_scores.json (none without them): the Δ of the
    seed means, every seed each paradigm ran and scored recomputed on the same resamples of the images they share
    (usagg/analysis/task_ci.py `paired_delta_ci`, a list per side), so it is the test set's part of the spread of
    the Δ the comparison reports (one seed's alone can be 0 where that seed sits at a ceiling the others do not).
    Each side keeps its own seeds: with TS at one seed and AU at three, the seeds both ran made an interval around
    seed 0's Δ beside the table's three-seed one."""
    if not inp.item_scores or from_relative(comp.scale, 0.0, True) is None:
        return []
    from usagg.analysis.task_ci import paired_delta_draws, percentile_ci, resampling_text

    jobs, scores = job_ids(inp), item_scores_reader(inp)
    out = []
    base = comp.baseline
    for f in comp.fractions:
        for info in comp.tasks:
            t = info.task
            for p in comp.others:
                ran = {q: sorted(comp.seed_values.get((f, t, q), {})) for q in (base, p)}
                scored = {q: scored_seeds(scores, jobs, q, f, t, ran[q]) for q in (base, p)}
                if not scored[base] or not scored[p]:
                    continue
                bs, others = [x for _, x in scored[base]], [x for _, x in scored[p]]
                mean = {q: float(np.mean([comp.seed_values[(f, t, q)][s] for s, _ in scored[q]])) for q in (p, base)}
                d = comp.change(t, mean[p], mean[base])
                draws = paired_delta_draws(bs, others, resamples, seed)
                ci = (
                    None
                    if draws is None
                    else interval_on_scale(comp.scale, percentile_ci(draws, LEVEL), info.higher_is_better)
                )
                mc = None if draws is None or ci is None else _mc_error(comp.scale, draws, info.higher_is_better)
                shared = len(set.intersection(*(set(x.images) for x in bs + others)))
                fewer = min(len(scored[q]) for q in (base, p)) < min(len(ran[q]) for q in (base, p))
                out.append(
                    Stat(
                        TEST_SET, p, f, d.value, shared,
                        f"paired percentile bootstrap over the {shared} test images every job scored "
                        f"({_seeds_text(scored, base, p)}: the seed means' Δ on each resample), "
                        + resampling_text(resamples, seed, () if mc is None else (mc,)),
                        ci=ci, note="" if ci else "undefined on the resamples", task=t,
                        effects=(
                            *((("seeds scored", float(min(len(bs), len(others)))),) if fewer else ()),
                            *(((MONTE_CARLO, mc),) if mc is not None else ()),
                        ),
                    )
                )  # fmt: skip
    return out


def _mc_error(scale: str, draws: np.ndarray, higher_is_better: bool) -> float | None:
    """The larger Monte Carlo half-width (95 %) of a test-set interval's two end-points on `scale`
    (usagg/analysis/task_ci.py `endpoint_bands`, carried over as the interval is)."""
    from usagg.analysis.task_ci import endpoint_bands

    bands = endpoint_bands(draws, LEVEL)
    if bands is None:
        return None
    halves = [(b[1] - b[0]) / 2 for band in bands if (b := interval_on_scale(scale, band, higher_is_better))]
    return max(halves) if len(halves) == 2 else None


def _seeds_text(scored: dict[str, list[tuple[int, ItemScores]]], base: str, p: str) -> str:
    """Which seeds a test-set interval averaged: 'seed 0', 'seeds 0, 1', or each side's where they differ."""

    def named(seeds: list[int]) -> str:
        return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"

    mine, theirs = [s for s, _ in scored[base]], [s for s, _ in scored[p]]
    return named(mine) if mine == theirs else f"{base} {named(mine)}, {p} {named(theirs)}"


_DEFINED = Delta(0.0)  # the stand-in for a Δ the comparison does not list: kept


def task_uncertainty(inp: AnalysisInput, comp: Comparison) -> list[Stat]:
    """Seed intervals of every task Δ, then test-set bootstrap CIs where the jobs logged per-image scores."""
    seeds = [
        s
        for f in comp.fractions
        for info in comp.tasks
        for p in comp.others
        if (s := seed_interval(comp, f, info.task, p)) is not None
    ]
    st = inp.settings
    tests = test_set_intervals(inp, comp, st.task_bootstrap, st.bootstrap_seed)
    both = _both_intervals(comp, seeds, tests)
    # a Δ that is n/a (a task its job never trained, a missing or zero baseline) has no interval either
    return [
        s for s in seeds + tests + both if comp.deltas.get((s.fraction, s.task, s.paradigm), _DEFINED).value is not None
    ]


def _both_intervals(comp: Comparison, seeds: list[Stat], tests: list[Stat]) -> list[Stat]:
    """Where a Δ has a seed interval (>= 2 seeds) and a test-set one: the interval over seeds and test images the
    verdicts read (usagg/analysis/expect.py), the seed t interval with the test set's variance added (`seed_interval`'s
    `extra_var`), never narrower than the seed interval: with the test set's variance known, Welch's df grows and
    its t quantile can shrink the interval below the seeds' own (`widest`)."""
    test = {(s.fraction, s.task, s.paradigm): s for s in tests if s.ci is not None}
    out = []
    for s in seeds:
        t = test.get((s.fraction, s.task, s.paradigm))
        if t is None or t.ci is None or s.task is None:
            continue
        ci = with_test_set(comp, s.fraction, s.task, s.paradigm, t.ci)
        if ci is None:
            continue
        method = (
            f"{s.method}, the test set's variance added (its {t.n}-image bootstrap's, as known), never narrower than "
            "the seeds' alone"
        )
        out.append(Stat(BOTH, s.paradigm, s.fraction, s.value, s.n, method, ci=ci, task=s.task))
    return out


def with_test_set(
    comp: Comparison, f: float, task: str, p: str, test_ci: tuple[float, float], level: float = LEVEL
) -> tuple[float, float] | None:
    """A task Δ's seed interval with the variance of its test-set bootstrap interval `test_ci` added, never narrower
    than the seed interval; None without a seed interval (one seed, a Δ undefined at the seed means)."""
    seeds = seed_interval(comp, f, task, p, level)
    if seeds is None or seeds.ci is None or seeds.n < 2:
        return None
    added = seed_interval(comp, f, task, p, level, interval_variance(test_ci, level))
    return None if added is None or added.ci is None else widest(added.ci, seeds.ci)


def widest(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The interval spanning both: a combined interval is never reported narrower than the one it adds to."""
    return min(a[0], b[0]), max(a[1], b[1])


def shown_interval(stats: list[Stat], f: float, task: str, p: str) -> tuple[float, float, str] | None:
    """(low, high, source) of the interval shown for a task Δ: seeds when both paradigms ran ≥ 2, else the test-set
    bootstrap."""
    by = {s.name: s for s in stats if s.task == task and s.paradigm == p and s.fraction == f and s.ci is not None}
    seeds, test = by.get(SEEDS), by.get(TEST_SET)
    if seeds is not None and seeds.ci is not None:
        return seeds.ci[0], seeds.ci[1], f"seeds (n={seeds.n}, t)"
    if test is not None and test.ci is not None:
        return test.ci[0], test.ci[1], f"test-set bootstrap ({counted(test.n, 'image')})"
    return None


def test_set_variances(
    inp: AnalysisInput, comp: Comparison, fraction: float, stats: list[Stat] | None
) -> dict[str, dict[str, float]]:
    """Task -> paradigm -> the test set's variance of the seed-mean Δ, from its paired bootstrap over every seed
    (`test_set_intervals`: the analysis' statistics where given, else run here), read off the 95 % percentile
    interval (`interval_variance`), where the jobs scored their test images."""
    if stats is None:
        st = inp.settings
        stats = test_set_intervals(inp, comp, st.task_bootstrap, st.bootstrap_seed)
    out: dict[str, dict[str, float]] = {}
    for s in stats:
        if s.name == TEST_SET and s.fraction == fraction and s.ci is not None:
            out.setdefault(s.task, {})[s.paradigm] = interval_variance(s.ci)
    return out
