"""Statistics equal scipy's (or statsmodels') on fixed inputs, guard small n, and no task-level p where tasks share
a model."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats as ss

from usagg.analysis.cluster_inference import MEAN_DELTA, mean_delta_stats, paired_stats, wild_cluster_mean
from usagg.analysis.delta import compare
from usagg.analysis.digits import significant
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import BOUNDARY, INDEFINITE, SLOPE, interaction_model
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.stats import (
    DEPENDENT,
    hodges_lehmann,
    holm,
    rank_biserial,
    spearman,
    statistics,
    wilcoxon_vs_zero,
)
from usagg.analysis.summary import analyse
from usagg.spec.models import AnalysisSpec
from usagg.tasktypes import metric_bounds

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"

X = np.array([50, 120, 300, 800, 1500, 4000, 9000], float)
D = np.array([-12.0, -3.5, 1.0, -0.5, 4.0, 2.5, 6.0])


def test_spearman_equals_scipy() -> None:
    rho, _, n, note = spearman(np.log(X), D)
    ref = ss.spearmanr(np.log(X), D)
    assert (rho, n, note) == (pytest.approx(ref.statistic), 7, "")  # p: exact at 7 pairs (next test)
    big = np.arange(12.0)
    assert spearman(big, big**1.5 + np.sin(big))[1] == pytest.approx(ss.spearmanr(big, big**1.5 + np.sin(big)).pvalue)
    assert rho == pytest.approx(1 - 6 * 4 / (7 * 48))  # hand: rank differences (0,0,1,-1,0,-1,1), Σd²=4


def test_spearman_p_is_exact_for_few_pairs() -> None:
    """ρ = 1 over 3 groups: scipy's t approximation says p = 0, the exact two-sided p is 2/6 (each of the two
    perfect orderings among 3! = 6); up to 8 pairs p counts the orderings as scipy's permutation test does."""
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0]))[:2] == (pytest.approx(1.0), 1 / 3)
    x, y = np.log(X), D
    ref = ss.permutation_test(
        (y,), lambda v: ss.spearmanr(x, v).statistic, permutation_type="pairings", n_resamples=10**6
    ).pvalue
    assert spearman(x, y)[1] == pytest.approx(ref)
    greater = ss.permutation_test(
        (y,), lambda v: ss.spearmanr(x, v).statistic, permutation_type="pairings", n_resamples=10**6,
        alternative="greater",
    ).pvalue  # fmt: skip
    assert spearman(x, y, "greater")[1] == pytest.approx(greater)


def test_spearman_small_n_and_constant_input() -> None:
    assert spearman(np.array([1.0, 2.0]), np.array([3.0, 1.0]))[3] == "n too small (n=2, need ≥3)"
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))[3] == "undefined: every value is the same"
    rho, _, n, _ = spearman(np.array([1.0, np.nan, 3.0, 4.0]), np.array([1.0, 2.0, 2.0, 5.0]))
    assert n == 3 and rho == pytest.approx(1.0)  # NaN pair dropped


def test_wilcoxon_equals_scipy_and_guards_small_n() -> None:
    w, p, n, note = wilcoxon_vs_zero(D)
    ref = ss.wilcoxon(D)
    assert (w, p, n, note) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 7, "")
    assert w == 12.0  # hand: ranks of |Δ|, negatives 0.5 -> 1, 3.5 -> 4, 12 -> 7: R- = 12 < R+ = 16
    assert wilcoxon_vs_zero(D[:5])[3] == "n too small (n=5, need ≥6)"
    assert wilcoxon_vs_zero(np.zeros(8))[3] == "undefined (every Δ is 0)"


