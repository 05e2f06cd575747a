"""Issue 28.1: `expect:` in the spec, checked by `usagg compare` and the report on hand-built results."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from usagg.analysis.delta import compare
from usagg.analysis.expect import Outcome, evaluate, expectations_table
from usagg.analysis.inputs import load_input
from usagg.analysis.summary import analyse
from usagg.analysis.tables import Interval
from usagg.analysis.uncertainty import task_uncertainty
from usagg.errors import SpecError
from usagg.results_schema import RESULT_COLUMNS
from usagg.spec.jobhash import NOT_IN_HASH, job_hash_rule
from usagg.spec.load import load_study
from usagg.spec.models import DeltaRef, Expectation, Study, TaskSelection
from usagg.tasktypes import metric_bounds

REPO = Path(__file__).resolve().parent.parent

#: task -> (type, group, metric, higher is better)
TASKS = {
    "cls_a": ("classification", "G1", "AUC", True),
    "cls_b": ("classification", "G1", "AUC", True),
    "seg_c": ("segmentation", "G2", "DSC", True),
}
#: (paradigm, task) -> metric value per seed
VALUES = {
    ("TS", "cls_a"): [0.90, 0.86],
    ("TS", "cls_b"): [0.55, 0.61],  # the broken one: at chance
    ("TS", "seg_c"): [0.70, 0.72],
    ("CG", "cls_a"): [0.80, 0.78],  # CG hurts cls_a: Δ about -10 %
    ("CG", "cls_b"): [0.60, 0.64],
    # CG did not run on seg_c
}


def _write_results(path: Path, values: dict[tuple[str, str], list[float]] = VALUES) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RESULT_COLUMNS)
        for (p, t), per_seed in values.items():
            kind, group, metric, hib = TASKS[t]
            for seed, v in enumerate(per_seed):
                job = f"{p}-{t}-f1-s{seed}"
                w.writerow(["hand", job, p, group, seed, 1.0, t, kind, metric, v, hib, 100, 50])
    return path


def _check(path: Path, *expectations: Expectation) -> list[Outcome]:
    inp = load_input(None, path)
    comp = compare(inp)
    return evaluate(list(expectations), inp, comp, task_uncertainty(inp, comp))


def test_classification_learns_is_not_met_when_one_task_is_at_chance(tmp_path: Path) -> None:
    e = Expectation(name="cls learns", metric_of="TS", tasks=TaskSelection(type="classification"), above=0.65)
    (out,) = _check(_write_results(tmp_path / "r.csv"), e)
    assert out.met is False and out.verdict == "not met"
    assert out.value == pytest.approx(0.58)  # the worst task's seed mean: cls_b
    assert out.margin == pytest.approx(0.58 - 0.65)  # missed by 0.07 (the value: no `require: interval`)
    half = 12.706 * np.std([0.55, 0.61], ddof=1) / math.sqrt(2)  # t(0.975, df 1) interval over the two seeds
    assert (out.ci_low, out.ci_high) == pytest.approx((0.58 - half, 0.58 + half), rel=1e-3)
    assert "cls_a 0.88" in out.detail and "cls_b 0.58" in out.detail and "TS AUC > 0.65" in out.detail


def test_a_bounded_metrics_interval_ends_at_its_bound(tmp_path: Path) -> None:
    """Seeds at AUC 0.99 and 1.0: the t interval's upper end (1.058) is past what an AUC can be; it ends at 1."""
    values = {**VALUES, ("TS", "cls_a"): [0.99, 1.0]}
    e = Expectation(name="a learns", metric_of="TS", tasks=["cls_a"], above=0.65)
    (out,) = _check(_write_results(tmp_path / "r.csv", values), e)
    half = 12.706 * np.std([0.99, 1.0], ddof=1) / math.sqrt(2)
    assert (out.ci_low, out.ci_high) == pytest.approx((0.995 - half, 1.0), rel=1e-3)


