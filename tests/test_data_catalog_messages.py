"""`usagg validate` against data that lacks some of the study's tasks: one sentence (how many, which, what the data
has), the `--set 'tasks_from.include=[...]'` that keeps the rest (and works), a did-you-mean for a CSV's case slip;
a `data.root` at a split folder names the dataset root."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from cli_run import error_paragraph, run_cli

from usagg.data.synth import generate_benchmark
from usagg.spec.models import SynthSpec

#: Tasks the synthetic benchmark generates (id, type, num_classes).
PRESENT = [
    ("thyroid_malignancy", "classification", 2),
    ("thyroid_nodule_det", "detection", 1),
    ("fetal_head", "segmentation", 2),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "data", SynthSpec(image_size=32, default_size=4, val_size=2)
    )


def write_study(folder: Path, root: Path, tasks: list[tuple[str, str, int]]) -> Path:
    """A study taking `tasks` from a catalog file beside it (with a group each), as `usagg init --from fmc_uia`."""
    catalog = folder / "catalog.yaml"
    entries = [{"id": i, "type": t, "num_classes": k, "group": f"G{n % 2}"} for n, (i, t, k) in enumerate(tasks)]
    catalog.write_text(yaml.safe_dump({"tasks": entries}))
    study = folder / "study.yaml"
    spec = {
        "name": "partial",
        "paradigms": ["TS"],
        "data": {"root": str(root)},
        "tasks_from": {"catalog": "catalog.yaml"},
        "model": {"backbone": "dinov3_test", "image_size": 32},
    }
    study.write_text(yaml.safe_dump(spec))
    return study


def test_absent_tasks_are_one_sentence_and_the_include_it_gives_works(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = [(f"organ_{n:02d}", "classification", 3) for n in range(11)]
    study = write_study(tmp_path, root, [PRESENT[0], *absent[:5], *PRESENT[1:], *absent[5:]])
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    named = ", ".join(i for i, _, _ in absent[:8])
    assert f"11 of the study's 14 tasks are not in the data ({named} and 3 more); the data has " in text
    assert text.count("organ_08") == 0 and text.count("; the data has ") == 1  # capped, said once
    assert "did you mean" not in text and "usagg data catalog" not in text
    keep = "--set 'tasks_from.include=[thyroid_malignancy,thyroid_nodule_det,fetal_head]'"
    assert f"To fix it, keep only the 3 tasks the data has: {keep} (or the same `include:` under" in text
    assert len(text) < 1000

    match = re.search(r"--set ('[^']*')", text)
    assert match is not None
    code, out = run_cli(["validate", str(study), "--set", shlex.split(match.group(1))[0]], monkeypatch, capsys)
    assert code == 0 and "the study's 3 tasks match the CSVs (train/val)" in out, out
    assert "groups: G0 2, G1 1" in out  # the catalog's groups kept


def test_a_case_slip_gets_a_did_you_mean_and_no_include(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSV says fetal_head and the study Fetal_Head (or the other way round): the same task, misspelt."""
    study = write_study(tmp_path, root, [*PRESENT[:2], ("Fetal_Head", "segmentation", 2)])
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert "1 of the study's 3 tasks is not in the data (Fetal_Head (did you mean 'fetal_head'?))" in text
    assert "make the ids match the CSVs' task_id column exactly, case too (study Fetal_Head, CSVs fetal_head)" in text
    assert "tasks_from.include" not in text


def test_a_task_the_study_uses_is_no_slip_of_another(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """FMC_UIA's IUGC and FUGC, fetal_head and fetal_femur are distinct tasks: no did-you-mean between them."""
    study = write_study(tmp_path, root, [*PRESENT, ("fetal_headd", "segmentation", 2)])
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and "(fetal_headd); the data has" in text and "did you mean" not in text
    assert "tasks_from.include=[thyroid_malignancy,thyroid_nodule_det,fetal_head]" in text


def test_no_task_in_the_data_points_at_the_root(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, root, [("organ_cls", "classification", 3)])
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and "1 of the study's 1 task is not in the data (organ_cls)" in text
    assert f"check data.root, or take the tasks from the data: usagg data catalog {root} --out tasks.yaml" in text


def test_a_split_folder_as_root_names_the_dataset_root(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, root / "train", PRESENT)
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert f"{root / 'train'} looks like the train split of {root}, not a dataset root" in text
    assert text.endswith(f"Give the dataset root: {root}.") and "no index CSVs" not in text
    code, out = run_cli(["data", "catalog", str(root / "val")], monkeypatch, capsys)
    assert code == 2 and f"looks like the val split of {root}" in error_paragraph(out)
    # the one message `usagg data check` gives, with the command to run: the path as typed, relative stays relative
    monkeypatch.chdir(root.parent)
    code, out = run_cli(["data", "catalog", f"{root.name}/val"], monkeypatch, capsys)
    text = error_paragraph(out)
    name = root.name
    assert code == 2 and text.startswith(f"error: {name}/val looks like the val split of {name}, not a dataset root")
    assert text.endswith(f"Give the dataset root: usagg data catalog {root.name}.") and "--split" not in text