def test_group_level_spearman_uses_group_sums_and_means(tmp_path: Path) -> None:
    tasks = load_tasks(TASKS)
    write_results(simulate_rows(tasks), tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    groups: dict[str, list[str]] = {}
    for t in comp.tasks:
        groups.setdefault(t.group, []).append(t.task)
    size = [sum(comp.n_train[(1.0, t)] for t in ts) for ts in groups.values()]
    mean = [np.mean([comp.deltas[(1.0, t, "AU")].value for t in ts]) for ts in groups.values()]
    ref = ss.spearmanr(np.log(size), mean)
    (s,) = [s for s in statistics(comp) if s.paradigm == "AU" and s.name.endswith("groups")]
    assert (s.value, s.p, s.n) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 9)
    assert "group n_train = sum" in s.method


def test_wilcoxon_n_is_scipys_with_zeros_dropped() -> None:
    d = np.array([0.0, 0.0, -1.0, 2.0, 3.5, 4.0, 5.0, 6.5, 8.0])
    w, p, n, _ = wilcoxon_vs_zero(d)
    ref = ss.wilcoxon(d, zero_method="wilcox")
    assert n == 7 and (w, p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))  # 9 pairs, 2 zeros
    assert wilcoxon_vs_zero(d[:7])[3] == "n too small (n=5, need ≥6), 2 zero pairs dropped"


def test_effect_sizes_by_hand() -> None:

    # D: |Δ| ranks 7, 4, 2, 1, 5, 3, 6; negatives -12 (7), -3.5 (4), -0.5 (1): R- = 12, R+ = 16
    assert rank_biserial(D) == pytest.approx((16 - 12) / 28)
    assert rank_biserial(np.array([0.0, 1.0, 2.0])) == 1.0  # zeros are not ranked, as in the test
    # Walsh averages of (1, 2, 9): 1, 1.5, 5, 2, 5.5, 9 -> median of 6 values = (2 + 5) / 2
    assert hodges_lehmann(np.array([1.0, 2.0, 9.0])) == pytest.approx(3.5)


