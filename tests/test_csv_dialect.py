"""A CSV a spreadsheet re-saved with ';' (or tabs) as separator, a BOM and CRLF line ends: both readers, the results
table (usagg/analysis/results.py `parse_results`) and the FMC_UIA index CSVs (usagg/data/fmc_uia.py `_read_csv`),
refuse it in one paragraph saying what the file is and how to save it (`foreign_separator`)."""

from __future__ import annotations

from pathlib import Path

import cli_run
import pytest
from test_data_support import tiny_layout

from usagg.analysis.results import COLUMNS, read_results
from usagg.data.fmc_uia import BASE_COLUMNS, foreign_separator, read_split, scan_split
from usagg.errors import DataError, UsaggError

ROWS = [
    "s,j1,TS,OB,0,1.0,fetal_head,segmentation,DSC,0.81,true,120,40",
    "s,j2,CG,OB,0,1.0,fetal_head,segmentation,DSC,0.84,true,120,40",
]
SAVED = {
    ";": "is separated by ';' (as a spreadsheet in some locales saves CSV); usagg reads comma-separated files: "
    "save it as CSV with commas (UTF-8), numbers with a decimal point (0.81, not 0,81)",
    "\t": "is separated by tabs (as a spreadsheet saves tab-separated text); usagg reads comma-separated files: "
    "save it as CSV with commas (UTF-8), numbers with a decimal point (0.81, not 0,81)",
}


def _spreadsheet_save(path: Path, lines: list[str], separator: str) -> Path:
    """`lines` as a spreadsheet in a decimal-comma locale saves them: BOM, `separator`, 0,81, CRLF."""
    text = "\r\n".join(line.replace(",", separator).replace(".", ",") for line in lines) + "\r\n"
    path.write_bytes(("\ufeff" + text).encode("utf-8"))
    return path


@pytest.mark.parametrize("separator", [";", "\t"])
def test_results_table_saved_by_a_spreadsheet_is_refused_with_what_to_do(tmp_path: Path, separator: str) -> None:
    path = _spreadsheet_save(tmp_path / "semi.csv", [",".join(COLUMNS), *ROWS], separator)
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value) == (
        f"{path} {SAVED[separator]}; expected a tidy results table with columns {', '.join(COLUMNS)}"
    )


def test_the_same_table_with_commas_reads(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([",".join(COLUMNS), *ROWS]) + "\r\n").encode("utf-8"))
    assert [r.value for r in read_results(path).rows] == [0.81, 0.84]


def test_a_comma_separated_table_with_a_semicolon_in_a_column_name_reads(tmp_path: Path) -> None:
    """Only a header the separator explains better than the commas is refused: an extra column named 'a;b' is
    left alone, as any column usagg does not know."""
    path = tmp_path / "results.csv"
    path.write_text("\n".join([",".join([*COLUMNS, "note;remark"]), *(f"{r},x" for r in ROWS)]) + "\n")
    assert len(read_results(path).rows) == 2


@pytest.mark.slow  # the analysis modules' first import
def test_compare_says_it_in_one_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _spreadsheet_save(tmp_path / "semi.csv", [",".join(COLUMNS), *ROWS], ";")
    code, out = cli_run.run_cli(["compare", "--results", str(path), "--baseline", "TS"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out
    assert out.strip() == f"error: {path} {SAVED[';']}; expected a tidy results table with columns {', '.join(COLUMNS)}"


@pytest.mark.parametrize("separator", [";", "\t"])
def test_index_csv_saved_by_a_spreadsheet_is_one_problem_of_its_file(tmp_path: Path, separator: str) -> None:
    root = tiny_layout(tmp_path)
    cls = root / "train/csv_files/cls.csv"
    _spreadsheet_save(cls, cls.read_text(encoding="utf-8").splitlines(), separator)
    scan = scan_split(root, "train")
    expected = f"train/csv_files/cls.csv {SAVED[separator]}; every FMC_UIA CSV needs the columns " + ", ".join(
        BASE_COLUMNS
    )
    assert [(p.kind, p.csv_file, p.message) for p in scan.problems] == [
        ("unreadable_csv", "train/csv_files/cls.csv", expected)
    ]
    assert sorted(scan.samples) == ["det_t", "reg_t", "seg_t"]  # the other CSVs are read as before
    with pytest.raises(DataError, match="is separated by "):
        read_split(root, "train")


def test_data_check_names_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_layout(tmp_path / "data")
    cls = root / "train/csv_files/cls.csv"
    _spreadsheet_save(cls, cls.read_text(encoding="utf-8").splitlines(), ";")
    code, out = cli_run.run_cli(["data", "check", str(root), "--split", "train"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out
    assert f"train/csv_files/cls.csv {SAVED[';']}" in out


@pytest.mark.parametrize(
    ("header", "found"),
    [
        (["image_path;task_id;task_name;num_classes;mask"], ";"),
        (['"image_path";"task_id";"task_name";"num_classes"'], ";"),  # quoted cells
        (["image_path\ttask_id\ttask_name\tnum_classes"], "\t"),
        (["image_path;task_id", "task_name;num_classes"], ";"),  # a comma in the header line as well
        (["image_path", "task_id", "task_name", "num_classes", "a;b"], None),  # commas explain it: read as it is
        (["image_path;notes"], None),  # one expected name: no telling it is the separator
        (["x;y;z"], None),
        ([], None),
    ],
)
def test_foreign_separator_only_where_it_explains_the_header(header: list[str], found: str | None) -> None:
    message = foreign_separator("f.csv", header, BASE_COLUMNS)
    assert message == (f"f.csv {SAVED[found]}" if found else "")
