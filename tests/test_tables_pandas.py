"""Issue 29.9: the report's tables are rendered by pandas (`to_markdown` through tabulate, `Styler.to_latex`,
`to_csv`); these tests read each rendering back and hold it to the numbers of the Table it came from.

The expected cells are worked out here from the raw values, by the conventions the report states (Δ signed with one
decimal, affinities with four, other floats three decimals below 10 and one above, "—" for a missing value and
"n/a" for a missing Δ), with tolerances and patterns rather than the renderer's own formatting code. The report is
written for a demo-shaped simulated study (nine synthetic tasks, six paradigms, AG with an affinity record) with its
real figures, and held to tools/report_check.py's checks that need no browser.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from usagg.affinity import Affinity, write_affinity
from usagg.analysis.inputs import load_input
from usagg.analysis.render import latex_escape, render, to_csv, to_latex, to_markdown, to_text
from usagg.analysis.report import md_text, write_report
from usagg.analysis.report_html import png_size
from usagg.analysis.simulate import simulate_run_store
from usagg.analysis.summary import Analysis, all_tables, analyse
from usagg.analysis.tables import Cellv, Interval, Table, delta_long_table
from usagg.atomic import read_json
from usagg.data.synth.tasks import TASKS as SYNTH
from usagg.store import RunStore

REPO = Path(__file__).resolve().parents[1]
MEASURING = "AU-all-f1-s0"


def _report_check() -> ModuleType:
    """tools/report_check.py as a module (its browser is imported only when it checks a page)."""
    spec = importlib.util.spec_from_file_location("report_check", REPO / "tools" / "report_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the conventions, stated independently of usagg/analysis/render.py ---------------------------------------


def _is_number(v: Cellv) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_cell(col: str, v: Cellv, shown: str, where: str, column: list[Cellv], sig: bool = False) -> None:
    """`shown` is how the report's conventions show value `v` of column `col`, whose values are `column`: a column's
    plain floats share one number of decimals (3 where any is below 10 in size, else 1), whole numbers only where
    all are and one reaches 10; a `sig` column's (`Table.significant`) each to 3 significant digits."""
    if v is None:
        assert shown == ("n/a" if col.startswith("Δ") else "—"), where
    elif isinstance(v, Interval):  # its text, in the rounding of its table
        assert shown == v.text, where
    elif isinstance(v, float) and col.startswith("Δ"):
        assert re.fullmatch(r"[+-]\d+\.\d", shown), where
        assert abs(float(shown) - v) <= 0.05 + 1e-9, where
    elif isinstance(v, float) and (col.startswith("→") or col.endswith("affinity")):
        assert re.fullmatch(r"[+-]\d(\.\d+)?(e[+-]\d+)?|[+-]0\.0*\d+", shown), where  # 3 significant digits
        assert abs(float(shown) - v) <= 0.005 * abs(v) + 1e-300, where
    elif isinstance(v, float) and sig and math.isfinite(v):  # 3 significant digits, fixed point, whole digits kept
        assert re.fullmatch(r"-?\d+(\.\d+)?", shown), where
        digits = len(shown.lstrip("-").replace(".", "").lstrip("0"))
        assert digits == 3 or (abs(v) >= 100 and shown == f"{v:.0f}") or (v == 0 and shown == "0"), where
        assert abs(float(shown) - v) <= 0.005 * abs(v) + 1e-300, where
    elif isinstance(v, float) and col.endswith("steps") and v == int(v):  # counts of steps as whole numbers
        assert shown == str(int(v)), where
    elif isinstance(v, float) and math.isfinite(v):
        plain = [w for w in column if isinstance(w, float) and math.isfinite(w)]
        if all(w == int(w) for w in plain) and any(abs(w) >= 10 for w in plain):
            assert shown == str(int(v)), where
        else:
            decimals = 3 if any(abs(w) < 10 for w in plain) else 1
            assert re.fullmatch(rf"-?\d+\.\d{{{decimals}}}", shown), where
            assert abs(float(shown) - v) <= 0.5 * 10**-decimals + 1e-9, where
    elif isinstance(v, int):
        assert shown == str(v), where
    else:
        assert shown == v, where


def _numeric_columns(t: Table) -> list[bool]:
    return [
        bool(t.rows) and all(_is_number(r[i]) or r[i] in (None, "n/a") for r in t.rows) for i in range(len(t.columns))
    ]


def _pipe_cells(line: str) -> list[str]:
    """The cells of one Markdown pipe-table line, `\\|` read back as `|`."""
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]


