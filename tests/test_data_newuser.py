"""A new user's own data: the export quirks of a first hour with usagg (audit "newuser", findings 1-3 and 5-8).

Each case is a common export that usagg read silently wrong or explained badly: JPEG/PNG with an EXIF
orientation (read as OpenCV's imread reads it: upright), boxes and keypoints written as fractions of
the image size, a train split without a class, macOS (NFD) file names under an NFC CSV, 12- to 14-bit data in
16-bit PNGs, a spreadsheet's non-UTF-8 CSV or row of separators, and the size column of the summary.
"""

from __future__ import annotations

import io
import json
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from test_data_support import edit_csv, read_csv, tiny_layout, write_csv

from usagg.cli.data import _print_report
from usagg.cli.runs import print_data_warnings
from usagg.data.cache import decode_image
from usagg.data.check import check_dataset
from usagg.data.fmc_uia import Problem
from usagg.data.images import open_image
from usagg.data.masks import read_mask_grayscale
from usagg.spec.models import TaskSpec

#: EXIF Orientation -> how the stored pixels are made from the displayed ones (the inverse of what a viewer does).
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _save_oriented(displayed: Image.Image, path: Path, orientation: int, **kw: object) -> None:
    """`displayed` stored as a camera or PACS viewer stores it: turned, with the EXIF tag that turns it back."""
    method = STORE[orientation]
    stored = displayed if method is None else displayed.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif.tobytes(), **kw)


# --------------------------------------------------------------------------- 1. EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_png_with_an_exif_orientation_reads_upright_as_opencv_reads_it(tmp_path: Path, orientation: int) -> None:
    displayed = np.arange(30 * 50, dtype=np.int64).reshape(30, 50) % 251
    path = tmp_path / "frame.png"
    _save_oriented(Image.fromarray(displayed.astype(np.uint8)), path, orientation)
    with open_image(path) as im:
        assert np.array_equal(np.asarray(im), displayed)
    _, hw = decode_image(path, 16)
    assert hw == (30, 50)  # orig_hw, the frame predictions are mapped back to, is the displayed one


def test_a_jpeg_with_orientation_6_reads_upright(tmp_path: Path) -> None:
    displayed = np.tile(np.linspace(0, 250, 50).astype(np.uint8), (30, 1))
    path = tmp_path / "frame.jpg"
    _save_oriented(Image.fromarray(displayed), path, 6, quality=100)
    with open_image(path) as im:
        got = np.asarray(im.convert("L")).astype(int)
    assert got.shape == (30, 50) and np.abs(got - displayed).max() <= 2  # JPEG rounding only, not turned


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_a_tiff_not_stored_upright_is_refused_not_read_in_a_guessed_frame(tmp_path: Path, compression: str) -> None:
    """Pillow turns a compressed TIFF by its orientation and leaves an uncompressed one as stored, yet reports the
    turned size before loading: the decode cache took that for orig_hw, so boxes were scaled in the wrong frame;
    OpenCV turns 2-4 and cannot read 5-8. Neither is guessed: the file is refused by name."""
    path = tmp_path / "frame.tif"
    _save_oriented(Image.fromarray(np.zeros((20, 40), np.uint8)), path, 6, compression=compression)
    with pytest.raises(OSError, match=r"frame\.tif is a TIFF whose EXIF orientation is 6, not 1"):
        decode_image(path, 16)
    upright_tiff = tmp_path / "upright.tif"
    _save_oriented(Image.fromarray(np.zeros((20, 40), np.uint8)), upright_tiff, 1, compression=compression)
    assert decode_image(upright_tiff, 16)[1] == (20, 40)


