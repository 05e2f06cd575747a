"""`usagg data check` names the cause of a problem, once, where it can tell it (audit of the real-data walk-through).

A task with train rows and no val rows passed the check that `usagg run` then refused; a CSV written on Windows
printed a line per row and never said why; a task whose train CSV declares another type than its val CSV gave
ten lines of missing columns; a 1-bit mask got a hint about palette PNGs. Each case is built here from small
files and checked on the message, the counts and the exit code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli
from PIL import Image
from test_data_support import read_csv, write_csv

from usagg.data.check import ProblemGroup, check_dataset, grouped, row_ranges
from usagg.data.fmc_uia import Problem
from usagg.data.masks import read_mask_grayscale
from usagg.data.scope import split_by_scope
from usagg.spec.models import TaskSpec


def _check(root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple:
    code, text = run_cli(["data", "check", str(root), "--recheck", *args], monkeypatch, capsys)
    assert "Traceback" not in text
    return code, text


def _problem_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.startswith("  ") and not ln.startswith("  ...")]


# --------------------------------------------------------------------------- a task in one split only


def test_a_task_without_val_rows_is_a_problem_naming_the_missing_csv(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "val/csv_files/det.csv").unlink()
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [("task_missing_in_split", None, None)]
    message = report.problems[0].message
    assert message.startswith(
        "task det_t has 6 rows in train/csv_files/det.csv but none in val/csv_files/ "
        "(val/csv_files/det.csv does not exist): val/ is the test split of a study (data.test_split: val), so "
        "`usagg run` refuses a task without val rows. Add the task's val rows to val/csv_files/det.csv"
    )
    code, text = _check(data, monkeypatch, capsys)
    assert code == 1 and "1 problem:" in text and "no problems" not in text
    assert any(ln.startswith("task_missing_in_split task det_t has 6 rows") for ln in _problem_lines(text))
    code, text = _check(data, monkeypatch, capsys, "--split", "train")  # one split asks for no other
    assert code == 0 and "no problems in 4 tasks" in text


def test_a_task_without_train_rows_and_a_csv_of_other_tasks(data: Path) -> None:
    header, _ = read_csv(data / "train/csv_files/reg.csv")
    write_csv(data / "train/csv_files/reg.csv", header, [])  # header only: empty_csv says it, not twice
    assert [p.kind for p in check_dataset(data).problems] == ["empty_csv"]
    (data / "train/csv_files/reg.csv").unlink()
    (data / "train/csv_files/reg.csv").write_text((data / "train/csv_files/cls.csv").read_text())
    (data / "train/csv_files/cls.csv").unlink()
    (problem,) = check_dataset(data).problems
    assert problem.kind == "task_missing_in_split"
    assert problem.message.startswith(
        "task reg_t has 3 rows in val/csv_files/reg.csv but none in train/csv_files/ "
        "(train/csv_files/reg.csv lists no row of it): a task is trained on its train/ rows"
    )


def test_a_study_is_blocked_only_by_its_own_task_missing_val_rows(data: Path) -> None:
    (data / "val/csv_files/det.csv").unlink()
    others = [TaskSpec(id="cls_t", type="classification", num_classes=2)]
    blocking, warnings = split_by_scope(check_dataset(data, tasks=others), ["cls_t"])
    assert blocking == [] and [p.kind for p in warnings] == ["task_missing_in_split"]
    det = [TaskSpec(id="det_t", type="detection", num_classes=1)]
    blocking, _ = split_by_scope(check_dataset(data, tasks=det), ["det_t"])
    assert [p.kind for p in blocking] == ["task_missing_in_split"]
    assert check_dataset(data, tasks=det, splits=("train",)).ok  # data.test_split: train reads train only


# --------------------------------------------------------------------------- a CSV written on Windows


def _windows_rows(root: Path, n: int, existing: bool) -> None:
    """train/cls.csv with `n` rows whose paths use '\\' (to files that exist with '/', or to none)."""
    header, rows = read_csv(root / "train/csv_files/cls.csv")
    out = []
    for i in range(n):
        name = rows[i % len(rows)]["image_path"].rsplit("/", 1)[1] if existing else f"x{i}.png"
        if existing and i >= len(rows):
            shutil.copyfile(root / "train/Classification/cls_t" / name, root / f"train/Classification/cls_t/c{i}.png")
            name = f"c{i}.png"
        out.append({**rows[0], "image_path": f"..\\Classification\\cls_t\\{name}", "mask": str(i % 2)})
    write_csv(root / "train/csv_files/cls.csv", header, out)


def test_3000_windows_paths_are_one_entry_with_a_count_and_the_cause(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _windows_rows(data, 3000, existing=False)
    code, text = _check(data, monkeypatch, capsys)
    assert code == 1
    assert "3,000 problems (rows with the same kind of problem in one CSV shown as one entry; --json lists" in text
    (line,) = _problem_lines(text)[-1:]
    assert len(_problem_lines(text)) == 1, text
    assert line.startswith(
        "windows_path train/csv_files/cls.csv rows 1-3000 (3,000 rows): e.g. row 1 (line 2): task cls_t: image_path "
        "'..\\Classification\\cls_t\\x0.png' uses Windows '\\' separators"
    )
    assert "no file is there as '../Classification/cls_t/x0.png' either" in line
    code, text = run_cli(["data", "check", str(data), "--json"], monkeypatch, capsys)
    payload = json.loads(text)
    assert code == 1 and len(payload["problems"]) == 3000  # the JSON keeps every row
    assert {p["kind"] for p in payload["problems"]} == {"windows_path"}
    assert [p["row"] for p in payload["problems"]] == list(range(1, 3001))


def test_windows_paths_to_files_that_exist_with_slashes_say_the_csv_was_written_on_windows(data: Path) -> None:
    _windows_rows(data, 8, existing=True)
    problems = check_dataset(data).problems
    assert [(p.kind, p.row) for p in problems] == [("windows_path", r) for r in range(1, 9)]
    assert problems[0].message == (
        "task cls_t: image_path '..\\Classification\\cls_t\\train_0.png' uses Windows '\\' separators, which Linux "
        "(and the challenge's evaluation run on it) reads as part of a file name, not a folder; the file is there "
        "as '../Classification/cls_t/train_0.png', so the CSV was written on Windows: write its paths with '/'"
    )


def test_a_file_whose_name_holds_a_backslash_is_read_as_it_is(data: Path) -> None:
    header, rows = read_csv(data / "train/csv_files/cls.csv")
    shutil.copyfile(data / "train/Classification/cls_t/train_0.png", data / "train/csv_files/a\\b.png")
    write_csv(data / "train/csv_files/cls.csv", header, [{**rows[0], "image_path": "a\\b.png"}, *rows[1:]])
    assert check_dataset(data).ok


def test_two_or_more_problems_of_a_kind_in_one_csv_are_one_entry_and_ranges_are_compact() -> None:
    """docs/real-data.md: rows of one kind of problem in one CSV are one entry with a count and an example; 3
    keypoints_json rows were 3 entries (the real-data audit, F14), grouping starting at 4 rows."""
    one = [Problem("missing_image", "m1", "train/csv_files/a.csv", 1), Problem("missing_image", "b", "b.csv", 1)]
    assert grouped(one) == one
    two = [*one, Problem("missing_image", "m9", "train/csv_files/a.csv", 9), Problem("empty_csv", "e", "c.csv")]
    (group, other, last) = grouped(two)
    assert isinstance(group, ProblemGroup) and (other, last) == (two[1], two[-1])
    assert group.where() == "train/csv_files/a.csv rows 1, 9 (2 rows)"
    assert group.message == "e.g. row 1 (line 2): m1"
    assert row_ranges([1, 3, 5, 7, 9, 10]) == "1, 3, 5, 7 and 1 more range"


def test_three_bad_keypoints_and_two_empty_rows_of_one_csv_are_two_entries(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    header, rows = read_csv(data / "train/csv_files/reg.csv")
    for r in rows[:3]:
        r["point_1_xy"] = "12.5; 8"
    empty = dict.fromkeys(header, "")
    write_csv(data / "train/csv_files/reg.csv", header, [*rows, empty, empty])
    assert [(p.kind, p.row) for p in check_dataset(data).problems] == [
        *(("keypoints_json", r) for r in (1, 2, 3)),
        ("empty_row", 7),
        ("empty_row", 8),
    ]
    code, text = _check(data, monkeypatch, capsys)
    lines = _problem_lines(text)
    assert code == 1 and len(lines) == 2, text
    assert lines[0].startswith("keypoints_json train/csv_files/reg.csv rows 1-3 (3 rows): e.g. row 1 (line 2): ")
    assert lines[1].startswith("empty_row train/csv_files/reg.csv rows 7-8 (2 rows): e.g. row 7 (line 8): row 7 is")


# --------------------------------------------------------------------------- a task declared otherwise per split


def _declare(root: Path, split: str, csv: str, task_name: str, num_classes: int) -> None:
    header, rows = read_csv(root / split / "csv_files" / csv)
    write_csv(
        root / split / "csv_files" / csv,
        header,
        [{**r, "task_name": task_name, "num_classes": str(num_classes)} for r in rows],
    )


def test_a_type_that_differs_between_splits_is_one_problem_naming_both_csvs(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _declare(data, "train", "reg.csv", "detection", 1)
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row) for p in report.problems] == [("split_mismatch", "train/csv_files/reg.csv", 1)]
    assert report.problems[0].message == (
        "task reg_t is detection with num_classes 1 in train/csv_files/reg.csv but regression with num_classes 2 in "
        "val/csv_files/reg.csv; a task has one type (task_name) and num_classes in every split. Its train rows do "
        "not read as detection (row 1: a detection row needs the column(s) x_min, y_min, x_max, y_max, which this "
        "CSV lacks) and its val rows read as regression: correct task_name and num_classes in "
        "train/csv_files/reg.csv (its 6 train rows are not checked until then)."
    )
    assert report.tasks["reg_t"].images == {"val": 3}  # the val rows are checked as usual
    code, text = _check(data, monkeypatch, capsys)
    assert code == 1 and "1 problem:" in text and "missing_column" not in text


def test_the_study_says_which_split_is_right(data: Path) -> None:
    _declare(data, "val", "cls.csv", "classification", 3)  # both splits read; only the study can tell
    (problem,) = check_dataset(data).problems
    assert problem.csv_file == "val/csv_files/cls.csv" and "Make task_name and num_classes of" in problem.message
    study = [TaskSpec(id="cls_t", type="classification", num_classes=3)]
    (problem,) = check_dataset(data, tasks=study).problems
    assert problem.csv_file == "train/csv_files/cls.csv"
    assert "The study declares classification with num_classes 3: correct task_name and num_classes in " in (
        problem.message
    )


# --------------------------------------------------------------------------- mask PNGs read as the challenge reads them


def _mask(root: Path, image: Image.Image) -> None:
    """The first train mask of seg_t replaced by `image`."""
    _, rows = read_csv(root / "train/csv_files/seg.csv")
    path = root / "train/csv_files" / rows[0]["mask_path"]
    image.save(path)


def _first_mask(root: Path) -> np.ndarray:
    _, rows = read_csv(root / "train/csv_files/seg.csv")
    return np.asarray(Image.open(root / "train/csv_files" / rows[0]["mask_path"]))


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (
            lambda fg: Image.fromarray(fg.astype(bool)),  # mode "1": the 0/1 a user's tools show
            "it is a 1-bit PNG, which reads as 0/255 (as the challenge's OpenCV reader reads it): save the mask as an "
            "8-bit grayscale PNG of class indices",
        ),
        (
            lambda fg: Image.fromarray((fg > 0).astype(np.uint8) * 255),
            "a binary mask saved as 0/255 must store its foreground as 1: save the mask as an 8-bit grayscale PNG",
        ),
        (
            lambda fg: _palette(fg, [0, 0, 0, 255, 255, 255]),  # grey, index 1 drawn white: read 255, not 1
            "it is a palette PNG, which reads as its colours' luminance (as the challenge's OpenCV reader reads it), "
            "not its palette indices",
        ),
    ],
)
def test_mask_values_name_the_pngs_cause(data: Path, make: Callable[[np.ndarray], Image.Image], cause: str) -> None:
    fg = (_first_mask(data) > 0).astype(np.uint8)
    _mask(data, make(fg))
    (problem,) = check_dataset(data).problems
    assert (problem.kind, problem.csv_file, problem.row) == ("mask_values", "train/csv_files/seg.csv", 1)
    assert cause in problem.message, problem.message


def _palette(fg: np.ndarray, colours: list[int]) -> Image.Image:
    im = Image.fromarray(fg, "P")
    im.putpalette(colours + [0] * (768 - len(colours)))
    return im


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (  # ITK-SNAP's or Slicer's export: class indices in 16 bits, whose high byte is 0
            lambda m: Image.fromarray(m.astype(np.uint16)),
            [
                "is a 16-bit PNG holding values [0, 1, 2], which the challenge's OpenCV reader reads by each value's "
                "high byte as [0]",
                "`Image.fromarray(np.asarray(Image.open(f)).astype(np.uint8)).save(f)`",
            ],
        ),
        (  # the class in the red channel: luminance (9797 c) >> 15 is 0 for c <= 3
            lambda m: Image.fromarray(np.stack([m, 0 * m, 0 * m], -1)),
            [
                "is an RGB PNG in colour (its channels differ), which the challenge's OpenCV reader reads as "
                "luminance, not as class indices: it reads (0, 0, 0) as 0, (1, 0, 0) as 0, (2, 0, 0) as 0.",
                "its red channel alone is not 0, holding [0, 1, 2]",
                '.getchannel("R").save(f)',
            ],
        ),
        (  # classes as palette indices, drawn in colour
            lambda m: _palette(m, [0, 0, 0, 255, 0, 0, 0, 255, 0]),
            [
                "is a palette PNG whose colours are not grey (its channels differ), which the challenge's OpenCV "
                "reader reads as luminance, not as class indices: it reads (0, 0, 0) as 0, (0, 255, 0) as 149, "
                "(255, 0, 0) as 76.",
                "its palette indices are [0, 1, 2]",
            ],
        ),
    ],
)
def test_a_16_bit_or_colour_mask_is_refused_naming_what_it_holds_and_reads_as(
    data: Path, make: Callable[[np.ndarray], Image.Image], said: list[str]
) -> None:
    """Such masks passed as empty (or odd) masks whenever their classes read below num_classes: the labels were lost
    without a word, in training and in the val split's scores."""
    m = _first_mask(data).copy()
    m[:2, :2] = 2  # the task's three classes
    _mask(data, make(m))
    (problem,) = check_dataset(data).problems
    assert (problem.kind, problem.csv_file, problem.row) == ("mask_format", "train/csv_files/seg.csv", 1)
    for text in said:
        assert text in problem.message, problem.message


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_a_grey_colour_mask_is_read_as_its_grey_values_and_accepted(data: Path, mode: str) -> None:
    """R = G = B: libpng (and so the challenge's OpenCV) keeps a grey pixel's value, so the classes read exactly."""
    m = _first_mask(data).copy()
    m[:2, :2] = 2
    grey = Image.fromarray(m).convert(mode)  # P: Pillow's grey palette, index i drawn (i, i, i)
    _mask(data, grey)
    assert check_dataset(data).ok
    _, rows = read_csv(data / "train/csv_files/seg.csv")
    assert np.array_equal(read_mask_grayscale(data / "train/csv_files" / rows[0]["mask_path"]), m)


