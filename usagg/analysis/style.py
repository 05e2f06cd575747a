"""One visual language for every figure: paradigm colours, type markers (from the task types), paper-sized fonts.

Colours are Okabe-Ito (colour-blind safe) and, past those, Paul Tol's; a paradigm keeps its colour in every figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from usagg.tasktypes.base import TaskType

#: The controls take the hue of what they control: TSM a light TS blue, AUD a pink far from AU's green;
#: AG (affinity groups) a dark wine (Tol), which CG's orange does not turn into for red-green colour blindness.
PARADIGM_COLORS: dict[str, str] = {
    "TS": "#0072B2", "CG": "#E69F00", "AU": "#009E73", "TSM": "#56B4E9", "AUD": "#CC79A7", "AG": "#882255"
}  # fmt: skip
_EXTRA_COLORS = ("#D55E00", "#F0E442", "#000000", "#44AA99")
#: A task type's colour is its own (`color` in usagg/tasktypes/): Tol's indigo and olive, ColorBrewer BrBG's dark
#: brown and a violet for the four built in, in hue families no paradigm uses. After Machado et al. (2009)'s
#: simulation of protan, deutan and tritan vision they stay CIELAB ΔE ≥ 13 from every paradigm colour (olive and
#: CGD's vermillion for protans; the rest ≥ 24) and ≥ 33 from each other; before 2026-12-07 one type had AG's
#: wine and another a grey deutans see as AG's wine (ΔE 1.4). A plug-in type whose colour a paradigm has is drawn
#: in the base class's neutral grey instead.
#: Lines of one task each (training curves, where no colour stands for a paradigm): Tol's muted scheme without AG's
#: wine, ordered so the first five stay ΔE ≥ 20 apart for every colour vision above; then again dotted and
#: dash-dotted where a study has more tasks than colours (never dashed: the curves' selection score is).
TASK_COLORS = ("#332288", "#CC6677", "#117733", "#88CCEE", "#999933", "#AA4499", "#44AA99", "#DDCC77")
TASK_STYLES = ("-", ":", "-.")
#: Markers where paradigms share one scatter, so points stay apart without colour.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: Light fills for groups of tasks (cells carry black text), in the order groups are met.
GROUP_FILLS = ("#A6CEE3", "#FDBF6F", "#B2DF8A", "#FB9A99", "#CAB2D6", "#FFFF99", "#8DD3C7", "#D9D9D9", "#BC80BD")


def _type_color(own: str) -> str:
    """A type's own colour, unless a paradigm has it (then the neutral grey): a paradigm keeps its colour."""
    taken = {c.lower() for c in (*PARADIGM_COLORS.values(), *_EXTRA_COLORS)}
    return TaskType.color if own.lower() in taken else own


def task_line_style(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th task's line: TASK_COLORS, then again with the next of TASK_STYLES."""
    turn, k = divmod(i, len(TASK_COLORS))
    return {"color": TASK_COLORS[k], "linestyle": TASK_STYLES[turn % len(TASK_STYLES)]}


class _TypeStyle(Mapping[str, str]):
    """A read-only view of one style attribute of the registered task types (usagg/tasktypes/).

    A type the registry does not know (an imported results table from a plug-in
    not installed here) gets the base class's neutral style instead of a KeyError.
    """

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __getitem__(self, name: str) -> str:
        from usagg.tasktypes import task_types

        for tt in task_types():
            if tt.name == name:
                return _type_color(tt.color) if self.attr == "color" else getattr(tt, self.attr)
        return name if self.attr == "short" else getattr(TaskType, self.attr)

    def __iter__(self) -> Iterator[str]:
        from usagg.tasktypes import task_type_names

        return iter(task_type_names())

    def __len__(self) -> int:
        return len(list(iter(self)))


TYPE_MARKERS = _TypeStyle("marker")
TYPE_COLORS = _TypeStyle("color")
#: Short type names where full names do not fit a column-wide axis.
TYPE_SHORT = _TypeStyle("short")

COLUMN_W = 3.5  # inches, one column of a two-column paper
PAGE_W = 7.0  # inches, full width
FONT_PT = 7.5


def paradigm_color(paradigm: str, paradigms: list[str] | None = None) -> str:
    """Fixed colour for TS, CG, AU and the controls; further paradigms take the extra colours in sorted order."""
    if paradigm in PARADIGM_COLORS:
        return PARADIGM_COLORS[paradigm]
    others = sorted(p for p in (paradigms or [paradigm]) if p not in PARADIGM_COLORS)
    i = others.index(paradigm) if paradigm in others else 0
    return _EXTRA_COLORS[i % len(_EXTRA_COLORS)]


def paradigm_marker(paradigm: str, paradigms: list[str]) -> str:
    """A scatter marker per paradigm, by its place in `paradigms` (registry order)."""
    return _MARKERS[paradigms.index(paradigm) % len(_MARKERS)] if paradigm in paradigms else _MARKERS[0]


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
    "text.parse_math": False,  # task, group and paradigm names are data, drawn as written: `$` never starts mathtext
}


@contextmanager
def paper_style() -> Iterator[None]:
    """matplotlib rcParams for paper figures, restored afterwards."""
    import matplotlib

    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # matplotlib types rc keys as a Literal of all names
        yield
