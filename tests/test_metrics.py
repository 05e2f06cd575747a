"""The challenge's metrics against numbers worked out by hand (and sklearn where it is the reference)."""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from usagg.data.fmc_uia import Sample
from usagg.data.masks import read_mask_grayscale
from usagg.spec.models import TaskSpec
from usagg.tasktypes import EvalItem, Metric, Row, RowError, TaskType, find_task_type, get_task_type
from usagg.tasktypes.classification import auc_or_nan, classification_metrics
from usagg.tasktypes.detection import box_iou
from usagg.tasktypes.regression import radial_errors
from usagg.tasktypes.segmentation import hausdorff_distance, resize_nearest, segmentation_per_image


def _mask(shape: tuple[int, int], pixels: dict[int, list[tuple[int, int]]]) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    for cls, coords in pixels.items():
        for r, c in coords:
            m[r, c] = cls
    return m


#: The images' original (height, width) where boxes and points are scored: a power of 2, so pixels divided into
#: the normalised coordinates a job predicts and multiplied back are the same numbers.
_HW = (64, 64)


def _scored(type_name: str, preds: Sequence[Any], gts: Sequence[Any], num_classes: int = 1) -> dict[str, float]:
    """`preds` scored as a job scores them (`TaskType.score`): masks at their images' size, boxes ``[N, 4]`` and
    points ``[N, K, 2]`` in pixels of 64 x 64 images (normalised here, as the model predicts them)."""
    task = TaskSpec(id="T", type=type_name, num_classes=num_classes)
    if type_name == "segmentation":
        hw = np.asarray(gts[0]).shape
        normalised: Any = np.stack([np.asarray(p) for p in preds])
    else:
        hw, normalised = _HW, np.asarray(preds, dtype=np.float64) / _HW[0]
    return get_task_type(type_name).score(task, normalised, _items(task, list(gts), hw, Path("data")))


# --------------------------------------------------------------------------- segmentation: DSC


def test_dsc_both_empty_counts_as_one_in_the_mean() -> None:
    block = [(0, 0), (0, 1), (1, 0), (1, 1)]
    gts = [_mask((4, 4), {1: block}), _mask((4, 4), {1: block}), _mask((4, 4), {})]
    preds = [_mask((4, 4), {1: block}), _mask((4, 4), {1: [(0, 0), (0, 1)]}), _mask((4, 4), {})]
    m = _scored("segmentation", preds, gts, num_classes=2)
    # per image: 1, 2*2/(2+4) = 2/3, both empty = 1 -> mean 8/9
    assert m["DSC"] == pytest.approx(8 / 9)
    assert m["DSC_class1"] == pytest.approx(8 / 9)
    # HD per image: 0, 1 (gt row 1 is one pixel from pred row 0), both empty 0 -> mean 1/3
    assert m["HD"] == pytest.approx(1 / 3)


def test_multiclass_dsc_and_hd_mean_over_images_per_class_then_over_classes() -> None:
    gt_a = _mask((4, 4), {1: [(0, 0)]})
    pred_a = _mask((4, 4), {1: [(0, 0)]})
    gt_b = _mask((4, 4), {1: [(0, 0)], 2: [(1, 1), (1, 2)]})
    pred_b = _mask((4, 4), {1: [(3, 3)], 2: [(1, 1)]})
    m = _scored("segmentation", [pred_a, pred_b], [gt_a, gt_b], num_classes=3)
    # class 1: image a 1, image b 0 -> 0.5; class 2: a both empty 1, b 2*1/(1+2) = 2/3 -> 5/6
    assert m["DSC_class1"] == pytest.approx(0.5)
    assert m["DSC_class2"] == pytest.approx(5 / 6)
    assert m["DSC"] == pytest.approx((0.5 + 5 / 6) / 2)
    # class 1: a 0, b |(0,0)-(3,3)| = sqrt(18); class 2: a both empty 0, b 1
    assert m["HD_class1"] == pytest.approx(math.sqrt(18) / 2)
    assert m["HD_class2"] == pytest.approx(0.5)
    assert m["HD"] == pytest.approx((math.sqrt(18) / 2 + 0.5) / 2)
    assert set(m) == {"DSC", "HD", "DSC_class1", "DSC_class2", "HD_class1", "HD_class2"}


