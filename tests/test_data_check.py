"""`usagg data check`: a corrupted synthetic dataset reports each planted problem once, by CSV file and row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_support import read_csv, write_csv

from usagg.data.check import check_dataset
from usagg.data.synth import generate_benchmark
from usagg.errors import DataError
from usagg.run.checks import DataProblems
from usagg.spec.models import SynthSpec, TaskSpec

# kind -> (task CSV, data row) where the corruption below plants it
PLANTED = {
    "missing_image": ("fetal_head", 1),
    "missing_mask": ("fetal_head", 2),
    "unreadable_image": ("fetal_head", 3),
    "mask_values": ("thyroid_nodule", 1),
    "size_mismatch": ("thyroid_nodule", 2),
    "box_outside": ("thyroid_nodule_det", 1),
    "bad_box": ("thyroid_nodule_det", 2),
    "task_name_mismatch": ("thyroid_nodule_det", 3),
    "keypoints_json": ("fetal_head_biometry", 1),
    "keypoints_count": ("fetal_head_biometry", 2),
    "path_outside_root": ("fetal_head_biometry", 3),
    "label_out_of_range": ("thyroid_malignancy", 1),
    "num_classes_mismatch": ("thyroid_malignancy", 2),
    "duplicate_row": ("breast_lesion_cls", 9),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "data", SynthSpec(image_size=64, default_size=8, val_size=4)
    )


def _edit(root: Path, task: str, edit: Callable[[list[dict]], None]) -> None:
    path = root / "train/csv_files" / f"{task}.csv"
    header, rows = read_csv(path)
    edit(rows)
    header = list(dict.fromkeys([*header, *(k for r in rows for k in r)]))
    write_csv(path, header, rows)


def corrupt(root: Path) -> None:
    """Plant exactly one instance of each problem `usagg data check` knows (see PLANTED)."""
    train = root / "train"

    def fetal_head(rows: list[dict]) -> None:
        rows[0]["image_path"] = rows[0]["image_path"].replace("_00000.png", "_missing.png")
        rows[1]["mask_path"] = rows[1]["mask_path"].replace("_00001.png", "_missing.png")
        broken = "../Segmentation/Two/fetal_head/images/broken.png"
        (train / "csv_files" / broken).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        rows[2]["image_path"] = broken

    def thyroid_nodule(rows: list[dict]) -> None:
        for i, (name, arr) in enumerate(
            [("bad_values.png", np.full((64, 64), 2, np.uint8)), ("bad_size.png", np.zeros((32, 48), np.uint8))]
        ):
            rel = f"../Segmentation/Two/thyroid_nodule/masks/{name}"
            Image.fromarray(arr).save(train / "csv_files" / rel)
            rows[i]["mask_path"] = rel

    def detection(rows: list[dict]) -> None:
        rows[0]["x_max"] = "70"
        rows[1]["x_min"] = rows[1]["x_max"]
        rows[2]["task_name"] = "classification"

    def regression(rows: list[dict]) -> None:
        rows[0]["point_1_xy"] = "[12, oops"
        rows[1]["point_3_xy"] = "[1, 2]"  # a point past num_classes; a missing one reads as (0, 0)
        rows[2]["image_path"] = "../../../../outside.png"

    def malignancy(rows: list[dict]) -> None:
        rows[0]["mask"] = "2"
        rows[1]["num_classes"] = "3"

    _edit(root, "fetal_head", fetal_head)
    _edit(root, "thyroid_nodule", thyroid_nodule)
    _edit(root, "thyroid_nodule_det", detection)
    _edit(root, "fetal_head_biometry", regression)
    _edit(root, "thyroid_malignancy", malignancy)
    _edit(root, "breast_lesion_cls", lambda rows: rows.append(dict(rows[0])))


@pytest.fixture(scope="module")
def corrupted(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corrupt") / "data"
    shutil.copytree(synth, root)
    corrupt(root)
    return root


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "usagg", *args], capture_output=True, text=True, timeout=60)


def test_clean_synthetic_dataset_passes(synth: Path) -> None:
    report = check_dataset(synth)
    assert report.ok, report.problems
    assert len(report.tasks) == 9
    head = report.tasks["fetal_head_position"]
    assert (head.type, head.num_classes, head.images) == ("classification", 4, {"train": 8, "val": 4})
    assert sum(head.labels.values()) == 12 and set(head.labels) <= {"0", "1", "2", "3"}
    assert report.tasks["cardiac_chambers"].min_hw == (64, 64)
    assert report.tasks["fetal_head_biometry"].labels == {"2 points": 12}


def test_each_planted_problem_is_reported_once(corrupted: Path) -> None:
    report = check_dataset(corrupted)
    kinds = Counter(p.kind for p in report.problems)
    assert kinds == Counter(list(PLANTED)), [p.to_dict() for p in report.problems]
    for p in report.problems:
        task, row = PLANTED[p.kind]
        assert (p.csv_file, p.row) == (f"train/csv_files/{task}.csv", row)
    by_kind = {p.kind: p.message for p in report.problems}
    assert "values [2]" in by_kind["mask_values"] and "48x32" in by_kind["size_mismatch"]
    assert "expected 2 keypoints" in by_kind["keypoints_count"]
    assert "first at train/csv_files/breast_lesion_cls.csv row 1" in by_kind["duplicate_row"]
    assert "with the same label" in by_kind["duplicate_row"]  # a differing label is conflicting_duplicate


@pytest.mark.slow  # two `usagg data check` subprocess runs
def test_cli_lists_problems_by_file_and_row_and_exits_1(corrupted: Path) -> None:
    result = _cli("data", "check", str(corrupted))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "14 problems" in result.stdout
    for kind, (task, row) in PLANTED.items():
        line = next(ln for ln in result.stdout.splitlines() if kind in ln)
        assert f"train/csv_files/{task}.csv row {row} (line {row + 1})" in line

    as_json = _cli("data", "check", str(corrupted), "--split", "val", "--json")
    assert as_json.returncode == 0  # the corruption is in train only
    payload = json.loads(as_json.stdout)
    assert payload["ok"] and payload["splits"] == ["val"] and payload["tasks"]["fetal_head"]["images"] == {"val": 4}


def test_cli_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    result = _cli("data", "check", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_split_given_for_the_root_names_the_root(
    synth: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg data check data/train` printed an empty table and two missing splits (data/train/train, ...): the
    folder is itself a split, so the message names the dataset root and the command to check it."""
    from cli_run import run_cli

    monkeypatch.chdir(synth.parent)
    code, text = run_cli(["data", "check", "data/train"], monkeypatch, capsys)
    text = " ".join(text.split())
    assert code == 2 and "Traceback" not in text and "missing_split" not in text
    assert "data/train looks like the train split of data, not a dataset root" in text
    assert "Give the dataset root: usagg data check data (add --split train to check this split only)" in text
    with pytest.raises(DataError, match=f"the val split of {synth},"):
        check_dataset(synth / "val")


def test_study_tasks_are_checked_against_the_data(synth: Path, tmp_path: Path) -> None:
    tasks = [
        TaskSpec(id="fetal_head", type="segmentation", num_classes=2),
        TaskSpec(id="thyroid_malignancy", type="classification", num_classes=3),
        TaskSpec(id="lung_b_lines", type="classification", num_classes=2),
    ]
    report = check_dataset(synth, tasks=tasks, splits=("train",))
    assert [(p.kind, p.csv_file) for p in report.problems] == [("spec_mismatch", None), ("task_missing", None)]
    assert "num_classes 3" in report.problems[0].message and "lung_b_lines" in report.problems[1].message
    message = str(DataProblems(report))  # what `usagg run` raises for them (usagg/run/checks.py check_study_data)
    assert message.startswith(f"the dataset at {synth} has 2 problems in this study's tasks; not training:")
    assert "spec_mismatch" in message and "task_missing" in message

    only_train = tmp_path / "data"
    shutil.copytree(synth / "train", only_train / "train")
    missing_val = check_dataset(only_train)
    assert [p.kind for p in missing_val.problems] == ["missing_split"]
