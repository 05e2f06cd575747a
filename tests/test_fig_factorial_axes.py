"""fig_factorial gives every 2x2 design's column a y axis of its own where the designs' ranges differ (a new-user
audit: CG's wide intervals over a few clinical groups flattened AU's bars on an axis shared by the row), and keeps a
row's panels on one range where they are alike: limits holding each panel's bars and interval ends, a zero line,
tick labels on every panel, and a caption that says which it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from usagg.analysis.factorial import EFFECTS, designs, scales_shown, stat_name
from usagg.analysis.figure_split import COMMON_RANGE, EFFECT_PAD, _effect_ylim, _row_ylims, _ylim_text, fig_factorial
from usagg.analysis.inputs import load_input
from usagg.analysis.results import Row, write_results
from usagg.analysis.style import paper_style
from usagg.analysis.summary import Analysis, analyse
from usagg.paradigms import PARADIGMS

#: Eight tasks in four clinical groups, baselines low enough that 1.5 x TS stays a DSC.
TASKS = {"a": ("G1", 0.3), "b": ("G1", 0.36), "c": ("G2", 0.24), "d": ("G2", 0.42), "e": ("G3", 0.3), "f": ("G3", 0.33),
         "g": ("G4", 0.27), "h": ("G4", 0.39)}  # fmt: skip
#: Each paradigm's metric as a multiple of TS and the spread of that multiple over tasks. AU's 2x2 moves a few %
#: with little noise; CG's moves tens of % with ten times the noise: its effects and intervals ~10x AU's.
APART = {"TS": (1.0, 0.0), "TSM": (1.01, 0.002), "AUD": (1.02, 0.004), "AU": (1.04, 0.006), "CGD": (1.2, 0.1),
         "CG": (1.4, 0.12)}  # fmt: skip
#: Both designs on one scale: a few % apart, the same noise.
ALIKE = {"TS": (1.0, 0.0), "TSM": (1.02, 0.01), "AUD": (1.04, 0.01), "AU": (1.07, 0.01), "CGD": (1.03, 0.01),
         "CG": (1.06, 0.01)}  # fmt: skip


def _analysis(folder: Path, ratios: dict[str, tuple[float, float]]) -> Analysis:
    rng = np.random.default_rng(0)
    rows = []
    for p, (ratio, sd) in ratios.items():
        for t, (g, base) in TASKS.items():
            v = base * ratio * (1 + sd * rng.normal())
            job = f"{p}-{g}" if PARADIGMS[p].scope == "group" else (f"{p}-all" if PARADIGMS[p].scope == "all" else t)
            rows.append(Row("s", job, p, g, 0, 1.0, t, "segmentation", "DSC", v, True, 100.0))
    folder.mkdir(parents=True, exist_ok=True)
    write_results(rows, folder / "r.csv")
    return analyse(load_input(None, folder / "r.csv"))


@pytest.fixture(scope="module")
def apart(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return _analysis(tmp_path_factory.mktemp("apart"), APART)


@pytest.fixture(scope="module")
def alike(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return _analysis(tmp_path_factory.mktemp("alike"), ALIKE)


def _drawn(a: Analysis) -> tuple[Figure, str, dict[tuple[str, str], Axes]]:
    """The figure, its caption and its panels by (design's paradigm, scale), after a draw (tick labels set)."""
    with paper_style():
        made = fig_factorial(a)
        assert made is not None
        fig, caption = made
        fig.draw_without_rendering()
    done = [d.paradigm for d in designs(a.comp) if d.complete]
    shown = scales_shown(a.comp)
    assert len(fig.axes) == len(done) * len(shown)
    panels = {(p, s): fig.axes[r * len(done) + c] for r, s in enumerate(shown) for c, p in enumerate(done)}
    return fig, caption, panels


def _bars_and_ends(a: Analysis, paradigm: str, scale: str) -> tuple[list[float], list[float]]:
    """A panel's bar heights and its intervals' ends."""
    f = max(a.comp.fractions)
    by = {(s.paradigm, s.name): s for s in a.stats if s.fraction == f}
    bars: list[float] = []
    ends: list[float] = []
    for e in EFFECTS:
        s = by[(paradigm, stat_name(e, scale))]
        assert s.value is not None and s.ci is not None
        bars.append(s.value)
        ends.extend(s.ci)
    return bars, ends


def _span(ax: Axes) -> float:
    lo, hi = ax.get_ylim()
    return hi - lo


def _check_panel(a: Analysis, paradigm: str, scale: str, ax: Axes, room: float) -> None:
    """Bars, interval ends and zero inside the panel's limits, with at most `room` times their span of axis."""
    bars, ends = _bars_and_ends(a, paradigm, scale)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(bars)  # the panel of that design and scale
    lo, hi = ax.get_ylim()
    drawn = [0.0, *bars, *ends]
    assert lo <= min(drawn) and max(drawn) <= hi  # bars, interval ends and zero all inside
    assert hi - lo <= room * (max(drawn) - min(drawn))  # and no acre of empty axis
    zero = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [0, 0]]
    assert zero, f"{paradigm} {scale}: no zero line"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
    assert len(labels) >= 2, f"{paradigm} {scale}: no y tick labels"