def _markdown_grid(text: str) -> tuple[list[str], list[str], list[list[str]]]:
    """Header, alignment row and body of the first pipe table in `text`; its lines must all be equally wide."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    block = lines[start:end]
    assert len({len(line) for line in block}) == 1, "pandas/tabulate pads every line of a table to one width"
    return _pipe_cells(block[0]), _pipe_cells(block[1]), [_pipe_cells(line) for line in block[2:]]


def _check_markdown(t: Table, text: str) -> None:
    header, align, body = _markdown_grid(text)
    assert header == t.columns
    assert [a.endswith(":") for a in align] == _numeric_columns(t)
    assert len(body) == len(t.rows)
    for i, (row, shown) in enumerate(zip(t.rows, body, strict=True)):
        for j, (col, v, s) in enumerate(zip(t.columns, row, shown, strict=True)):
            _check_cell(col, v, s, f"{t.name} row {i} column {col!r}", [r[j] for r in t.rows], col in t.significant)


def _tex_cells(line: str) -> list[str]:
    assert line.endswith(r" \\"), line
    return [c.strip() for c in re.split(r"(?<!\\)&", line[: -len(r" \\")])]


def _check_latex(t: Table, tex: str) -> None:
    """Balanced environments, booktabs rules in order, a column spec as wide as every row, numbers as shown."""
    assert tex.isascii(), [ch for ch in tex if not ch.isascii()]
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    assert tex.index(r"\begin{table}") < tex.index(r"\begin{tabular}") < tex.index(r"\end{tabular}")
    assert tex.index(r"\end{tabular}") < tex.index(r"\end{table}")
    assert f"\\label{{tab:{t.name.replace('_', '-')}}}" in tex and f"\\caption{{{latex_escape(t.title)}}}" in tex
    spec = re.search(r"\\begin\{tabular\}\{([lr]*)\}", tex)
    assert spec is not None and spec.group(1) == "".join("r" if n else "l" for n in _numeric_columns(t))
    lines = tex.splitlines()
    top, mid, bottom = (lines.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert top + 2 == mid < bottom
    assert _tex_cells(lines[top + 1]) == [latex_escape(c) for c in t.columns]
    body = [_tex_cells(line) for line in lines[mid + 1 : bottom]]
    assert len(body) == len(t.rows)
    for i, (row, cells) in enumerate(zip(t.rows, body, strict=True)):
        assert len(cells) == len(t.columns)
        for j, (col, v, cell) in enumerate(zip(t.columns, row, cells, strict=True)):
            if v is None or isinstance(v, float):  # numbers and missing values read as in Markdown ("—" is "--")
                shown = "—" if cell == "--" else cell
                _check_cell(
                    col, v, shown, f"{t.name} row {i} column {col!r}", [r[j] for r in t.rows], col in t.significant
                )
            elif isinstance(v, str):
                assert cell == latex_escape(v)


def _csv_row(t: Table, row: list[Cellv]) -> list[Cellv]:
    """A row as its CSV columns: an interval column (a pair of keys) as its two bounds."""
    keys = t.keys or t.columns
    out: list[Cellv] = []
    for key, v in zip(keys, row, strict=True):
        if isinstance(key, tuple):
            out += [v.low, v.high] if isinstance(v, Interval) else [None, None]
        else:
            out.append(v.text if isinstance(v, Interval) else v)
    return out


def _check_csv(t: Table, text: str) -> None:
    """Full precision: a float reads back bit for bit, an int as an int, a missing value as an empty cell; the
    header is the table's keys where it has them."""
    header, *body = list(csv.reader(io.StringIO(text)))
    names = [k for key in (t.keys or t.columns) for k in ([*key] if isinstance(key, tuple) else [key])]
    assert header == names and len(body) == len(t.rows)
    for row, cells in zip(t.rows, body, strict=True):
        for v, cell in zip(_csv_row(t, row), cells, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                assert cell == ""
            elif isinstance(v, float):
                assert float(cell) == v
            elif isinstance(v, int):
                assert int(cell) == v and re.fullmatch(r"-?\d+", cell)
            else:
                assert cell == v


def _check_text(t: Table, text: str) -> None:
    """Title, its rule, then columns read back by the spans of the dashes line."""
    lines = text.splitlines()
    assert lines[:2] == [t.title, "=" * len(t.title)]
    spans = [m.span() for m in re.finditer(r"-+", lines[3])]
    assert len(spans) == len(t.columns)

    def cut(line: str) -> list[str]:
        return [line[a:b].strip() for a, b in spans]

    assert cut(lines[2]) == t.columns
    body = [cut(line) for line in lines[4 : 4 + len(t.rows)]]
    for i, (row, cells) in enumerate(zip(t.rows, body, strict=True)):
        for j, (col, v, s) in enumerate(zip(t.columns, row, cells, strict=True)):
            _check_cell(col, v, s, f"{t.name} row {i} column {col!r}", [r[j] for r in t.rows], col in t.significant)
    assert lines[4 + len(t.rows) :] == (["(none)"] if not t.rows else []) + [f"  {n}" for n in t.notes]


# --- a table made by hand: every convention and the edge cases ------------------------------------------------


EDGE = Table(
    "edge_case",
    "Edge cases: Δ, → and 50 % & more",
    ["Task", "Δ AU %", "→ t1", "Within affinity", "Score", "Big", "n", "Note"],
    [
        ["a|b_c", 1.25, 0.012345, -0.00004, 0.1 + 0.2, 12.0, 7, "x & y"],
        ["plain", None, None, None, None, 123.456, None, "—"],
        ["num", -0.04, -1.5, 0.5, float(np.float64(2.5)), 1e-20, 10, "50 % ~ {z}"],
    ],
    ["First note with | a bar.", "Second: Σ α σ² × ≤ – n_train."],
)


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex"])
def test_hand_made_table_reads_back(fmt: str) -> None:
    text = render(EDGE, fmt)
    {"table": _check_text, "markdown": _check_markdown, "csv": _check_csv, "latex": _check_latex}[fmt](EDGE, text)


def test_markdown_heading_notes_and_escapes() -> None:
    text = to_markdown(EDGE)
    assert text.startswith("### Edge cases: Δ, → and 50 % & more\n\n|")
    assert "| a\\|b_c " in text and text.endswith("- First note with \\| a bar.\n- Second: Σ α σ² × ≤ – n_train.\n")
    bare = to_markdown(EDGE, heading=None)
    assert bare.startswith("|") and bare == text.split("\n", 2)[2]


def test_latex_escapes_text_and_keeps_notes_inside_the_table() -> None:
    tex = to_latex(EDGE)
    assert r"\caption{Edge cases: $\Delta$, $\rightarrow$ and 50 \% \& more}" in tex
    assert r"a|b\_c & +1.2 & +0.0123 & -4e-05 & 0.300 & 12.000 & 7 & x \& y \\" in tex  # Big: 1e-20 below
    assert r"50 \% \textasciitilde{} \{z\}" in tex
    notes = r"\par\footnotesize First note with | a bar. Second: "
    notes += r"$\Sigma$ $\alpha$ $\sigma$$^2$ $\times$ $\leq$ -- n\_train."
    assert tex.rstrip().endswith(notes + "\n" + r"\end{table}")


def test_csv_keeps_numpy_floats_and_full_precision() -> None:
    """A numpy float in a cell is written as its number (repr gave `np.float64(0.1)` under numpy 2)."""
    t = Table("n", "N", ["a", "b"], [[np.float64(0.1) + np.float64(0.2), 1], [None, None]])
    assert to_csv(t) == "a,b\n0.30000000000000004,1\n,\n"


def test_empty_table_in_every_format() -> None:
    t = Table("empty", "Nothing here", ["A", "Δ B"], [], ["A note."])
    assert to_text(t) == "Nothing here\n============\nA    Δ B\n---  -----\n(none)\n  A note.\n"
    assert to_markdown(t) == "### Nothing here\n\n(none)\n\n"
    assert to_csv(t) == "A,Δ B\n"
    tex = to_latex(t)
    assert r"\begin{tabular}{ll}" in tex and "\\midrule\n\\bottomrule" in tex


def test_repeated_column_names_render() -> None:
    """pandas' Styler refuses repeated column labels; the renderer keeps positions as labels."""
    t = Table("dup", "Dup", ["x", "x"], [[1.5, "a"]])
    assert _tex_cells(to_latex(t).splitlines()[7]) == ["x", "x"]
    _check_markdown(t, to_markdown(t))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of table, csv, markdown, latex"):
        render(EDGE, "html")


# --- the report of a demo-shaped simulated study ----------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """Nine synthetic tasks, the demo's six paradigms, one seed with per-image scores, an affinity record."""
    tasks = [{"id": t.id, "type": t.type, "num_classes": t.num_classes, "group": t.group} for t in SYNTH.values()]
    run = simulate_run_store(
        tmp_path_factory.mktemp("runs") / "demo",
        tasks,
        paradigms=("TS", "CG", "AU", "AG", "TSM", "AUD"),
        seeds=(0,),
        item_scores=True,
    )
    store = RunStore(run)
    ids = list(SYNTH)
    z = np.random.default_rng(0).normal(0, 0.01, (len(ids), len(ids)))
    np.fill_diagonal(z, 0.4)
    aff = Affinity(tasks=ids, matrix=z.tolist(), job_id=MEASURING, job_hash="0123abcd", every=10, steps=[10, 20],
                   seconds=2.0, train_seconds=40.0)  # fmt: skip
    write_affinity(store.paths(MEASURING).affinity, aff)
    plan = [r for r in read_json(store.plan_json) if r["id"] != MEASURING]  # the AU job, now measuring
    plan.append({"id": MEASURING, "hash": "0123abcd", "fraction": 1.0, "affinity": True,
                 "tasks": [{"id": t} for t in ids]})  # fmt: skip
    store.write_plan(plan)
    store.mark_results_fresh()
    return analyse(load_input(run, None))


@pytest.fixture(scope="module")
def report(analysis: Analysis, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Table]]:
    folder = tmp_path_factory.mktemp("report")
    write_report(analysis, folder)
    return folder, [*all_tables(analysis), delta_long_table(analysis.comp, analysis.stats)]


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_report_has_the_tables_of_every_kind(report: tuple[Path, list[Table]]) -> None:
    _, tables = report
    names = {t.name for t in tables}
    assert {"tasks", "aggregates", "statistics", "affinity", "affinity_groups", "delta"} <= names
    columns = [c for t in tables for c in t.columns]
    assert any(c.startswith("Δ") for c in columns) and any(c.startswith("→") for c in columns)


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_report_csv_files_read_back_to_the_tables(report: tuple[Path, list[Table]]) -> None:
    folder, tables = report
    for t in tables:
        _check_csv(t, (folder / "tables" / f"{t.name}.csv").read_text(encoding="utf-8"))


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_report_latex_files_read_back_to_the_tables(report: tuple[Path, list[Table]]) -> None:
    folder, tables = report
    for t in tables:
        if t.name != "delta":  # the long table is machine-readable only: CSV
            _check_latex(t, (folder / "tables" / f"{t.name}.tex").read_text(encoding="utf-8"))


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_report_markdown_tables_read_back_to_the_tables(report: tuple[Path, list[Table]]) -> None:
    folder, tables = report
    md = (folder / "report.md").read_text(encoding="utf-8")
    for t in tables:
        if t.name == "delta":
            continue
        heading = f"### {md_text(t.title)}\n\n"
        assert md.count(heading) == 1, t.title
        _check_markdown(t, md[md.index(heading) + len(heading) :])


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_compare_text_format_reads_back(report: tuple[Path, list[Table]]) -> None:
    _, tables = report
    for t in tables:
        _check_text(t, to_text(t))


