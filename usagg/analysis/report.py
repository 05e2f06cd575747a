"""`usagg report`: report.md, a self-contained report.html, figures/, tables/*.csv and tables/*.tex.

The folder is regenerated on purpose: every file is written atomically, and figures or
tables this project wrote earlier but not this time are removed so nothing stale remains.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

from usagg.analysis.figures import FIGURE_DPI, FIGURES, FigureOut, render_all
from usagg.analysis.render import to_csv, to_html, to_latex, to_markdown
from usagg.analysis.stats import Stat
from usagg.analysis.summary import Analysis, all_tables
from usagg.analysis.tables import Table, delta_long_table, frac_label, negative_table
from usagg.atomic import write_text_atomic

#: What draws the report's figures: figures.render_all, or the memoised one of usagg/analysis/outputs.py.
Renderer = Callable[[Analysis, Path, str, int], list[FigureOut]]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{border-bottom:2px solid #555}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto}figcaption{font-size:13px;color:#444}
ul.notes{font-size:12px;color:#555}code{background:#f4f4f4;padding:0 3px}
"""


def _headline(a: Analysis) -> list[str]:
    """One line per paradigm: Δm with CI, negative transfer count and the data-scale correlation."""
    comp = a.comp
    f = max(comp.fractions)
    by = {(s.paradigm, s.name): s for s in a.stats if s.fraction == f}
    neg = {r[0]: r for r in negative_table(comp).rows if r[1] == frac_label(f)}
    lines = []
    for p in comp.others:
        boot: Stat | None = by.get((p, "mean Δ % (Δm), 95 % bootstrap CI"))
        rho: Stat | None = by.get((p, "Spearman ρ(Δ, log n_train), tasks"))
        parts = [f"**{p} vs {comp.baseline}** (fraction {frac_label(f)}):"]
        if boot and boot.value is not None:
            ci = f" (95 % CI {boot.ci[0]:+.1f} to {boot.ci[1]:+.1f})" if boot.ci else ""
            parts.append(f"Δm = {boot.value:+.1f} %{ci} over {boot.n} tasks;")
        if p in neg:
            parts.append(f"negative transfer in {neg[p][2]} of {neg[p][3]} tasks;")
        if rho and rho.value is not None:
            parts.append(f"Spearman ρ(Δ, log n_train) = {rho.value:+.2f} (p = {rho.p:.2g}, n = {rho.n}).")
        elif rho:
            parts.append(f"Spearman ρ(Δ, log n_train): {rho.note}.")
        lines.append(" ".join(parts))
    return lines


def _sections(a: Analysis) -> list[tuple[str, list[Table]]]:
    tables = all_tables(a)
    by_name = lambda pre: [t for t in tables if t.name.startswith(pre)]  # noqa: E731
    return [
        ("Study", by_name("summary")),
        ("Per-task results", by_name("tasks")),
        ("Clinical groups", by_name("groups")),
        ("Aggregates by group, type and data regime", by_name("aggregates")),
        ("Negative transfer", by_name("negative_transfer") + by_name("delta_na")),
        ("Statistics", by_name("statistics") + by_name("fractions")),
    ]


def _markdown(a: Analysis, sections: list[tuple[str, list[Table]]], figs: list[FigureOut], folder: Path) -> str:
    out = [f"# usagg report: {a.inp.study}", "", *[f"- {line}" for line in _headline(a)], ""]
    for title, tables in sections:
        out += [f"## {title}", ""]
        out += [to_markdown(t) for t in tables]
        if title == "Aggregates by group, type and data regime":
            out += ["## Figures", ""]
            for fig in figs:
                rel = fig.path.relative_to(folder).as_posix()
                out += [f"![{fig.name}]({rel})", "", f"*{fig.name}*: {fig.caption}", ""]
    out += ["## Files", "", "Tables as CSV and LaTeX (booktabs) in `tables/`; figures in `figures/`.", ""]
    return "\n".join(out)


def _html(a: Analysis, sections: list[tuple[str, list[Table]]], figs: list[FigureOut]) -> str:

    def bold(line: str) -> str:
        s = html.escape(line)
        while "**" in s:
            s = s.replace("**", "<b>", 1).replace("**", "</b>", 1)
        return s

    body = [f"<h1>usagg report: {html.escape(a.inp.study)}</h1>", "<ul>"]
    body += [f"<li>{bold(line)}</li>" for line in _headline(a)]
    body.append("</ul>")
    for title, tables in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [to_html(t) for t in tables]
        if title == "Aggregates by group, type and data regime":
            body.append("<h2>Figures</h2>")
            for fig in figs:
                data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{fig.name}" src="data:image/png;base64,{data}">'
                    f"<figcaption><b>{fig.name}</b>: {html.escape(fig.caption)}</figcaption></figure>"
                )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>usagg report: {html.escape(a.inp.study)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Drop figures and tables an earlier report wrote that this one did not (only names this module uses)."""
    names = {n for n, _ in FIGURES}
    for p in (folder / "figures").glob("*.png"):
        if p.stem in names and p not in keep:
            p.unlink()
    for p in list((folder / "tables").glob("*.csv")) + list((folder / "tables").glob("*.tex")):
        if p not in keep:
            p.unlink()


def write_report(a: Analysis, folder: Path, render: Renderer = render_all, dpi: int = FIGURE_DPI) -> list[Path]:
    """Write the whole report folder and return the paths written; `render` draws the PNGs into folder/figures."""
    folder = Path(folder)
    figs = render(a, folder / "figures", "png", dpi)
    sections = _sections(a)
    written = [f.path for f in figs]
    tables = [t for _, ts in sections for t in ts] + [delta_long_table(a.comp)]
    for t in tables:
        written.append(write_text_atomic(folder / "tables" / f"{t.name}.csv", to_csv(t)))
        if t.name != "delta":
            written.append(write_text_atomic(folder / "tables" / f"{t.name}.tex", to_latex(t)))
    _remove_stale(folder, set(written))
    written.append(write_text_atomic(folder / "report.md", _markdown(a, sections, figs, folder)))
    written.append(write_text_atomic(folder / "report.html", _html(a, sections, figs)))
    return written
