"""What a dataset's CSVs or a user's path hold reaches the terminal and the catalog as text, never as an instruction.

A control character in a CSV cell is a row problem (an escape sequence in a task id would otherwise reach every
table and message), a task id no spec could name is one too, `usagg data catalog` quotes every value it writes,
and the paths a user gives are escaped before rich reads its markup (`out[/]x` crashed it, `runs[v2]` lost `[v2]`).
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cli_run import run_cli
from rich.console import Console
from test_data_support import CLS_HEADER, tiny_layout, write_csv

from usagg.cli.runs import ConsoleObserver, print_data_warnings
from usagg.data.catalog import DataTask, catalog_text
from usagg.data.check import CheckReport
from usagg.data.fmc_uia import Problem, scan_split
from usagg.spec.load import load_study
from usagg.store import RunStore

ESC_ID = "bl\x1b[31mRED\x1b]0;PWNED\x07"
YAML_ID = "x, type: segmentation, num_classes: 7, group: G}  # "


def _with_rows(root: Path, rows: list[dict]) -> Path:
    """`tiny_layout` plus train/csv_files/evil.csv holding `rows` (classification rows of missing images)."""
    tiny_layout(root)
    base = {"task_name": "classification", "num_classes": 2, "mask": 0}
    write_csv(root / "train/csv_files/evil.csv", CLS_HEADER, [{**base, **r} for r in rows])
    return root


@pytest.fixture
def escapes(tmp_path: Path) -> Path:
    return _with_rows(
        tmp_path / "data",
        [
            {"image_path": "../Classification/evil/a.png", "task_id": ESC_ID},
            {"image_path": "../Classification/evil/b\x1b[2J.png", "task_id": ESC_ID},
        ],
    )


def _console() -> tuple[Console, StringIO]:
    """A console off a terminal (as in a pipe or a log) and the buffer it prints into."""
    buf = StringIO()
    return Console(file=buf, width=250, highlight=False), buf


# --------------------------------------------------------------------------- control characters in the CSVs


def test_a_control_character_in_a_cell_is_a_row_problem_naming_file_row_and_column(escapes: Path) -> None:
    scan = scan_split(escapes, "train")
    found = [(p.kind, p.csv_file, p.row) for p in scan.problems]
    assert found == [
        ("control_character", "train/csv_files/evil.csv", 1),
        ("control_character", "train/csv_files/evil.csv", 2),
    ]
    first, second = scan.problems
    assert "column task_id" in first.message and "column image_path" not in first.message
    assert "column image_path" in second.message and "column task_id" in second.message
    assert "\\x1b" in second.message and not any("\x1b" in p.message or "\x07" in p.message for p in scan.problems)
    assert ESC_ID not in scan.samples and sorted(scan.samples) == ["cls_t", "det_t", "reg_t", "seg_t"]


def test_a_control_character_in_a_csv_name_or_header_is_a_problem_shown_escaped(tmp_path: Path) -> None:
    root = tiny_layout(tmp_path / "data")
    row = {"image_path": "../Classification/cls_t/train_0.png", "task_id": "t2", "task_name": "classification"}
    write_csv(root / "train/csv_files/e\x1b[2J.csv", CLS_HEADER, [{**row, "num_classes": 2, "mask": 0}])
    write_csv(root / "train/csv_files/h.csv", [*CLS_HEADER[:-1], "mask\x1b[8m"], [{**row, "num_classes": 2}])
    problems = scan_split(root, "train").problems
    assert [(p.kind, p.csv_file, p.row) for p in problems] == [
        ("control_character", None, None),
        ("control_character", "train/csv_files/h.csv", None),
    ]
    assert "'e\\x1b[2J.csv'" in problems[0].message and "'mask\\x1b[8m'" in problems[1].message
    assert not any("\x1b" in p.message for p in problems)


def test_data_check_prints_no_escape_sequence(
    escapes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["data", "check", str(escapes)], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out
    assert "\x1b" not in out and "\x07" not in out
    grouped = "control_character train/csv_files/evil.csv rows 1-2 (2 rows): e.g. row 1 (line 2): control characters"
    assert grouped in out  # the two rows one entry (docs/real-data.md), the example's cells
    assert "\\x1b[31mRED" in out  # shown, escaped


def test_validate_lists_other_tasks_control_characters_escaped(
    escapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(
        f"name: esc\nparadigms: [TS]\ndata: {{root: {escapes}}}\n"
        "tasks:\n  - {id: cls_t, type: classification, num_classes: 2}\n"
        "model: {backbone: dinov3_test, image_size: 32}\n"
    )
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert "warning:" in out and "train/csv_files/evil.csv rows 1-2 (2 rows)" in out and "\\x1b[31mRED" in out


def test_problem_lines_and_the_report_show_data_printable() -> None:
    """Whatever a problem carries (a file name, a message from a file check), it reaches the terminal escaped."""
    console, buf = _console()
    problem = Problem("missing_image", "image 'b\x1b[2J.png' not found", "train/csv_files/e\x1b[31m.csv", 2)
    print_data_warnings(console, [problem], CheckReport(Path("root"), ("train",)))
    text = buf.getvalue()
    assert "\x1b" not in text and "e\\x1b[31m.csv row 2" in text and "b\\x1b[2J.png" in text


def test_data_catalog_of_rows_with_control_characters_writes_nothing_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "only_evil"
    (root / "val/csv_files").mkdir(parents=True)
    write_csv(
        root / "train/csv_files/evil.csv",
        CLS_HEADER,
        [{"image_path": "../a.png", "task_id": ESC_ID, "task_name": "classification", "num_classes": 2, "mask": 0}],
    )
    code, out = run_cli(["data", "catalog", str(root)], monkeypatch, capsys)
    assert code == 2 and "\x1b" not in out and "Traceback" not in out
    assert f"usagg data check {root}" in " ".join(out.split())


# --------------------------------------------------------------------------- YAML in a task id, the catalog


@pytest.mark.parametrize("task_id", [YAML_ID, "has space", "-lead", "x" * 81])
def test_a_task_id_no_spec_could_name_is_a_row_problem(
    task_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _with_rows(tmp_path / "data", [{"image_path": "../Classification/cls_t/train_0.png", "task_id": task_id}])
    scan = scan_split(root, "train")
    assert [(p.kind, p.csv_file, p.row) for p in scan.problems] == [("bad_task_id", "train/csv_files/evil.csv", 1)]
    assert "no spec could name this task" in scan.problems[0].message
    code, out = run_cli(["data", "check", str(root), "--split", "train"], monkeypatch, capsys)
    assert code == 1 and "bad_task_id train/csv_files/evil.csv row 1" in out


def test_catalog_values_are_quoted_yaml_and_the_root_comment_stays_one_line() -> None:
    found = {
        YAML_ID: DataTask(YAML_ID, "classification", 2, ("train",)),
        "2024": DataTask("2024", "segmentation", 3, ("train",)),
        "ok": DataTask("ok", "detection", 1, ("train", "val")),
    }
    text = catalog_text(Path("/data\nname: injected\x1b[2J"), found, {"ok": "G1", "2024": "Head: x, y"})
    loaded = yaml.safe_load(text)
    assert list(loaded) == ["tasks"] and "\x1b" not in text
    assert loaded["tasks"] == [
        {"id": YAML_ID, "type": "classification", "num_classes": 2},
        {"id": "2024", "type": "segmentation", "num_classes": 3, "group": "Head: x, y"},
        {"id": "ok", "type": "detection", "num_classes": 1, "group": "G1"},
    ]
    assert text.splitlines()[0] == (
        "# Task catalog written by `usagg data catalog` from the CSVs of /data\\nname: injected\\x1b[2J."
    )
    # plain values stay plain and aligned, as the packaged catalogs are written
    assert "  - {id: ok,  " in text and "type: detection, num_classes: 1, group: G1}" in text


def test_catalog_refuses_a_group_no_spec_could_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_layout(tmp_path / "data")
    groups = tmp_path / "groups.yaml"
    groups.write_text("'Head & Neck': [cls_t]\n")
    code, out = run_cli(["data", "catalog", str(root), "--groups", str(groups)], monkeypatch, capsys)
    assert code == 2 and "'Head & Neck' is not a name a study can give a group" in " ".join(out.split())


# --------------------------------------------------------------------------- paths as rich markup


TINY = """name: tiny
output_root: {output_root}
paradigms: [TS]
data:
  synthetic: {{image_size: 32, sizes: {{breast_lesion_cls: 4}}, val_size: 2}}