class _Tables(HTMLParser):
    """Each <table>'s header cells and number of body rows, with the classes of the <div>s around it."""

    def __init__(self) -> None:
        super().__init__()
        self.divs: list[str] = []
        self.tables: list[dict] = []
        self.meta: list[dict[str, str | None]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div":
            self.divs.append(a.get("class") or "")
        elif tag == "meta":
            self.meta.append(a)
        elif tag == "table":
            self.tables.append({"in": list(self.divs), "header": [], "rows": 0})
        elif tag == "th":
            self._cell = []
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.divs:
            self.divs.pop()
        elif tag == "th" and self._cell is not None:
            self.tables[-1]["header"].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_report_html_tables_and_the_checks_without_a_browser(report: tuple[Path, list[Table]]) -> None:
    """Every Markdown table is an HTML table with the same header, in its sideways-scrolling box; the page sets
    the phone viewport; each figure carries at least report_check's MIN_NATURAL_PX of width."""
    folder, tables = report
    page = _Tables()
    page.feed((folder / "report.html").read_text(encoding="utf-8"))
    shown = [t for t in tables if t.name != "delta" and t.rows]
    by_header = {tuple(t.columns): t for t in shown}
    html_tables = [t for t in page.tables if tuple(t["header"]) in by_header]
    assert len(html_tables) == len(shown)
    for ht in html_tables:
        assert "scroll" in ht["in"]
        assert ht["rows"] == len(by_header[tuple(ht["header"])].rows) + 1
    assert any(m.get("name") == "viewport" and "width=device-width" in (m.get("content") or "") for m in page.meta)
    check = _report_check()
    pngs = sorted((folder / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        size = png_size(png)
        assert size is not None and size[0] >= check.MIN_NATURAL_PX, png.name