def test_background_is_not_scored_and_labels_beyond_num_classes_are_ignored() -> None:
    gt = _mask((3, 3), {1: [(1, 1)]})
    pred = _mask((3, 3), {1: [(1, 1)], 7: [(0, 0)]})  # a stray label 7 is no class of a 2-class task
    m = _scored("segmentation", [pred], [gt], num_classes=2)
    assert m["DSC"] == 1.0 and m["HD"] == 0.0


def test_segmentation_refuses_masks_of_another_size() -> None:
    with pytest.raises(ValueError, match="resize_nearest"):
        segmentation_per_image([np.zeros((4, 4), np.uint8)], [np.zeros((4, 5), np.uint8)], num_classes=2)
    with pytest.raises(ValueError):
        segmentation_per_image([], [], num_classes=2)
    with pytest.raises(ValueError):
        segmentation_per_image([np.zeros((2, 2))], [np.zeros((2, 2))], num_classes=1)


# --------------------------------------------------------------------------- segmentation: HD


def test_hd_single_pixel_against_a_block() -> None:
    a = _mask((6, 6), {1: [(0, 0)]}) == 1
    b = _mask((6, 6), {1: [(2, 2), (2, 3), (3, 2), (3, 3)]}) == 1
    # point -> block: sqrt(8); block -> point: the far corner (3,3) is sqrt(18) away
    assert hausdorff_distance(a, b) == pytest.approx(math.sqrt(18))
    assert hausdorff_distance(b, a) == pytest.approx(math.sqrt(18))


def test_hd_disjoint_blocks_at_a_known_distance() -> None:
    a = np.zeros((3, 8), bool)
    a[0:2, 0:2] = True
    b = np.zeros((3, 8), bool)
    b[0:2, 5:7] = True
    # column 0 of A is 5 columns from column 5 of B (and symmetrically column 6 from column 1)
    assert hausdorff_distance(a, b) == pytest.approx(5.0)


def test_hd_one_empty_is_the_diagonal_and_both_empty_is_zero() -> None:
    a = np.zeros((3, 4), bool)
    b = np.zeros((3, 4), bool)
    assert hausdorff_distance(a, b) == 0.0
    b[1, 1] = True
    assert hausdorff_distance(a, b) == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    assert hausdorff_distance(b, a) == pytest.approx(5.0)
    m = _scored("segmentation", [a.astype(np.uint8)], [b.astype(np.uint8)], num_classes=2)
    assert m["HD"] == pytest.approx(5.0) and m["DSC"] == 0.0


def test_hd_uses_filled_regions_not_contours() -> None:
    filled = np.zeros((7, 7), bool)
    filled[1:6, 1:6] = True
    ring = filled.copy()
    ring[2:5, 2:5] = False
    # the two sets share their contour, so a contour-based HD would be 0; the centre (3,3)
    # of the filled square is 2 pixels from the nearest ring pixel
    assert hausdorff_distance(filled, ring) == pytest.approx(2.0)


# --------------------------------------------------------------------------- resizing


def test_resize_nearest_follows_cv2_as_computed_by_hand() -> None:
    row = np.array([[0, 1]], dtype=np.uint8)
    # cv2 INTER_NEAREST: floor(x * 2/3) for x = 0, 1, 2 -> 0, 0, 1 (Pillow's pixel centres would give 0, 1, 1)
    assert resize_nearest(row, (1, 3)).tolist() == [[0, 0, 1]]
    grid = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert resize_nearest(grid, (2, 2)).tolist() == [[0, 2], [8, 10]]
    assert resize_nearest(grid, (4, 4)).tolist() == grid.tolist()


# --------------------------------------------------------------------------- classification


