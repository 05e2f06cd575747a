"""One visual language for every figure: paradigm colours, type markers, paper-sized fonts.

Colours are Okabe-Ito (colour-blind safe); a paradigm keeps its colour in every figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

PARADIGM_COLORS: dict[str, str] = {"TS": "#0072B2", "CG": "#E69F00", "AU": "#009E73"}
_EXTRA_COLORS = ("#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")

TYPE_MARKERS: dict[str, str] = {"segmentation": "o", "classification": "s", "detection": "^", "regression": "D"}
TYPE_COLORS: dict[str, str] = {
    "segmentation": "#332288",
    "classification": "#882255",
    "detection": "#555555",
    "regression": "#999933",
}
#: Short type names where four full names do not fit a column-wide axis.
TYPE_SHORT: dict[str, str] = {
    "segmentation": "segment.",
    "classification": "classif.",
    "detection": "detection",
    "regression": "regression",
}

COLUMN_W = 3.5  # inches, one column of a two-column paper
PAGE_W = 7.0  # inches, full width
FONT_PT = 7.5


def paradigm_color(paradigm: str, paradigms: list[str] | None = None) -> str:
    """Fixed colour for TS, CG, AU; further paradigms take the extra colours in their sorted order."""
    if paradigm in PARADIGM_COLORS:
        return PARADIGM_COLORS[paradigm]
    others = sorted(p for p in (paradigms or [paradigm]) if p not in PARADIGM_COLORS)
    i = others.index(paradigm) if paradigm in others else 0
    return _EXTRA_COLORS[i % len(_EXTRA_COLORS)]


RC = {
    "font.size": FONT_PT,
    "axes.titlesize": FONT_PT + 0.5,
    "axes.labelsize": FONT_PT,
    "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT,
    "legend.fontsize": FONT_PT,
    "legend.title_fontsize": FONT_PT,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.0,
    "savefig.dpi": 300,
    "figure.dpi": 100,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}


@contextmanager
def paper_style() -> Iterator[None]:
    """matplotlib rcParams for paper figures, restored afterwards."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield
