"""Figures: every task labelled, fonts legible at column width, one colour per paradigm, n/a shown."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.text import Text

from tests.store_reads import all_metrics
from usagg.analysis.curves import fig_curves
from usagg.analysis.figure_absolute import BOUND_MARGIN, fig_absolute
from usagg.analysis.figure_data_size import fig_delta_vs_ntrain
from usagg.analysis.figure_delta import fig_delta, fig_task_type
from usagg.analysis.figure_split import fig_delta_split
from usagg.analysis.figures import AFFINITY_FIGURES, FIGURES, render_all
from usagg.analysis.inputs import load_input
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import load_tasks, simulate_rows, simulate_run_store
from usagg.analysis.stats import spearman
from usagg.analysis.style import PARADIGM_COLORS, paper_style, paradigm_color
from usagg.analysis.summary import Analysis, analyse
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
PARADIGMS = ("TS", "CG", "AU", "TSM", "AUD")  # with the two controls, so the split figure is drawn
SIX_TASKS = {"FUGC", "IUGC", "breast_2cls", "breast_lesion", "thyroid_nodule_det", "thyroid_nodule"}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory):
    run = simulate_run_store(
        tmp_path_factory.mktemp("runs") / "fmc", load_tasks(TASKS), fractions=(0.5, 1.0), paradigms=PARADIGMS
    )
    return analyse(load_input(run, None))


def _texts(fig) -> list[Text]:  # type: ignore[no-untyped-def]
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("name", [n for n, _ in FIGURES if n not in AFFINITY_FIGURES])  # no affinity here
def test_every_text_is_at_least_7pt(analysis, name: str) -> None:
    with paper_style():
        made = dict(FIGURES)[name](analysis)
        assert made is not None
        fig, caption = made
        small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < 7]
    assert not small
    assert caption
    assert fig.get_size_inches()[0] in (3.5, 7.0, pytest.approx(4.55))


def test_delta_figure_labels_all_27_tasks_with_n_train(analysis) -> None:
    with paper_style():
        fig, _ = fig_delta(analysis)
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 27
    assert all("(n=" in lab for lab in labels)
    assert sorted(lab.split(" ")[0] for lab in labels if "†" in lab) == [
        "liver_lesion_2cls", "organ_cls", "spinal_cord_injury_loc"
    ]  # fmt: skip
    bars = [p for p in fig.axes[1].patches]
    colours = {to_hex(b.get_facecolor()) for b in bars}
    assert colours == {paradigm_color(p, list(PARADIGMS)).lower() for p in PARADIGMS[1:]}
    assert len(bars) == 27 * 4
    pale = [b for b in bars if b.get_alpha() is not None and b.get_alpha() < 1]
    assert len(pale) == 3 and {to_hex(b.get_facecolor()) for b in pale} == {PARADIGM_COLORS["CG"].lower()}


def test_delta_figure_has_an_error_bar_per_task_delta(analysis) -> None:
    with paper_style():
        fig, caption = fig_delta(analysis)
    (bars,) = [c for c in fig.axes[1].collections if isinstance(c, LineCollection)]
    segments = bars.get_segments()
    assert len(segments) == 27 * 4  # three seeds: a t interval for every Δ
    lo, hi = zip(*[(s[0][0], s[1][0]) for s in segments], strict=True)
    assert all(a < b for a, b in zip(lo, hi, strict=True))
    assert "95 % t interval over seeds" in caption


def test_split_figure_parts_add_up_to_the_total(analysis) -> None:
    with paper_style():
        fig, caption = fig_delta_split(analysis)
    cg, au = fig.axes[:2]
    assert cg.get_title() == "CG (control TSM)" and au.get_title() == "AU (control AUD)"
    widths = [b.get_width() for b in cg.patches]
    n = len(widths) // 2
    totals = cg.collections[0].get_offsets()[:, 0]
    assert np.allclose(np.asarray(widths[:n]) + np.asarray(widths[n:]), totals)
    assert "aggregation = ΔAUD" in caption and "MoE = ΔTSM" in caption


def test_ntrain_legend_carries_spearman(analysis) -> None:
    comp = analysis.comp
    names, vals = comp.delta_values(1.0, "CG")
    rho, p, n, _ = spearman(np.log([comp.n_train[(1.0, t)] for t in names]), vals)
    with paper_style():
        fig, _ = fig_delta_vs_ntrain(analysis)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"CG: ρ={rho:+.2f}, n={n}" in legend  # CG's tasks share a model: ρ is descriptive, no p (stats.py)
    assert p is not None and not any("p=" in t for t in legend if t.startswith(("CG", "AU")))


def test_extra_paradigms_get_stable_distinct_colours() -> None:
    ps = ["TS", "CG", "AU", "TAG", "AFF"]
    cols = [paradigm_color(p, ps) for p in ps]
    assert len(set(cols)) == 5
    assert paradigm_color("TAG", ps) == paradigm_color("TAG", list(reversed(ps)))


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_render_all_writes_atomically(tmp_path: Path) -> None:
    # six tasks (three groups of two, every type) draw every figure the 27 do, at half the cost
    tasks = [t for t in load_tasks(TASKS) if t["id"] in SIX_TASKS]
    run = simulate_run_store(tmp_path / "runs" / "six", tasks, fractions=(0.5, 1.0), paradigms=PARADIGMS)
    out = render_all(analyse(load_input(run, None)), tmp_path / "figs", "png", dpi=60)
    drawn = [n for n, _ in FIGURES if n not in AFFINITY_FIGURES]  # no affinity measured: none of its figures
    assert [o.name for o in out] == drawn  # two fractions: fig_fraction too
    assert all(o.path.stat().st_size > 0 for o in out)
    assert not list((tmp_path / "figs").glob(".*tmp"))


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


def _one_task(tmp_path: Path, task: str = "breast_2cls", **design) -> Analysis:  # type: ignore[no-untyped-def]
    """The analysis of a results table with one task (`usagg plot --results r.csv`)."""
    rows = simulate_rows([t for t in load_tasks(TASKS) if t["id"] == task], study="one", **design)
    write_results(rows, tmp_path / "r.csv")
    return analyse(load_input(None, tmp_path / "r.csv"))


def _draw_every_figure(a: Analysis) -> dict[str, object]:
    """Each figure of `a` drawn in full, with any warning raised as an error; name -> figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = {}
    with warnings.catch_warnings(), paper_style():
        warnings.simplefilter("error")
        for name, make in FIGURES:
            made = make(a)
            if made is not None:
                FigureCanvasAgg(made[0]).draw()
                out[name] = made[0]
    return out


