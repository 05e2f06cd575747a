"""Prediction files in the challenge submission format: keys, values, paths, round trip, reproducible bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from usagg.predictions import PredictionWriter, read_predictions
from usagg.safepath import UnsafePath
from usagg.tasktypes.classification import write_probs
from usagg.tasktypes.detection import box_iou, box_to_pixels, write_box
from usagg.tasktypes.regression import points_to_pixels, radial_errors, write_points
from usagg.tasktypes.segmentation import Segmentation, prediction_mask_relpath, segmentation_per_image, write_mask

SEGMENTATION_INDEX = Segmentation.prediction_file

MASK_CSV = "../Segmentation/Three/ds1/masks/case_01.png"


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_classification_file_merges_tasks_sorted_with_exact_keys(tmp_path: Path) -> None:
    w = PredictionWriter(tmp_path)
    write_probs(w, "T2", "../Classification/b.png", [0.1, 0.2, 0.7])
    write_probs(w, "T1", "../Classification/z.png", np.array([0.9, 0.1], dtype=np.float32))
    write_probs(w, "T1", "../Classification/a.png", [0.25, 0.75])
    written = w.close()
    assert written == {"classification": tmp_path / "classification_predictions.json"}
    entries = _load(written["classification"])
    assert [(e["task_id"], e["image_path"]) for e in entries] == [
        ("T1", "../Classification/a.png"),
        ("T1", "../Classification/z.png"),
        ("T2", "../Classification/b.png"),
    ]
    for e in entries:
        assert list(e) == ["image_path", "task_id", "predicted_class", "predicted_probs"]
    assert entries[0]["predicted_class"] == 1 and entries[0]["predicted_probs"] == [0.25, 0.75]
    assert entries[1]["predicted_class"] == 0
    assert entries[1]["predicted_probs"] == pytest.approx([0.9, 0.1])
    assert entries[2]["predicted_class"] == 2
    assert not (tmp_path / "detection_predictions.json").exists()


def test_detection_boxes_normalised_and_in_pixels(tmp_path: Path) -> None:
    with PredictionWriter(tmp_path) as w:
        # image 100 high, 200 wide
        write_box(w, "D1", "../Detection/a.png", [0.1, 0.2, 0.5, 0.6], (100, 200))
        write_box(w, "D1", "../Detection/b.png", [-0.1, 0.0, 1.2, 0.5], (10, 10))
    entries = _load(tmp_path / "detection_predictions.json")
    for e in entries:
        assert list(e) == ["image_path", "task_id", "bbox_normalized", "bbox_pixels"]
    assert entries[0]["bbox_normalized"] == [0.1, 0.2, 0.5, 0.6]
    assert entries[0]["bbox_pixels"] == pytest.approx([20.0, 20.0, 100.0, 60.0])
    # clipped to 0..1 before conversion
    assert entries[1]["bbox_normalized"] == [0.0, 0.0, 1.0, 0.5]
    assert entries[1]["bbox_pixels"] == [0.0, 0.0, 10.0, 5.0]


def test_regression_points_flattened_normalised_and_in_pixels(tmp_path: Path) -> None:
    with PredictionWriter(tmp_path) as w:
        # image 200 high, 100 wide
        write_points(w, "R1", "../Regression/a.png", np.array([[0.5, 0.25], [0.0, 1.0]]), (200, 100))
    (e,) = _load(tmp_path / "regression_predictions.json")
    assert list(e) == ["image_path", "task_id", "predicted_points_normalized", "predicted_points_pixels"]
    assert e["predicted_points_normalized"] == [0.5, 0.25, 0.0, 1.0]
    assert e["predicted_points_pixels"] == [50.0, 50.0, 0.0, 200.0]


def test_conversions_shared_with_scoring() -> None:
    assert box_to_pixels([0.1, 0.2, 0.5, 1.5], (100, 200)).tolist() == pytest.approx([20.0, 20.0, 100.0, 100.0])
    np.testing.assert_allclose(points_to_pixels([0.5, 0.5, 1.1, 0.0], (10, 20)), [[10.0, 5.0], [22.0, 0.0]])
    with pytest.raises(ValueError):
        box_to_pixels([0.1, 0.2, 0.3], (10, 10))
    with pytest.raises(ValueError):
        points_to_pixels([0.1, 0.2, 0.3], (10, 10))
    with pytest.raises(ValueError):
        box_to_pixels([0, 0, 1, 1], (0, 10))


def test_segmentation_png_at_mask_path_with_original_size_and_class_values(tmp_path: Path) -> None:
    mask = np.zeros((5, 7), dtype=np.int64)
    mask[1:3, 2:4] = 1
    mask[4, 6] = 2
    with PredictionWriter(tmp_path) as w:
        path = write_mask(w, "S1", "../Segmentation/Three/ds1/images/case_01.png", MASK_CSV, mask)
    assert path == tmp_path / "Segmentation/Three/ds1/masks/case_01.png"
    with Image.open(path) as im:
        assert im.mode == "L"
        assert im.size == (7, 5)  # PIL size is (width, height)
        np.testing.assert_array_equal(np.asarray(im), mask.astype(np.uint8))
    (e,) = _load(tmp_path / SEGMENTATION_INDEX)
    assert e == {
        "image_path": "../Segmentation/Three/ds1/images/case_01.png",
        "task_id": "S1",
        "mask_path": "Segmentation/Three/ds1/masks/case_01.png",
    }


def test_mask_paths_cannot_leave_the_folder() -> None:
    assert prediction_mask_relpath("../a/b.png") == "a/b.png"
    assert prediction_mask_relpath("../../a/b.png") == "a/b.png"
    for bad in ("/etc/passwd", "a/..", "", "../"):
        with pytest.raises(ValueError):
            prediction_mask_relpath(bad)


def test_segmentation_rejects_bad_masks(tmp_path: Path) -> None:
    w = PredictionWriter(tmp_path)
    with pytest.raises(ValueError):
        write_mask(w, "S1", "i.png", "../m.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        write_mask(w, "S1", "i.png", "../m.png", np.full((2, 2), 256))
    with pytest.raises(ValueError):
        write_mask(w, "S1", "i.png", "../m.png", np.zeros((2, 2), np.float32))
    write_mask(w, "S1", "i.png", "../m.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="already written"):
        write_mask(w, "S2", "j.png", "../m.png", np.zeros((2, 2), np.uint8))


def test_duplicates_and_use_after_close_are_refused(tmp_path: Path) -> None:
    w = PredictionWriter(tmp_path)
    write_probs(w, "T1", "a.png", [0.5, 0.5])
    with pytest.raises(ValueError, match="duplicate"):
        write_probs(w, "T1", "a.png", [0.4, 0.6])
    write_probs(w, "T2", "a.png", [0.4, 0.6])  # same image in another task is fine
    with pytest.raises(TypeError):
        write_probs(w, "T1", Path("b.png"), [0.5, 0.5])  # type: ignore[arg-type]
    assert len(w) == 2
    first = w.close()
    assert w.close() == first
    with pytest.raises(RuntimeError):
        write_probs(w, "T1", "c.png", [0.5, 0.5])


def test_bytes_do_not_depend_on_insertion_order(tmp_path: Path) -> None:
    rows = [("T2", "x.png", [0.3, 0.7]), ("T1", "b.png", [0.6, 0.4]), ("T1", "a.png", [0.2, 0.8])]
    for name, order in (("one", rows), ("two", rows[::-1])):
        with PredictionWriter(tmp_path / name) as w:
            for task_id, image_path, probs in order:
                write_probs(w, task_id, image_path, probs)
    one = (tmp_path / "one" / "classification_predictions.json").read_bytes()
    assert one == (tmp_path / "two" / "classification_predictions.json").read_bytes()
    assert one.endswith(b"\n")


def test_failed_job_writes_no_json_and_no_temp_files_are_left(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), PredictionWriter(tmp_path) as w:
        write_probs(w, "T1", "a.png", [0.5, 0.5])
        raise RuntimeError("training crashed")
    assert list(tmp_path.iterdir()) == []
    with PredictionWriter(tmp_path) as w:
        write_probs(w, "T1", "a.png", [0.5, 0.5])
        write_mask(w, "S1", "i.png", "../s/m.png", np.ones((3, 3), np.uint8))
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == sorted(["classification_predictions.json", SEGMENTATION_INDEX, "s", "m.png"])


def test_round_trip_and_rescoring_equal_direct_scoring(tmp_path: Path) -> None:
    gt_box = np.array([[10.0, 10.0, 50.0, 30.0]])
    gt_pts = np.array([[[30.0, 40.0]]])
    gt_mask = np.zeros((6, 8), np.uint8)
    gt_mask[1:4, 1:4] = 1
    pred_mask = np.zeros((6, 8), np.uint8)
    pred_mask[2:5, 2:5] = 1
    box_norm = [0.1, 0.2, 0.4, 0.5]
    with PredictionWriter(tmp_path) as w:
        write_box(w, "D1", "../d.png", box_norm, (60, 100))
        write_points(w, "R1", "../r.png", [[0.0, 0.0]], (100, 100))
        write_mask(w, "S1", "../s.png", "../masks/s.png", pred_mask)
        write_probs(w, "C1", "../c.png", [0.2, 0.8])

    back = read_predictions(tmp_path)
    assert set(back) == {"classification", "detection", "regression", "segmentation"}
    assert back["classification"] == [
        {"image_path": "../c.png", "task_id": "C1", "predicted_class": 1, "predicted_probs": [0.2, 0.8]}
    ]
    (det,) = back["detection"]
    # the measures `score` applies (TaskType.score_per_image, Segmentation.score), to the written and the direct
    rescored = box_iou(np.array([det["bbox_pixels"]]), gt_box)
    direct = box_iou(box_to_pixels(box_norm, (60, 100))[None], gt_box)
    # pred box [10, 12, 40, 30] vs [10, 10, 50, 30]: 30 * 18 / (40 * 20) = 0.675
    assert rescored == direct and rescored[0] == pytest.approx(0.675)
    (reg,) = back["regression"]
    assert radial_errors(np.reshape(reg["predicted_points_pixels"], (1, -1, 2)), gt_pts)[0] == 50.0
    (seg,) = back["segmentation"]
    np.testing.assert_array_equal(seg["mask"], pred_mask)
    rescored_seg, direct_seg = (segmentation_per_image([m], [gt_mask], 2) for m in (seg["mask"], pred_mask))
    assert rescored_seg.keys() == direct_seg.keys() and all(
        (rescored_seg[k] == direct_seg[k]).all() for k in direct_seg
    )
    assert "mask" not in read_predictions(tmp_path, load_files=False)["segmentation"][0]


def test_reading_an_empty_or_malformed_folder(tmp_path: Path) -> None:
    assert read_predictions(tmp_path) == {"classification": [], "detection": [], "regression": [], "segmentation": []}
    (tmp_path / "detection_predictions.json").write_text('[{"image_path": "a", "task_id": "D1"}]')
    with pytest.raises(ValueError, match="bbox_normalized"):
        read_predictions(tmp_path)


def test_a_received_folder_is_read_as_data_no_link_followed_out(tmp_path: Path) -> None:
    """read_predictions is how a job's predictions are rescored: a mask linked to a file outside the folder was
    read, and a JSON index read whole whatever it was."""
    folder = tmp_path / "preds"
    with PredictionWriter(folder) as w:
        write_mask(w, "S1", "../s.png", "../masks/s.png", np.ones((4, 4), np.uint8))
    outside = tmp_path / "secret.png"
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(outside)
    (mask,) = [p for p in folder.rglob("*.png")]
    mask.unlink()
    mask.symlink_to(outside)
    with pytest.raises(UnsafePath, match="outside"):
        read_predictions(folder)
    index = folder / SEGMENTATION_INDEX
    index.rename(tmp_path / "index.json")
    index.symlink_to(tmp_path / "index.json")
    with pytest.raises(OSError, match="symbolic link"):
        read_predictions(folder)


def test_a_confusion_record_of_a_metric_labels_cannot_recompute_is_refused_written_and_read(tmp_path: Path) -> None:
    """The extension audit's F4: a plug-in's QWK recorded as kind 'confusion' was written without a word, then
    every compare, report and plot of its study ended in a KeyError traceback, the built-in tasks' analysis
    lost with it. The writer refuses it; a received item_scores.json holding one is damaged, by its task."""
    from usagg.analysis.item_scores import load_item_scores
    from usagg.errors import UsaggError
    from usagg.predictions import CONFUSION_METRICS
    from usagg.tasktypes.classification import _FROM_LABELS

    assert set(CONFUSION_METRICS) == set(_FROM_LABELS)  # what label_metric recomputes, no more
    writer = PredictionWriter(tmp_path / "p")
    writer.add_item_scores("T1", "MCC", True, "confusion", ["a.png"], [[1, 0]])
    with pytest.raises(ValueError) as err:
        writer.add_item_scores("grade", "QWK", True, "confusion", ["a.png"], [[1, 0]])
    assert str(err.value) == (
        "task grade: item score kind 'confusion' recomputes ACC, F1_macro, F1_weighted, MCC from the true and "
        "predicted classes, not 'QWK': record 'mean' values where the metric is a mean over images, or no item "
        "scores (the task then has no test-set interval)"
    )
    job = tmp_path / "runs" / "s" / "jobs" / "TS-grade"
    job.mkdir(parents=True)
    record = {"metric": "QWK", "higher_is_better": True, "kind": "confusion", "images": ["a.png"], "values": [[1, 0]]}
    (job / "item_scores.json").write_text(json.dumps({"format": 1, "tasks": {"grade": record}}))
    with pytest.raises(UsaggError, match=r"item_scores.json is damaged \(task grade: item score kind 'confusion' "):
        load_item_scores(job)


def test_item_scores_file_layout(tmp_path: Path) -> None:
    writer = PredictionWriter(tmp_path / "p")
    writer.add_item_scores("T2", "MRE", False, "mean", ["b.png", "a.png"], [2.5, float("nan")])
    writer.add_item_scores("T1", "AUC", True, "auc", ["a.png"], [[1, 0.2, 0.8]])
    with pytest.raises(ValueError, match="already added"):
        writer.add_item_scores("T1", "AUC", True, "auc", ["a.png"], [[1, 0.2, 0.8]])
    with pytest.raises(ValueError, match="kind 'median'"):
        writer.add_item_scores("T3", "MRE", False, "median", ["a.png"], [1.0])
    with pytest.raises(ValueError, match="2 images"):
        writer.add_item_scores("T3", "MRE", False, "mean", ["a.png", "b.png"], [1.0])
    with pytest.raises(ValueError, match="twice"):
        writer.add_item_scores("T3", "MRE", False, "mean", ["a.png", "a.png"], [1.0, 2.0])
    writer.close()
    data = writer.item_scores()
    assert json.loads(json.dumps(data, allow_nan=False)) == {
        "format": 1,
        "tasks": {
            "T1": {"metric": "AUC", "higher_is_better": True, "kind": "auc", "images": ["a.png"],
                   "values": [[1.0, 0.2, 0.8]]},
            "T2": {"metric": "MRE", "higher_is_better": False, "kind": "mean", "images": ["b.png", "a.png"],
                   "values": [2.5, None]},
        },
    }  # fmt: skip
    with pytest.raises(RuntimeError):
        writer.add_item_scores("T3", "MRE", False, "mean", ["a.png"], [1.0])