def test_binary_classification_by_hand() -> None:
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(probs, labels)
    # positive/negative pairs ranked right: 0.35>0.1, 0.8>0.1, 0.8>0.4 (not 0.35>0.4) -> 3/4
    assert m["AUC"] == pytest.approx(0.75)
    # argmax -> [0, 0, 0, 1]: three of four right
    assert m["ACC"] == pytest.approx(0.75)
    # class 0: P 2/3 R 1 -> F1 0.8; class 1: P 1 R 1/2 -> F1 2/3; equal supports
    assert m["F1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["F1_weighted"] == pytest.approx((0.8 + 2 / 3) / 2)
    # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    assert m["MCC"] == pytest.approx(2 / math.sqrt(12))
    assert list(m) == list(get_task_type("classification").metric_names)
    assert all(isinstance(v, float) for v in m.values())


def test_weighted_f1_weights_by_support() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    m = classification_metrics(probs, labels)
    # pred [0, 0, 1, 0]; class 0: P 2/3 R 2/3 F1 2/3; class 1: 0
    assert m["F1_macro"] == pytest.approx(1 / 3)
    assert m["F1_weighted"] == pytest.approx(0.75 * 2 / 3)
    assert m["ACC"] == pytest.approx(0.5)


def test_three_class_metrics_equal_sklearn() -> None:
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.3, 0.6],
            [0.4, 0.4, 0.2],
            [0.3, 0.3, 0.4],
            [0.05, 0.9, 0.05],
            [0.5, 0.1, 0.4],
            [0.2, 0.2, 0.6],
        ]
    )
    labels = np.array([0, 1, 2, 1, 0, 1, 2, 2])
    m = classification_metrics(probs, labels)
    pred = probs.argmax(axis=1)
    assert m["AUC"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=[0, 1, 2]))
    assert m["ACC"] == pytest.approx(np.mean(pred == labels))
    assert m["F1_macro"] == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
    assert m["F1_weighted"] == pytest.approx(f1_score(labels, pred, average="weighted", zero_division=0))
    assert m["MCC"] == pytest.approx(matthews_corrcoef(labels, pred))


def test_binary_auc_equals_sklearn_and_perfect_prediction_scores_one() -> None:
    rng = np.random.default_rng(3)
    p1 = rng.random(50)
    labels = (rng.random(50) < 0.4).astype(int)
    m = classification_metrics(np.stack([1 - p1, p1], axis=1), labels)
    assert m["AUC"] == pytest.approx(roc_auc_score(labels, p1))
    perfect = classification_metrics(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 2]))
    assert perfect == {"AUC": 1.0, "ACC": 1.0, "F1_macro": 1.0, "F1_weighted": 1.0, "MCC": 1.0}


def test_class_absent_from_a_multiclass_test_set_scores_auc_zero_as_the_challenge_records_it() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.4, 0.3], [0.1, 0.8, 0.1]])
    labels = np.array([0, 0, 1, 1])  # class 2 never occurs: scikit-learn's one-vs-rest AUC refuses the set
    m = classification_metrics(probs, labels)
    # the challenge's evaluate.py catches the failure and records 0.0 (before: the mean over the present
    # classes, 0.75); the other metrics are computed as usual
    assert m["AUC"] == 0.0
    assert m["ACC"] == 0.75  # argmax [0, 1, 1, 1]
    assert math.isnan(auc_or_nan(probs, labels))  # the undefined case stays visible to the bootstrap


def test_auc_of_one_class_is_nan_binary_and_zero_multiclass_as_the_challenge_records_it() -> None:
    # binary: scikit-learn calls it undefined and returns nan, which the challenge's evaluate.py keeps
    m = classification_metrics(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
    assert math.isnan(m["AUC"])
    assert m["ACC"] == 0.5
    m3 = classification_metrics(np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]), np.array([2, 2]))
    assert m3["AUC"] == 0.0
    assert math.isnan(auc_or_nan(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1])))


