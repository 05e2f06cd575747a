"""The FMC_UIA reader: every label format, any-case task names, paths, and structural errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data_support import read_csv, tiny_layout, write_csv

from usagg.data.fmc_uia import read_split, scan_split
from usagg.errors import DataError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_layout(tmp_path_factory.mktemp("tiny"))


def test_reads_every_label_format(tiny: Path) -> None:
    data = read_split(tiny, "train")
    assert sorted(data) == ["cls_t", "det_t", "reg_t", "seg_t"]
    assert all(len(v) == 6 for v in data.values())

    seg = data["seg_t"][2]
    assert seg.task_type == "segmentation" and seg.num_classes == 3
    assert seg.image_path == "../Segmentation/Three/seg_t/imgs/train_2.png"
    assert seg.image_file == tiny / "train/Segmentation/Three/seg_t/imgs/train_2.png"
    assert seg.label == tiny / "train/Segmentation/Three/seg_t/masks/train_2.png"
    assert seg.csv_file == tiny / "train/csv_files/seg.csv" and seg.row == 3

    cls = data["cls_t"]
    assert [s.label for s in cls] == [0, 1, 0, 1, 0, 1]
    assert cls[0].task_type == "classification"  # task_name "Classification": any case

    assert data["det_t"][1].label == (4.5, 2.25, 31.0, 37.75)
    reg = data["reg_t"][4]
    assert reg.task_type == "regression" and reg.label == ((14.5, 3.0), (55.5, 38.75))


def test_val_split_and_concatenated_csvs(tiny: Path, tmp_path: Path) -> None:
    assert {k: len(v) for k, v in read_split(tiny, "val").items()} == {"cls_t": 3, "det_t": 3, "reg_t": 3, "seg_t": 3}
    # a second CSV of the same task is concatenated, rows numbered per file
    header, rows = read_csv(tiny / "val/csv_files/cls.csv")
    extra = tiny / "val/csv_files/cls_more.csv"
    write_csv(extra, header, [{**rows[0], "image_path": "../Classification/cls_t/val_x.png", "mask": "1"}])
    try:
        cls = read_split(tiny, "val")["cls_t"]
        assert len(cls) == 4 and cls[-1].csv_file == extra and cls[-1].row == 1 and cls[-1].label == 1
    finally:
        extra.unlink()


def test_missing_csv_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train/csv_files"):
        read_split(tmp_path, "train")


def test_missing_columns_name_the_file(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "train/csv_files/a.csv", ["image_path", "task_id"], [{"image_path": "../x.png", "task_id": "t"}]
    )
    with pytest.raises(DataError, match=r"train/csv_files/a\.csv lacks the column\(s\) task_name, num_classes"):
        read_split(tmp_path, "train")


def test_path_leaving_the_root_is_an_error(tiny: Path, tmp_path: Path) -> None:
    header, rows = read_csv(tiny / "train/csv_files/cls.csv")
    rows[1]["image_path"] = "../../../outside.png"
    write_csv(tmp_path / "train/csv_files/cls.csv", header, rows)
    scan = scan_split(tmp_path, "train")
    assert [(p.kind, p.csv_file, p.row) for p in scan.problems] == [("path_outside_root", "train/csv_files/cls.csv", 2)]
    assert len(scan.samples["cls_t"]) == 5
    with pytest.raises(DataError, match=r"train/csv_files/cls\.csv row 2 .*outside the dataset root"):
        read_split(tmp_path, "train")


def test_bad_rows_are_located(tmp_path: Path) -> None:
    header = ["image_path", "task_id", "task_name", "num_classes", "mask"]
    rows = [
        {
            "image_path": f"../img/{i}.png",
            "task_id": "c",
            "task_name": "CLASSIFICATION",
            "num_classes": 3,
            "mask": i % 3,
        }
        for i in range(5)
    ]
    rows[1]["mask"] = "two"
    rows[2]["task_name"] = "ocr"
    rows[3]["mask"] = "3"
    write_csv(tmp_path / "train/csv_files/c.csv", header, rows)
    scan = scan_split(tmp_path, "train")
    assert [(p.kind, p.row) for p in scan.problems] == [
        ("bad_value", 2),
        ("bad_task_name", 3),
        ("label_out_of_range", 4),
    ]
    assert [s.row for s in scan.samples["c"]] == [1, 5]
    (named,) = [p.message for p in scan.problems if p.kind == "bad_task_name"]  # a plug-in's type not loaded, say
    assert named.startswith("task_name 'ocr' is not one of segmentation, classification, detection, regression")
    assert "name a plug-in's module in USAGG_PLUGINS" in named and "'How to add a task type'" in named
    for row in rows:  # one class: no classification (the type's check_num_classes, which the spec's TaskSpec asks)
        row["num_classes"], row["task_name"], row["mask"] = 1, "classification", 0
    write_csv(tmp_path / "train/csv_files/c.csv", header, rows)
    scan = scan_split(tmp_path, "train")  # said once for the task, at its first row, not once per row
    assert [(p.kind, p.row, p.message) for p in scan.problems] == [
        (
            "bad_value",
            1,
            "task c declares num_classes 1 in its rows: a classification task needs num_classes >= 2, got 1",
        )
    ]
    assert scan.samples["c"] == []