def test_run_and_validate_show_a_csv_of_windows_paths_as_one_entry(data: Path) -> None:
    """What `usagg run` and `validate` print (and the API's DataProblems says) groups as `data check` does: the run
    listed the first 50 of 300 identical lines and the one cause was lost among them."""
    from rich.console import Console

    from usagg.cli.runs import print_data_problems
    from usagg.run.checks import DataProblems

    _windows_rows(data, 300, existing=False)
    report = check_dataset(data)
    err = DataProblems(report)
    lines = str(err).splitlines()
    assert lines[0].endswith("has 300 problems in this study's tasks; not training:") and len(lines) == 2, lines
    assert lines[1].startswith("  windows_path train/csv_files/cls.csv rows 1-300 (300 rows): e.g. row 1")
    console = Console(record=True, width=200)
    print_data_problems(console, err)
    shown = [ln for ln in console.export_text().splitlines() if ln.startswith("  ")]
    assert len(shown) == 1 and "rows 1-300 (300 rows)" in shown[0]


def test_the_study_tasks_missing_from_the_data_are_one_problem(data: Path) -> None:
    """A new user's 23 absent tasks were 23 problems, each repeating the list of the tasks found."""
    absent = [TaskSpec(id=f"organ_{i}", type="classification", num_classes=2, group="g") for i in range(10)]
    report = check_dataset(data, [*absent, TaskSpec(id="cls_t", type="classification", num_classes=2, group="g")])
    (missing,) = [p for p in report.problems if p.kind == "task_missing"]
    assert missing.message.startswith(
        "the study's tasks organ_0, organ_1, organ_2, organ_3, organ_4, organ_5, organ_6, organ_7 and 2 more "
        "(10 of 11) have no rows in the train/val CSVs of"
    )
    assert missing.message.count("tasks found:") == 1
