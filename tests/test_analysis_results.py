"""Reading the tidy results table: every problem names the file, row, column and what was expected."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from usagg.analysis.results import COLUMNS, Row, read_results, write_results
from usagg.errors import UsaggError

HEADER = ",".join(COLUMNS)
GOOD = "s,j1,TS,OB,0,1.0,fetal_head,segmentation,DSC,0.81,true,120"


def _csv(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "results.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_a_valid_row(tmp_path: Path) -> None:
    t = read_results(_csv(tmp_path, HEADER, GOOD, "s,j2,CG,OB,1,1,fetal_head,segmentation,HD,,False,120"))
    a, b = t.rows
    assert (a.paradigm, a.seed, a.fraction, a.value, a.higher_is_better, a.n_train) == ("TS", 0, 1.0, 0.81, True, 120)
    assert math.isnan(b.value) and b.higher_is_better is False  # empty value: undefined metric, kept as NaN
    assert t.paradigms == ["TS", "CG"] and t.seeds == [0, 1]


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER.replace(",n_train", ""), GOOD.rsplit(",", 1)[0])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(path) in str(err.value) and "lacks column(s) n_train" in str(err.value)


def test_non_numeric_value_names_row_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD, GOOD.replace("TS", "CG").replace("0.81", "high"))
    with pytest.raises(UsaggError) as err:
        read_results(path)
    msg = str(err.value)
    assert f"{path}: row 2 (line 3), column 'value': expected a number, got 'high'" == msg


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (GOOD.replace(",0,1.0,", ",0.5,1.0,"), "column 'seed': expected an integer seed"),
        (GOOD.replace(",1.0,", ",1.5,"), "column 'fraction': expected a share in (0, 1]"),
        (GOOD.replace("segmentation", "segm"), "column 'type': expected a registered task type (segmentation"),
        (GOOD.replace("true", "maybe"), "column 'higher_is_better': expected true or false"),
        (GOOD.replace(",TS,", ",,"), "column 'paradigm': expected a value, the cell is empty"),
        (GOOD.replace("0.81", "inf"), "column 'value': expected a finite number, or an empty cell (or nan) for a miss"),
        (GOOD.replace("0.81", "-Infinity"), "column 'value': expected a finite number"),
        (GOOD.replace("0.81", "-5"), "column 'value': expected DSC [0, 1] (what DSC can be), got -5"),
        (GOOD.replace("DSC,0.81,true", "HD,-2,false"), "column 'value': expected HD >= 0 (what HD can be), got -2"),
    ],
)
def test_bad_cells(tmp_path: Path, bad: str, expected: str) -> None:
    with pytest.raises(UsaggError, match="row 1 "):
        read_results(_csv(tmp_path, HEADER, bad))
    with pytest.raises(UsaggError) as err:
        read_results(_csv(tmp_path, HEADER, bad))
    assert expected in str(err.value)


def test_duplicates_and_contradictions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsaggError, match="rows 1 and 2 both give DSC") as same:
        read_results(_csv(tmp_path, HEADER, GOOD, GOOD))
    assert "jobs" not in str(same.value)  # one job's row twice: nothing about other spec files
    with pytest.raises(UsaggError) as two:  # two jobs of the same cell: a setting outside the sweep keys differs
        read_results(_csv(tmp_path, HEADER, GOOD, GOOD.replace(",j1,", ",j9,")))
    assert "expected one result each (jobs j1 and j9: they differ in a setting that is not a sweep key" in str(
        two.value
    ) and "usagg run --force" in str(two.value)
    own = GOOD.replace("DSC", "MyScore")  # rows disagreeing on a metric the registry does not know (a known one's
    with pytest.raises(UsaggError, match="metric MyScore is False here but True at row 1"):  # cell must match it)
        read_results(_csv(tmp_path, HEADER, own, own.replace(",0,", ",1,").replace("true", "false")))


@pytest.mark.parametrize(("metric", "cell", "expected"), [("DSC", "false", "true"), ("HD", "true", "false")])
def test_a_direction_against_the_registered_metric_is_refused(
    tmp_path: Path, metric: str, cell: str, expected: str
) -> None:
    """Every row saying DSC is lower-is-better agrees with itself, but would flip the sign of every Δ (and the
    advice): the registered direction decides, and the cell that contradicts it is named."""
    row = GOOD.replace("DSC,0.81,true", f"{metric},0.81,{cell}")
    path = _csv(tmp_path, HEADER, row, row.replace(",0,", ",1,"))
    with pytest.raises(UsaggError) as err:
        read_results(path)
    way = "higher" if expected == "true" else "lower"
    assert str(err.value).startswith(
        f"{path}: row 1 (line 2), column 'higher_is_better': expected {expected} ({metric} is {way}-is-better, as "
        f"registered in usagg/tasktypes), got '{cell}'"
    )
    assert "\n" not in str(err.value)
    unknown = read_results(_csv(tmp_path, HEADER, GOOD.replace("DSC,0.81,true", "MyScore,0.81,false")))
    assert unknown.rows[0].higher_is_better is False  # trusted for a metric the registry does not know


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (
            "s,j2,CG,Thyroid,0,1.0,fetal_head,segmentation,DSC,0.7,true,120",
            "row 2, column 'group': task 'fetal_head' is in group Thyroid here but OB at row 1; expected one "
            "clinical group per task",
        ),
        (
            "s,j2,CG,OB,0,1.0,fetal_head,segmentation,DSC,0.7,true,999",
            "row 2, column 'n_train': task 'fetal_head' at fraction 1 has n_train 999 here but 120 at row 1; expected "
            "one n_train per task and fraction",
        ),
    ],
)
def test_a_tasks_group_or_n_train_contradicted_is_refused(tmp_path: Path, second: str, expected: str) -> None:
    """As a task's type: its group makes the clusters of every cluster test, its n_train the regime and the advice, so
    the first row's is never kept silently (nor a median taken)."""
    with pytest.raises(UsaggError) as err:
        read_results(_csv(tmp_path, HEADER, GOOD, second))
    assert expected in str(err.value)