@pytest.mark.parametrize(
    "design",
    [
        {"paradigms": ("TS", "CG")},  # CG leaves the lone task out: no point for fig_delta_vs_ntrain
        {"paradigms": ("TS", "CG", "AU", "TSM", "AUD")},  # no split for CG's panel of fig_delta_split
        {"paradigms": ("TS", "CG"), "fractions": (0.5, 1.0)},  # nor a Δm for fig_fraction
        {"paradigms": ("TS",), "fractions": (0.5, 1.0)},
        {"paradigms": ("TS", "AU"), "seeds": (0,)},
    ],
    ids=["TS-CG", "controls", "CG-fractions", "TS-fractions", "one-seed"],
)
def test_a_one_task_table_draws_without_matplotlib_warnings(tmp_path: Path, design: dict) -> None:
    drawn = _draw_every_figure(_one_task(tmp_path, **design))
    assert "fig2_absolute" in drawn
    assert not [n for n in ("fig_delta_vs_ntrain", "fig_fraction") if n in drawn and not drawn[n].axes[0].has_data()]


def _with_history(run: Path, epochs: int) -> Analysis:
    """`run` with every job's history cut to `epochs` epochs (training.epochs=1 keeps one)."""
    store = RunStore(run)
    for jid, m in all_metrics(store).items():
        m["history"] = [
            {"epoch": e, "step": 10 * e, "task_loss": {t: 2.0 * 0.85**e for t in m["tasks"]}, "select_score": e / 4}
            for e in range(1, epochs + 1)
        ]
        store.write_metrics(jid, m)
    store.mark_results_fresh()
    return analyse(load_input(run, None))


