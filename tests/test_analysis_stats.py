"""Statistics equal scipy's on fixed inputs, guard small n, and the bootstrap is reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as ss

from usagg.analysis.stats import bootstrap_mean_ci, spearman, wilcoxon_vs_zero

X = np.array([50, 120, 300, 800, 1500, 4000, 9000], float)
D = np.array([-12.0, -3.5, 1.0, -0.5, 4.0, 2.5, 6.0])


def test_spearman_equals_scipy() -> None:
    rho, p, n, note = spearman(np.log(X), D)
    ref = ss.spearmanr(np.log(X), D)
    assert (rho, p, n, note) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 7, "")
    assert rho == pytest.approx(1 - 6 * 4 / (7 * 48))  # hand: rank differences (0,0,1,-1,0,-1,1), Σd²=4


def test_spearman_small_n_and_constant_input() -> None:
    assert spearman(np.array([1.0, 2.0]), np.array([3.0, 1.0]))[3] == "n too small (n=2, need ≥3)"
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))[3] == "undefined (constant input)"
    rho, _, n, _ = spearman(np.array([1.0, np.nan, 3.0, 4.0]), np.array([1.0, 2.0, 2.0, 5.0]))
    assert n == 3 and rho == pytest.approx(1.0)  # NaN pair dropped


def test_wilcoxon_equals_scipy_and_guards_small_n() -> None:
    w, p, n, note = wilcoxon_vs_zero(D)
    ref = ss.wilcoxon(D)
    assert (w, p, n, note) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 7, "")
    assert w == 12.0  # hand: ranks of |Δ|, negatives 0.5 -> 1, 3.5 -> 4, 12 -> 7: R- = 12 < R+ = 16
    assert wilcoxon_vs_zero(D[:5])[3] == "n too small (n=5, need ≥6)"
    assert wilcoxon_vs_zero(np.zeros(8))[3] == "undefined (every Δ is 0)"


def test_bootstrap_reproducible_with_seed_and_different_with_another() -> None:
    m1, ci1, n, _ = bootstrap_mean_ci(D, 5000, seed=0)
    _, ci2, _, _ = bootstrap_mean_ci(D, 5000, seed=0)
    _, ci3, _, _ = bootstrap_mean_ci(D, 5000, seed=1)
    assert m1 == pytest.approx(D.mean()) and n == 7
    assert ci1 == ci2 and ci1 != ci3
    assert ci1[0] < m1 < ci1[1]
    rng = np.random.default_rng(0)  # the documented recipe, by hand
    means = D[rng.integers(0, 7, size=(5000, 7))].mean(axis=1)
    assert ci1 == (pytest.approx(np.quantile(means, 0.025)), pytest.approx(np.quantile(means, 0.975)))


def test_bootstrap_constant_and_small_n() -> None:
    assert bootstrap_mean_ci(np.full(5, 3.0), 200, 0)[1] == (3.0, 3.0)
    mean, ci, n, note = bootstrap_mean_ci(np.array([4.0]), 200, 0)
    assert (mean, ci, n) == (4.0, None, 1) and note.startswith("n too small")


def test_group_level_spearman_uses_group_sums_and_means(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from usagg.analysis.delta import compare
    from usagg.analysis.inputs import load_input
    from usagg.analysis.results import write_results
    from usagg.analysis.simulate import load_tasks, simulate_rows
    from usagg.analysis.stats import statistics

    tasks = load_tasks(Path(__file__).parent / "data" / "fmc_uia_tasks.yaml")
    write_results(simulate_rows(tasks), tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    groups: dict[str, list[str]] = {}
    for t in comp.tasks:
        groups.setdefault(t.group, []).append(t.task)
    size = [sum(comp.n_train[(1.0, t)] for t in ts) for ts in groups.values()]
    mean = [np.mean([comp.deltas[(1.0, t, "AU")].value for t in ts]) for ts in groups.values()]
    ref = ss.spearmanr(np.log(size), mean)
    (s,) = [s for s in statistics(comp, 500, 0) if s.paradigm == "AU" and s.name.endswith("groups")]
    assert (s.value, s.p, s.n) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 9)
    assert "group n_train = sum" in s.method
