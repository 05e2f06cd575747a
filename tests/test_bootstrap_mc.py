"""The per-task test-set bootstrap states its resamples and the Monte Carlo error of its interval's end-points: the
order-statistic band of `endpoint_bands` matches the spread of the end-point over independent bootstraps."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.tables import uncertainty_table
from usagg.analysis.task_ci import endpoint_bands, load_item_scores, paired_delta_draws, percentile_ci
from usagg.analysis.uncertainty import MONTE_CARLO, TEST_SET, task_uncertainty
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


def test_the_band_is_the_end_points_spread_over_independent_bootstraps() -> None:
    """Normal draws, 2,000 a bootstrap: the 2.5 % quantile's sd over 400 bootstraps is √(q(1−q)/B)/φ(z_q) = 0.060;
    the band's half-width from one bootstrap is 1.96 of that (0.117), within sampling error."""
    rng = np.random.default_rng(0)
    ends = np.array([percentile_ci(rng.standard_normal(2000)) for _ in range(400)])
    sd = ends.std(axis=0)
    assert sd == pytest.approx([0.060, 0.060], rel=0.15)
    bands = endpoint_bands(rng.standard_normal(2000))
    assert bands is not None
    halves = [(hi - lo) / 2 for lo, hi in bands]
    assert halves == pytest.approx([1.96 * 0.0597] * 2, rel=0.25)
    low, high = bands
    assert low[0] < -1.96 < low[1] and high[0] < 1.96 < high[1]
    assert endpoint_bands(np.full(100, np.nan)) is None  # no interval, no band


def test_the_test_set_interval_states_its_resamples_and_monte_carlo_error(tmp_path: Path) -> None:
    tasks = load_tasks(TASKS)[:4]
    run = simulate_run_store(tmp_path / "ci", tasks, seeds=(0,), item_scores=True)
    inp = load_input(run, None)
    comp = compare(inp)
    stats = task_uncertainty(inp, comp)
    st = next(s for s in stats if s.name == TEST_SET and s.task == "FUGC" and s.paradigm == "AU")
    jobs = {r.paradigm: r.job_id for r in inp.table.rows if r.task == "FUGC"}
    base, other = (load_item_scores(RunStore(run).paths(jobs[p]).folder)["FUGC"] for p in ("TS", "AU"))
    draws = paired_delta_draws(base, other, inp.settings.task_bootstrap, inp.settings.bootstrap_seed)
    assert draws is not None and st.ci == percentile_ci(draws)
    bands = endpoint_bands(draws)
    assert bands is not None
    mc = max((hi - lo) / 2 for lo, hi in bands)
    assert dict(st.effects)[MONTE_CARLO] == pytest.approx(mc) and 0 < mc < (st.ci[1] - st.ci[0]) / 2
    assert st.method.endswith(f"2000 resamples, seed 0; end-points ± {mc:.2g} (Monte Carlo 95 %)")
    table = uncertainty_table(comp, stats, 1.0, resamples=inp.settings.task_bootstrap)
    (note,) = [n for n in table.notes if n.startswith("Test set:")]
    errors = sorted(dict(s.effects)[MONTE_CARLO] for s in stats if s.name == TEST_SET)
    assert ", 2,000 of them (analysis.task_bootstrap). Monte Carlo error of its end-points (95 %" in note
    assert f"): ± {errors[-1]:.2g} at most, median ± {statistics.median(errors):.2g}, in Δ's unit;" in note


def test_figure_2s_test_set_intervals_state_their_resamples_and_monte_carlo_error(tmp_path: Path) -> None:
    """One seed: Figure 2's error bars are each job's percentile bootstrap of its metric, and the caption gives the
    resamples and the largest and median Monte Carlo error of their end-points, as the uncertainty table does."""
    from usagg.analysis.absolute_ci import TEST_SET as ABSOLUTE_TEST_SET
    from usagg.analysis.absolute_ci import absolute_interval
    from usagg.analysis.figure_absolute import fig_absolute, representative_tasks
    from usagg.analysis.summary import analyse
    from usagg.analysis.task_ci import endpoint_errors, metric_draws, resampling_text

    run = simulate_run_store(tmp_path / "one", load_tasks(TASKS)[:4], seeds=(0,), item_scores=True)
    a = analyse(load_input(run, None))
    store, errors = RunStore(run), []
    jobs = {(r.paradigm, r.task): r.job_id for r in a.inp.table.rows}
    for t in representative_tasks(a):
        for p in a.comp.paradigms:
            shown = absolute_interval(a.inp, a.comp, 1.0, t, p)
            assert shown is not None and shown.source == ABSOLUTE_TEST_SET
            draws = metric_draws([load_item_scores(store.paths(jobs[(p, t)]).folder)[t]], 2000, 0)
            assert draws is not None and (ends := endpoint_errors(draws)) is not None
            assert shown.mc == pytest.approx(max(ends)) and shown.mc is not None and shown.mc > 0
            errors.append(shown.mc)
    assert len(errors) > 1
    _, caption = fig_absolute(a)
    said = resampling_text(2000, 0, errors)
    assert f"bootstrap over the test images, one seed ({said})." in caption
    assert said.startswith("2000 resamples, seed 0; end-points ± ") and " at most, median ± " in said