def test_classification_rejects_malformed_input() -> None:
    with pytest.raises(ValueError):
        classification_metrics(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError):
        classification_metrics(np.array([0.5, 0.5]), np.array([0]))
    with pytest.raises(ValueError):
        classification_metrics(np.array([[0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(ValueError):
        classification_metrics(np.array([[np.nan, 0.5]]), np.array([0]))


# --------------------------------------------------------------------------- detection and regression


def test_iou_identical_disjoint_partial_and_touching() -> None:
    gt = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 2]], dtype=float)
    pred = np.array([[0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 2, 2], [2, 0, 4, 2]], dtype=float)
    per_image = [1.0, 0.0, 1 / 7, 0.0]  # partial: overlap 1, union 4 + 4 - 1 = 7; touching edge: 0
    assert _scored("detection", pred[:1], gt[:1])["IoU"] == 1.0
    assert _scored("detection", pred[1:2], gt[1:2])["IoU"] == 0.0
    assert _scored("detection", pred[2:3], gt[2:3])["IoU"] == pytest.approx(1 / 7)
    assert _scored("detection", pred, gt)["IoU"] == pytest.approx(np.mean(per_image))


def test_iou_of_inverted_or_empty_boxes_is_zero() -> None:
    gt = np.array([[0, 0, 4, 4], [1, 1, 1, 1]], dtype=float)
    pred = np.array([[3, 3, 1, 1], [1, 1, 1, 1]], dtype=float)
    assert _scored("detection", pred, gt)["IoU"] == 0.0
    with pytest.raises(ValueError):
        box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_mre_on_a_3_4_5_triangle() -> None:
    gt = np.array([[[3, 4], [1, 1]], [[6, 8], [0, 0]]], dtype=float)
    pred = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 0]]], dtype=float)
    # image 1: (5 + 0) / 2; image 2: (10 + 0) / 2 -> 3.75
    assert _scored("regression", pred, gt, num_classes=2)["MRE"] == pytest.approx(3.75)
    assert _scored("regression", pred[:1, :1], gt[:1, :1])["MRE"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        radial_errors(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)))


# --------------------------------------------------------------------------- the registry's view of them


def test_csv_task_names_find_their_type_in_any_case() -> None:
    assert find_task_type("Regression") is get_task_type("regression")
    assert find_task_type(" DETECTION ") is get_task_type("detection")
    assert find_task_type("captioning") is None
    with pytest.raises(ValueError, match="unknown task type 'segmentaton' \\(did you mean 'segmentation'\\?\\)"):
        get_task_type("segmentaton")


def test_every_type_reports_the_metrics_it_declares_primary_first() -> None:
    seg = _scored("segmentation", [np.ones((2, 2), np.uint8)], [np.ones((2, 2), np.uint8)], num_classes=3)
    cls = classification_metrics(np.eye(2), np.array([0, 1]))
    det = _scored("detection", np.ones((1, 4)), np.ones((1, 4)))
    reg = _scored("regression", np.ones((1, 1, 2)), np.ones((1, 1, 2)))
    for task_type, m in zip(
        ("segmentation", "classification", "detection", "regression"), (seg, cls, det, reg), strict=True
    ):
        declared = get_task_type(task_type).metric_names
        assert set(declared) <= set(m)
        assert get_task_type(task_type).primary_metric == declared[0] == next(iter(m))


# --------------------------------------------------------------------------- TaskType.score: metrics asked for


def _items(task: TaskSpec, gts: list, hw: tuple[int, int], tmp: Path) -> list[EvalItem]:
    """EvalItems of `task` with ground truths `gts` on images of original size `hw` (files named, not read)."""
    return [
        EvalItem(
            f"../img/{task.id}_{i}.png",
            hw,
            gt,
            Sample(
                task.id,
                task.type,
                task.num_classes,
                f"../img/{task.id}_{i}.png",
                tmp / f"img/{i}.png",
                tmp / f"masks/{task.id}_{i}.png",
                tmp / "csv_files/x.csv",
                i + 1,
            ),
        )
        for i, gt in enumerate(gts)
    ]


def _cases(tmp: Path) -> list[tuple[TaskSpec, np.ndarray, list[EvalItem]]]:
    """One small scored task per type: (task, predictions as `predict` returns them, items)."""
    rng = np.random.default_rng(7)
    seg = TaskSpec(id="S", type="segmentation", num_classes=3)
    seg_gt = [rng.integers(0, 3, (6, 6)).astype(np.uint8) for _ in range(4)]
    seg_pred = np.stack([np.where(rng.random((6, 6)) < 0.7, g, 0) for g in seg_gt]).astype(np.int64)
    cls = TaskSpec(id="C", type="classification", num_classes=3)
    cls_gt = [0, 1, 2, 1, 0, 2]
    cls_pred = rng.dirichlet(np.ones(3), size=6)
    det = TaskSpec(id="D", type="detection", num_classes=1)
    det_gt = [np.array([2.0, 2.0, 6.0, 8.0]), np.array([0.0, 1.0, 5.0, 5.0])]
    det_pred = np.array([[0.1, 0.2, 0.6, 0.7], [0.0, 0.0, 0.5, 0.5]])
    reg = TaskSpec(id="R", type="regression", num_classes=2)
    reg_gt = [np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([[6.0, 8.0], [0.0, 0.0]])]
    reg_pred = np.array([[[0.0, 0.0], [0.1, 0.1]], [[0.0, 0.0], [0.0, 0.0]]])
    return [
        (seg, seg_pred, _items(seg, seg_gt, (6, 6), tmp)),
        (cls, cls_pred, _items(cls, cls_gt, (6, 6), tmp)),
        (det, det_pred, _items(det, det_gt, (10, 10), tmp)),
        (reg, reg_pred, _items(reg, reg_gt, (10, 10), tmp)),
    ]


