"""The test-set bootstrap of each task Δ through the analysis: item_scores.json of two jobs, H4's paired CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.memo import input_key
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.tables import delta_long_table
from usagg.analysis.task_ci import load_item_scores, paired_delta_ci
from usagg.analysis.uncertainty import BOTH, SEEDS, TEST_SET, shown_interval, task_uncertainty
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = load_tasks(TASKS)[:9]  # three OB regressions, Breast, Abdomen (one task), OB classifications
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "ci", tasks, seeds=(0,), item_scores=True)


def test_simulated_item_scores_reproduce_the_jobs_metric(run_dir: Path) -> None:
    inp = load_input(run_dir, None)
    assert len(inp.item_scores) == len(inp.table.job_ids)
    row = next(r for r in inp.table.rows if r.paradigm == "CG" and r.metric == inp.primary[r.task])
    scores = load_item_scores(RunStore(run_dir).paths(row.job_id).folder)[row.task]
    assert scores.values.mean() == pytest.approx(row.value) and scores.metric == row.metric


def test_one_seed_shows_the_test_set_interval_of_the_paired_bootstrap(run_dir: Path) -> None:
    inp = load_input(run_dir, None)
    comp = compare(inp)
    stats = task_uncertainty(inp, comp)
    test = {(s.task, s.paradigm): s for s in stats if s.name == TEST_SET}
    assert len(test) == 9 * 2
    st = test[("FUGC", "AU")]
    store = RunStore(run_dir)
    jobs = {r.paradigm: r.job_id for r in inp.table.rows if r.task == "FUGC"}
    base, other = (load_item_scores(store.paths(jobs[p]).folder)["FUGC"] for p in ("TS", "AU"))
    s = inp.settings
    assert st.ci == paired_delta_ci(base, other, s.task_bootstrap, s.bootstrap_seed)
    assert st.ci[0] < st.value < st.ci[1] and st.value == pytest.approx(comp.deltas[(1.0, "FUGC", "AU")].value)
    table = delta_long_table(comp, stats)
    row = dict(zip(table.columns, next(r for r in table.rows if r[1] == "FUGC" and r[7] == "AU"), strict=True))
    assert (row["ci_low"], row["ci_high"]) == st.ci and row["ci_source"] == f"test-set bootstrap ({st.n} images)"


def test_an_edited_item_scores_file_is_another_memo_key(run_dir: Path) -> None:
    inp = load_input(run_dir, None)
    path = next(iter(inp.item_scores.values()))
    before = input_key(inp, "TS")
    data = json.loads(path.read_text())
    task = next(iter(data["tasks"]))
    data["tasks"][task]["values"][0] += 0.5
    original = path.read_text()
    try:
        path.write_text(json.dumps(data))
        assert input_key(load_input(run_dir, None), "TS") != before
    finally:
        path.write_text(original)
    assert input_key(load_input(run_dir, None), "TS") == before


def test_several_seeds_give_the_test_set_interval_of_their_means(tmp_path: Path) -> None:
    """With two seeds the test-set interval is that of the seed means' Δ (both seeds' scores on the same resamples),
    centred on the Δ the comparison reports, not one seed's."""
    tasks = load_tasks(TASKS)[:3]
    run = simulate_run_store(tmp_path / "two", tasks, seeds=(0, 1), item_scores=True)
    inp = load_input(run, None)
    comp = compare(inp)
    test = {(s.task, s.paradigm): s for s in task_uncertainty(inp, comp) if s.name == TEST_SET}
    task = tasks[0]["id"]
    st = test[(task, "AU")]
    store = RunStore(run)
    jobs = {(r.paradigm, r.seed): r.job_id for r in inp.table.rows if r.task == task}
    scores = {k: load_item_scores(store.paths(j).folder)[task] for k, j in jobs.items()}
    s = inp.settings
    both = paired_delta_ci(
        [scores[("TS", 0)], scores[("TS", 1)]],
        [scores[("AU", 0)], scores[("AU", 1)]],
        s.task_bootstrap,
        s.bootstrap_seed,
    )
    assert st.ci == both and st.ci != paired_delta_ci(scores[("TS", 0)], scores[("AU", 0)], s.task_bootstrap, 0)
    assert st.value == pytest.approx(comp.deltas[(1.0, task, "AU")].value) and "seeds scored" not in dict(st.effects)
    assert "seeds 0, 1: the seed means' Δ on each resample" in st.method


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = load_tasks(TASKS)[:3]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "s3", tasks, seeds=(0, 1, 2), item_scores=True)


