"""Per-image scores of the test evaluation and the paired test-set bootstrap of a task's Δ."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_study import BIOMETRY, CARDIAC, THYROID_PAIR, write_tiny_study
from usagg.analysis.delta import relative_change
from usagg.analysis.task_ci import ItemScores, load_item_scores, paired_delta_ci, resampled_metric
from usagg.atomic import write_json_atomic
from usagg.data.fmc_uia import Sample
from usagg.errors import UsaggError
from usagg.predictions import PredictionWriter
from usagg.spec.models import TaskSpec
from usagg.store.layout import JobPaths
from usagg.tasktypes import EvalItem, get_task_type
from usagg.tasktypes.classification import auc_or_nan


def _items(task: TaskSpec, gts: list, hw: tuple[int, int], tmp: Path) -> list[EvalItem]:
    """EvalItems of `task` with ground truths `gts`, images of original size `hw`, listed in a shuffled order."""
    order = np.random.default_rng(len(gts)).permutation(len(gts))
    return [
        EvalItem(
            f"../img/{task.id}_{i:03d}.png",
            hw,
            gts[i],
            Sample(task.id, task.type, task.num_classes, f"../img/{task.id}_{i:03d}.png", tmp / f"img/{i}.png",
                   tmp / f"masks/{task.id}_{i:03d}.png", tmp / "csv_files/x.csv", i + 1),
        )
        for i in order
    ]  # fmt: skip


def _scored_cases(tmp: Path) -> list[tuple[TaskSpec, np.ndarray, list[EvalItem]]]:
    """Tasks of every type, with each metric of classification and segmentation once primary."""
    rng = np.random.default_rng(11)
    seg_gt = [rng.integers(0, 3, (8, 8)).astype(np.uint8) for _ in range(9)]
    seg_pred = np.stack([np.where(rng.random((8, 8)) < 0.6, g, rng.integers(0, 3, (8, 8))) for g in seg_gt])
    cls_gt = list(rng.integers(0, 3, 40))
    cls_pred = rng.dirichlet(np.ones(3), size=40)
    det_gt = [np.array([x, y, x + 20.0, y + 30.0]) for x, y in rng.uniform(0, 50, (25, 2))]
    det_pred = rng.uniform(0, 1, (25, 4))
    reg_gt = [rng.uniform(0, 100, (3, 2)) for _ in range(30)]
    reg_pred = rng.uniform(0, 1, (30, 3, 2))
    cases = []
    for metric in ("DSC", "HD"):
        task = TaskSpec(id=f"seg_{metric}", type="segmentation", num_classes=3, metric=metric)
        cases.append((task, seg_pred, _items(task, seg_gt, (8, 8), tmp)))
    for metric in ("AUC", "ACC", "F1_macro", "F1_weighted", "MCC"):
        task = TaskSpec(id=f"cls_{metric}", type="classification", num_classes=3, metric=metric)
        cases.append((task, cls_pred, _items(task, cls_gt, (8, 8), tmp)))
    det = TaskSpec(id="det", type="detection", num_classes=1)
    reg = TaskSpec(id="reg", type="regression", num_classes=3)
    cases.append((det, det_pred, _items(det, det_gt, (100, 100), tmp)))
    cases.append((reg, reg_pred, _items(reg, reg_gt, (100, 100), tmp)))
    return cases


def _positions(preds: np.ndarray, items: list[EvalItem]) -> np.ndarray:
    """Predictions in the items' (shuffled) order: item k holds image i = its number."""
    return preds[[int(it.image_path[-7:-4]) for it in items]]


# --------------------------------------------------------------------------- item_scores.json