def test_met_when_every_selected_task_clears_the_bound(tmp_path: Path) -> None:
    e = Expectation(name="a learns", metric_of="TS", tasks=["cls_a", "seg_c"], above=0.65)
    (out,) = _check(_write_results(tmp_path / "r.csv"), e)
    assert out.met is True and out.value == pytest.approx(0.71)  # seg_c is the closer one to the bound
    whole = Expectation(name="a learns", metric_of="TS", tasks=["seg_c"], above=0.65, require="interval")
    (strict,) = _check(_write_results(tmp_path / "r.csv"), whole)
    assert strict.ci_low is not None and strict.margin == pytest.approx(strict.ci_low - 0.65)  # the nearer end
    same = {**VALUES, ("TS", "seg_c"): [0.72, 0.72]}
    (flat,) = _check(_write_results(tmp_path / "r2.csv", same), whole)
    assert "seg_c 0.720 [0.720, 0.720] (no spread: every seed and resample alike)" in flat.detail


def test_delta_expectation_without_item_scores_uses_the_seed_interval_marked_seeds_only(tmp_path: Path) -> None:
    hurts = Expectation(name="CG hurts a", delta=DeltaRef(paradigm="CG", task="cls_a"), below=0)
    helps = Expectation(name="CG helps a", delta=DeltaRef(paradigm="CG", task="cls_a"), above=0)
    out_hurts, out_helps = _check(_write_results(tmp_path / "r.csv"), hurts, helps)
    assert out_hurts.met is True and out_helps.met is False
    assert out_hurts.value == pytest.approx((0.79 - 0.88) / 0.88 * 100)
    assert out_hurts.ci_low is not None and out_hurts.ci_low < out_hurts.value < out_hurts.ci_high
    assert "Δ % of CG vs TS < 0" in out_hurts.detail
    assert "cls_a -10.2 [-23.5, 3.024] (seeds only); " in out_hurts.detail  # no per-image scores


def test_a_paradigm_that_did_not_run_is_not_evaluated_never_met(tmp_path: Path) -> None:
    path = _write_results(tmp_path / "r.csv")
    seg = Expectation(name="CG on seg", delta=DeltaRef(paradigm="CG", task="seg_c"), below=100)
    every = Expectation(name="CG everywhere", delta=DeltaRef(paradigm="CG"), above=-50)
    out_seg, out_every = _check(path, seg, every)
    assert out_seg.met is None and out_seg.verdict == "not evaluated" and out_seg.value is None
    assert "no result for seg_c (CG did not run there)" in out_seg.detail
    assert out_every.met is None and out_every.value is not None  # the rest pass, one is missing
    failing = Expectation(name="CG gains", delta=DeltaRef(paradigm="CG"), above=0)
    (out,) = _check(path, failing)
    assert out.met is False  # a miss on a task that ran decides it, whatever is missing


def test_ag_grouping_by_adjusted_rand_index(tmp_path: Path) -> None:
    values = {**VALUES, ("AG", "cls_a"): [0.9], ("AG", "cls_b"): [0.6], ("AG", "seg_c"): [0.7]}
    path = _write_results(tmp_path / "r.csv", values)
    rows = path.read_text().splitlines()
    ag_job = {"cls_a": "AG-g1-f1-s0", "cls_b": "AG-g1-f1-s0", "seg_c": "AG-g2-f1-s0"}
    fixed = [r if not r.startswith("hand,AG-") else r.replace(r.split(",")[1], ag_job[r.split(",")[6]]) for r in rows]
    path.write_text("\n".join(fixed) + "\n")
    right = Expectation(name="pairs", ag_groups=[["cls_a", "cls_b"], ["seg_c"]], min_adjusted_rand=0.8)
    wrong = Expectation(name="apart", ag_groups=[["cls_a", "seg_c"], ["cls_b"]], min_adjusted_rand=0.8)
    out_right, out_wrong = _check(path, right, wrong)
    assert out_right.met is True and out_right.value == pytest.approx(1.0)
    assert out_wrong.met is False and out_wrong.value < 0.8 and "g1: cls_a, cls_b" in out_wrong.detail
    (no_ag,) = _check(_write_results(tmp_path / "r2.csv"), right)
    assert no_ag.met is None and no_ag.detail == "AG did not run"
    ci = expectations_table([out_right]).rows[0][3]
    assert ci == Interval(None, None, "—")  # the Rand index has no interval: said, not an empty cell


