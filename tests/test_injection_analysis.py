"""Data never becomes a formula, markup or math: what a results table or a stored spec names reaches the CSV tables,
report.md, report.html and the figures as text, and a table that could not be one is refused by row and column."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pydantic import ValidationError

from tests.cli_run import run_cli
from usagg.analysis.inputs import load_input
from usagg.analysis.points import write_points_report
from usagg.analysis.render import to_csv
from usagg.analysis.report import md_text
from usagg.analysis.results import COLUMNS, read_results
from usagg.analysis.summary import Analysis, analyse, compare_output
from usagg.analysis.tables import Table
from usagg.errors import UsaggError
from usagg.spec.models import Expectation

HEADER = ",".join(COLUMNS)
TASKS = (("breast_lesion", "Breast"), ("fetal_head", "Fetal"))


def _rows(
    tasks: tuple[tuple[str, str], ...] = TASKS, n_train: str = "14", steps: str = "2", extra: str = ""
) -> list[str]:
    """TS and AU on each task, one seed, ACC only: the smallest table the analysis reads."""
    out = []
    for i, (task, group) in enumerate(tasks):
        for paradigm, value in (("TS", 0.5 + 0.1 * i), ("AU", 0.6 - 0.1 * i)):
            job = f"{paradigm}-{task}-f1-s0-e59a4247"
            out.append(
                f"s,{job},{paradigm},{group},0,1.0,{task},classification,ACC,{value},true,{n_train},{steps}{extra}"
            )
    return out


def _csv(tmp_path: Path, lines: list[str], name: str = "results.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """A study swept over values that would run in a spreadsheet or open HTML and a link in report.md."""
    values = ("0.1", "<img src=x onerror=alert(1)>", "[click](https://evil.example)", "=1+1")
    rows = [f'{r},"{v}"' for v in values for r in _rows()]
    path = _csv(tmp_path_factory.mktemp("swept"), [HEADER + ",training.lr_encoder", *rows])
    return analyse(load_input(None, path))


@pytest.fixture
def usagg(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """`usagg ARGS` through the real entry point in folder `cwd`: (exit code, stdout + stderr)."""

    def call(*args: str, cwd: Path) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        return run_cli(list(args), monkeypatch, capsys)

    return call


# ----- 4: spreadsheet formulas


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("task", "=cmd|' /C calc'!A0"),
        ("task", "@SUM(1+1)*cmd|x"),
        ("group", "+Breast"),
        ("paradigm", "-TS"),
        ("job_id", '=HYPERLINK("x")'),
    ],
)
def test_a_name_a_spreadsheet_would_run_is_refused(tmp_path: Path, column: str, cell: str) -> None:
    cells = _rows()[1].split(",")
    cells[COLUMNS.index(column)] = f'"{cell}"' if '"' not in cell else '"' + cell.replace('"', '""') + '"'
    path = _csv(tmp_path, [HEADER, _rows()[0], ",".join(cells)])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value).startswith(
        f"{path}: row 2 (line 3), column {column!r}: expected a name starting with a letter or digit, got {cell!r}"
    )


def test_a_table_usagg_writes_still_reads(tmp_path: Path) -> None:
    """The store leaves a task without a group empty, the simulator writes "-": neither is refused."""
    rows = [r.replace(",Breast,", ",,").replace(",Fetal,", ",-,") for r in _rows()]
    assert {r.group for r in read_results(_csv(tmp_path, [HEADER, *rows])).rows} == {"-"}


def test_an_expectation_name_a_spreadsheet_would_run_is_refused() -> None:
    kind = {"metric_of": "TS", "above": 0.5}
    with pytest.raises(ValidationError, match="begins with '='; start the name with a letter or digit"):
        Expectation(name='=HYPERLINK("https:"&"//evil.example","x")', **kind)
    for bad in ("+1", "-x", "@x"):
        with pytest.raises(ValidationError, match="a spreadsheet reads a cell beginning with"):
            Expectation(name=bad, **kind)
    assert Expectation(name="5 % better than chance", **kind).name == "5 % better than chance"


def test_csv_cells_that_would_run_are_quoted_and_numbers_kept() -> None:
    dde = "-1+1+cmd|' /C calc'!A0"  # number-led (OWASP's example): a leading digit once let it through
    cells = ["=1+1", "@SUM(A1)", "+x", "-x", dde, "-5.3", "+19.0 [12.4, 26.6]", "+1.2 pp [-0.5, +2.9]", "-1e-05"]
    cells += ["-.5", "-", "TS", 1.5, -2.0, None]
    out = to_csv(Table("t", "t", ["=col", *(f"c{i}" for i in range(len(cells) - 1))], [cells]))
    header, row = out.splitlines()
    assert header.startswith("'=col,c0,")
    assert row == (
        "'=1+1,'@SUM(A1),'+x,'-x,'-1+1+cmd|' /C calc'!A0,-5.3,\"+19.0 [12.4, 26.6]\",\"+1.2 pp [-0.5, +2.9]\","
        "-1e-05,-.5,-,TS,1.5,-2.0,"
    )


def test_compare_csv_quotes_a_sweep_value_that_would_run(swept: Analysis) -> None:
    out = compare_output(swept, "csv")  # what `usagg compare --format csv` prints
    assert "\n'=1+1," in out and "\n=1+1" not in out and "\n0.1," in out


# ----- 5, 12: counts, cells, columns and lines


@pytest.mark.parametrize("column", ["n_train", "steps"])
@pytest.mark.parametrize("count", ["inf", "-inf", "nan", "-3"])
def test_a_count_must_be_finite(tmp_path: Path, column: str, count: str) -> None:
    rows = _rows(**{column: count})
    path = _csv(tmp_path, [HEADER, *rows])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value) == (
        f"{path}: row 1 (line 2), column {column!r}: expected a finite count >= 0, or an empty cell where the "
        f"table does not say, got {count!r}"
    )


def test_an_empty_count_is_not_said(tmp_path: Path) -> None:
    row = read_results(_csv(tmp_path, [HEADER, *_rows(n_train="", steps="")])).rows[0]
    assert math.isnan(row.n_train) and math.isnan(row.steps)


def test_compare_of_an_infinite_count_exits_2(tmp_path: Path, usagg: Callable[..., tuple[int, str]]) -> None:
    path = _csv(tmp_path, [HEADER, *_rows(n_train="inf", steps="inf")], "t13.csv")
    code, out = usagg("compare", "--results", str(path), cwd=tmp_path)
    assert code == 2 and "t13.csv: row 1 (line 2), column 'n_train': expected a finite count" in out
    assert "Traceback" not in out


def test_a_row_with_an_extra_cell_is_refused(tmp_path: Path) -> None:
    rows = _rows()
    path = _csv(tmp_path, [HEADER, rows[0], rows[1] + ",surplus", *rows[2:]])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value).startswith(f"{path}: row 2 (line 3) has 14 cells, expected at most 13")


def test_a_repeated_header_column_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER + ",task", *_rows(extra=",other")])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value) == (
        f"{path}: the header gives column(s) 'task' (columns 7 and 14) more than once; expected each column once"
    )


def test_lines_count_blank_lines(tmp_path: Path) -> None:
    rows = _rows()
    cells = rows[3].split(",")
    cells[COLUMNS.index("value")] = "oops"
    bad = ",".join(cells)
    path = _csv(tmp_path, [HEADER, rows[0], "", rows[1], "", "", rows[2], bad])
    with pytest.raises(UsaggError) as err:
        read_results(path)
    assert str(err.value) == f"{path}: row 4 (line 8), column 'value': expected a number, got 'oops'"


# ----- 6: names drawn as written, never as math


@pytest.mark.slow  # draws every figure of a two-task study
def test_a_name_with_dollars_is_drawn(tmp_path: Path, usagg: Callable[..., tuple[int, str]]) -> None:
    path = _csv(tmp_path, [HEADER, *_rows((("x$\\foo{$y", "Breast"), ("a$x^2$b", "Fetal")))], "math.csv")
    code, out = usagg("plot", "--results", str(path), "--out", str(tmp_path / "pl1"), cwd=tmp_path)
    assert code == 0, out
    assert (tmp_path / "pl1" / "fig3_delta.png").is_file()


# ----- 8, 9: Markdown links and HTML


@pytest.mark.parametrize(
    "text",
    [
        "[click me](https://evil.example/x)",
        "![x](https://evil.example/x.png)",
        "\\[click](https://evil.example)",
        "a](https://evil.example) [b",
        "[r]\n\n[r]: https://evil.example",
        "<https://evil.example>",
        "<img src=https://evil.example/x onerror=alert(1)>",
    ],
)
def test_md_text_makes_no_link_image_or_tag(text: str) -> None:
    html = MarkdownIt("commonmark", {"html": False}).render(f"- {md_text(text)}")
    assert "<a " not in html and "<img" not in html and "evil.example" in html


def test_md_text_reads_as_written() -> None:
    html = MarkdownIt("commonmark").render(md_text("[-8.2, +4.0] \\ ![x] n < 4"))
    assert html == "<p>[-8.2, +4.0] \\ ![x] n &lt; 4</p>\n"


def test_swept_report_escapes_the_sweep_values(swept: Analysis, tmp_path: Path) -> None:
    write_points_report(swept, tmp_path / "rep2", lambda sub, out: [])
    md = (tmp_path / "rep2" / "report.md").read_text(encoding="utf-8")
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "<img" not in html and 'href="https://evil' not in html
    assert 'href="point2_lr_encoder-_img_src_x_onerror_alert_1__/report.md"' in html
    assert "training.lr_encoder=&lt;img src=x onerror=alert(1)&gt;" in html


def test_compare_markdown_escapes_names_and_sweep_values(swept: Analysis, tmp_path: Path) -> None:
    """`compare --format markdown` (a file a user renders) carries no tag, link or image from the results: its tables
    and a swept study's point headings go through md_text, as report.md does."""
    md = compare_output(swept, "markdown")
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "<img" not in html and 'href="https://evil' not in html
    assert "## Sweep point training.lr_encoder=&lt;img src=x onerror=alert(1)>" in md
    names = (("<b>x</b>", "G"), ("[y](https://evil.example)", "G"), ("z", "H"))
    a = analyse(load_input(None, _csv(tmp_path, [HEADER, *_rows(names)])))
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(compare_output(a, "markdown"))
    assert "<b>" not in html and "<a " not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_a_swept_report_never_overwrites_a_report_md_it_did_not_write(swept: Analysis, tmp_path: Path) -> None:
    """The swept branch of `write_report` wrote paper/report.md over the user's own (an auditor's find): it is
    refused before any point is written, and a swept report marks its folder as usagg's (the manifest)."""
    from usagg.analysis.report import MANIFEST, write_report
    from usagg.errors import UsaggError

    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "report.md").write_text("MY OWN PAPER\n")
    with pytest.raises(UsaggError, match=r"report\.md exists"):
        write_report(swept, paper, render=lambda a, out, fmt, dpi: [])
    assert [p.name for p in paper.iterdir()] == ["report.md"] and (paper / "report.md").read_text() == "MY OWN PAPER\n"
    ours = tmp_path / "ours"
    write_report(swept, ours, render=lambda a, out, fmt, dpi: [])
    assert (ours / MANIFEST).is_file() and "sweep points" in (ours / "report.md").read_text()
    write_report(swept, ours, render=lambda a, out, fmt, dpi: [])  # its own: regenerated