def _one_seed_of(run: Path, paradigm: str, path: Path) -> Path:
    """The store's results with only seed 0 of `paradigm` (its other jobs failed, or a published single number)."""
    import csv

    with (run / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["paradigm"] != paradigm or r["seed"] == "0")
    return path


@pytest.mark.parametrize(
    ("paradigm", "note"), [("TS", "baseline TS: one seed, no spread"), ("AU", "one seed: no spread")]
)
def test_one_seed_on_either_side_gives_no_seed_interval_but_the_test_sets(
    three_seeds: Path, tmp_path: Path, paradigm: str, note: str
) -> None:
    """The baseline's one seed leaves its training noise unmeasured, not 0: no seed interval (as with one seed of
    the paradigm), and the interval shown is the test-set bootstrap's, labelled so, over each side's own seeds: the
    seed both ran alone made an interval around seed 0's Δ beside the table's three-seed one."""
    inp = load_input(three_seeds, _one_seed_of(three_seeds, paradigm, tmp_path / "r.csv"))
    comp = compare(inp)
    task = inp.task_order[0]
    stats = task_uncertainty(inp, comp)
    by = {s.name: s for s in stats if (s.task, s.paradigm) == (task, "AU")}
    seeds = by[SEEDS]
    au = [r.value for r in inp.table.rows if (r.paradigm, r.task, r.metric) == ("AU", task, inp.primary[task])]
    ts = [r.value for r in inp.table.rows if (r.paradigm, r.task, r.metric) == ("TS", task, inp.primary[task])]
    assert (len(au), len(ts)) == ((3, 1) if paradigm == "TS" else (1, 3))
    sign = 1 if comp.info(task).higher_is_better else -1  # the first task is a regression: lower is better
    assert seeds.value == pytest.approx(sign * 100 * (sum(au) / len(au) - sum(ts) / len(ts)) / (sum(ts) / len(ts)))
    assert (seeds.ci, seeds.note, seeds.n) == (None, note, len(au)) and BOTH not in by
    store = RunStore(three_seeds)
    jobs = {(r.paradigm, r.seed): r.job_id for r in inp.table.rows if r.task == task}
    base, other = (
        [load_item_scores(store.paths(jobs[(p, seed)]).folder)[task] for seed in range(3) if (p, seed) in jobs]
        for p in ("TS", "AU")
    )
    s = inp.settings
    assert (len(base), len(other)) == (len(ts), len(au))
    assert by[TEST_SET].ci == paired_delta_ci(base, other, s.task_bootstrap, s.bootstrap_seed)
    assert by[TEST_SET].value == pytest.approx(seeds.value)  # the table's Δ, not seed 0's
    one, three = ("TS seed 0", "AU seeds 0, 1, 2") if paradigm == "TS" else ("TS seeds 0, 1, 2", "AU seed 0")
    assert f"({one}, {three}: the seed means' Δ on each resample)" in by[TEST_SET].method
    shown = shown_interval(stats, 1.0, task, "AU")
    assert shown is not None and shown[2] == f"test-set bootstrap ({by[TEST_SET].n} images)"


def test_a_data_fraction_sweep_can_be_simulated_with_per_image_scores(tmp_path: Path) -> None:
    """One test set per task at every fraction (a fraction subsamples training only), so each fraction's Δ gets
    its paired test-set interval."""
    tasks = load_tasks(TASKS)[:3]
    run = simulate_run_store(tmp_path / "frac", tasks, fractions=(0.25, 0.5, 1.0), seeds=(0,), item_scores=True)
    inp = load_input(run, None)
    store = RunStore(run)
    task = tasks[0]["id"]
    images = {
        r.fraction: load_item_scores(store.paths(r.job_id).folder)[task].images
        for r in inp.table.rows
        if (r.paradigm, r.task, r.metric) == ("TS", task, inp.primary[task])
    }
    assert len(images) == 3 and images[0.25] == images[0.5] == images[1.0]
    tests = {(s.fraction, s.task, s.paradigm) for s in task_uncertainty(inp, compare(inp)) if s.name == TEST_SET}
    assert tests == {(f, t["id"], p) for f in (0.25, 0.5, 1.0) for t in tasks for p in ("CG", "AU")}
