"""Each built-in type's trivial predictors, scored by the engine through the type's own `score`, against the same
levels computed here from the ground truth by hand: the chance level the analysis holds a baseline against."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from usagg.engine.evaluate import EvalSet, trivial_scores
from usagg.spec.models import TaskSpec
from usagg.tasktypes import get_task_type

RNG = np.random.default_rng(7)


def _eval_set(task: TaskSpec, gts: list, hws: list[tuple[int, int]], image_size: int = 4) -> EvalSet:
    """A test split of `gts` on images of sizes `hws`, as `score` reads it (no files)."""
    pairs = enumerate(zip(gts, hws, strict=True))
    metas = [{"image_path": f"{task.id}/{i}.png", "orig_hw": hw, "gt": gt} for i, (gt, hw) in pairs]
    dataset = SimpleNamespace(task_type=get_task_type(task.type), samples=[None] * len(gts), image_size=image_size)
    return EvalSet(task, dataset, None, _metas=metas)  # type: ignore[arg-type]  # score() reads only these


def _masks(n: int, classes: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """Random class maps, one of them empty (its DSC under the empty mask is 1.0 by the challenge's rule)."""
    out = [RNG.integers(0, classes, size=hw).astype(np.uint8) * (RNG.random(hw) < 0.4) for _ in range(n - 1)]
    return [*out, np.zeros(hw, np.uint8)]


def test_segmentation_scores_the_empty_and_the_all_foreground_mask_as_the_dice_formula_gives() -> None:
    hw = (9, 7)
    gts = _masks(6, 2, hw)
    es = _eval_set(TaskSpec(id="seg", type="segmentation", num_classes=2), gts, [hw] * 6)
    got = trivial_scores(es, np.zeros((3, 4, 4), np.uint8))
    fg = [int((g == 1).sum()) for g in gts]
    all_fg = np.mean([2 * f / (f + hw[0] * hw[1]) for f in fg])  # |A ∩ G| = |G|, |A| = every pixel
    empty = np.mean([1.0 if f == 0 else 0.0 for f in fg])
    assert set(got) == {"empty mask", "all-foreground mask"}
    assert got["all-foreground mask"] == pytest.approx(all_fg, rel=1e-12)
    assert got["empty mask"] == pytest.approx(empty, rel=1e-12) and got["empty mask"] == pytest.approx(1 / 6)


def test_multi_class_segmentation_fills_every_pixel_with_each_class_in_turn() -> None:
    hw = (6, 8)
    gts = _masks(5, 3, hw)
    es = _eval_set(TaskSpec(id="seg3", type="segmentation", num_classes=3), gts, [hw] * 5)
    got = trivial_scores(es, np.zeros((1, 4, 4), np.uint8))
    assert set(got) == {"empty mask", "every pixel class 1", "every pixel class 2"}
    for c in (1, 2):
        per_class = []
        for k in (1, 2):  # DSC of class k when every pixel is class c, mean over images, then over classes
            sizes = [int((g == k).sum()) for g in gts]
            if k == c:
                per_class.append(np.mean([2 * s / (s + hw[0] * hw[1]) for s in sizes]))
            else:
                per_class.append(np.mean([1.0 if s == 0 else 0.0 for s in sizes]))
        assert got[f"every pixel class {c}"] == pytest.approx(np.mean(per_class), rel=1e-12)


def test_detection_scores_the_whole_image_and_the_mean_training_box() -> None:
    hws = [(100, 200), (80, 80), (50, 120)]
    gts = [np.array([20.0, 10.0, 120.0, 60.0]), np.array([0.0, 0.0, 40.0, 40.0]), np.array([30.0, 5.0, 90.0, 45.0])]
    train = np.array([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.7, 0.8]], np.float32)
    got = trivial_scores(_eval_set(TaskSpec(id="det", type="detection", num_classes=1), gts, hws), train)
    # the whole-image box holds G: IoU = |G| / |image|
    whole = np.mean([(g[2] - g[0]) * (g[3] - g[1]) / (h * w) for g, (h, w) in zip(gts, hws, strict=True)])
    assert got["whole-image box"] == pytest.approx(whole, rel=1e-12)
    mean = train.astype(np.float64).mean(axis=0).astype(np.float32).astype(np.float64)  # as the prediction is stored

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    boxes = [mean * np.array([w, h, w, h]) for h, w in hws]
    ious = [iou(b, g) for b, g in zip(boxes, gts, strict=True)]
    assert got["training mean box"] == pytest.approx(np.mean(ious), rel=1e-9)


def test_regression_scores_the_mean_training_keypoints_by_their_radial_error() -> None:
    hws = [(64, 64), (40, 100)]
    gts = [np.array([[10.0, 12.0], [30.0, 40.0]]), np.array([[50.0, 5.0], [20.0, 30.0]])]
    train = RNG.random((5, 2, 2)).astype(np.float32)
    got = trivial_scores(_eval_set(TaskSpec(id="kp", type="regression", num_classes=2), gts, hws), train)
    mean = train.astype(np.float64).mean(axis=0).astype(np.float32).astype(np.float64)
    errors = [np.mean(np.hypot(*(mean * [w, h] - g).T)) for g, (h, w) in zip(gts, hws, strict=True)]
    assert got == {"training mean keypoints": pytest.approx(np.mean(errors), rel=1e-9)}


@pytest.mark.parametrize(("metric", "classes"), [("AUC", 2), ("AUC", 3), ("ACC", 3)])
def test_classification_gives_every_image_the_training_class_frequencies(metric: str, classes: int) -> None:
    labels = [0, 1, 1, 2, 2, 2][: 4 if classes == 2 else 6]
    labels = [min(v, classes - 1) for v in labels]
    train = np.array([2, 2, 1, 0, 2] if classes == 3 else [1, 1, 0], np.int64)  # majority class: the last
    task = TaskSpec(id="cls", type="classification", num_classes=classes, metric=metric)
    got = trivial_scores(_eval_set(task, labels, [(8, 8)] * len(labels)), train)
    majority = int(np.bincount(train).argmax())
    expected = 0.5 if metric == "AUC" else float(np.mean(np.asarray(labels) == majority))  # tied scores: AUC 0.5
    assert got == {"training class frequencies": pytest.approx(expected, rel=1e-12)}


def test_an_empty_split_has_no_trivial_level() -> None:
    assert trivial_scores(_eval_set(TaskSpec(id="seg", type="segmentation", num_classes=2), [], []), np.zeros(0)) == {}
