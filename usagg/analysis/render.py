"""Rendering a Table as aligned text, Markdown, CSV or LaTeX (booktabs); report.html renders the Markdown."""

from __future__ import annotations

import csv
import io

from usagg.analysis.tables import Cellv, Table, fmt_delta

FORMATS = ("table", "csv", "markdown", "latex")


def cell_text(col: str, v: Cellv) -> str:
    """Display form: Δ columns signed with one decimal, affinities (a column "→ task" or "... affinity") signed with
    four (lookahead affinities are small), other floats three decimals (one above 10)."""
    if v is None:
        return "n/a" if col.startswith("Δ") else "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if col.startswith("Δ"):
            return fmt_delta(v)
        if col.startswith("→") or col.endswith("affinity"):
            return f"{v:+.4f}"
        if v.is_integer() and abs(v) >= 10:
            return str(int(v))
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _grid(t: Table) -> list[list[str]]:
    return [[cell_text(c, v) for c, v in zip(t.columns, row, strict=True)] for row in t.rows]


def _numeric(t: Table) -> list[bool]:
    """Right-align columns whose cells are numbers."""
    return [
        bool(t.rows) and all(isinstance(r[i], int | float) or r[i] in (None, "n/a") for r in t.rows)
        for i in range(len(t.columns))
    ]


def to_text(t: Table) -> str:
    grid = _grid(t)
    widths = [max([len(c)] + [len(r[i]) for r in grid]) for i, c in enumerate(t.columns)]
    right = _numeric(t)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    out = [t.title, "=" * len(t.title), line(t.columns), line(["-" * w for w in widths])]
    out += [line(r) for r in grid] or ["(none)"]
    out += [f"  {n}" for n in t.notes]
    return "\n".join(out) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: Table, *, heading: str = "###") -> str:
    right = _numeric(t)
    out = [f"{heading} {t.title}", ""]
    if not t.rows:
        return "\n".join([*out, "(none)", ""]) + "\n"
    out.append("| " + " | ".join(_md_escape(c) for c in t.columns) + " |")
    out.append("|" + "|".join("---:" if r else ":---" for r in right) + "|")
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in _grid(t)]
    if t.notes:
        out.append("")
        out += [f"- {_md_escape(n)}" for n in t.notes]
    return "\n".join(out) + "\n"


def to_csv(t: Table) -> str:
    """Raw values (full precision, empty for missing) so the CSV can be re-analysed."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.columns)
    for row in t.rows:
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


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
}


def latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    """A booktabs table environment (needs \\usepackage{booktabs})."""
    right = _numeric(t)
    spec = "".join("r" if r else "l" for r in right)
    label = t.name.replace("_", "-")
    out = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(t.title)}}}",
        f"\\label{{tab:{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in t.columns) + r" \\",
        "\\midrule",
    ]
    out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in _grid(t)]
    out += ["\\bottomrule", "\\end{tabular}"]
    if t.notes:
        out.append("\\par\\footnotesize " + " ".join(latex_escape(n) for n in t.notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


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
