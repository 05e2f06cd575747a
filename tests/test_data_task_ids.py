"""Task ids the study does not train, where that is likely a slip (usagg/data/taskids.py): named, never dropped
silently. A typo in one row's task_id (`cls_tx` in cls.csv) made the row a task of its own that no study trains, so
its task trained on a row fewer; `data check` called it a task missing its val rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli
from test_data_support import read_csv, write_csv

from usagg.data.check import check_dataset
from usagg.data.scope import split_by_scope
from usagg.spec.models import TaskSpec

CLS = TaskSpec(id="cls_t", type="classification", num_classes=2)
DET = TaskSpec(id="det_t", type="detection", num_classes=1)

STUDY = """
name: ids
paradigms: [TS]
data: {{root: {root}}}
tasks:
  - {{id: cls_t, type: classification, num_classes: 2}}
model: {{backbone: dinov3_test, image_size: 32}}
"""


def _task_id(root: Path, split: str, rows: list[int], task_id: str) -> None:
    """Rows (1-based) of `split`'s cls.csv given `task_id`."""
    path = root / split / "csv_files" / "cls.csv"
    header, records = read_csv(path)
    for r in rows:
        records[r - 1]["task_id"] = task_id
    write_csv(path, header, records)


def test_a_mistyped_task_id_is_a_problem_of_the_task_meant_naming_its_rows(data: Path) -> None:
    _task_id(data, "train", [2, 4], "cls_tx")
    report = check_dataset(data)
    assert [(p.kind, p.csv_file, p.row, p.tasks) for p in report.problems] == [
        ("unknown_task_id", "train/csv_files/cls.csv", 2, ("cls_t",))
    ]  # and no `task_missing_in_split` telling to add val rows for a task "cls_tx"
    assert report.problems[0].message == (
        "task_id cls_tx in 2 train rows (train/csv_files/cls.csv rows 2, 4) is in no catalog usagg ships, and the "
        "other 4 rows of that CSV are task cls_t: did you mean cls_t? As written, they are a task of their own, and "
        "cls_t trains and tests without them. Correct the task_id (a task of its own, with rows in a CSV of their "
        "own, is not taken for a typo)"
    )


def test_the_typo_blocks_a_study_of_the_task_meant_only(data: Path) -> None:
    """What `usagg run` and `validate` do with the check (usagg/run/checks.py `check_study_data`)."""
    _task_id(data, "train", [1], "cls_tx")
    _task_id(data, "val", [3], "cls_tx")
    blocking, _ = split_by_scope(check_dataset(data, tasks=[CLS]), ["cls_t"])
    assert [(p.kind, p.row) for p in blocking] == [("unknown_task_id", 1)]
    assert "task_id cls_tx in 1 train row and 1 val row (train/csv_files/cls.csv row 1; val/csv_files/cls.csv " in (
        blocking[0].message
    )
    assert "is no task of this study and in no catalog usagg ships" in blocking[0].message
    blocking, others = split_by_scope(check_dataset(data, tasks=[DET]), ["det_t"])
    assert blocking == [] and [p.kind for p in others] == ["unknown_task_id"]


def test_an_id_the_study_lacks_in_a_study_tasks_csv_is_a_warning_with_the_id_meant(data: Path) -> None:
    """Not a likely typo (a catalog's id, or not close to its CSV's task), but its rows sit among a study task's:
    named with its rows, the closest id and the task of the CSV's other rows."""
    _task_id(data, "train", [5, 6], "fetal_head")  # a packaged catalog's id
    report = check_dataset(data, tasks=[CLS])
    assert report.ok
    (warning,) = [w for w in report.warnings if w.kind == "unknown_task_id"]
    assert (warning.csv_file, warning.row) == ("train/csv_files/cls.csv", 5)
    assert warning.message == (
        "task_id fetal_head in 2 train rows (train/csv_files/cls.csv rows 5-6) names a task this study does not "
        "have; the other 4 rows of its CSV are task cls_t: this study trains and tests without them. Where they "
        "belong to cls_t, correct the task_id"
    )
    assert not [w for w in check_dataset(data, tasks=[DET]).warnings if w.kind == "unknown_task_id"]
    _task_id(data, "train", [5, 6], "thyroid_nodul")  # in no catalog, and no slip of cls_t: the catalog id meant
    (warning,) = [w for w in check_dataset(data, tasks=[CLS]).warnings if w.kind == "unknown_task_id"]
    assert "names a task this study does not have and no catalog usagg ships (did you mean 'thyroid_nodule'?)" in (
        warning.message
    )


def test_a_task_in_a_csv_of_its_own_that_the_study_leaves_out_is_no_stray(data: Path) -> None:
    """A subset study over a dataset's own task ids: `det_t` is in no catalog, but it is a task, not a slip."""
    report = check_dataset(data, tasks=[CLS])
    assert report.ok and not [w for w in report.warnings if w.kind == "unknown_task_id"]
    assert check_dataset(data).ok


def test_validate_refuses_the_typo_and_data_check_names_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _task_id(data, "train", [3], "cls_tx")
    spec = tmp_path / "ids.yaml"
    spec.write_text(STUDY.format(root=data))
    monkeypatch.setenv("USAGG_CACHE", str(tmp_path / "cache"))
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 1 and "did you mean cls_t?" in " ".join(out.split()), out
    code, out = run_cli(["data", "check", str(data)], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 1 and "unknown_task_id" in text and "did you mean cls_t?" in text
    assert "task_missing_in_split" not in text and "Add the task's val rows" not in text