def test_holm_by_hand() -> None:

    # sorted 0.01, 0.02, 0.03, 0.2 -> 4·0.01, 3·0.02, max(2·0.03, prev), max(1·0.2, prev)
    assert holm([0.03, 0.01, 0.2, 0.02]) == pytest.approx([0.06, 0.04, 0.2, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone


def _fixture_comparison(tmp_path, rows_order: str = "as written", **kwargs):  # type: ignore[no-untyped-def]
    rows = simulate_rows(load_tasks(TASKS), **kwargs)
    if rows_order == "shuffled":
        rows = [rows[i] for i in np.random.default_rng(5).permutation(len(rows))]
    write_results(rows, tmp_path / f"{rows_order}.csv")
    return compare(load_input(None, tmp_path / f"{rows_order}.csv"))


def test_a_shuffled_results_table_gives_identical_cluster_limits(tmp_path: Path) -> None:
    a = _fixture_comparison(tmp_path, seeds=(0,))
    b = _fixture_comparison(tmp_path, "shuffled", seeds=(0,))
    assert [t.task for t in a.tasks] != [t.task for t in b.tasks]  # the task order differs with the rows
    boot = lambda comp: [  # noqa: E731
        (s.paradigm, s.value, s.ci, s.p) for s in mean_delta_stats(comp, 999, 0) + paired_stats(comp, 999, 0)
    ]
    assert boot(a) == boot(b) and len(boot(a)) == 3 and all(ci for _, _, ci, _ in boot(a))
    assert all("clinical groups" in s.method for s in mean_delta_stats(a, 99, 0))


def test_task_level_rank_tests_print_no_p_as_a_groups_tasks_are_not_independent(tmp_path: Path) -> None:
    """A clinical group's tasks share a model (CG, AU) or an imaging domain (every paradigm): ρ and W stay,
    descriptive with effect sizes, but no p enters the Holm family; the group-level ρ keeps its p."""
    comp = _fixture_comparison(tmp_path, paradigms=("TS", "CG", "AU", "TSM"))
    by = {(s.paradigm, s.name): s for s in statistics(comp)}
    for p in ("CG", "AU", "TSM"):
        for name in ("Spearman ρ(Δ, log n_train), tasks", f"Wilcoxon signed-rank, Δ vs 0 ({p} vs TS)"):
            s = by[(p, name)]
            assert s.value is not None and s.p is None and s.note == DEPENDENT, (p, name)
            assert " p " not in f" {s.method} " and "exact" not in s.method  # no p given: its method names none
        assert by[(p, "Spearman ρ(Δ, log n_train), groups")].p is not None
        assert dict(by[(p, f"Wilcoxon signed-rank, Δ vs 0 ({p} vs TS)")].effects)["rank-biserial r"] is not None
    _, vals = comp.delta_values(1.0, "TSM")
    w = by[("TSM", "Wilcoxon signed-rank, Δ vs 0 (TSM vs TS)")]
    assert w.value == pytest.approx(ss.wilcoxon(vals, zero_method="wilcox").statistic)


def test_hypotheses_make_the_stated_tests_one_sided(tmp_path: Path) -> None:
    comp = _fixture_comparison(tmp_path, paradigms=("TS", "CG", "AU", "TSM"))
    hyp = {"scale": {"CG": "greater"}, "delta": {"TSM": "less"}, "paired": {"CG-AU": "less"}}
    two = {(s.paradigm, s.name): s for s in statistics(comp)}
    one = {(s.paradigm, s.name): s for s in statistics(comp, hyp)}
    groups = one[("CG", "Spearman ρ(Δ, log n_train), groups")]
    assert "one-sided (greater: ρ > 0)" in groups.method
    assert two[("CG", "Spearman ρ(Δ, log n_train), groups")].method.endswith("two-sided")
    # Δm and the paired comparison: wild cluster tests, one-sided from the two-sided p on the stated side
    (dm,) = [s for s in mean_delta_stats(comp, 999, 0, hyp) if s.paradigm == "TSM"]
    names, vals = comp.delta_values(1.0, "TSM")
    ref_dm = wild_cluster_mean(vals, [comp.info(t).group for t in names], 999, 0)
    assert dm.p == pytest.approx(ref_dm.p / 2 if ref_dm.mean < 0 else 1 - ref_dm.p / 2)
    assert "one-sided (less: Δm < 0)" in dm.method
    # the task-level Wilcoxon gives no p, so a `delta` hypothesis leaves it as it was: no side named, same W
    wilcoxon = ("TSM", "Wilcoxon signed-rank, Δ vs 0 (TSM vs TS)")
    assert one[wilcoxon].method == two[wilcoxon].method and "sided" not in one[wilcoxon].method
    assert one[wilcoxon].value == two[wilcoxon].value and one[wilcoxon].p is None
    both = {(s.paradigm): s for s in paired_stats(comp, 999, 0)}
    (pair,) = [s for s in paired_stats(comp, 999, 0, hyp) if s.paradigm == "CG-AU"]
    cg_names, cg_vals = comp.delta_values(1.0, "CG")
    au_by_task = dict(zip(*comp.delta_values(1.0, "AU"), strict=True))
    diff = [v - au_by_task[t] for t, v in zip(cg_names, cg_vals, strict=True)]
    ref = wild_cluster_mean(diff, [comp.info(t).group for t in cg_names], 999, 0)
    assert (pair.value, pair.ci, pair.n) == (pytest.approx(ref.mean), ref.ci, 24)
    assert both["CG-AU"].p == ref.p and "two-sided" in both["CG-AU"].method
    assert pair.p == pytest.approx(ref.p / 2 if ref.mean < 0 else 1 - ref.p / 2)
    assert dict(pair.effects)["Hodges-Lehmann (pp)"] == pytest.approx(
        np.median([(diff[i] + diff[j]) / 2 for i in range(24) for j in range(i, 24)])
    )


def test_the_field_reference_names_the_tests_hypotheses_turn_one_sided(tmp_path: Path) -> None:
    """Audit docs 5: the reference said `delta` and `paired` make the Wilcoxon one-sided, which has no p; the tests
    the direction reaches are the wild cluster bootstrap-t of Δm and of the paired mean, and for `scale` the group
    Spearman and the mixed model's slope (the task-level ρ is descriptive). Each description names what the code
    makes one-sided."""
    from usagg.spec.models import Hypotheses

    comp = _fixture_comparison(tmp_path, paradigms=("TS", "CG", "AU", "TSM"))
    hyp = {"scale": {"CG": "greater"}, "delta": {"TSM": "less"}, "paired": {"CG-AU": "less"}}
    made = [*statistics(comp, hyp), *mean_delta_stats(comp, 99, 0, hyp), *paired_stats(comp, 99, 0, hyp)]
    made += interaction_model(comp, 1.0, hyp)
    sided = {
        (s.paradigm, s.name): s.method for s in made if "one-sided" in s.method and s.p is not None and s.fraction == 1
    }
    said = {name: field.description or "" for name, field in Hypotheses.model_fields.items()}
    for family, paradigm in (("delta", "TSM"), ("paired", "CG-AU")):
        assert [m for (p, _), m in sided.items() if p == paradigm], family
        assert all("wild cluster" in m for (p, _), m in sided.items() if p == paradigm), sided
        assert "wild cluster bootstrap-t" in said[family] and "(Wilcoxon" not in said[family], said[family]
    assert [n for (p, n) in sided if p == "CG"] == ["Spearman ρ(Δ, log n_train), groups", SLOPE]
    assert (
        "over clinical groups" in said["scale"] and "slope" in said["scale"] and "tasks and groups" not in said["scale"]
    )


def test_mixed_model_slopes_interaction_and_when_it_cannot_be_fitted(tmp_path: Path) -> None:

    comp = _fixture_comparison(tmp_path)
    stats = {s.paradigm: s for s in interaction_model(comp, 1.0)}
    cg, au, inter = stats["CG"], stats["AU"], stats["AU-CG"]
    # the simulation has no group deviation of a paradigm's own: that component is fitted at its bound, and said by
    # name with its sd, as the method text has it
    assert cg.name == SLOPE and cg.ci[0] < cg.value < cg.ci[1]
    assert cg.note == (
        "the variance of paradigm within a group is estimated at 0 (sd 0.00 pp against a residual sd of 1.65 pp: "
        f"{BOUNDARY})"
    )
    assert "of paradigm within a group 0.00 pp" in cg.method and "residual 1.65 pp" in cg.method
    assert "(1 | group:paradigm)" in cg.method and "of paradigm within a group" in cg.method
    # the simulation's story: CG's Δ grows by 18·sensitivity pp per tenfold data (5.4 per doubling), AU's by 6
    assert cg.value > au.value > 0 and cg.ci[0] > 0 and inter.ci[1] < 0
    assert inter.value == pytest.approx(au.value - cg.value, abs=1e-6)
    assert cg.n == 24 * 3 and inter.n == (24 + 27) * 3  # seed-level values, CG's one-task groups left out
    assert "(1 | group:task:paradigm)" in cg.method  # seeds of a task are not independent tasks
    few = _fixture_comparison(tmp_path, "as written", seeds=(0,))
    few.tasks = [t for t in few.tasks if t.group in ("OB", "Breast")]
    cg1, au1 = interaction_model(few, 1.0)
    assert au1.value is None and cg1.note == "not fitted: 2 clinical groups, need ≥3"


def test_a_paradigm_with_too_few_task_sizes_is_left_out_and_the_others_are_fitted(tmp_path: Path) -> None:
    """CG with results on two tasks only has no slope; AU's slope is still fitted (alone, as the model it would be
    without CG), and CG's row says why with its own name, not the first failing paradigm's for every row."""
    rows = simulate_rows(load_tasks(TASKS), seeds=(0,))
    kept = sorted({r.task for r in rows if r.paradigm == "CG"})[:2]
    rows = [r for r in rows if r.paradigm != "CG" or r.task in kept]
    write_results(rows, tmp_path / "r.csv")
    stats = {s.paradigm: s for s in interaction_model(compare(load_input(None, tmp_path / "r.csv")), 1.0)}
    assert stats["CG"].value is None and stats["CG"].note == "not fitted: CG has 2 distinct task sizes, need ≥3"
    au = stats["AU"]
    assert au.value is not None and au.note == "" and au.ci[0] < au.value < au.ci[1] and au.n == 27
    assert "AU-CG" not in stats and "1 paradigms" not in au.method


def test_unequal_spread_between_paradigms_is_said(tmp_path: Path) -> None:
    """The model's variances are shared by every paradigm; where CG's tasks scatter several times more than AU's
    around their lines, CG's slope interval is too narrow (69 % coverage at 95 % in such a simulation), and its note
    says so. The simulation as it is (equal spreads) gets no such note."""
    import dataclasses

    rows = simulate_rows(load_tasks(TASKS))
    rng = np.random.default_rng(2)
    jolt = {r.task: rng.normal(0, 0.08) for r in rows}  # a large deviation of its own per CG task
    top = {r.metric: metric_bounds(r.metric)[1] or math.inf for r in rows}  # cut where the metric ends (AUC: 1)
    rows = [
        dataclasses.replace(r, value=min(r.value * (1 + jolt[r.task]), top[r.metric])) if r.paradigm == "CG" else r
        for r in rows
    ]
    write_results(rows, tmp_path / "r.csv")
    cg = {s.paradigm: s for s in interaction_model(compare(load_input(None, tmp_path / "r.csv")), 1.0)}["CG"]
    assert cg.note.startswith("the tasks' spread around the fitted lines differs by paradigm (CG 8.9 pp, AU 3.3 pp)")
    assert cg.note.endswith("CG's interval is too narrow") and cg.ci is not None
    plain = {s.paradigm: s for s in interaction_model(_fixture_comparison(tmp_path), 1.0)}
    assert "spread around" not in plain["CG"].note


def _broken_covariance(monkeypatch: pytest.MonkeyPatch, change) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Every MixedLM fit reports `change(cov, i_CG, i_AU)` (the slopes' indices) as its covariance of the fixed
    effects: a matrix that is not positive definite, as a fit with a Hessian statsmodels warns about gives. The real
    variances of the CG and AU slopes are collected in the list returned."""
    from statsmodels.regression.mixed_linear_model import MixedLMResultsWrapper

    real, seen = MixedLMResultsWrapper.cov_params, []

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        cov = real(self, *args, **kwargs).copy()
        names = list(self.fe_params.index)
        i, j = names.index("C(paradigm)[CG]:logn"), names.index("C(paradigm)[AU]:logn")
        seen.append((float(cov.iloc[i, i]), float(cov.iloc[j, j])))
        change(cov, i, j)
        return cov

    monkeypatch.setattr(MixedLMResultsWrapper, "cov_params", broken)
    return seen


def test_a_fit_without_a_positive_definite_covariance_has_no_p_or_ci_and_no_holm_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interaction's variance var_CG + var_AU − 2·cov is negative when cov exceeds both variances: no standard
    error, so no p (not p = 0 from est/0), no CI, out of the Holm family, 'not estimable' in the table and the
    headline, and no RuntimeWarning from a square root of a negative number. The slopes, whose variances stay
    positive, lose theirs too: they are read off the same matrix, which has a negative eigenvalue (an ill-defined
    optimum; the demo's TSM slope had p 0.02 from such a fit)."""
    import warnings

    from usagg.analysis.report import write_report
    from usagg.analysis.tables import stats_table

    def covary(cov, i: int, j: int) -> None:  # type: ignore[no-untyped-def]
        cov.iloc[i, j] = cov.iloc[j, i] = cov.iloc[i, i] + cov.iloc[j, j]

    seen = _broken_covariance(monkeypatch, covary)
    write_results(simulate_rows(load_tasks(TASKS)), tmp_path / "r.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = analyse(load_input(None, tmp_path / "r.csv"))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    by = {s.paradigm: s for s in a.stats if s.name == SLOPE or s.name.startswith("mixed model: interaction")}
    cg, au, inter = by["CG"], by["AU"], by["AU-CG"]
    assert inter.value == pytest.approx(au.value - cg.value, abs=1e-6)  # the estimate stands, its spread does not
    assert (inter.p, inter.ci, inter.p_holm) == (None, None, None)
    var_cg, var_au = seen[-1]
    block = np.linalg.eigvalsh([[var_cg, var_cg + var_au], [var_cg + var_au, var_au]]).min()
    found = re.search(r"smallest eigenvalue (\S+)\)", inter.note)
    assert inter.note.startswith(INDEFINITE.split(" (smallest")[0]) and found is not None
    assert float(found.group(1)) <= block * (1 - 1e-3) < 0  # interlacing: at most the slopes' block's smallest
    for slope in (cg, au):
        assert slope.value is not None and (slope.p, slope.ci, slope.p_holm) == (None, None, None)
        assert slope.note.startswith("CI and p not estimable")
    tested = [s for s in a.stats if s.p is not None]
    assert len(tested) == 5  # the tests outside the mixed model: its slopes and interaction have no p
    for family, n in (("primary", 2), ("exploratory", 3)):  # Δm of CG and AU; the group ρs and CG-AU
        within = [s for s in tested if s.family == family]
        assert len(within) == n and [s.p_holm for s in within] == pytest.approx(holm([s.p for s in within]))
    table = stats_table(a.stats, a.comp)
    (row,) = [r for r in table.rows if r[0] == "AU-CG" and str(r[2]).startswith("mixed model")]
    assert row[4] == inter.note and row[5] == "—" and row[6] == "—"
    assert "Holm over these 2 tests" in " ".join(table.notes) and "the other 3 tests" in " ".join(table.notes)
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    # the fit's note said once, not beside each of its estimates; they keep their values, marked as without a CI
    assert [ln for ln in md.splitlines() if inter.note in ln and ln.startswith("- ")] == [
        f"- **Mixed model**: {inter.note}."
    ]
    (line,) = [ln for ln in md.splitlines() if "**Interactions**" in ln]
    assert line == (
        "- **Interactions** (slope differences, pp per doubling of n_train; no CI or p: see Mixed model): "
        f"AU − CG {significant(inter.value, sign=True)}."
    )
    slope = significant(cg.value, sign=True)
    assert f"mixed-model slope {slope} pp per doubling of n_train (no CI or p: see Mixed model)." in md
    assert not re.search(r"\bnan\b|p = 0(?![.\d])", md)  # no "CI +nan to +nan, p = 0" anywhere


def test_a_slope_without_a_variance_has_no_p_even_one_sided(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stated direction halves a two-sided p; a slope with no standard error has none to halve."""

    def negative(cov, i: int, j: int) -> None:  # type: ignore[no-untyped-def]
        cov.iloc[i, i] = -cov.iloc[i, i]

    _broken_covariance(monkeypatch, negative)
    stats = {s.paradigm: s for s in interaction_model(_fixture_comparison(tmp_path), 1.0, {"scale": {"CG": "greater"}})}
    assert (stats["CG"].p, stats["CG"].ci) == (None, None) and stats["CG"].value is not None
    assert stats["CG"].note.startswith("CI and p not estimable") and "one-sided" in stats["CG"].method
    assert (stats["AU"].p, stats["AU"].ci) == (None, None)  # the same matrix, a negative eigenvalue


@pytest.mark.parametrize("var", [math.nan, 0.0, -4.0])
def test_contrast_needs_a_finite_positive_variance(var: float) -> None:
    import pandas as pd

    from usagg.analysis.mixed import _contrast

    def fit(v: float):  # type: ignore[no-untyped-def]
        cov = pd.DataFrame([[v, 0.0], [0.0, 1.0]])
        return SimpleNamespace(
            fe_params=pd.Series([2.0, 1.0]), cov_params=lambda: cov, model=SimpleNamespace(n_groups=5)
        )

    assert _contrast(fit(var), {0: 1.0}) == (2.0, None, None, INDEFINITE.format(low=var))
    est, p, ci, why = _contrast(fit(4.0), {0: 1.0})  # se 2: t = 1 on 4 df
    half = ss.t.ppf(0.975, 4) * 2.0
    assert (est, p, ci, why) == (2.0, pytest.approx(2 * ss.t.sf(1.0, 4)), pytest.approx((2.0 - half, 2.0 + half)), "")


def test_study_statistics_adjust_every_printed_p_with_holm_within_its_family(tmp_path: Path) -> None:
    """The primary family is the study's question, Δm of CG and AU at the full data; Holm adjusts within it and,
    apart, within the exploratory rest, so the primary p is doubled, not multiplied by every test printed."""
    write_results(simulate_rows(load_tasks(TASKS)), tmp_path / "r.csv")
    stats = analyse(load_input(None, tmp_path / "r.csv")).stats
    tested = [s for s in stats if s.p is not None]
    # CG and AU share models: per paradigm the group-level Spearman and the wild cluster Δm (the task-level
    # Spearman and Wilcoxon are descriptive), then the paired CG-AU, 2 slopes and 1 interaction
    assert len(tested) == 2 * 2 + 1 + 3
    primary = [s for s in tested if s.family == "primary"]
    rest = [s for s in tested if s.family == "exploratory"]
    assert {(s.name, s.paradigm) for s in primary} == {(MEAN_DELTA, "CG"), (MEAN_DELTA, "AU")}
    assert len(rest) == 6 and len(primary) + len(rest) == len(tested)
    ps = sorted(s.p for s in primary if s.p is not None)
    assert sorted(s.p_holm for s in primary if s.p_holm is not None) == pytest.approx(
        [min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])]
    )  # Holm by hand over the two
    assert [s.p_holm for s in rest] == pytest.approx(holm([s.p for s in rest]))
    assert all(s.p_holm is None and s.family == "" for s in stats if s.p is None)


@pytest.mark.parametrize(
    ("hypotheses", "message"),
    [
        ({"delta": {"CG": "lower"}}, "'two-sided', 'less' or 'greater'"),
        ({"scale": {"XX": "greater"}}, "unknown paradigm 'XX'"),
        ({"paired": {"CGAU": "less"}}, "two paradigms joined by '-'"),
        ({"paired": {"CG-CG": "less"}}, "two paradigms joined by '-'"),
        ({"paired": {"CG-AX": "less"}}, "unknown paradigm 'AX'"),
        ({"effect": {}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_hypotheses_are_spec_errors(hypotheses: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalysisSpec.model_validate({"hypotheses": hypotheses})
    ok = AnalysisSpec.model_validate({"hypotheses": {"paired": {"CG-AU": "less"}, "delta": {"AU": "greater"}}})
    assert ok.hypotheses.paired == {"CG-AU": "less"} and AnalysisSpec().cg_singletons == "exclude"


def test_the_report_states_the_wild_cluster_interval_of_delta_m(tmp_path: Path) -> None:
    """The headline and the summary give Δm with the interval that covers 95 % with few clusters (the wild cluster
    bootstrap-t), the one the statistics table lists; no second, narrower "95 %" interval of Δm exists."""
    from usagg.analysis.report import write_report

    write_results(simulate_rows(load_tasks(TASKS)), tmp_path / "r.csv")
    a = analyse(load_input(None, tmp_path / "r.csv"))
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    for p in ("CG", "AU"):
        (s,) = [s for s in a.stats if s.name == MEAN_DELTA and s.paradigm == p]
        lo, hi = (significant(v, sign=True) for v in s.ci)  # as the statistics table lists it
        said = f"{s.value:+.1f} % (95 % CI {lo} to {hi})"
        assert (
            f"**{p}**: Δm {said}" in md
            and f"Δm = {said} (p = {s.p:.2g}, Holm (primary) {s.p_holm:.2g}) over {s.n} tasks" in md
        )
    assert not [s for s in a.stats if "Δm" in s.name and s.name != MEAN_DELTA and not s.name.startswith("paired")]