def test_the_data_check_refuses_a_tiff_not_stored_upright_as_the_jobs_do(data: Path) -> None:
    """Pillow's load() of a TIFF applies its orientation and drops the tag: the check loaded first, saw
    orientation 1 and the turned size, and passed a file every job then failed to read."""
    png = data / "train/Classification/cls_t/train_2.png"
    tiff = png.with_suffix(".tif")
    _save_oriented(Image.open(png).copy(), tiff, 6)  # uncompressed: Pillow's own decoder
    edit_csv(data, "cls.csv", lambda rows: rows[2].update(image_path="../Classification/cls_t/train_2.tif"))
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [
        ("unreadable_image", "train/csv_files/cls.csv", 3)
    ]
    assert "is a TIFF whose EXIF orientation is 6, not 1" in report.problems[0].message
    with pytest.raises(OSError, match="EXIF orientation is 6"):
        decode_image(tiff, 16)  # what the job reads: the same verdict


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_a_mask_with_an_exif_orientation_reads_upright_as_imread_grayscale(tmp_path: Path, mode: str) -> None:
    mask = np.zeros((30, 50), np.uint8)
    mask[:10, :10], mask[20:, 30:] = 2, 1
    im = Image.fromarray(mask > 0) if mode == "1" else Image.fromarray(mask).convert(mode)
    path = tmp_path / "mask.png"
    _save_oriented(im, path, 8)
    want = np.where(mask > 0, 255, 0) if mode == "1" else mask  # 1-bit reads as 0/255, as before
    assert np.array_equal(read_mask_grayscale(path), want)


def test_labels_are_checked_in_the_frame_an_exif_orientation_shows(data: Path) -> None:
    """A box that fits the displayed 56x40 image and not the stored 40x56 one, a mask turned like its image."""
    for folder in ("Detection/det_t", "Segmentation/Three/seg_t/imgs", "Segmentation/Three/seg_t/masks"):
        path = data / "train" / folder / "train_0.png"
        _save_oriented(Image.open(path).copy(), path, 6)
    edit_csv(data, "det.csv", lambda rows: rows[0].update(x_max="50"))
    report = check_dataset(data)
    assert report.ok, [(p.kind, p.message) for p in report.problems]
    assert report.tasks["det_t"].sizes == Counter({(40, 56): 9})
    assert report.tasks["det_t"].size_range() == "56x40"


# --------------------------------------------------------------------------- 2. normalised coordinates


def test_boxes_written_as_fractions_of_the_image_are_a_problem_naming_the_fix(data: Path) -> None:
    def normalise(rows: list[dict]) -> None:
        for r in rows:
            r.update({c: float(r[c]) / (56 if c.startswith("x") else 40) for c in ("x_min", "y_min", "x_max", "y_max")})

    edit_csv(data, "det.csv", normalise)
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [
        ("normalised_coordinates", "train/csv_files/det.csv", None)
    ]
    message = report.problems[0].message
    assert message.startswith(
        "task det_t: the boxes of all 6 images in train/csv_files/det.csv lie within [0, 1] while the images are "
        "40-56 px a side: the columns x_min, y_min, x_max, y_max are pixels"
    )
    assert "row 1's (x, y) (0.0625, 0.05625), (0.535714, 0.94375) on its 56x40 image are (3.5, 2.25), (30, 37.75)" in (
        message
    )


def test_keypoints_written_as_fractions_are_a_problem_and_pixels_near_the_corner_are_not(data: Path) -> None:
    def normalise(rows: list[dict]) -> None:
        for r in rows:
            for c in ("point_1_xy", "point_2_xy"):
                x, y = json.loads(r[c])
                r[c] = json.dumps([x / 56, y / 40])

    edit_csv(data, "reg.csv", normalise, "val")
    report = check_dataset(data)
    (problem,) = report.problems
    assert (problem.kind, problem.csv_file) == ("normalised_coordinates", "val/csv_files/reg.csv")
    assert "the keypoints of all 3 images in val/csv_files/reg.csv" in problem.message
    assert "the columns point_1_xy, point_2_xy are pixels" in problem.message

    edit_csv(data, "reg.csv", lambda rows: rows[0].update(point_1_xy="[1.5, 0.5]"), "val")  # one real pixel
    assert check_dataset(data).ok