def test_curves_of_one_epoch_jobs_show_markers_on_whole_epochs(tmp_path: Path) -> None:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"breast_2cls", "breast_lesion"}]
    a = _with_history(simulate_run_store(tmp_path / "one", tasks, seeds=(0,)), 1)
    fig = _draw_every_figure(a)["fig_curves"]
    hosts = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() != "selection score" and ax.get_title()]
    assert hosts
    for ax in hosts:
        (loss, *_) = ax.get_lines()
        assert len(loss.get_xdata()) == 1 and loss.get_marker() == "o"  # a lone point is drawn
        assert ax.get_xlim() == (0.5, 1.5)
        assert [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1.0]  # one tick, epoch 1 (not 0.96 to 1.05)
    twins = [ax for ax in fig.axes if ax not in hosts and ax.get_visible() and ax.get_lines()]
    assert twins and all(ax.get_lines()[0].get_marker() == "s" for ax in twins)  # the selection score too


def test_curves_of_long_histories_stay_plain_lines(tmp_path: Path) -> None:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"breast_2cls", "breast_lesion"}]
    a = _with_history(simulate_run_store(tmp_path / "long", tasks, seeds=(0,)), 8)
    with paper_style():
        fig, caption = fig_curves(a)
    assert {line.get_marker() for ax in fig.axes for line in ax.get_lines()} == {"None"}
    assert "marker" not in caption


def test_absolute_intervals_stay_in_the_metric_range(tmp_path: Path) -> None:
    """Two seeds far apart give t intervals past the metric's bounds (12.7 × the sd / √2): cut at IoU ≤ 1 and
    MRE ≥ 0; the axis ends at the bound, not past the interval."""
    from matplotlib.collections import LineCollection

    from usagg.analysis.absolute_ci import absolute_interval

    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"thyroid_nodule_det", "FUGC"}]
    run = simulate_run_store(tmp_path / "s", tasks, paradigms=("TS", "AU"), seeds=(0, 1),
                             representative=["thyroid_nodule_det", "FUGC"])  # fmt: skip
    store = RunStore(run)
    spread = {("thyroid_nodule_det", "IoU"): (0.95, 0.6), ("FUGC", "MRE"): (2.0, 40.0)}
    rows = [
        dataclasses.replace(r, value=spread[(r.task, r.metric)][r.seed])
        if r.paradigm == "AU" and (r.task, r.metric) in spread
        else r
        for r in read_results(store.results_csv).rows
    ]
    write_results(rows, store.results_csv)
    store.mark_results_fresh()
    a = analyse(load_input(run, None))
    iou = absolute_interval(a.inp, a.comp, 1.0, "thyroid_nodule_det", "AU")
    mre = absolute_interval(a.inp, a.comp, 1.0, "FUGC", "AU")
    assert iou is not None and iou.clipped and (iou.low, iou.high) == (0.0, 1.0)
    assert mre is not None and mre.clipped and mre.low == 0.0 and mre.high > 40
    # known answer: t(0.975, 1 df) = 12.7062047361747 (scipy's t.ppf), times the sd of (2, 40) over √2
    assert mre.high == pytest.approx(21.0 + 12.7062047361747 * 38.0 / math.sqrt(2) / math.sqrt(2), rel=1e-12)
    fig, caption = _draw_every_figure(a)["fig2_absolute"], fig_absolute(a)[1]
    ends = {
        ax.get_ylabel(): [y for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()
                          for y in s[:, 1]]
        for ax in fig.axes
    }  # fmt: skip
    assert max(ends["IoU"]) == 1.0 and min(ends["MRE (px)"]) == 0.0
    axes = {ax.get_ylabel(): ax for ax in fig.axes}
    assert axes["IoU"].get_ylim() == (0.0, 1.0 + BOUND_MARGIN)
    assert axes["MRE (px)"].get_ylim()[0] == 0.0
    assert "cut at the range their metric can take (2 intervals cut: IoU, MRE)" in caption


def test_delta_axes_carry_the_scale_and_the_task_type_caption_names_what_is_left_out(analysis) -> None:
    """On analysis.scale log_ratio a Δ axis reads log points, not %; fig_task_type's n counts the type's tasks, and
    its caption names the tasks a paradigm's box leaves out (CG's one-task groups here)."""
    from usagg.analysis.delta import rescaled

    logged = dataclasses.replace(analysis, comp=rescaled(analysis.comp, "log_ratio"))
    with paper_style():
        fig, caption = fig_task_type(logged)
        assert fig.axes[0].get_ylabel() == "Δ versus TS (log points)"
        fig, _ = fig_delta_vs_ntrain(analysis)
        assert fig.axes[0].get_ylabel() == "Δ versus TS (%)"
    assert analysis.comp.excluded_text() and f"({analysis.comp.excluded_text()})." in caption
