"""The analysis at the commands' boundary: `usagg compare`, `plot` and `report` share statistics and figures.

The domain is pure: usagg/analysis/summary.py computes, figures.py draws and report.py
writes what it is given, none of them knowing a cache. Here the memo
(usagg/analysis/memo.py) is applied the way scikit-learn applies `memory=`: `Memoised`
keys the input and wraps those functions with their signatures unchanged, so a hit
gives the same statistics and the same file bytes the function would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usagg.analysis.delta import compare
from usagg.analysis.figures import FIGURE_DPI, FigureOut, render_all
from usagg.analysis.inputs import AnalysisInput
from usagg.analysis.memo import FigureFile, Memo, input_key
from usagg.analysis.points import analyse_points, point_folders
from usagg.analysis.summary import Analysis, study_statistics


@dataclass(frozen=True)
class Memoised:
    """`analyse` and `render_all` (usagg/analysis/summary.py, figures.py) with their outputs kept in `memo`."""

    memo: Memo

    @classmethod
    def own(cls) -> Memoised:
        """The memo in the user's own cache (`Memo.own`: $USAGG_CACHE, else ~/.cache/usagg)."""
        return cls(Memo.own())

    def analyse(self, inp: AnalysisInput, baseline: str | None = None) -> Analysis:
        """summary.analyse, with the statistics an earlier command computed for the same input; a swept study
        point by point (usagg/analysis/points.py), the first point's analysis carrying them all."""
        parts = analyse_points(inp, lambda one: self.analyse(one, baseline))
        if parts:
            first = parts[0][1]
            return Analysis(first.inp, first.comp, first.stats, parts)
        comp = compare(inp, baseline)
        stats = self.memo.cached_statistics(input_key(inp, comp.baseline), lambda: study_statistics(inp, comp))
        return Analysis(inp, comp, stats)

    def render_all(self, a: Analysis, folder: Path, fmt: str = "png", dpi: int = FIGURE_DPI) -> list[FigureOut]:
        """figures.render_all, the files copied from the memo when the same input was drawn before; a swept
        study's figures per point, each in its sub-folder (usagg/analysis/points.py)."""
        if a.points:
            return [f for out, sub in point_folders(a, Path(folder)) for f in self.render_all(sub, out, fmt, dpi)]

        def draw(out: Path) -> list[FigureFile]:
            return [FigureFile(f.name, f.path, f.caption) for f in render_all(a, out, fmt, dpi)]

        figs = self.memo.cached_figures(input_key(a.inp, a.comp.baseline), fmt, dpi, Path(folder), draw)
        return [FigureOut(f.name, f.path, f.caption) for f in figs]
