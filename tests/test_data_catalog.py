"""`usagg data catalog` writes a loadable `tasks:` block from the CSVs; `validate` checks tasks against them (13.5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_run import run_cli

from usagg.data.synth import generate_benchmark
from usagg.spec.load import load_study
from usagg.spec.models import SynthSpec

STUDY = """
name: cat
paradigms: [TS]
data: {{root: {root}}}
tasks_from: {{catalog: {catalog}}}
model: {{backbone: dinov3_test, image_size: 32}}
"""

TASKS_STUDY = """
name: val
paradigms: [TS]
data: {{root: {root}}}
tasks:
  - {{id: thyroid_malignancy, type: classification, num_classes: {k}}}
  - {{id: {det}, type: detection, num_classes: 1}}
model: {{backbone: dinov3_test, image_size: 32}}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "data", SynthSpec(image_size=32, default_size=4, val_size=2)
    )


def test_catalog_with_groups_loads_as_a_study_catalog(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text("Thyroid: [thyroid_malignancy, thyroid_nodule, thyroid_nodule_det]\nOB: [fetal_head]\n")
    out = tmp_path / "cat" / "tasks.yaml"
    code, text = run_cli(
        ["data", "catalog", str(root), "--groups", str(groups), "--out", str(out)], monkeypatch, capsys
    )
    assert code == 0 and "wrote 9 tasks" in text
    tasks = {t["id"]: t for t in yaml.safe_load(out.read_text())["tasks"]}
    assert len(tasks) == 9
    assert tasks["thyroid_nodule_det"] == {
        "id": "thyroid_nodule_det",
        "type": "detection",
        "num_classes": 1,
        "group": "Thyroid",
    }
    assert tasks["cardiac_chambers"] == {"id": "cardiac_chambers", "type": "segmentation", "num_classes": 4}
    assert tasks["fetal_head_biometry"]["type"] == "regression" and tasks["fetal_head"]["group"] == "OB"

    spec = tmp_path / "study.yaml"
    spec.write_text(STUDY.format(root=root, catalog=out))
    study = load_study(spec)
    assert [t.id for t in study.tasks] == sorted(tasks)
    code, text = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0 and "match the CSVs (train/val)" in text

    # no overwrite without --force
    code, text = run_cli(["data", "catalog", str(root), "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and "--force" in text and "group: Thyroid" in out.read_text()
    code, text = run_cli(["data", "catalog", str(root), "--out", str(out), "--force"], monkeypatch, capsys)
    assert code == 0 and ", group: " not in out.read_text()


def test_catalog_prints_and_refuses_bad_groups(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["data", "catalog", str(root)], monkeypatch, capsys)
    assert code == 0 and text.count("  - {id: ") == 9
    groups = tmp_path / "groups.yaml"
    groups.write_text("OB: [fetal_hed]\n")
    code, text = run_cli(["data", "catalog", str(root), "--groups", str(groups)], monkeypatch, capsys)
    assert code == 2 and "'fetal_hed'" in text
    groups.write_text("OB: [fetal_head]\nHead: [fetal_head]\n")
    code, text = run_cli(["data", "catalog", str(root), "--groups", str(groups)], monkeypatch, capsys)
    assert code == 2 and "two groups" in text
    code, text = run_cli(["data", "catalog", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "no index CSVs" in text


@pytest.mark.parametrize(
    ("k", "det", "expected"),
    [
        (
            3,
            "thyroid_nodule_det",
            "task thyroid_malignancy: the study says classification with num_classes 3, "
            "the CSVs say classification with num_classes 2",
        ),
        (
            2,
            "thyroid_nodule_dett",
            "1 of the study's 2 tasks is not in the data (thyroid_nodule_dett (did you mean 'thyroid_nodule_det'?))",
        ),
    ],
)
def test_validate_names_the_task_the_data_contradicts(
    root: Path,
    tmp_path: Path,
    k: int,
    det: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(TASKS_STUDY.format(root=root, k=k, det=det))
    code, text = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 2 and expected in " ".join(text.split()), text


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_catalog_of_a_root_that_is_no_folder_says_so_as_data_check_does(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real-data audit (F14): a mistyped root got "has no index CSVs in train/csv_files/ or val/csv_files/"."""
    root = tmp_path / "FMC_UIA"
    if kind == "file":
        root.write_text("not a folder\n")
    said = {}
    for command in ("catalog", "check"):
        code, out = run_cli(["data", command, str(root)], monkeypatch, capsys)
        said[command] = (code, " ".join(out.split()))
    assert (
        said["catalog"]
        == said["check"]
        == (
            2,
            f"error: dataset root {root} does not exist or is not a folder; expected the FMC_UIA layout (train/, val/)",
        )
    )
