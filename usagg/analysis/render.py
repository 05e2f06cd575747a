"""Rendering a Table as aligned text, Markdown, CSV or LaTeX (booktabs) through pandas; report.html renders the
Markdown (usagg/analysis/report_html.py).

What stays here is the report's conventions, not the drawing of grids: how a cell reads (`cell_text`), which
columns are right-aligned (numbers), how a text becomes LaTeX (`latex_escape`, Greek letters and arrows included),
and the title and notes around a table. The grids come from pandas: `DataFrame.to_markdown` (tabulate) for the text
and Markdown tables, `DataFrame.style.to_latex` (jinja2) for LaTeX, `DataFrame.to_csv` for CSV. pandas is imported
inside each function, so `usagg --help` stays instant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from usagg.analysis.digits import significant
from usagg.analysis.results import FORMULA_START
from usagg.analysis.tables import Cellv, Interval, Key, Table, fmt_delta

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "latex")


def cell_text(col: str, v: Cellv) -> str:
    """Display form: Δ columns signed with one decimal, affinities (a column "→ task" or "... affinity") signed with
    three significant digits (lookahead affinities are small, 1e-6 on the demo: fixed decimals would show zeros),
    other floats three decimals (one above 10)."""
    if v is None:
        return "n/a" if col.startswith("Δ") else "—"
    if isinstance(v, Interval):
        return v.text
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


def column_text(col: str, values: list[Cellv], sig: bool = False) -> list[str]:
    """A column's cells as `cell_text` shows them, its plain floats with one number of decimals: three where any of
    them is below 10 in size, else one; integers only where every float of the column is a whole number and one
    reaches 10 (a Wilcoxon W of 7 beside 17 reads 7, not 7.000), so a column never mixes 3.407 with -16.0. Δ and
    affinity columns keep their own forms; a `sig` column (`Table.significant`: a column of estimates of every size,
    a ρ of 0.004 beside a slope of 57.9) shows each to 3 significant digits."""
    if sig:
        return [significant(v) if isinstance(v, float) else cell_text(col, v) for v in values]
    plain = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not plain or col.startswith(("Δ", "→")) or col.endswith(("affinity", "steps")):
        return [cell_text(col, v) for v in values]
    if all(v.is_integer() for v in plain) and any(abs(v) >= 10 for v in plain):
        form = "{:.0f}"
    else:
        form = "{:.3f}" if any(abs(v) < 10 for v in plain) else "{:.1f}"
    return [form.format(v) if isinstance(v, float) and math.isfinite(v) else cell_text(col, v) for v in values]


def _numeric(t: Table) -> list[bool]:
    """Right-align columns whose cells are numbers."""
    return [
        bool(t.rows) and all(isinstance(r[i], int | float) or r[i] in (None, "n/a") for r in t.rows)
        for i in range(len(t.columns))
    ]


def _frame(t: Table, cell: Callable[[str, list[Cellv]], list[str]] = column_text) -> pd.DataFrame:
    """The table's cells as display text (`cell(column, its values)`, a column at a time) in an object frame; its
    columns are positions, so a repeated column name cannot trouble pandas (the names are given as headers)."""
    import pandas as pd

    columns = [cell(c, [row[i] for row in t.rows]) for i, c in enumerate(t.columns)]
    grid = [[col[r] for col in columns] for r in range(len(t.rows))]
    return pd.DataFrame(grid, columns=range(len(t.columns)), dtype=object)


def _grid_text(t: Table, fmt: str, escape: Callable[[str], str] = str) -> str:
    """The table's grid in tabulate's format `fmt` through `DataFrame.to_markdown`: cells as `cell_text` shows them
    (never re-read as numbers), number columns right-aligned."""
    frame = _frame(t, lambda c, vs: [escape(x) for x in column_text(c, vs, c in t.significant)])
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
        out.append(t.empty)
    out += [f"  {n}" for n in t.notes]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


#: What would open raw HTML in Markdown: a tag, comment or declaration (`<` then a letter, `/`, `!`, `?`) and an entity.
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_MD_ENTITY = re.compile(r"&(?=#[0-9]+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")
#: What makes a link, an image or a link reference definition of bracketed text: a `]` followed by `(`, `[` or `:`
#: (`[text](url)`, `![alt](url)`, `[text][ref]`, `[ref]: url`), and a backslash, which would undo the escape before
#: it. A bracket followed by anything else (`[-2.4, +0.1]`) opens nothing: report.md keeps it as it reads.
_MD_LINK = re.compile(r"\\|\](?=[(\[:])")


def md_text(text: str) -> str:
    """`text` (which may carry task, group or job names from a results table) as literal Markdown text: a tag or
    entity is escaped so no raw HTML reaches report.md's readers, a closing bracket before `(`, `[` or `:` (and
    every backslash) so no link, image or link definition, and a line break cannot start a new block; text such as
    `Δ<0`, `n < 4` or `[-2.4, +0.1]` is left as it reads. Emphasis and code spans are left to the text (the
    report's own lines bold a paradigm or quote a key): they carry no link or HTML."""
    one_line = re.sub(r"[\r\n\u2028\u2029\x85]+", " ", text)
    linkless = _MD_LINK.sub(lambda m: "\\" + m.group(), one_line)
    return _MD_TAG.sub("&lt;", _MD_ENTITY.sub("&amp;", linkless))


def md_table(t: Table) -> Table:
    """`t` with every text (title, columns, text cells, notes) through `md_text`; numbers untouched."""
    return Table(
        t.name,
        md_text(t.title),
        [md_text(c) for c in t.columns],
        [[md_text(v) if isinstance(v, str) else v for v in row] for row in t.rows],
        [md_text(n) for n in t.notes],
        t.keys,
        md_text(t.empty),
        tuple(md_text(c) for c in t.significant),
    )


def to_markdown(t: Table, *, heading: str | None = "###") -> str:
    """A `heading` line with the title (none when `heading` is None), the pipe table and the notes as a list."""
    out = [f"{heading} {t.title}", ""] if heading else []
    if not t.rows:
        return "\n".join([*out, _md_escape(t.empty), ""]) + "\n"
    out.append(_grid_text(t, "pipe", _md_escape))
    if t.notes:
        out.append("")
        out += [f"- {_md_escape(n)}" for n in t.notes]
    return "\n".join(out) + "\n"


#: A text a spreadsheet reads as a number, not a formula: a sign then a digit or '.' (`-5.3`, `+19.0 [12.4, 26.6]`).
_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_NUMBER = rf"[+-]?{_UNSIGNED}"
#: A signed number as usagg writes one, alone or with a unit and an interval (`-5.3`, `+19.0 [12.4, 26.6]`,
#: `+12.6 pp [+1.9, +23.2]`, `-1e-05`): whole, so `-1+1+cmd|' /C calc'!A0` is no number.
_SIGNED_NUMBER = re.compile(rf"[+-]{_UNSIGNED}(?: ?(?:%|pp))?(?: \[{_NUMBER}, {_NUMBER}\])?(?: ?(?:%|pp))?", re.I)


def csv_cell(v: Cellv) -> Cellv:
    """`v` safe for a spreadsheet to open (OWASP's CSV injection advice): a text beginning with =, @, + or - gets a
    leading ' so it shows as text and never runs as a formula, unless it is wholly a signed number as usagg writes
    one (`-5.3`, `+19.0 [12.4, 26.6]`; `_SIGNED_NUMBER`) or a lone + or -. The results table refuses such names
    already (usagg/analysis/results.py); this keeps any other text (a sweep value, a spec's expectation name) from
    becoming one: a number-led `-1+1+cmd|' /C calc'!A0` passed when a leading digit was enough."""
    if not isinstance(v, str) or not v.startswith(FORMULA_START) or v in ("+", "-") or _SIGNED_NUMBER.fullmatch(v):
        return v
    return "'" + v


def _csv_values(key: Key, v: Cellv) -> list[Cellv]:
    """A cell's CSV values: an interval column's (a pair of keys) two bounds, empty where it has none; else itself
    (an Interval outside such a column as its text)."""
    if isinstance(key, tuple):
        return [v.low, v.high] if isinstance(v, Interval) else [None, None]
    return [v.text if isinstance(v, Interval) else v]


def to_csv(t: Table) -> str:
    """Raw values (full precision, empty for missing) so the CSV can be re-analysed; text through `csv_cell`. The
    header is the table's `keys` where it has them (an interval column's two), else its display columns."""
    import pandas as pd

    keys = t.keys or t.columns
    header = [k for key in keys for k in ([*key] if isinstance(key, tuple) else [key])]
    rows = [[csv_cell(x) for key, v in zip(keys, row, strict=True) for x in _csv_values(key, v)] for row in t.rows]
    frame = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    return frame.to_csv(index=False, header=[csv_cell(c) for c in header], lineterminator="\n")


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
    frame = _frame(t, lambda c, vs: [latex_escape(x) for x in column_text(c, vs, c in t.significant)])
    styler = frame.style.hide(axis="index")
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
    if fmt == "markdown":  # names from a results table are data: no tag, link or image (`md_table`)
        return to_markdown(md_table(t))
    if fmt == "csv":
        return to_csv(t)
    if fmt == "latex":
        return to_latex(t)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
