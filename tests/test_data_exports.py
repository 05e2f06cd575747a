"""A dataset as it arrives from another machine (the real-data audit, F11 and F12): a copy, tar or share from a Mac
leaves AppleDouble `._*.csv` files beside the index CSVs, and a CSV written on a case-insensitive disk (Windows,
macOS) names `Images/x.JPG` where Linux has `images/x.jpg`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from test_data_support import edit_csv

from usagg.data.catalog import data_tasks
from usagg.data.check import check_dataset
from usagg.data.fmc_uia import csv_files, read_split
from usagg.errors import DataError

#: The head of a real AppleDouble file: magic, version 2, "Mac OS X" filler, two entries (NUL bytes throughout).
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02" + bytes(64) + b"com.apple.quarantine"


def _mac_copy(root: Path) -> list[Path]:
    """An AppleDouble file beside every index CSV, as `tar` of a Mac folder unpacked on Linux leaves them."""
    made = []
    for csv in sorted(root.glob("*/csv_files/*.csv")):
        made.append(csv.with_name(f"._{csv.name}"))
        made[-1].write_bytes(APPLEDOUBLE)
    return made


# --------------------------------------------------------------------------- F11: AppleDouble ._*.csv


def test_appledouble_csvs_are_skipped_with_one_note_per_root_never_called_utf_16(data: Path) -> None:
    made = _mac_copy(data)
    assert len(made) == 8
    report = check_dataset(data)
    assert report.ok, [p.message for p in report.problems]
    (note,) = [w for w in report.warnings if w.kind == "macos_metadata"]
    assert note.message == (
        "8 macOS metadata files (._*) ignored beside the index CSVs (e.g. train/csv_files/._cls.csv); "
        f"`find {data} -name '._*' -delete` removes them"
    )
    assert note.csv_file is None and "iconv" not in note.message and "UTF-16" not in note.message
    assert [w for w in report.warnings if w.kind != "macos_metadata"] == []


def test_the_catalog_and_the_jobs_reader_skip_them_as_the_check_does(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_tasks = data_tasks(data)
    clean_rows = read_split(data, "train")
    _mac_copy(data)
    assert [p.name for p in csv_files(data, "train")] == ["cls.csv", "det.csv", "reg.csv", "seg.csv"]
    assert data_tasks(data) == clean_tasks
    assert read_split(data, "train") == clean_rows
    code, out = run_cli(["data", "catalog", str(data)], monkeypatch, capsys)
    assert code == 0 and "tasks:" in out and "UTF-16" not in out
    assert "note: 8 macOS metadata files (._*) ignored beside the index CSVs" in " ".join(out.split())


def test_a_dot_underscore_csv_without_the_magic_is_read_as_a_csv(data: Path) -> None:
    """Only the name and the magic together make a file metadata: a `._x.csv` of the user's is checked."""
    mine = data / "train/csv_files/._extra.csv"
    mine.write_text("image_path,task_id,task_name,num_classes\n")
    utf16 = data / "val/csv_files/._wide.csv"
    utf16.write_text("image_path,task_id,task_name,num_classes\n", encoding="utf-16")
    report = check_dataset(data)
    found = {(p.kind, p.csv_file) for p in report.problems}
    assert found == {("empty_csv", "train/csv_files/._extra.csv"), ("unreadable_csv", "val/csv_files/._wide.csv")}
    assert [w.kind for w in report.warnings] == []


def test_a_folder_of_only_metadata_files_says_so(data: Path) -> None:
    _mac_copy(data)
    for csv in (data / "val/csv_files").glob("[!.]*.csv"):
        csv.unlink()
    with pytest.raises(DataError, match=r"holds no \.csv files \(only 4 macOS metadata files, \._\*, ignored\)"):
        csv_files(data, "val")


# --------------------------------------------------------------------------- F12: paths differing in letter case


def _upper_suffix(rows: list[dict]) -> None:
    for r in rows:
        r["image_path"] = r["image_path"].replace("/cls_t/", "/Cls_T/").replace(".png", ".PNG")


def test_a_path_differing_from_the_file_only_in_case_names_the_file_and_the_fix(data: Path) -> None:
    edit_csv(data, "cls.csv", _upper_suffix)
    problems = check_dataset(data).problems
    assert [(p.kind, p.row) for p in problems] == [("missing_image", i) for i in range(1, 7)]
    assert problems[0].message.endswith(
        f"not found ({data}/train/Classification/Cls_T/train_0.PNG); a file differing only in letter case is there: "
        "train/Classification/cls_t/train_0.png; Linux and the challenge's evaluation compare names exactly: fix the "
        "CSV or rename the file"
    )


def test_a_mask_path_differing_only_in_case_says_so_too(data: Path) -> None:
    edit_csv(data, "seg.csv", lambda rows: rows[2].update(mask_path=rows[2]["mask_path"].replace("masks", "Masks")))
    (problem,) = check_dataset(data).problems
    assert (problem.kind, problem.row) == ("missing_mask", 3)
    assert "a file differing only in letter case is there: train/Segmentation/Three/seg_t/masks/train_2.png;" in (
        problem.message
    )


def test_case_twins_cost_one_listing_per_folder_and_none_when_every_file_is_there(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []
    real = os.listdir

    def listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        if Path(path).name != "csv_files":  # the index CSVs are listed to be read: not this cost
            listed.append(os.fspath(path))
            time.sleep(0.05)  # a slow disk: the check's threads, missing files of one folder at once, wait for it
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    assert check_dataset(data).ok and listed == []
    edit_csv(data, "cls.csv", _upper_suffix)
    assert len(check_dataset(data).problems) == 6
    folders = [str(data / "train/Classification"), str(data / "train/Classification/cls_t")]
    assert sorted(listed) == folders  # Cls_T/ and train_i.PNG are missing: their folders, each listed once


def test_a_missing_file_with_no_case_twin_says_only_not_found(data: Path) -> None:
    edit_csv(data, "cls.csv", _upper_suffix)
    (data / "train/Classification/cls_t/train_0.png").unlink()
    problem = check_dataset(data).problems[0]
    assert problem.row == 1 and problem.message.endswith("Cls_T/train_0.PNG)")