def test_fractions_on_images_of_a_few_pixels_are_not_taken_for_normalised(tmp_path: Path) -> None:
    root = tiny_layout(tmp_path / "data", n=4, hw=(6, 7))

    def inside(rows: list[dict]) -> None:
        for r in rows:
            r.update(x_min=0.1, y_min=0.1, x_max=0.9, y_max=0.9)

    edit_csv(root, "det.csv", inside)
    assert "normalised_coordinates" not in {p.kind for p in check_dataset(root).problems}


# --------------------------------------------------------------------------- 3. a train split without a class


def test_a_train_split_without_a_class_warns_and_the_summary_counts_labels_per_split(data: Path) -> None:
    edit_csv(data, "cls.csv", lambda rows: [r.update(mask="0") for r in rows])
    report = check_dataset(data)
    assert report.ok
    (warning,) = report.warnings
    assert (warning.kind, warning.csv_file) == ("train_coverage", "train/csv_files/cls.csv")
    assert warning.message.startswith("task cls_t: the train split has no image of class 1 (of 0..1): the model")
    summary = report.tasks["cls_t"]
    assert summary.split_labels == {"train": {"0": 6}, "val": {"0": 2, "1": 1}}
    assert summary.labels == {"0": 8, "1": 1}
    assert summary.label_text() == "train: 0:6 | val: 0:2 1:1"
    assert report.to_dict()["tasks"]["cls_t"]["labels_by_split"] == summary.split_labels
    others = [TaskSpec(id="seg_t", type="segmentation", num_classes=3)]
    assert check_dataset(data, tasks=others).warnings == []  # a study hears of its own tasks only


def test_run_and_validate_show_the_data_checks_warnings_as_such(data: Path) -> None:
    """The warnings of `check_study_data` are the report's (this study's tasks) and other tasks' problems."""
    edit_csv(data, "cls.csv", lambda rows: [r.update(mask="0") for r in rows])
    report = check_dataset(data)
    elsewhere = Problem("missing_image", "task seg_t: image 'x.png' not found", "train/csv_files/seg.csv", 1)
    out = io.StringIO()
    print_data_warnings(Console(file=out, width=300), [elsewhere, *report.warnings], report)
    text = out.getvalue()
    assert "warning: 1 data warning (not blocking):\n  train_coverage task cls_t: the train split has no image" in text
    assert "warning: 1 problem in tasks this study does not train" in text
    assert text.index("train_coverage") < text.index("does not train")


# --------------------------------------------------------------------------- 5. Unicode normalisation


def _rename_nonascii(root: Path, csv: str, column: str, csv_form: str, file_form: str) -> str:
    """Row 1's file renamed to a non-ASCII name: `file_form` on disk, `csv_form` in the CSV; returns the name."""
    name = "l\u00e4sion_0.png"
    header, rows = read_csv(root / "train/csv_files" / csv)
    old = (root / "train/csv_files" / rows[0][column]).resolve()
    old.rename(old.with_name(unicodedata.normalize(file_form, name)))
    rows[0][column] = rows[0][column].rsplit("/", 1)[0] + "/" + unicodedata.normalize(csv_form, name)
    write_csv(root / "train/csv_files" / csv, header, rows)
    return name


def test_an_image_named_nfd_under_an_nfc_csv_says_how_to_rename_it(data: Path) -> None:
    _rename_nonascii(data, "cls.csv", "image_path", "NFC", "NFD")
    (problem,) = check_dataset(data).problems
    assert (problem.kind, problem.csv_file, problem.row) == ("missing_image", "train/csv_files/cls.csv", 1)
    assert (
        "; a file whose name differs only in Unicode normalisation is there (train/Classification/cls_t/"
        f"{unicodedata.normalize('NFD', 'läsion_0.png')}): the CSV writes 'l\\xe4sion_0.png', composed (NFC), "
        "the disk has 'la\\u0308sion_0.png', decomposed (NFD, as macOS writes names)"
    ) in problem.message
    assert f"rename the files to NFC, e.g. `convmv -f utf8 -t utf8 --nfc -r --notest {data}`" in problem.message