def test_one_seed_takes_the_test_set_bootstrap_of_the_jobs_item_scores(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from usagg.analysis.task_ci import load_item_scores

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    p1 = np.clip(0.5 + 0.2 * (labels - 0.5) + rng.normal(0, 0.25, 40), 0, 1)
    auc = float(roc_auc_score(labels, p1))  # what the job scored
    path = _write_results(tmp_path / "r.csv", {("TS", "cls_a"): [auc]})
    job_dir = tmp_path / "jobs" / "TS-cls_a-f1-s0"
    job_dir.mkdir(parents=True)
    rec = {
        "metric": "AUC", "higher_is_better": True, "kind": "auc", "images": [f"i{i:02d}.png" for i in range(40)],
        "values": np.column_stack([labels, 1 - p1, p1]).tolist(),
    }  # fmt: skip
    (job_dir / "item_scores.json").write_text(json.dumps({"format": 1, "tasks": {"cls_a": rec}}))
    assert load_item_scores(job_dir)["cls_a"].kind == "auc"
    inp = load_input(None, path)
    inp.item_scores = {"TS-cls_a-f1-s0": job_dir / "item_scores.json"}
    comp = compare(inp)
    e = Expectation(name="a learns", metric_of="TS", tasks=["cls_a"], above=0.65)
    (out,) = evaluate([e], inp, comp, [])
    assert out.value == auc and 0.8 < auc < 0.95
    assert out.ci_low is not None and 0.6 < out.ci_low < auc < out.ci_high <= 1.0  # 40 images: a wide interval
    assert out.ci_high - out.ci_low < 0.5
    assert evaluate([e], inp, comp, []) == [out]  # the bootstrap is seeded
    # its resamples and how far another bootstrap of as many would move an end-point, where the interval is read
    from usagg.analysis.task_ci import endpoint_errors, metric_draws

    draws = metric_draws([load_item_scores(job_dir)["cls_a"]], 2000, 0)
    assert draws is not None and (errors := endpoint_errors(draws)) is not None
    assert 0 < max(errors) < (out.ci_high - out.ci_low) / 10
    assert out.detail.endswith(
        f"; test-set bootstrap of 2000 resamples, seed 0; end-points ± {max(errors):.2g} (Monte Carlo 95 %)"
    )


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tasks, three seeds of TS, CG and AU, every job with per-image test scores."""
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    tasks = load_tasks(REPO / "tests" / "data" / "fmc_uia_tasks.yaml")[:3]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "scored", tasks, seeds=(0, 1, 2), item_scores=True)


def _scored(run: Path) -> tuple:
    inp = load_input(run, None)
    comp = compare(inp)
    return inp, comp, task_uncertainty(inp, comp)


def test_a_seed_interval_adds_the_test_sets_variance_and_is_never_narrower(scored_run: Path) -> None:
    """Three seeds, each scored on the same test images: the metric's interval is the t interval over the seeds
    with the bootstrap variance of the seed-mean metric over the test images added, a variance known without error,
    and never narrower than the seeds' alone: Welch-Satterthwaite's df grows past the seeds' 2 with a known variance,
    so where it dominates the combined t interval is narrower than the seeds' at t(2), as in this task (a reviewer
    read that as the test set making a verdict surer); where the seeds' spread is small beside the test set's, it is
    the wider."""
    from usagg.analysis.task_ci import load_item_scores, metric_ci
    from usagg.analysis.tdist import t_quantile
    from usagg.analysis.uncertainty import interval_variance
    from usagg.store import RunStore

    inp, comp, stats = _scored(scored_run)
    store = RunStore(scored_run)
    st = inp.settings
    seen = set()
    for info in comp.tasks:
        task = info.task
        rows = sorted((r for r in inp.table.rows if (r.paradigm, r.task, r.metric) == ("TS", task, inp.primary[task])),
                      key=lambda r: r.seed)  # fmt: skip
        vals = np.array([r.value for r in rows])
        scores = [load_item_scores(store.paths(r.job_id).folder)[task] for r in rows]
        test_var = interval_variance(metric_ci(scores, st.task_bootstrap, st.bootstrap_seed))
        seed_var = vals.var(ddof=1) / 3
        df = (seed_var + test_var) ** 2 / (seed_var**2 / 2)  # Welch-Satterthwaite, the test set's variance known
        added = t_quantile(0.975, df) * math.sqrt(seed_var + test_var)
        alone = t_quantile(0.975, 2) * math.sqrt(seed_var)
        e = Expectation(name="TS learns", metric_of="TS", tasks=[task], below=1e9)
        (out,) = evaluate([e], inp, comp, stats)
        half = max(added, alone)
        assert out.value == pytest.approx(vals.mean()) and test_var > 0 and "seeds only" not in out.detail
        low, high = metric_bounds(info.metric)
        want = (
            max(vals.mean() - half, low if low is not None else -math.inf),
            min(vals.mean() + half, high or math.inf),
        )
        assert (out.ci_low, out.ci_high) == pytest.approx(want, rel=1e-9), task
        seen.add(added > alone)
    assert seen == {True, False}  # both cases met by the three tasks


def test_a_delta_and_a_difference_carry_the_test_set_too(scored_run: Path) -> None:
    """A Δ's interval is the analysis' "seeds + test set" one (`with_test_set`: `seed_interval` with the test-set
    bootstrap's variance of its seed-mean Δ added, never narrower than the seeds'), as the uncertainty table shows it;
    Δ_AU − Δ_CG has the paired seed differences' t interval widened by the bootstrap of that difference over the
    test images."""
    from usagg.analysis.uncertainty import BOTH, TEST_SET, interval_variance, seed_interval, widest

    inp, comp, stats = _scored(scored_run)
    task = comp.tasks[1].task
    test = next(s for s in stats if (s.name, s.task, s.paradigm) == (TEST_SET, task, "AU"))
    both = next(s for s in stats if (s.name, s.task, s.paradigm) == (BOTH, task, "AU"))
    assert test.ci is not None
    combined = seed_interval(comp, 1.0, task, "AU", extra_var=interval_variance(test.ci))
    plain = seed_interval(comp, 1.0, task, "AU")
    assert combined is not None and plain is not None and combined.ci is not None and plain.ci is not None
    delta = Expectation(name="AU", delta=DeltaRef(paradigm="AU", task=task), above=-1e9)
    versus = Expectation(name="AU - CG", delta=DeltaRef(paradigm="AU", task=task, versus="CG"), above=-1e9)
    out, diff = evaluate([delta, versus], inp, comp, stats)
    assert (out.ci_low, out.ci_high) == both.ci == widest(combined.ci, plain.ci)
    assert out.ci_low <= plain.ci[0] and out.ci_high >= plain.ci[1]
    a, b = comp.seed_deltas(1.0, task, "AU"), comp.seed_deltas(1.0, task, "CG")
    d = np.array([a[s] - b[s] for s in sorted(a)])
    assert diff.value == pytest.approx(d.mean())
    seed_var = d.var(ddof=1) / 3
    assert diff.ci_low is not None and diff.ci_high is not None
    half = (diff.ci_high - diff.ci_low) / 2
    assert diff.ci_low < diff.value < diff.ci_high and half > 1.96 * math.sqrt(seed_var)  # t > z, and more variance
    assert diff.value - diff.ci_low == pytest.approx(half) and "seeds only" not in diff.detail
    # the test-set bootstrap in each interval: its resamples and its end-points' Monte Carlo error (the Δ's is the
    # uncertainty table's), and none where the seeds alone give the interval
    from usagg.analysis.uncertainty import MONTE_CARLO

    mc = dict(test.effects)[MONTE_CARLO]
    assert out.detail.endswith(
        f"; test-set bootstrap of 2000 resamples, seed 0; end-points ± {mc:.2g} (Monte Carlo 95 %)"
    )
    assert re.search(r"; test-set bootstrap of 2000 resamples, seed 0; end-points ± [\d.e-]+ \(Monte Carlo 95 %\)$",
                     diff.detail)  # fmt: skip
    from usagg.store import RunStore

    plain_inp = load_input(None, RunStore(scored_run).results_csv)  # no item scores: the seeds alone
    (seeds_only,) = evaluate([delta], plain_inp, compare(plain_inp), [])
    assert "seeds only" in seeds_only.detail and "test-set bootstrap" not in seeds_only.detail


def _without_seeds(run: Path, out: Path, paradigm: str, keep: int) -> Path:
    """A copy of `run` where `paradigm` ran seed `keep` only: its other jobs and their results rows gone."""
    import shutil

    from usagg.store import RunStore

    shutil.copytree(run, out)
    store = RunStore(out)
    gone = {j for j in store.job_folders() if j.startswith(f"{paradigm}-") and not j.endswith(f"-s{keep}")}
    for j in gone:
        shutil.rmtree(store.paths(j).folder)
    rows = list(csv.reader(io.StringIO(store.results_csv.read_text())))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([rows[0], *(r for r in rows[1:] if r[1] not in gone)])
    store.results_csv.write_text(buf.getvalue())
    store.mark_results_fresh()
    return out


def test_a_difference_with_one_seed_of_versus_is_bootstrapped_on_each_paradigms_own_seeds(
    scored_run: Path, tmp_path: Path
) -> None:
    """CG at seed 0 only, AU at three: Δ_AU − Δ_CG is the table's Δs (AU's three seeds), so its test-set interval
    resamples AU's three seeds and CG's one. The seeds both ran (seed 0 alone) centred it on seed 0's difference,
    an interval that missed its own value and met a bound the value misses under `require: interval`."""
    inp, comp, stats = _scored(_without_seeds(scored_run, tmp_path / "scored", "CG", keep=0))
    for info in comp.tasks:
        task = info.task
        assert sorted(comp.seed_deltas(1.0, task, "CG")) == [0] and len(comp.seed_deltas(1.0, task, "AU")) == 3
        ref = DeltaRef(paradigm="AU", task=task, versus="CG")
        (diff,) = evaluate([Expectation(name="AU - CG", delta=ref, above=-1e9)], inp, comp, stats)
        assert diff.value == pytest.approx(comp.deltas[(1.0, task, "AU")].value - comp.deltas[(1.0, task, "CG")].value)
        assert diff.ci_low is not None and diff.ci_high is not None
        assert diff.ci_low < diff.value < diff.ci_high, task
        e = Expectation(name="AU beats CG", delta=ref, above=diff.value + 0.01, require="interval")
        (out,) = evaluate([e], inp, comp, stats)
        assert out.met is False and out.margin is not None and out.margin < 0, task


def test_a_test_set_bootstrap_of_a_mean_has_the_normal_width() -> None:
    """Known answer: the percentile interval of a mean over n scores is ± 1.96 sd / √n, about."""
    from usagg.analysis.task_ci import ItemScores, metric_ci

    n = 2000
    values = np.random.default_rng(3).normal(0.5, 0.2, n)
    s = ItemScores("DSC", True, "mean", tuple(f"i{i:04d}.png" for i in range(n)), values)
    lo, hi = metric_ci([s], 2000, 0) or (0.0, 0.0)
    assert (hi - lo) / 2 == pytest.approx(1.96 * values.std() / math.sqrt(n), rel=0.08)
    assert lo < values.mean() < hi


def _study(tmp_path: Path, expect: list[dict]) -> Path:
    spec = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    spec["expect"] = expect
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            {"metric_of": "TS", "tasks": ["fetal_hed"], "above": 0.5},
            "'fetal_hed' (did you mean 'fetal_head'?)",
        ),
        ({"metric_of": "TS", "tasks": {"type": "clasification"}, "above": 0.5}, "of type 'clasification'"),
        ({"delta": {"paradigm": "CG", "task": "no_such"}, "below": 0}, "unknown task 'no_such'"),
        ({"metric_of": "XX", "above": 0.5}, "XX"),
        ({"metric_of": "TS", "tasks": ["breast_lesion_cls"], "metric": "DSC", "above": 0.5}, "names metric 'DSC'"),
        ({"ag_groups": [["fetal_head", "nope"]], "min_adjusted_rand": 0.8}, "unknown task 'nope'"),
        (
            {"metric_of": "TS", "above": 0.5, "delta": {"paradigm": "CG"}},
            "exactly one of metric_of",
        ),
        ({"metric_of": "TS"}, "needs `above` and/or `below`"),
    ],
)
def test_an_unknown_name_or_bad_shape_is_a_spec_error_naming_it(tmp_path: Path, entry: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        load_study(_study(tmp_path, [{"name": "x", **entry}]))
    assert needle in str(err.value)


def test_a_paradigm_the_study_does_not_run_loads_and_is_not_evaluated(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    spec["paradigms"] = ["CG", "AU"]  # what `--set paradigms=[CG, AU]` makes of the demo: its TS expectation stays
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert load_study(path).expect[0].metric_of == "TS"
    e = Expectation(name="AU learns", metric_of="AU", tasks=["cls_a"], above=0.5)
    (out,) = _check(_write_results(tmp_path / "r.csv"), e)
    assert out.met is None and "AU did not run there" in out.detail


def test_a_narrowed_study_without_the_selected_type_loads_and_is_not_evaluated(tmp_path: Path) -> None:
    """`usagg init` then a run of two of the demo's tasks: its classification expectation selects nothing there."""
    spec = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    spec.pop("tasks_from")
    spec["tasks"] = [{"id": "fetal_head", "type": "segmentation", "group": "Fetal", "num_classes": 2}]
    spec["data"]["synthetic"]["sizes"] = {"fetal_head": 16}
    spec["analysis"].pop("representative_tasks", None)
    spec["paradigms"] = ["TS", "AU"]
    spec["expect"].append({"name": "lung", "metric_of": "TS", "tasks": {"group": "Lung"}, "above": 0.5})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = load_study(path)
    assert [e.task_ids(study.tasks) for e in study.expect] == [[], [], []]
    e = Expectation(name="lung", metric_of="TS", tasks=TaskSelection(group="Lung"), above=0.5)
    (out,) = _check(_write_results(tmp_path / "r.csv"), e)
    assert out.met is None and out.verdict == "not evaluated" and "no task" in out.detail