def test_n_train_may_differ_between_fractions_and_be_left_empty(tmp_path: Path) -> None:
    half = "s,j3,TS,OB,0,0.5,fetal_head,segmentation,DSC,0.7,true,60"
    empty = "s,j4,CG,OB,0,1.0,fetal_head,segmentation,DSC,0.7,true,"
    rows = read_results(_csv(tmp_path, HEADER, GOOD, half, empty)).rows
    assert [r.n_train for r in rows[:2]] == [120, 60] and math.isnan(rows[2].n_train)


def test_missing_file_and_empty_table(tmp_path: Path) -> None:
    with pytest.raises(UsaggError, match="does not exist"):
        read_results(tmp_path / "nope.csv")
    with pytest.raises(UsaggError, match="header but no rows"):
        read_results(_csv(tmp_path, HEADER))


def test_a_binary_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "weights.csv"
    path.write_bytes(bytes(range(128, 256)) * 20)  # no UTF-8 text at all
    with pytest.raises(UsaggError, match=r"weights.csv is not a UTF-8 CSV text file \(UnicodeDecodeError"):
        read_results(path)


def test_the_keys_a_sweep_gives_are_read_as_sweep_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"{HEADER},training.lr_encoder,model.moe.experts", f"{GOOD},,0.001,4")
    table = read_results(path)
    assert table.sweep_keys == ["training.lr_encoder", "model.moe.experts"]
    assert table.points == [(("training.lr_encoder", "0.001"), ("model.moe.experts", "4"))]


@pytest.mark.parametrize(
    ("column", "why"),
    [
        ("training.lr\x1b[2J", "it holds control characters (\\x1b)"),
        ("model.moe\u202eexperts", "it holds control characters (\\u202e)"),
        ("=1+training.lr_encoder", "it begins with =, which a spreadsheet opening usagg's CSV tables would run as a"),
        ("@sum.x", "it begins with @"),
        ("+training.lr_encoder", "it begins with +"),
        ("-training.lr_encoder", "it begins with -"),
        ("notes.v2", "no key a study can sweep ('notes.v2' cannot be swept: the top level has no setting 'notes'"),
        ("training.seeds", "it is no key a study can sweep ('training.seeds' cannot be swept: training has no setting"),
        ("training.lr_encoder.x", "training.lr_encoder is a single value, it has no part 'x'"),
        ("seeds.x", "seeds is a dimension the plan already crosses"),
        ("data.root", "data.root never enters a job's id"),
    ],
)
def test_a_sweep_column_no_sweep_gives_is_refused_by_file_and_column(tmp_path: Path, column: str, why: str) -> None:
    """A dotted header name is read as a swept key, its cells splitting the rows into points: a name with control
    characters, a formula start or no key `sweep:` accepts is refused before any row is read."""
    path = _csv(tmp_path, f"{HEADER},{column}", f"{GOOD},,0.001")
    with pytest.raises(UsaggError) as err:
        read_results(path)
    msg = str(err.value)
    head = f"{path}: header column {column!r}: a column whose name has a dot is read as a swept spec key, but "
    tail = "; expected a key `sweep:` accepts, such as training.lr_encoder, or a name without a dot for a column usagg"
    assert msg.startswith(head) and why in msg and msg.endswith(f"{tail} should leave alone")
    assert "\n" not in msg


def test_a_value_comes_back_to_the_last_bit(tmp_path: Path) -> None:
    """write_results keeps every digit (`repr`): rounded, a simulated store's small Δs were quantised and its item
    scores no longer gave the row's value."""
    values = [0.123456789012345, 1 / 3, 0.0, 1e-17]
    rows = [
        Row("s", f"j{i}", "TS", "G", 0, 1.0, f"t{i}", "segmentation", "DSC", v, True, 100.0)
        for i, v in enumerate(values)
    ]
    write_results(rows, tmp_path / "r.csv")
    assert [r.value for r in read_results(tmp_path / "r.csv").rows] == values