def test_a_mask_named_nfc_under_an_nfd_csv_says_to_write_the_csv_in_nfc(data: Path) -> None:
    _rename_nonascii(data, "seg.csv", "mask_path", "NFD", "NFC")
    (problem,) = check_dataset(data).problems
    assert (problem.kind, problem.row) == ("missing_mask", 1)
    assert "the CSV writes 'la\\u0308sion_0.png', decomposed (NFD, as macOS writes names)" in problem.message
    assert "write the CSV's paths composed (NFC)" in problem.message


def test_a_missing_file_with_no_twin_says_only_not_found(data: Path) -> None:
    _rename_nonascii(data, "cls.csv", "image_path", "NFC", "NFC")
    (data / "train/Classification/cls_t/läsion_0.png").unlink()
    (problem,) = check_dataset(data).problems
    assert problem.kind == "missing_image" and problem.message.endswith("läsion_0.png)")


# --------------------------------------------------------------------------- 6. 12- to 14-bit data in 16-bit PNGs


def test_16_bit_images_holding_12_bit_data_warn_that_they_read_as_0_to_15(data: Path) -> None:
    folder = data / "train/Classification/cls_t"
    for i in range(6):
        path = folder / f"train_{i}.png"
        Image.fromarray(np.asarray(Image.open(path)).astype(np.uint16) * 16).save(path)  # 8 bits -> 12 bits
    top = max(int(np.asarray(Image.open(folder / f"train_{i}.png")).max()) for i in range(6))
    assert top <= 4095 and decode_image(folder / "train_0.png", 8)[0].max() <= 15  # OpenCV's reading, kept
    (warning,) = check_dataset(data).warnings
    assert (warning.kind, warning.csv_file) == ("low_bit_depth", "train/csv_files/cls.csv")
    assert warning.message.startswith(
        f"task cls_t: 6 of its 6 train images (e.g. row 1, '../Classification/cls_t/train_0.png') are 16-bit with "
        f"no value above 4095 (at most {top}): 12-bit data or less."
    )
    assert f"so these read as 0..{top >> 8} of 0..255, almost black. Rescale them to 8 bits" in warning.message

    for i in range(6):  # the full 16-bit range is read as intended: no warning
        path = folder / f"train_{i}.png"
        Image.fromarray(np.asarray(Image.open(path)).astype(np.uint16) * 16).save(path)
    assert check_dataset(data).warnings == []


def _scale(folder: Path, factors: dict[int, int]) -> int:
    """Train images i of the classification task multiplied by `factors[i]` and saved as 16-bit PNGs; their maximum."""
    for i, factor in factors.items():
        path = folder / f"train_{i}.png"
        Image.fromarray(np.asarray(Image.open(path)).astype(np.uint16) * factor).save(path)
    return max(int(np.asarray(Image.open(folder / f"train_{i}.png")).max()) for i in factors)


def test_13_and_14_bit_data_in_16_bit_pngs_warn_once_naming_the_range_they_read_as(data: Path) -> None:
    """The real-data audit (F10): 14-bit data (x64) read by its high byte is 0..63, a quarter of the grey range, and
    went unsaid while 12-bit data warned. Images of 12 and 14 bits in one CSV are one warning, for the widest."""
    folder = data / "train/Classification/cls_t"
    top = _scale(folder, {0: 16, 1: 16, 2: 64, 3: 64, 4: 32, 5: 64})  # 12, 13 and 14 bits
    assert 8192 <= top <= 16383 and decode_image(folder / "train_2.png", 8)[0].max() <= top >> 8
    (warning,) = check_dataset(data).warnings
    assert (warning.kind, warning.csv_file) == ("low_bit_depth", "train/csv_files/cls.csv")
    assert warning.message.startswith(
        f"task cls_t: 6 of its 6 train images (e.g. row 1, '../Classification/cls_t/train_0.png') are 16-bit with "
        f"no value above 16383 (at most {top}): 14-bit data or less."
    )
    assert f"so these read as 0..{top >> 8} of 0..255, {round(100 * ((top >> 8) + 1) / 256)} % of the grey" in (
        warning.message
    )
    assert "(value * 255 // 16383 for 14-bit data), or to the full 16-bit range (value * 4)" in warning.message


