"""Data checks that read a dataset as the FMC_UIA challenge's evaluation does (issue 26.7), and
`usagg data check` tables whose task ids stay whole in a log (26.8).

Each case is a file the official scoring would read differently from a lenient reader: a padded
path it would not find, a 16-bit image, a symlink out of the root, keypoints as strings or empty,
a header-only CSV, a val split missing a class.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from test_data_support import edit_csv, read_csv, write_csv

from usagg.cli.data import _print_report
from usagg.data.cache import decode_image
from usagg.data.check import check_dataset
from usagg.data.fmc_uia import read_split
from usagg.errors import DataError
from usagg.spec.models import TaskSpec
from usagg.tasktypes.classification import classification_metrics


def _kinds(root: Path) -> list[tuple[str, str | None, int | None]]:
    return [(p.kind, p.csv_file, p.row) for p in check_dataset(root).problems]


# --------------------------------------------------------------------------- paths


def test_a_padded_image_or_mask_path_is_an_error_naming_csv_and_row(data: Path) -> None:
    def pad(rows: list[dict]) -> None:
        rows[1]["image_path"] = " " + rows[1]["image_path"]
        rows[3]["mask_path"] = rows[3]["mask_path"] + " "

    edit_csv(data, "seg.csv", pad)
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [
        ("padded_path", "train/csv_files/seg.csv", 2),
        ("padded_path", "train/csv_files/seg.csv", 4),
    ]
    assert "column image_path is ' ../Segmentation" in report.problems[0].message
    assert "would not find the file" in report.problems[0].message
    assert "column mask_path is" in report.problems[1].message
    assert report.tasks["seg_t"].images == {"train": 4, "val": 3}  # the two rows are not scored as if stripped
    with pytest.raises(DataError, match=r"seg\.csv row 2 \(line 3\): task seg_t: column image_path"):
        read_split(data, "train")


def test_a_symlink_inside_the_root_to_a_file_outside_is_an_error(data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "frame.png"
    outside.parent.mkdir()
    Image.fromarray(np.full((40, 56), 7, np.uint8)).save(outside)
    images = data / "train" / "Classification" / "cls_t"
    (images / "link.png").symlink_to(outside)
    (images / "inside.png").symlink_to(images / "train_0.png")  # a link that stays inside is fine
    (data / "train" / "linked_dir").symlink_to(outside.parent, target_is_directory=True)

    def link(rows: list[dict]) -> None:
        rows[0]["image_path"] = "../Classification/cls_t/link.png"
        rows[1]["image_path"] = "../Classification/cls_t/inside.png"
        rows[2]["image_path"] = "../linked_dir/frame.png"

    edit_csv(data, "cls.csv", link)
    problems = check_dataset(data).problems
    assert [(p.kind, p.row) for p in problems] == [("path_outside_root", 1), ("path_outside_root", 3)]
    assert "symbolic link" in problems[0].message and str(outside) in problems[0].message


def test_an_index_csv_linked_outside_the_root_is_not_read_nor_echoed(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding F4 of the security audit: a CSV in csv_files/ linked to a file outside the root (a credentials file)
    was read, and `usagg data check` printed its first line as the header it lacked. Now it is a problem naming the
    link and its target, nothing of the file read; a link that stays inside the root is read as before."""
    from tests.cli_run import run_cli

    secret = tmp_path / "credentials"
    secret.write_text("https://user:TOKEN-1234@git.example.org\n")
    (data / "train" / "csv_files" / "zz.csv").symlink_to(secret)
    (data / "train" / "copied.csv").write_text((data / "train" / "csv_files" / "cls.csv").read_text())
    (data / "train" / "csv_files" / "yy.csv").symlink_to(data / "train" / "copied.csv")  # stays inside: read
    problems = check_dataset(data).problems
    kinds = Counter((p.kind, p.csv_file) for p in problems)
    assert kinds == {("duplicate_row", "train/csv_files/yy.csv"): 6, ("path_outside_root", "train/csv_files/zz.csv"): 1}
    assert f"symbolic link to {secret}, outside the dataset root" in problems[-1].message
    code, out = run_cli(["data", "check", str(data)], monkeypatch, capsys)
    assert code != 0 and "TOKEN-1234" not in out and "Traceback" not in out


def test_a_csv_files_folder_linked_outside_the_root_is_refused(data: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(data / "val" / "csv_files", elsewhere)
    (data / "val" / "csv_files").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DataError, match=rf"csv_files leads through a symbolic link to {elsewhere}, outside the"):
        read_split(data, "val")
    assert [p.kind for p in check_dataset(data).problems] == ["missing_split"]


