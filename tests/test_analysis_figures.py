"""Figures: every task labelled, fonts legible at column width, one colour per paradigm, n/a shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.text import Text

from usagg.analysis import figures as F
from usagg.analysis.inputs import load_input
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.stats import spearman
from usagg.analysis.style import PARADIGM_COLORS, paper_style, paradigm_color
from usagg.analysis.summary import analyse

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory):
    run = simulate_run_store(tmp_path_factory.mktemp("runs") / "fmc", load_tasks(TASKS), fractions=(0.5, 1.0))
    return analyse(load_input(run, None))


def _texts(fig) -> list[Text]:  # type: ignore[no-untyped-def]
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("name", [n for n, _ in F.FIGURES])
def test_every_text_is_at_least_7pt(analysis, name: str) -> None:
    with paper_style():
        made = dict(F.FIGURES)[name](analysis)
        assert made is not None
        fig, caption = made
        small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < 7]
    assert not small
    assert caption
    assert fig.get_size_inches()[0] in (3.5, 7.0, pytest.approx(4.55))


def test_delta_figure_labels_all_27_tasks_with_n_train(analysis) -> None:
    with paper_style():
        fig, _ = F.fig_delta(analysis)
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 27
    assert all("(n=" in lab for lab in labels)
    bars = [p for p in fig.axes[1].patches]
    colours = {to_hex(b.get_facecolor()) for b in bars}
    assert colours == {PARADIGM_COLORS["CG"].lower(), PARADIGM_COLORS["AU"].lower()}
    assert len(bars) == 27 * 2


def test_ntrain_legend_carries_spearman(analysis) -> None:
    comp = analysis.comp
    names, vals = comp.delta_values(1.0, "CG")
    rho, p, n, _ = spearman(np.log([comp.n_train[(1.0, t)] for t in names]), vals)
    with paper_style():
        fig, _ = F.fig_delta_vs_ntrain(analysis)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"CG: ρ={rho:+.2f}, p={p:.2g}, n={n}" in legend


def test_extra_paradigms_get_stable_distinct_colours() -> None:
    ps = ["TS", "CG", "AU", "TAG", "AFF"]
    cols = [paradigm_color(p, ps) for p in ps]
    assert len(set(cols)) == 5
    assert paradigm_color("TAG", ps) == paradigm_color("TAG", list(reversed(ps)))


def test_render_all_writes_atomically(analysis, tmp_path: Path) -> None:
    out = F.render_all(analysis, tmp_path, "png", dpi=60)
    assert [o.name for o in out] == [n for n, _ in F.FIGURES]  # two fractions: fig_fraction too
    assert all(o.path.stat().st_size > 0 for o in out)
    assert not list(tmp_path.glob(".*tmp"))


def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from usagg.atomic import write_text_atomic

    mask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a" / "t.txt", "x")
    finally:
        os.umask(mask)
    assert path.read_text() == "x" and stat.S_IMODE(path.stat().st_mode) == 0o644