def test_item_scores_of_the_full_test_set_reproduce_each_metric_exactly_as_scored(tmp_path: Path) -> None:
    job = JobPaths(tmp_path / "job")
    scored: dict[str, float] = {}
    with PredictionWriter(job.predictions) as writer:
        for task, preds, items in _scored_cases(tmp_path):
            scored[task.id] = get_task_type(task.type).score(task, _positions(preds, items), items, writer)[task.metric]
    write_json_atomic(job.item_scores, writer.item_scores())
    loaded = load_item_scores(job.folder)
    assert sorted(loaded) == sorted(scored)
    kinds = {t: s.kind for t, s in loaded.items()}
    assert kinds == {
        "seg_DSC": "mean", "seg_HD": "mean", "cls_AUC": "auc", "cls_ACC": "mean", "cls_F1_macro": "confusion",
        "cls_F1_weighted": "confusion", "cls_MCC": "confusion", "det": "mean", "reg": "mean",
    }  # fmt: skip
    for task_id, s in loaded.items():
        assert s.metric == task_id.removeprefix("seg_").removeprefix("cls_") or task_id in ("det", "reg")
        full = resampled_metric(s, np.arange(len(s.images)))
        assert full == scored[task_id], task_id  # bit for bit, not approximately
    assert loaded["seg_DSC"].values.shape == (9, 2)  # per image and non-background class
    assert loaded["reg"].higher_is_better is False and loaded["det"].higher_is_better is True
    # images as listed when scored (the CSV strings), one row each
    assert loaded["det"].images[:2] == tuple(it.image_path for it in _scored_cases(tmp_path)[-2][2][:2])


def test_loading_absent_and_damaged_files(tmp_path: Path) -> None:
    assert load_item_scores(tmp_path) == {}
    path = JobPaths(tmp_path).item_scores
    for bad in ("{not json", '{"format": 2, "tasks": {}}', '{"format": 1, "tasks": {"T": {"metric": "IoU"}}}',
                '{"format": 1, "tasks": {"T": {"metric": "IoU", "higher_is_better": true, "kind": "mean", '
                '"images": ["a", "b"], "values": [0.5]}}}'):  # fmt: skip
        path.write_text(bad)
        with pytest.raises(UsaggError, match=str(path)):
            load_item_scores(tmp_path)
    path.write_text(
        '{"format": 1, "tasks": {"T": {"metric": "IoU", "higher_is_better": true, "kind": "mean", '
        '"images": ["a", "b"], "values": [0.5, null]}}}'
    )
    (s,) = load_item_scores(tmp_path).values()
    assert s.images == ("a", "b") and s.values[0] == 0.5 and math.isnan(s.values[1])


# --------------------------------------------------------------------------- resampled metric and AUC


def _auc_scores(n: int, classes: int, seed: int) -> ItemScores:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    probs = rng.dirichlet(np.ones(classes), size=n)
    probs[: n // 4] = np.round(probs[: n // 4], 1)  # ties
    probs[: n // 4, -1] = 1.0 - probs[: n // 4, :-1].sum(axis=1)
    return ItemScores("AUC", True, "auc", tuple(f"i{k:04d}" for k in range(n)), np.column_stack([labels, probs]))


@pytest.mark.parametrize("classes", [2, 4])
def test_bootstrap_auc_equals_scikit_learn_on_every_resample(classes: int) -> None:
    from usagg.analysis.task_ci import _metrics  # the vectorised path checked against its definition

    s = _auc_scores(12, classes, seed=classes)
    idx = np.random.default_rng(0).integers(0, 12, size=(300, 12))
    fast = _metrics(s, idx)
    slow = np.array([resampled_metric(s, row) for row in idx])
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(slow).any() == (classes == 4)  # some resamples of 12 images miss one of 4 classes
    np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], rtol=0, atol=1e-12)


def test_resampled_auc_is_nan_where_the_challenge_records_zero() -> None:
    s = _auc_scores(12, 3, seed=1)
    no_class_2 = np.flatnonzero(s.values[:, 0] != 2)
    assert math.isnan(resampled_metric(s, no_class_2))
    probs, labels = s.values[no_class_2, 1:], s.values[no_class_2, 0].astype(int)
    assert math.isnan(auc_or_nan(probs, labels))
    assert resampled_metric(s, np.arange(12)) == auc_or_nan(s.values[:, 1:], s.values[:, 0].astype(int))
    assert math.isnan(resampled_metric(s, np.array([], dtype=np.int64)))
    with pytest.raises(ValueError):
        resampled_metric(s, np.array([0.5, 1.5]))


# --------------------------------------------------------------------------- paired bootstrap