def test_15_bit_data_reads_as_half_the_grey_range_and_is_not_warned_of(data: Path) -> None:
    """Only the high byte's top two bits unused warn: 15-bit data (x128) reads as 0..127, and a 16-bit image of dark
    content may well have no value above 32767."""
    top = _scale(data / "train/Classification/cls_t", dict.fromkeys(range(6), 128))
    assert 16384 <= top <= 32767
    assert check_dataset(data).warnings == []


# --------------------------------------------------------------------------- 7. spreadsheet CSVs


def test_a_latin_1_csv_names_its_line_and_byte_and_says_save_as_csv_utf_8(data: Path) -> None:
    path = data / "train/csv_files/cls.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace("train_1.png", "tr\u00e4in_1.png")
    path.write_bytes("".join(lines).encode("cp1252"))
    (problem,) = [p for p in check_dataset(data).problems if p.kind == "unreadable_csv"]
    assert problem.csv_file == "train/csv_files/cls.csv"
    assert problem.message.startswith(
        "train/csv_files/cls.csv is not UTF-8 text: line 3 has the byte 0xe4 ('ä' in Windows-1252)"
    )
    assert 'save the file as "CSV UTF-8"' in problem.message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-16-le"])
def test_a_utf_16_csv_is_named_utf_16_not_a_windows_letter(data: Path, encoding: str) -> None:
    """Excel's "Unicode Text" (a byte-order mark FF FE) was called a Windows-1252 'ÿ', and the iconv -f cp1252 the
    message gave made a file of NUL bytes; without a mark (utf-16-le) it read as text full of NULs."""
    path = data / "train/csv_files/cls.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    (problem,) = [p for p in check_dataset(data).problems if p.kind == "unreadable_csv"]
    assert problem.message.startswith("train/csv_files/cls.csv is UTF-16 text")
    assert "iconv -f utf-16 -t utf-8" in problem.message and "Windows-1252" not in problem.message


def test_a_row_of_only_separators_is_an_empty_row_to_delete(data: Path) -> None:
    path = data / "train/csv_files/det.csv"
    path.write_text(path.read_text() + ",,,,,,,\r\n")
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [("empty_row", "train/csv_files/det.csv", 7)]
    assert report.problems[0].message.startswith("row 7 is empty (only separators")
    assert report.problems[0].message.endswith(": delete it")


# --------------------------------------------------------------------------- 8. the size column


def test_the_size_column_shows_sizes_images_have(data: Path) -> None:
    path = data / "train/Classification/cls_t/train_1.png"
    Image.open(path).transpose(Image.Transpose.TRANSPOSE).save(path)  # one portrait 40x56 among landscape 56x40
    report = check_dataset(data)
    summary = report.tasks["cls_t"]
    assert summary.sizes == Counter({(40, 56): 8, (56, 40): 1})
    assert summary.size_range() == "40x56 .. 56x40 (2 sizes)"  # was "40x40 .. 56x56", a size no image has
    assert report.to_dict()["tasks"]["cls_t"].items() >= {"min_wh": [40, 56], "max_wh": [56, 40], "sizes": 2}.items()
    out = io.StringIO()
    _print_report(report, Console(file=out, width=300))
    assert "40x56 .. 56x40 (2 sizes)" in out.getvalue()