def test_expectations_never_enter_a_job_id(tmp_path: Path) -> None:
    from usagg.plan import plan

    plain = load_study(_study(tmp_path, []))
    expecting = load_study(_study(tmp_path, [{"name": "x", "metric_of": "TS", "above": 0.5}]))
    assert [j.id for j in plan(plain)] == [j.id for j in plan(expecting)]
    assert job_hash_rule(Study.model_fields["expect"]) == NOT_IN_HASH
    for model in (Expectation, DeltaRef, TaskSelection):
        assert all(job_hash_rule(f) == NOT_IN_HASH for f in model.model_fields.values())


def test_the_demo_expects_every_classification_task_to_learn() -> None:
    study = load_study(REPO / "studies" / "demo.yaml")
    learns, beats_chance = [e for e in study.expect if e.metric_of == "TS"]
    for e in (learns, beats_chance):
        assert e.task_ids(study.tasks) == ["fetal_head_position", "thyroid_malignancy", "breast_lesion_cls"]
    assert (learns.above, learns.require) == (0.65, "value")
    assert (beats_chance.above, beats_chance.require) == (0.5, "interval")
    packaged = REPO / "usagg" / "studies" / "demo.yaml"
    assert packaged.read_bytes() == (REPO / "studies" / "demo.yaml").read_bytes()


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_compare_json_and_report_carry_the_stored_expectations(tmp_path: Path) -> None:
    from usagg.analysis.report import write_report
    from usagg.analysis.simulate import load_tasks, simulate_run_store
    from usagg.cli.app import app
    from usagg.store import RunStore

    tasks = load_tasks(REPO / "tests" / "data" / "fmc_uia_tasks.yaml")[:9]
    run_dir = simulate_run_store(tmp_path / "runs" / "sim", tasks, seeds=(0,), item_scores=True)
    store = RunStore(run_dir)
    study = store.stored_study()
    study["expect"] = [
        {"name": "cls learns", "metric_of": "TS", "tasks": {"type": "classification"}, "above": 0.0},
        {"name": "impossible", "metric_of": "TS", "tasks": ["breast_2cls"], "above": 1.5},
        {"name": "CG hurts FUGC", "delta": {"paradigm": "CG", "task": "FUGC"}, "below": 0},
    ]
    store.write_study(yaml.safe_dump(study, sort_keys=False))
    res = CliRunner().invoke(app, ["compare", str(run_dir), "--format", "json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["expectations"]
    assert [g["name"] for g in got] == ["cls learns", "impossible", "CG hurts FUGC"]
    assert set(got[0]) == {"name", "met", "value", "ci_low", "ci_high", "detail", "margin"}
    assert got[0]["met"] is True and got[1]["met"] is False
    assert got[1]["ci_low"] < got[1]["value"] < got[1]["ci_high"]  # the test-set bootstrap of the one job
    cg = load_input(run_dir, None)
    delta = compare(cg).deltas[(1.0, "FUGC", "CG")].value
    assert got[2]["value"] == pytest.approx(delta) and got[2]["met"] is (delta < 0)
    table = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert "Expectations" in table.output and "not met" in table.output
    assert f"[{got[1]['ci_low']:.3f}, {got[1]['ci_high']:.3f}]" in table.output  # the interval shown as before
    res = CliRunner().invoke(app, ["compare", str(run_dir), "--format", "csv", "--table", "expectations"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))  # the same numbers as the JSON, the bounds apart
    assert [(r["name"], float(r["ci_low"]), float(r["ci_high"])) for r in rows[1:2]] == [
        ("impossible", got[1]["ci_low"], got[1]["ci_high"])
    ]
    assert float(rows[1]["ci_low"]) < float(rows[1]["value"]) < float(rows[1]["ci_high"])
    written = write_report(analyse(load_input(run_dir, None)), tmp_path / "report", render=lambda *a: [])
    md = next(p for p in written if p.name == "report.md").read_text()
    assert "## Expectations" in md and "| impossible | not met |" in " ".join(md.split())  # cells padded
    top = md[: md.index("Contents:")]  # the summary says it before any number (a new user missed two not met)
    met = sum(g["met"] is True for g in got)
    missed = "; ".join(g["name"] for g in got if g["met"] is False)
    assert f"- **Expectations**: {met} of 3 met; not met: {missed} (see Expectations)." in top, top


def test_negative_transfer_counts_intervals_below_0_apart_from_point_estimates(tmp_path: Path) -> None:
    """CG on cls_a about −10 % over four close seeds: its seed interval lies below 0; the same mean Δ over seeds far
    apart has an interval across 0, so it counts under Δ < 0 (a point estimate) but not under 'Interval < 0'."""
    from usagg.analysis.report import _below
    from usagg.analysis.tables import negative_table

    ts = {("TS", "cls_a"): [0.90, 0.88, 0.89, 0.87], ("TS", "cls_b"): [0.55, 0.61, 0.58, 0.57]}
    for cg, below in (([0.80, 0.79, 0.78, 0.80], [1, "cls_a"]), ([0.95, 0.62, 0.95, 0.65], [0, "—"])):
        values = {**ts, ("CG", "cls_a"): cg, ("CG", "cls_b"): [0.60, 0.64, 0.62, 0.61]}
        inp = load_input(None, _write_results(tmp_path / "r.csv", values))
        comp = compare(inp)
        (row,) = negative_table(comp, task_uncertainty(inp, comp)).rows
        assert row[:5] == ["CG", "1", 1, 2, "cls_a"] and row[5:8] == [below[0], 2, below[1]]  # cls_b: CG above TS
        assert row[8].startswith("seeds") and _below(row).startswith("point estimates; interval over seeds below 0")
    one_seed = {k: v[:1] for k, v in values.items()}  # no spread, no per-image scores: no task has an interval
    inp = load_input(None, _write_results(tmp_path / "one.csv", one_seed))
    comp = compare(inp)
    row = negative_table(comp, task_uncertainty(inp, comp)).rows[0]
    assert row[5:7] == [0, 0] and _below(row) == "point estimates; no task has an interval"  # not 'below 0 in 0'


def test_a_one_seed_interval_is_said_to_leave_training_noise_out_wherever_it_supports_a_verdict(
    tmp_path: Path,
) -> None:
    """One seed with per-image scores: every interval is one training run's test-set bootstrap. The table's title
    is no 'negative transfer', its column and note say where the intervals come from, the summary's and headline's
    count says it, and Figure 3's caption too (the audit: 4 of AU's 6 'interval < 0' tasks changed sign in
    another seed)."""
    from usagg.analysis.figure_delta import _error_bar_text
    from usagg.analysis.report import _below
    from usagg.analysis.simulate import load_tasks, simulate_run_store
    from usagg.analysis.tables import ONE_RUN, negative_table

    tasks = load_tasks(REPO / "tests" / "data" / "fmc_uia_tasks.yaml")[:3]
    run = simulate_run_store(tmp_path / "one", tasks, seeds=(0,), item_scores=True)
    a = analyse(load_input(run, None))
    table = negative_table(a.comp, a.stats)
    assert "negative transfer" not in table.title.lower() and table.columns[8] == "Interval from"
    for row in table.rows:
        assert row[6] == 3 and row[8] == ONE_RUN  # every task has its test-set interval
        assert _below(row) == f"point estimates; interval below 0 in {row[5]} of the 3 that have one, a {ONE_RUN}"
    assert any("leaves training (seed) noise out" in n for n in table.notes)
    assert "one training run: training (seed) noise left out" in _error_bar_text({"test-set bootstrap"})


def test_the_budget_caveat_names_the_paradigms_whose_steps_differ(tmp_path: Path) -> None:
    """CG's tasks trained twice TS's steps, AU's as many: the headline's caveat names CG alone, with its range."""
    from usagg.analysis.report import _budget_line

    values = {**VALUES, ("AU", "cls_a"): [0.85, 0.84], ("AU", "cls_b"): [0.6, 0.62]}
    path = _write_results(tmp_path / "r.csv", values)
    rows = path.read_text().splitlines()
    doubled = [r[: r.rindex(",")] + ",100" if r.startswith("hand,CG-") else r for r in rows]
    path.write_text("\n".join(doubled) + "\n")
    (line,) = _budget_line(analyse(load_input(None, path)), 1.0)
    assert "CG 2.00×-2.00×" in line and "AU" not in line
    path.write_text("\n".join(rows) + "\n")
    assert _budget_line(analyse(load_input(None, path)), 1.0) == []


def test_a_delta_of_a_paradigm_that_differs_in_both_factors_says_so_until_a_control_ran(tmp_path: Path) -> None:
    """CG shares tasks AND runs MoE, TS does neither: without TSM (or CGD) a verdict on Δ_CG cannot be read as the
    effect of sharing tasks; the detail says so, and stops saying it once the control is in the results."""
    e = Expectation(name="CG hurts a", delta=DeltaRef(paradigm="CG", task="cls_a"), below=0)
    (out,) = _check(_write_results(tmp_path / "r.csv"), e)
    assert out.detail.endswith(
        "; ΔCG measures sharing tasks and MoE at once (CG trains with MoE, TS not): no TSM or CGD ran to split them"
    )
    with_control = {**VALUES, ("TSM", "cls_a"): [0.87, 0.85], ("TSM", "cls_b"): [0.56, 0.60]}
    (split,) = _check(_write_results(tmp_path / "r2.csv", with_control), e)
    assert "MoE at once" not in split.detail and split.met is out.met
