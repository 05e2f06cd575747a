"""The study's figures in the order a report shows them (`FIGURES`), drawn with matplotlib's object API (no pyplot
state) and written atomically (`render_all`).

fig2_absolute (usagg/analysis/figure_absolute.py), fig3_delta (with each task Δ's interval as error bars) and
fig_task_type (with two task types or more; figure_delta.py), fig_delta_split (where the controls TSM / AUD ran) and
fig_factorial (where a 2x2 of aggregation and MoE ran; figure_split.py), fig_delta_vs_ntrain and fig_fraction (with
several fractions; figure_data_size.py), fig_expert_usage (where MoE usage was logged; figure_experts.py),
fig_curves (curves.py, where jobs kept a history) and, where the study measured inter-task affinity, fig_affinity,
fig_affinity_delta and (synthetic studies with AG) fig_recovery (figure_affinity.py); what they share is in
figure_parts.py, their visual language in style.py. Each returns a Figure and a caption, or None where its data is
missing; `render_all` saves them. Figures showing one fraction use the largest (full data).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.analysis.curves import fig_curves
from usagg.analysis.figure_absolute import fig_absolute
from usagg.analysis.figure_affinity import fig_affinity, fig_affinity_delta, fig_recovery
from usagg.analysis.figure_data_size import fig_delta_vs_ntrain, fig_fraction
from usagg.analysis.figure_delta import fig_delta, fig_task_type
from usagg.analysis.figure_experts import fig_expert_usage
from usagg.analysis.figure_split import fig_delta_split, fig_factorial
from usagg.analysis.style import paper_style
from usagg.atomic import write_with

if TYPE_CHECKING:
    from usagg.analysis.summary import Analysis


@dataclass(frozen=True)
class FigureOut:
    """One written figure: its name (fig3_delta), the file, and the caption the report prints under it."""

    name: str
    path: Path
    caption: str


#: Figures of the report's "Affinity groups" section.
AFFINITY_FIGURES = ("fig_affinity", "fig_affinity_delta", "fig_recovery")


FIGURES = (
    ("fig2_absolute", fig_absolute),
    ("fig3_delta", fig_delta),
    ("fig_delta_split", fig_delta_split),
    ("fig_factorial", fig_factorial),
    ("fig_delta_vs_ntrain", fig_delta_vs_ntrain),
    ("fig_task_type", fig_task_type),
    ("fig_expert_usage", fig_expert_usage),
    ("fig_fraction", fig_fraction),
    ("fig_curves", fig_curves),
    ("fig_affinity", fig_affinity),
    ("fig_affinity_delta", fig_affinity_delta),
    ("fig_recovery", fig_recovery),
)


FIGURE_DPI = 300  # plot and report share it, so report reuses what plot rendered


def render_all(a: Analysis, folder: Path, fmt: str = "png", dpi: int = FIGURE_DPI) -> list[FigureOut]:
    """Draw every applicable figure and save it atomically as folder/<name>.<fmt>; return what was written.

    Always draws: the commands reuse earlier drawings through usagg/analysis/outputs.py.
    """
    out = []
    with paper_style():
        for name, make in FIGURES:
            made = make(a)
            if made is None:
                continue
            fig, cap = made
            path = Path(folder) / f"{name}.{fmt}"
            # zlib level 6 costs ~0.1 s a figure
            kw: dict[str, Any] = {"pil_kwargs": {"compress_level": 2}} if fmt == "png" else {}
            write_with(path, functools.partial(fig.savefig, format=fmt, dpi=dpi, **kw))
            out.append(FigureOut(name, path, cap))
    return out