def test_an_index_csv_over_the_size_cap_is_refused_before_it_is_read(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file too large to be an index CSV is a problem naming it, read no further than the cap."""
    monkeypatch.setattr("usagg.data.fmc_uia.CSV_LIMIT", 64)
    problems = [p for p in check_dataset(data).problems if p.csv_file == "train/csv_files/cls.csv"]
    assert [p.kind for p in problems] == ["unreadable_csv"]
    assert "holds more than 64 bytes, more than an index CSV may" in problems[0].message


def test_a_root_that_is_itself_a_symlink_is_fine(clean: Path, tmp_path: Path) -> None:
    link = tmp_path / "root_link"
    link.symlink_to(clean, target_is_directory=True)
    assert check_dataset(link).ok


# --------------------------------------------------------------------------- 16-bit images


def _gradient16(path: Path) -> np.ndarray:
    arr = (np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) * 29).astype(np.uint16)
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return arr


def test_an_image_or_mask_in_another_format_is_refused_before_any_decoder_runs(data: Path) -> None:
    """Pillow picks a decoder by a file's first bytes: a "PNG" holding PostScript went to Ghostscript (an outside
    program), a GIF mask to its decoder. Only PNG, JPEG, BMP and TIFF images and PNG masks are opened."""
    images = data / "train" / "Classification" / "cls_t"
    (images / "script.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    Image.fromarray(np.full((40, 56), 90, np.uint8)).save(images / "frame.png", format="JPEG")  # a JPEG: read
    edit_csv(data, "cls.csv", lambda rows: rows[0].update(image_path="../Classification/cls_t/script.png"))
    edit_csv(data, "cls.csv", lambda rows: rows[1].update(image_path="../Classification/cls_t/frame.png"))
    _, rows = read_csv(data / "train" / "csv_files" / "seg.csv")
    Image.open(data / "train" / "csv_files" / rows[0]["mask_path"]).save(data / "gif_mask.gif", format="GIF")
    os.replace(data / "gif_mask.gif", data / "train" / "csv_files" / rows[0]["mask_path"])
    problems = check_dataset(data).problems
    assert [(p.kind, p.csv_file, p.row) for p in problems] == [
        ("unreadable_image", "train/csv_files/cls.csv", 1),
        ("unreadable_mask", "train/csv_files/seg.csv", 1),
    ]
    assert "is not a PNG, JPEG, BMP or TIFF file" in problems[0].message and "Ghostscript" not in problems[0].message
    assert "is not a PNG file" in problems[1].message


def test_an_image_past_pillows_pixel_limit_is_refused_by_name_not_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between Pillow's limit and twice it, an image decoded with a raw DecompressionBombWarning on stderr (760 MB
    for a 12000x12000 PNG); past twice it, Pillow's own error. Both are one OSError naming the file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for side in (40, 60):  # 1,600 pixels: past the limit; 3,600: past twice it
        path = tmp_path / f"big_{side}.png"
        Image.fromarray(np.zeros((side, side), np.uint8)).save(path)
        with (
            pytest.raises(OSError, match=rf"big_{side}\.png declares more than 1,000 pixels"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("error")
            decode_image(path, 16)


def test_a_16_bit_image_decodes_to_its_high_byte_not_two_grey_levels(tmp_path: Path) -> None:
    arr = _gradient16(tmp_path / "wide.png")
    Image.fromarray((arr >> 8).astype(np.uint8)).save(tmp_path / "eight.png")
    decoded, hw = decode_image(tmp_path / "wide.png", 56)
    assert hw == (40, 56)
    assert len(np.unique(decoded)) > 200  # clipped at 255 it was two levels (0 and 255)
    expected, _ = decode_image(tmp_path / "eight.png", 56)
    np.testing.assert_array_equal(decoded, expected)  # exactly the 8-bit file OpenCV's reading gives


def test_data_check_fingerprints_a_16_bit_image_at_its_depth(data: Path) -> None:
    # two 16-bit frames that differ only in their low bytes read the same: an exact copy across splits
    base = (np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) * 29).astype(np.uint16) & 0xFF00
    Image.fromarray(base).save(data / "train/Classification/cls_t/wide.png")
    Image.fromarray(base | 0x00FF).save(data / "val/Classification/cls_t/wide_copy.png")
    edit_csv(data, "cls.csv", lambda rows: rows[0].update(image_path="../Classification/cls_t/wide.png"))
    edit_csv(data, "cls.csv", lambda rows: rows[0].update(image_path="../Classification/cls_t/wide_copy.png"), "val")
    kinds = [p.kind for p in check_dataset(data).problems]
    assert kinds == ["leak_exact_copy"]  # clipped to 255, both were all but blank and no longer told apart


# --------------------------------------------------------------------------- keypoints


def test_keypoints_as_strings_or_empty_are_row_errors(data: Path) -> None:
    def bad(rows: list[dict]) -> None:
        rows[0]["point_1_xy"] = json.dumps(["10.5", "3"])
        rows[2]["point_2_xy"] = ""
        rows[4]["point_1_xy"] = "[true, 3]"

    edit_csv(data, "reg.csv", bad)
    problems = check_dataset(data).problems
    assert [(p.kind, p.csv_file, p.row) for p in problems] == [
        ("keypoints_json", "train/csv_files/reg.csv", 1),
        ("missing_keypoint", "train/csv_files/reg.csv", 3),
        ("keypoints_json", "train/csv_files/reg.csv", 5),
    ]
    assert "the coordinates are strings" in problems[0].message
    assert "point_2_xy is empty or missing" in problems[1].message and "(0, 0)" in problems[1].message
    with pytest.raises(DataError, match=r"reg\.csv row 3"):
        read_split(data, "train", ["reg_t"])


# --------------------------------------------------------------------------- val split


def test_a_header_only_val_csv_is_an_error_in_data_check(data: Path) -> None:
    header, _ = read_csv(data / "val/csv_files/det.csv")
    write_csv(data / "val/csv_files/det.csv", header, [])
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [("empty_csv", "val/csv_files/det.csv", None)]
    assert "has a header but no rows" in report.problems[0].message
    result = subprocess.run(
        [sys.executable, "-m", "usagg", "data", "check", str(data)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "empty_csv" in result.stdout, result.stdout + result.stderr


def test_a_val_split_missing_a_class_warns_and_binary_auc_is_nan(data: Path) -> None:
    edit_csv(data, "cls.csv", lambda rows: [r.update(mask="0") for r in rows], "val")
    report = check_dataset(data)
    assert report.ok
    (warning,) = report.warnings
    assert (warning.kind, warning.csv_file) == ("val_scoring", "val/csv_files/cls.csv")
    assert warning.message.startswith("task cls_t: the val split has no image of class 1 (of 0..1)")
    assert "NaN" in warning.message
    study_of_others = [TaskSpec(id="seg_t", type="segmentation", num_classes=3)]
    assert check_dataset(data, tasks=study_of_others).warnings == []  # a study hears of its own tasks only
    # what the warning promises: the official scoring's NaN, not 0.0
    auc = classification_metrics(np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]), np.zeros(3, np.int64))["AUC"]
    assert math.isnan(auc)


def test_a_multiclass_val_split_missing_a_class_warns_auc_zero(data: Path) -> None:
    def three(rows: list[dict]) -> None:
        for i, r in enumerate(rows):
            r.update(num_classes="3", mask=str(i % 2))

    edit_csv(data, "cls.csv", three, "val")
    edit_csv(data, "cls.csv", lambda rows: [r.update(num_classes="3", mask=str(i % 3)) for i, r in enumerate(rows)])
    (warning,) = check_dataset(data).warnings
    assert "no image of class 2 (of 0..2)" in warning.message and "0.0" in warning.message


# --------------------------------------------------------------------------- tables in a log

LONG_IDS = {"seg_t": "hx_fetal_abdomen_seg", "cls_t": "hx_fetal_plane_cls", "det_t": "hx_thyroid_nodule_det"}
LONG_IDS["reg_t"] = "hx_fetal_biometry"


@pytest.fixture(scope="module")
def long_ids(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("long") / "data"
    shutil.copytree(clean, root)
    for split in ("train", "val"):
        for csv in ("seg.csv", "cls.csv", "det.csv", "reg.csv"):
            edit_csv(root, csv, lambda rows: [r.update(task_id=LONG_IDS[r["task_id"]]) for r in rows], split)
    return root


def _whole(text: str) -> list[str]:
    """The long task ids that appear whole on a line of `text`."""
    return [t for t in LONG_IDS.values() if any(t in line for line in text.splitlines())]


@pytest.mark.parametrize("width", [60, 80])
def test_piped_data_check_keeps_every_task_id_on_one_line(long_ids: Path, width: int) -> None:
    report = check_dataset(long_ids)
    out = io.StringIO()
    _print_report(report, Console(file=out, width=width))  # a file, not a terminal: a pipe or a CI log
    assert _whole(out.getvalue()) == list(LONG_IDS.values()), out.getvalue()

    env = {**os.environ, "COLUMNS": str(width)}
    result = subprocess.run(
        [sys.executable, "-m", "usagg", "data", "check", str(long_ids)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _whole(result.stdout) == list(LONG_IDS.values()), result.stdout


def test_on_a_narrow_terminal_task_ids_stay_whole_and_other_columns_fold(long_ids: Path) -> None:
    out = io.StringIO()
    _print_report(check_dataset(long_ids), Console(file=out, width=80, force_terminal=True, color_system=None))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80  # the terminal's width is kept
    assert _whole(out.getvalue()) == list(LONG_IDS.values()), out.getvalue()