def _mean_pair(n: int, seed: int, gain: float = 0.03) -> tuple[ItemScores, ItemScores]:
    """Per-image DSC-like scores of a baseline and a model better by `gain` on average, on n shared images."""
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal(0.7, 0.15, n), 0, 1)
    other = np.clip(base + rng.normal(gain, 0.08, n), 0, 1)
    images = tuple(f"../img/{k:05d}.png" for k in range(n))
    return (ItemScores("DSC", True, "mean", images, base), ItemScores("DSC", True, "mean", images, other))


def test_ci_covers_the_observed_delta_and_matches_the_delta_method() -> None:
    base, other = _mean_pair(400, seed=3)
    observed = relative_change(other.values.mean(), base.values.mean(), True).value
    ci = paired_delta_ci(base, other, resamples=2000, seed=0)
    assert ci is not None
    lo, hi = ci
    assert lo < observed < hi
    # delta method for a ratio of paired means: SE = 100 / mean(b) * sd(o - r b) / sqrt(n), r = mean(o) / mean(b)
    r = other.values.mean() / base.values.mean()
    se = 100 / base.values.mean() * np.std(other.values - r * base.values, ddof=1) / math.sqrt(400)
    assert hi - lo == pytest.approx(2 * 1.959964 * se, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(observed, abs=0.1 * se)
    # these data: +4.28 % with a standard error of 0.56 pp; the 95 % interval is about [3.23, 5.31]
    assert observed == pytest.approx(4.28, abs=0.01) and se == pytest.approx(0.558, abs=0.001)
    assert ci == pytest.approx((3.23, 5.31), abs=0.01)


def test_ci_narrows_with_more_images_as_one_over_root_n() -> None:
    widths = {}
    for n in (100, 1600):
        base, other = _mean_pair(n, seed=5)
        lo, hi = paired_delta_ci(base, other, resamples=1000, seed=1)  # type: ignore[misc]
        widths[n] = hi - lo
    assert widths[1600] < widths[100] / 3  # 16 times the images: about a quarter of the width


def test_ci_is_deterministic_for_a_seed_and_independent_of_image_order() -> None:
    base, other = _mean_pair(150, seed=7)
    ci = paired_delta_ci(base, other, resamples=500, seed=42)
    assert paired_delta_ci(base, other, resamples=500, seed=42) == ci
    assert paired_delta_ci(base, other, resamples=500, seed=43) != ci
    perm_b = np.random.default_rng(0).permutation(150)
    perm_o = np.random.default_rng(1).permutation(150)
    shuffled_b = ItemScores("DSC", True, "mean", tuple(np.array(base.images)[perm_b]), base.values[perm_b])
    shuffled_o = ItemScores("DSC", True, "mean", tuple(np.array(other.images)[perm_o]), other.values[perm_o])
    assert paired_delta_ci(shuffled_b, shuffled_o, resamples=500, seed=42) == ci
    auc_b, auc_o = _auc_scores(60, 3, seed=2), _auc_scores(60, 3, seed=3)
    ci_auc = paired_delta_ci(auc_b, auc_o, resamples=300, seed=9)
    rev = ItemScores("AUC", True, "auc", auc_o.images[::-1], auc_o.values[::-1])
    assert ci_auc is not None and paired_delta_ci(auc_b, rev, resamples=300, seed=9) == ci_auc


def test_images_are_paired_by_path_and_only_shared_ones_count() -> None:
    base, other = _mean_pair(120, seed=9)
    # other also scored 30 images the baseline did not, and lacks its first 20
    extra = ItemScores("DSC", True, "mean", other.images[20:] + tuple(f"x{k}" for k in range(30)),
                       np.r_[other.values[20:], np.zeros(30)])  # fmt: skip
    shared_b = ItemScores("DSC", True, "mean", base.images[20:], base.values[20:])
    shared_o = ItemScores("DSC", True, "mean", other.images[20:], other.values[20:])
    assert paired_delta_ci(base, extra, 400, seed=2) == paired_delta_ci(shared_b, shared_o, 400, seed=2)
    one = ItemScores("DSC", True, "mean", base.images[:1], base.values[:1])
    assert paired_delta_ci(one, other, 400, seed=2) is None


def test_lower_is_better_metrics_count_a_smaller_error_as_a_gain() -> None:
    rng = np.random.default_rng(4)
    err = rng.uniform(5, 15, 300)
    images = tuple(f"k{i}" for i in range(300))
    base = ItemScores("MRE", False, "mean", images, err)
    other = ItemScores("MRE", False, "mean", images, err * 0.8 + rng.normal(0, 0.3, 300))  # about 20 % smaller
    lo, hi = paired_delta_ci(base, other, 1000, seed=0)  # type: ignore[misc]
    assert 15 < lo < 20 < hi < 25


def test_no_ci_when_the_metric_is_undefined_on_too_many_resamples() -> None:
    n = 20
    labels = np.r_[0, np.ones(n - 1)]  # one image of class 0: about a third of the resamples lack it
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=n)
    images = tuple(f"i{k}" for k in range(n))
    s = ItemScores("AUC", True, "auc", images, np.column_stack([labels, 1 - p1, p1]))
    t = ItemScores("AUC", True, "auc", images, np.column_stack([labels, p1, 1 - p1]))
    assert paired_delta_ci(s, t, 500, seed=0) is None
    with pytest.raises(ValueError, match="cannot pair"):
        paired_delta_ci(s, ItemScores("ACC", True, "mean", images, np.ones(n)), 500, seed=0)
    with pytest.raises(ValueError):
        paired_delta_ci(s, t, 0, seed=0)
    with pytest.raises(ValueError):
        paired_delta_ci(s, t, 10, seed=0, level=1.0)