tasks_from: {{catalog: synthetic, include: [breast_lesion_cls]}}
model: {{backbone: dinov3_test, image_size: 32{weights}}}
"""


def _spec(path: Path, output_root: str, weights: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = f", weights: {weights!r}" if weights else ""
    path.write_text(TINY.format(output_root=repr(output_root), weights=extra))
    return path


@pytest.mark.parametrize("output_root", ["out[/]x", "runs[v2]", "[link=https://evil.example]runs", "[red]r"])
def test_validate_shows_the_users_paths_as_written(
    output_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path / "a[" / "]b.yaml", output_root, weights="w[red]/x.pth")
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and "Traceback" not in out, out
    assert f"ok: {spec} is a valid study tiny (run store {Path(output_root) / 'tiny'})" in said
    assert f"model.weights {tmp_path / 'a[' / 'w[red]/x.pth'} does not exist yet" in said


@pytest.mark.parametrize("folder", ["mk[/]", "mk2[red]", "runs[v2]"])
def test_repair_shows_the_store_path_as_written(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.plan import plan

    store = RunStore(tmp_path / folder / "tiny")
    store.init("name: tiny\n", plan(load_study(_spec(tmp_path / "s.yaml", "runs"))))
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out, out
    assert f"{store.root}: nothing damaged" in out


def test_run_prints_the_store_and_results_paths_as_written(tmp_path: Path) -> None:
    """`usagg run`'s lines naming the store (`store_ready`) and the results (`finished`), without training."""
    store = SimpleNamespace(root=tmp_path / "out[/]x" / "tiny", repairs=[])
    run = SimpleNamespace(
        store=store, skipped_failed=[], study=SimpleNamespace(name="tiny"), jobs=[1], todo=[1], done=[], twins={}
    )
    console, buf = _console()
    observer = ConsoleObserver(console, quiet=True)
    observer.quiet = False  # store_ready speaks only when not quiet; finished then prints no table
    observer.store_ready(run)  # type: ignore[arg-type]
    observer.quiet = True
    observer.finished(run, SimpleNamespace(states={}, results_csv=store.root / "results.csv"))  # type: ignore[arg-type]
    text = " ".join(buf.getvalue().split())  # type: ignore[attr-defined]
    assert f"; store {store.root}" in text and f"results: {store.root / 'results.csv'}" in text
