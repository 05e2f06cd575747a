"""A study is blocked only by problems of the tasks it trains: other tasks' problems are warnings (issue 13.4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli
from test_data_support import read_csv, write_csv

from usagg.data.fmc_uia import Problem
from usagg.data.scope import ProblemTasks
from usagg.run.checks import DataProblems
from usagg.run.studyrun import StudyRun
from usagg.spec.load import load_study

STUDY = """
name: scope
paradigms: [TS]
data: {{root: {root}, selection_fraction: 0.25, cache_dir: {root}/../cache}}
tasks:
  - {{id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}}
model: {{backbone: dinov3_test, image_size: 32, heads: {{hidden: 16}}}}
training: {{epochs: 1, steps_per_epoch: 1, batch_size: 4, eval_batch_size: 8}}
execution: {{devices: cpu}}
"""


@pytest.fixture
def root(data_copy: Path) -> Path:
    return data_copy


def break_row(root: Path, task: str, row: int = 1) -> None:
    """Point a train row of `task` at an image that is not there (a file-level problem of that task)."""
    path = root / "train/csv_files" / f"{task}.csv"
    header, rows = read_csv(path)
    rows[row - 1]["image_path"] = "../images/not_there.png"
    write_csv(path, header, rows)


def study(root: Path, tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(root=root))
    return path


def test_problems_of_other_tasks_are_warnings(root: Path, tmp_path: Path) -> None:
    break_row(root, "thyroid_nodule_det", 2)
    break_row(root, "fetal_head", 1)
    job_run = StudyRun.prepare(load_study(study(root, tmp_path)))
    report = job_run.check_data()  # does not raise
    assert len(report.problems) == 2
    assert sorted((p.kind, p.csv_file, p.row) for p in job_run.data_warnings) == [
        ("missing_image", "train/csv_files/fetal_head.csv", 1),
        ("missing_image", "train/csv_files/thyroid_nodule_det.csv", 2),
    ]


def test_problems_of_the_studys_tasks_and_unplaced_rows_block(root: Path, tmp_path: Path) -> None:
    break_row(root, "thyroid_nodule_det", 2)
    break_row(root, "thyroid_malignancy", 3)
    path = root / "train/csv_files" / "fetal_head.csv"
    header, rows = read_csv(path)
    rows[0]["task_id"] = ""  # which task? nobody can tell: it blocks
    write_csv(path, header, rows)
    job_run = StudyRun.prepare(load_study(study(root, tmp_path)))
    with pytest.raises(DataProblems) as exc:
        job_run.check_data()
    blocking = sorted((p.csv_file, p.row) for p in exc.value.problems)
    assert blocking == [("train/csv_files/fetal_head.csv", 1), ("train/csv_files/thyroid_malignancy.csv", 3)]
    assert len(exc.value.report.problems) == 3
    assert "2 problems in this study's tasks" in str(exc.value)


def test_task_of_a_problem_without_a_row_comes_from_its_message(tmp_path: Path) -> None:
    finder = ProblemTasks(tmp_path)
    assert (
        finder.task_of(Problem("split_mismatch", "task cervix is segmentation with num_classes 2 in val")) == "cervix"
    )
    assert finder.task_of(Problem("task_missing", "the study's task FUGC has no rows in the train CSVs")) == "FUGC"
    assert finder.task_of(Problem("x", "task lung_2cls: keypoint outside", "missing.csv", 4)) == "lung_2cls"
    assert finder.task_of(Problem("missing_split", "train/csv_files does not exist")) is None


def test_run_refuses_a_broken_row_in_a_study_task(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    break_row(root, "thyroid_malignancy", 2)
    break_row(root, "fetal_head", 1)
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study(root, tmp_path))], monkeypatch, capsys)
    assert code == 1 and "1 problem in this study's tasks" in out and "thyroid_malignancy.csv row 2" in out
    assert "not training" in out and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_trains_a_study_despite_a_broken_row_elsewhere(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    break_row(root, "fetal_head", 1)
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study(root, tmp_path))], monkeypatch, capsys)
    assert code == 0, out
    assert "warning: 1 problem in tasks this study does not train" in out
    assert "fetal_head.csv row 1" in out and "not_there.png" in out
    assert "no problems in this study's tasks" in out and "1 job selected, 1 to run" in out


@pytest.mark.slow
def test_the_api_returns_the_warnings(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from usagg.run.driver import run_study

    break_row(root, "fetal_head", 1)
    monkeypatch.chdir(tmp_path)
    result = run_study(load_study(study(root, tmp_path)))
    assert result.ok and [(p.csv_file, p.row) for p in result.data_warnings] == [("train/csv_files/fetal_head.csv", 1)]


def test_the_engine_reader_ignores_row_problems_of_tasks_the_job_does_not_train(root: Path) -> None:
    """A row problem the CSV parse finds (a conflicting duplicate) in another task must not stop a job's data."""
    from usagg.data.fmc_uia import read_split
    from usagg.errors import DataError

    path = root / "train/csv_files/fetal_head_position.csv"
    header, rows = read_csv(path)
    twin = dict(rows[0], mask=str((int(rows[0]["mask"]) + 1) % 4))  # the same image with another class
    write_csv(path, header, [*rows, twin])
    with pytest.raises(DataError, match="fetal_head_position"):
        read_split(root, "train")
    samples = read_split(root, "train", {"thyroid_malignancy"})
    assert [s.task_id for s in samples["thyroid_malignancy"]] == ["thyroid_malignancy"] * 8
    with pytest.raises(DataError, match="fetal_head_position"):
        read_split(root, "train", {"thyroid_malignancy", "fetal_head_position"})