def test_score_computes_only_the_metrics_asked_for_with_the_same_numbers(tmp_path: Path) -> None:
    for task, preds, items in _cases(tmp_path):
        tt = get_task_type(task.type)
        full = tt.score(task, preds, items)
        assert set(full) >= set(tt.metric_names)
        for name in tt.metric_names:
            only = tt.score(task, preds, items, metrics=[name])
            # the metric and its per-class variants (segmentation), nothing else, equal to the full scoring
            assert set(only) == {k for k in full if k == name or k.startswith(f"{name}_class")}, (task.type, name)
            assert only == {k: full[k] for k in only}
    seg, preds, items = _cases(tmp_path)[0]
    only_dsc = get_task_type("segmentation").score(seg, preds, items, metrics=["DSC"])
    assert list(only_dsc) == ["DSC", "DSC_class1", "DSC_class2"]
    assert set(segmentation_per_image([p for p in preds], [it.gt for it in items], 3, ["DSC"])) == {"DSC"}


def test_unknown_metric_names_are_a_value_error(tmp_path: Path) -> None:
    for task, preds, items in _cases(tmp_path):
        tt = get_task_type(task.type)
        with pytest.raises(ValueError, match="'HD95' not a"):
            tt.score(task, preds, items, metrics=["HD95"])
        with pytest.raises(ValueError, match="allowed: " + ", ".join(tt.metric_names)):
            tt.score(task, preds, items, metrics=[tt.primary_metric, "mAP"])
        with pytest.raises(TypeError):
            tt.score(task, preds, items, metrics=tt.primary_metric)  # a bare string is not a list of names


def test_a_type_with_the_older_score_signature_still_takes_metrics(tmp_path: Path) -> None:
    class Older(TaskType):  # a plug-in written before `metrics` existed (not registered)
        name = "older"
        metrics = (Metric("A", True), Metric("B", False))

        def score(self, task: Any, preds: np.ndarray, items: Sequence[EvalItem], writer: Any) -> dict[str, float]:
            return {"A": 1.0, "B": 2.0, "A_class1": 3.0}

    tt = Older()
    assert tt.score(None, np.zeros(1), []) == {"A": 1.0, "B": 2.0, "A_class1": 3.0}
    assert tt.score(None, np.zeros(1), [], None, ["A"]) == {"A": 1.0, "A_class1": 3.0}
    assert tt.score(None, np.zeros(1), [], metrics=["B"]) == {"B": 2.0}
    with pytest.raises(ValueError, match="'C' not a older metric"):
        tt.score(None, np.zeros(1), [], metrics=["C"])


def test_a_task_without_predictions_scores_zero_on_every_metric(tmp_path: Path) -> None:
    # the challenge's evaluate.py: no valid samples -> 0.0 on every metric (num_samples 0)
    for task, preds, _ in _cases(tmp_path):
        tt = get_task_type(task.type)
        assert tt.score(task, preds[:0], []) == dict.fromkeys(tt.metric_names, 0.0)
        assert tt.score(task, preds[:0], [], metrics=[tt.primary_metric]) == {tt.primary_metric: 0.0}


# --------------------------------------------------------------------------- masks as OpenCV's IMREAD_GRAYSCALE reads