def test_designs_ten_times_apart_get_y_axes_of_their_own(apart: Analysis) -> None:
    _, caption, panels = _drawn(apart)
    assert {p for p, _ in panels} == {"AU", "CG"}
    for (p, s), ax in panels.items():
        _check_panel(apart, p, s, ax, room=1.3)
    for s in scales_shown(apart.comp):
        au, cg = panels[("AU", s)], panels[("CG", s)]
        assert au.get_ylim() != cg.get_ylim()
        assert _span(cg) > 5 * _span(au)  # AU's bars fill their own panel instead of a tenth of CG's
        tallest = max(abs(p.get_height()) for p in au.patches)
        assert tallest > 0.2 * _span(au)  # no sliver
    assert "Each panel has its own y range" in caption and "share one y range" not in caption
    assert "One row per scale, each with its own axis and unit" in caption


def test_designs_on_a_like_scale_share_their_row_s_range(alike: Analysis) -> None:
    _, caption, panels = _drawn(alike)
    for (p, s), ax in panels.items():
        _check_panel(alike, p, s, ax, room=1.3 * COMMON_RANGE)
    for s in scales_shown(alike.comp):
        assert panels[("AU", s)].get_ylim() == panels[("CG", s)].get_ylim()  # bar for bar comparable
    assert "The panels of a row share one y range." in caption and "its own y range" not in caption


def test_the_limits_hold_zero_and_every_end_with_room_to_spare() -> None:
    assert _effect_ylim([2.0, 5.0, np.nan]) == pytest.approx((-0.4, 5.4))  # zero is always inside
    lo, hi = _effect_ylim([-30.0, 10.0, -500.0, 480.0])  # type: ignore[misc]
    assert lo < -500 and hi > 480 and (hi - lo) == pytest.approx(980 * (1 + 2 * EFFECT_PAD))
    assert _effect_ylim([np.nan]) is None and _effect_ylim([0.0, 0.0]) is None


def test_a_row_shares_its_range_only_while_the_panels_are_alike() -> None:
    limits, common = _row_ylims([[-28.0, -18.0, 32.0], [-500.0, 480.0]])  # AU beside CG's cluster intervals
    assert not common and limits == [_effect_ylim([-28.0, -18.0, 32.0]), _effect_ylim([-500.0, 480.0])]
    limits, common = _row_ylims([[1.0, 4.0], [-1.0, 5.0]])
    assert common and limits[0] == limits[1] == _effect_ylim([-1.0, 5.0])
    limits, common = _row_ylims([[1.0, 4.0], [np.nan]])  # a panel with nothing drawn keeps matplotlib's default
    assert common and limits == [_effect_ylim([1.0, 4.0]), None]


def test_the_caption_says_which_rows_have_ranges_of_their_own() -> None:
    both = ["relative", "log_ratio"]
    assert _ylim_text(both, []) == " The panels of a row share one y range."
    assert _ylim_text(both, both).startswith(" Each panel has its own y range")
    mixed = _ylim_text(both, ["log_ratio"])
    assert "In the log ratio row each panel has its own y range" in mixed and "other rows" in mixed
