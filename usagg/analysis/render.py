"""Rendering a Table as aligned text, Markdown, CSV or LaTeX (booktabs) through pandas; report.html renders the
Markdown (usagg/analysis/report_html.py).

What stays here is the report's conventions, not the drawing of grids: how a cell reads (`cell_text`), which
columns are right-aligned (numbers), how a text becomes LaTeX (`latex_escape`, Greek letters and arrows included),
and the title and notes around a table. The grids come from pandas: `DataFrame.to_markdown` (tabulate) for the text
and Markdown tables, `DataFrame.style.to_latex` (jinja2) for LaTeX, `DataFrame.to_csv` for CSV. pandas is imported
inside each function, so `usagg --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from usagg.analysis.tables import Cellv, Table, fmt_delta

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "latex")


def cell_text(col: str, v: Cellv) -> str:
    """Display form: Δ columns signed with one decimal, affinities (a column "→ task" or "... affinity") signed with
    three significant digits (lookahead affinities are small, 1e-6 on the demo: fixed decimals would show zeros),
    other floats three decimals (one above 10)."""
    if v is None:
        return "n/a" if col.startswith("Δ") else "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if col.startswith("Δ"):
            return fmt_delta(v)
        if col.startswith("→") or col.endswith("affinity"):
            return f"{v:+.3g}"
        if v.is_integer() and (abs(v) >= 10 or col.endswith("steps")):  # a count of steps reads as one: 4, not 4.000
            return str(int(v))
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _numeric(t: Table) -> list[bool]:
    """Right-align columns whose cells are numbers."""
    return [
        bool(t.rows) and all(isinstance(r[i], int | float) or r[i] in (None, "n/a") for r in t.rows)
        for i in range(len(t.columns))
    ]


def _frame(t: Table, cell: Callable[[str, Cellv], str] = cell_text) -> pd.DataFrame:
    """The table's cells as display text (`cell(column, value)`) in an object frame; its columns are positions,
    so a repeated column name cannot trouble pandas (the names are given as headers when rendering)."""
    import pandas as pd

    grid = [[cell(c, v) for c, v in zip(t.columns, row, strict=True)] for row in t.rows]
    return pd.DataFrame(grid, columns=range(len(t.columns)), dtype=object)


def _grid_text(t: Table, fmt: str, escape: Callable[[str], str] = str) -> str:
    """The table's grid in tabulate's format `fmt` through `DataFrame.to_markdown`: cells as `cell_text` shows them
    (never re-read as numbers), number columns right-aligned."""
    frame = _frame(t, lambda c, v: escape(cell_text(c, v)))
    return frame.to_markdown(
        index=False,
        headers=[escape(c) for c in t.columns],
        tablefmt=fmt,
        colalign=["right" if r else "left" for r in _numeric(t)],
        disable_numparse=True,
    )


def to_text(t: Table) -> str:
    """Title, the aligned grid (tabulate's "simple" format) and the notes, for a terminal or a log."""
    out = [t.title, "=" * len(t.title), *_grid_text(t, "simple").splitlines()]
    if not t.rows:
        out.append("(none)")
    out += [f"  {n}" for n in t.notes]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: Table, *, heading: str | None = "###") -> str:
    """A `heading` line with the title (none when `heading` is None), the pipe table and the notes as a list."""
    out = [f"{heading} {t.title}", ""] if heading else []
    if not t.rows:
        return "\n".join([*out, "(none)", ""]) + "\n"
    out.append(_grid_text(t, "pipe", _md_escape))
    if t.notes:
        out.append("")
        out += [f"- {_md_escape(n)}" for n in t.notes]
    return "\n".join(out) + "\n"


def to_csv(t: Table) -> str:
    """Raw values (full precision, empty for missing) so the CSV can be re-analysed."""
    import pandas as pd

    frame = pd.DataFrame(t.rows, columns=range(len(t.columns)), dtype=object)
    return frame.to_csv(index=False, header=list(t.columns), lineterminator="\n")


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "≥": r"$\geq$",
    "ρ": r"$\rho$",
    "→": r"$\rightarrow$",
    "−": "-",
    "—": "--",
    "·": r"$\cdot$",
    "–": "--",
    "×": r"$\times$",
    "²": r"$^2$",
    "³": r"$^3$",
    "≤": r"$\leq$",
    "≠": r"$\neq$",
    "∞": r"$\infty$",
    "√": r"$\surd$",
    "←": r"$\leftarrow$",
    "α": r"$\alpha$",
    "δ": r"$\delta$",
    "θ": r"$\theta$",
    "μ": r"$\mu$",
    "π": r"$\pi$",
    "σ": r"$\sigma$",
    "χ": r"$\chi$",
    "Σ": r"$\Sigma$",
}


def latex_escape(s: str) -> str:
    """`s` as LaTeX text: its special characters escaped, and the Unicode the tables use as math or dashes."""
    return "".join(_LATEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    """A booktabs table environment from `Styler.to_latex` (needs \\usepackage{booktabs}); notes under the grid."""
    spec = "".join("r" if r else "l" for r in _numeric(t))
    styler = _frame(t, lambda c, v: latex_escape(cell_text(c, v))).style.hide(axis="index")
    styler = styler.relabel_index([latex_escape(c) for c in t.columns], axis="columns")
    styler.set_table_styles([{"selector": "small", "props": ":;"}])  # a `\small` line in the table environment
    tex = styler.to_latex(
        column_format=spec,
        position="t",
        position_float="centering",
        hrules=True,
        label=f"tab:{t.name.replace('_', '-')}",
        caption=latex_escape(t.title),
        environment="table",
    )
    if t.notes:
        notes = "\\par\\footnotesize " + " ".join(latex_escape(n) for n in t.notes)
        tex = tex.replace("\\end{table}", notes + "\n\\end{table}")
    return tex


def render(t: Table, fmt: str) -> str:
    """Dispatch on a compare --format name."""
    if fmt == "table":
        return to_text(t)
    if fmt == "markdown":
        return to_markdown(t)
    if fmt == "csv":
        return to_csv(t)
    if fmt == "latex":
        return to_latex(t)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