# --------------------------------------------------------------------------- a real job


@pytest.mark.slow
def test_a_job_writes_item_scores_that_reproduce_its_test_metrics(tmp_path: Path) -> None:
    from usagg.engine.job import run_job
    from usagg.jobmetrics import JobMetrics
    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = write_tiny_study(
        tmp_path / "study.yaml",
        "task-ci",
        tmp_path,
        paradigms=("AU",),
        tasks=(CARDIAC, *THYROID_PAIR, BIOMETRY),
        steps=2,
        synthetic={"default_size": 12, "val_size": 8},
        model={"moe": {"experts": 4}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
    )
    (job,) = plan(load_study(spec))
    metrics = JobMetrics.parse(run_job(job, tmp_path / "job", "cpu"), "run_job")
    scores = load_item_scores(tmp_path / "job")
    assert set(scores) == set(metrics.tasks)
    for task_id, rec in metrics.tasks.items():
        s = scores[task_id]
        assert rec.primary is not None and s.metric == rec.primary and len(s.images) == rec.n_test
        assert resampled_metric(s, np.arange(len(s.images))) == rec.metrics[rec.primary], task_id


def test_several_seeds_are_resampled_together_as_the_seed_mean_delta() -> None:
    """A list per side: each resample's Δ is that of the seed means, every seed on the same images. One seed per side
    gives the single pair's interval exactly; a seed at the ceiling (DSC 1 on every image, on both sides: a Δ of 0
    on every resample alone) no longer hides the other seed's spread; the interval matches the delta method for the
    ratio of the seed means."""
    base, other = _mean_pair(400, seed=3)
    assert paired_delta_ci([base], [other], resamples=500, seed=0) == paired_delta_ci(base, other, 500, 0)
    ones = ItemScores("DSC", True, "mean", base.images, np.ones(400))
    assert paired_delta_ci(ones, ones, resamples=500, seed=0) == (0.0, 0.0)  # seed 0 alone: no spread at all
    lo, hi = paired_delta_ci([ones, base], [ones, other], resamples=2000, seed=0) or (0.0, 0.0)
    mb, mo = (1 + base.values) / 2, (1 + other.values) / 2  # the seed means per image
    observed = relative_change(mo.mean(), mb.mean(), True).value
    r = mo.mean() / mb.mean()
    se = 100 / mb.mean() * np.std(mo - r * mb, ddof=1) / math.sqrt(400)
    assert lo < observed < hi and hi - lo == pytest.approx(2 * 1.959964 * se, rel=0.08)
    with pytest.raises(ValueError, match="cannot pair"):
        paired_delta_ci([base, _auc_scores(400, 2, seed=1)], [other, other], resamples=10, seed=0)