def _png(path: Path, image: Image.Image, gamma: int | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    if gamma is not None:
        info.add(b"gAMA", struct.pack(">I", gamma))
    image.save(path, pnginfo=info)
    return path


def test_palette_and_colour_masks_read_as_luminance_not_as_indices(tmp_path: Path) -> None:
    # Expected values are what cv2.imread(path, cv2.IMREAD_GRAYSCALE) returned for these files (OpenCV 5.0).
    pal = Image.fromarray(np.array([[0, 1, 2, 3]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    assert read_mask_grayscale(_png(tmp_path / "p.png", pal)).tolist() == [[0, 76, 149, 29]]
    rgb = Image.fromarray(np.array([[[200, 10, 30], [1, 2, 3], [128, 0, 0], [2, 2, 2]]], np.uint8))
    assert read_mask_grayscale(_png(tmp_path / "rgb.png", rgb)).tolist() == [[69, 1, 38, 2]]
    # with a gAMA chunk libpng weights linearised values (gray pixels stay as they are)
    assert read_mask_grayscale(_png(tmp_path / "g.png", rgb, gamma=45455)).tolist() == [[116, 0, 74, 2]]
    rgba = Image.fromarray(np.array([[[1, 1, 1, 0], [2, 2, 2, 255]]], np.uint8), "RGBA")
    assert read_mask_grayscale(_png(tmp_path / "rgba.png", rgba)).tolist() == [[1, 2]]  # alpha dropped
    gray16 = Image.fromarray(np.array([[1, 256, 513, 65535]], np.uint16))
    assert read_mask_grayscale(_png(tmp_path / "16.png", gray16)).tolist() == [[0, 1, 2, 255]]  # high byte
    gray = Image.fromarray(np.array([[0, 1, 2, 3]], np.uint8))
    assert read_mask_grayscale(_png(tmp_path / "l.png", gray)).tolist() == [[0, 1, 2, 3]]


def test_a_palette_mask_scores_as_the_challenge_scores_it(tmp_path: Path) -> None:
    task = TaskSpec(id="S", type="segmentation", num_classes=2)
    pal = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 1, 1, 1, 255, 0, 0] + [0] * 759)  # index 1 is (1, 1, 1): luminance 1 = class 1
    (item,) = _items(task, [None], (2, 2), tmp_path)
    sample = replace(item.sample, label=_png(tmp_path / "m1.png", pal))
    gt = get_task_type("segmentation").ground_truth(sample)
    assert gt.tolist() == [[0, 1], [1, 1]]
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 is red: luminance 76, no class of the task
    red = get_task_type("segmentation").ground_truth(replace(sample, label=_png(tmp_path / "m2.png", pal)))
    assert red.tolist() == [[0, 76], [76, 76]]
    pred = np.array([[[0, 1], [1, 1]]])
    m = get_task_type("segmentation").score(task, pred, [replace(item, gt=red)])
    assert m["DSC"] == 0.0  # class 1 predicted where the truth (as read) has none; the index is not the class


# --------------------------------------------------------------------------- regression: missing keypoints


def test_a_missing_or_empty_keypoint_is_a_row_error_not_the_point_0_0(tmp_path: Path) -> None:
    tt = get_task_type("regression")
    with pytest.raises(RowError, match="point_2_xy is empty or missing") as empty:
        tt.parse_label(Row({"point_1_xy": "[3, 4]", "point_2_xy": ""}, tmp_path, tmp_path), 2)
    assert empty.value.kind == "missing_keypoint"
    with pytest.raises(RowError, match="point_2_xy is empty or missing"):
        tt.parse_label(Row({"point_1_xy": "[3, 4]"}, tmp_path, tmp_path), 2)
    with pytest.raises(RowError, match="expected 1 keypoints"):  # a filled point past num_classes
        tt.parse_label(Row({"point_1_xy": "[3, 4]", "point_2_xy": "[1, 1]"}, tmp_path, tmp_path), 1)
    # a point written at (0, 0) is scored there: a prediction at (3, 4) is 5 px off that point
    pred, gt = np.array([[[3.0, 4.0], [3.0, 4.0]]]), np.array([[[3.0, 4.0], [0.0, 0.0]]])
    assert _scored("regression", pred, gt, num_classes=2)["MRE"] == 2.5
    sample = Sample("R", "regression", 2, "a.png", tmp_path / "a.png", ((3.0, 4.0), (0.0, 0.0)), tmp_path / "x.csv", 1)
    assert tt.summary_text(Counter(tt.summary_keys(sample, None))) == (
        "1 x 2 points; 1 image with a point at exactly (0, 0): check they are landmarks"
    )
