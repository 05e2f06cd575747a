"""What a review of the shipped reports' figures asked for: training curves that tell the tasks of one type apart,
name the selection score only where one is drawn (and say what it is) and label every log axis twice; task-type
colours no paradigm has; fig_task_type's points and medians (no box of three points, no figure of one type);
fig_delta_vs_ntrain's points set side by side (deterministically) and a caption naming the test the study has;
fig_factorial's scales on axes of their own units."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tests.store_reads import all_metrics
from usagg.analysis import curves as C
from usagg.analysis import figure_data_size, figure_delta, figure_parts, figure_split, figures
from usagg.analysis.digits import significant
from usagg.analysis.inputs import load_input
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.style import PARADIGM_COLORS, TYPE_COLORS, paper_style, paradigm_color
from usagg.analysis.summary import Analysis, analyse
from usagg.store import RunStore
from usagg.tasktypes import task_types
from usagg.tasktypes.base import TaskType

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
#: Four classification tasks in two clinical groups: one task type, too few groups for any test of n_train.
ONE_TYPE = ("breast_2cls", "breast_3cls", "lung_2cls", "lung_disease_3cls")
#: Six tasks of three types in three clinical groups.
MIXED = ("breast_2cls", "breast_lesion", "lung_2cls", "lung_disease_3cls", "FUGC", "cervix")
PARADIGMS = ("TS", "CG", "AU", "TSM", "AUD")  # AU's 2x2 with its two controls: fig_factorial is drawn


def _study(root: Path, ids: tuple[str, ...], paradigms: tuple[str, ...], score: bool = True) -> Analysis:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in ids]
    run = simulate_run_store(root, tasks, paradigms=paradigms, seeds=(0, 1))
    if not score:  # a study without a selection split (data.selection_fraction 0) logs no selection score
        store = RunStore(run)
        for jid, m in all_metrics(store).items():
            m["history"] = [{k: v for k, v in h.items() if k != "select_score"} for h in m["history"]]
            store.write_metrics(jid, m)
        store.mark_results_fresh()
    return analyse(load_input(run, None))


@pytest.fixture(scope="module")
def one_type(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return _study(tmp_path_factory.mktemp("one") / "one", ONE_TYPE, ("TS", "CG", "AU"), score=False)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return _study(tmp_path_factory.mktemp("mixed") / "mixed", MIXED, PARADIGMS)


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_curves_tell_apart_the_tasks_of_one_type_and_keep_a_task_s_look_in_every_panel(one_type: Analysis) -> None:
    with paper_style():
        fig, caption = C.fig_curves(one_type)  # type: ignore[misc]
    looks: dict[str, set[tuple[str, object]]] = {}
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if line.get_label() in ONE_TYPE]
        drawn = {(to_hex(line.get_color()), line.get_linestyle()) for line in lines}
        assert len(drawn) == len(lines)  # CG Breast's two classification tasks no longer share a colour
        for line in lines:
            looks.setdefault(str(line.get_label()), set()).add((to_hex(line.get_color()), line.get_linestyle()))
    assert set(looks) == set(ONE_TYPE) and all(len(v) == 1 for v in looks.values())  # one look a task
    assert sorted(t for t in _legend_texts(fig)) == sorted(ONE_TYPE)  # tasks named, no score drawn: none keyed
    assert "No selection score" in caption and "right axis" not in caption
    assert "every task is classification" in caption


def test_curves_key_and_define_the_selection_score_where_one_is_drawn(mixed: Analysis) -> None:
    with paper_style():
        fig, caption = C.fig_curves(mixed)  # type: ignore[misc]
    assert "selection score (right axis)" in _legend_texts(fig)
    assert "Dashed, right axis: the job's selection score" in caption
    assert "relative change of each task's primary metric on the selection split" in caption
    assert "(segment.)" in " ".join(_legend_texts(fig))  # several types: each name says its type


@pytest.mark.parametrize("span", [(0.02, 0.6), (0.03, 0.9), (0.11, 2.5), (0.0005, 1.2), (0.2, 9.0)])
def test_every_log_loss_axis_labels_at_least_two_ticks(span: tuple[float, float]) -> None:
    """TS lesion_mark's losses (about 0.02 to 0.6) had one labelled tick, 0.1."""
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3], [span[1], math.sqrt(span[0] * span[1]), span[0]])
    C._log_ticks(ax, list(span))
    lo, hi = ax.get_ylim()
    shown = [v for v in ax.yaxis.get_major_locator()() if lo <= v <= hi]
    labels = [ax.yaxis.get_major_formatter()(v) for v in shown]
    assert len([lab for lab in labels if lab]) >= 2, labels
    assert len(shown) <= 8  # not every 1, 2 and 5 of many decades


def test_task_types_have_colours_no_paradigm_has() -> None:
    extras = [paradigm_color(p, [f"X{i}" for i in range(4)]) for p in (f"X{i}" for i in range(4))]
    paradigms = {c.lower() for c in (*PARADIGM_COLORS.values(), *extras)}
    own = [tt.color.lower() for tt in task_types()]  # what each type declares, before the figures' grey guard
    assert len(set(own)) == len(own) and TaskType.color.lower() not in own
    assert not set(own) & paradigms, "a task type takes a paradigm's colour: legends show two meanings for one"
    assert [TYPE_COLORS[tt.name].lower() for tt in task_types()] == own  # drawn as declared: none fell back


def test_task_type_figure_shows_points_and_medians_and_boxes_only_where_a_group_has_enough(
    mixed: Analysis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with paper_style():
        fig, caption = figure_delta.fig_task_type(mixed)  # type: ignore[misc]
    ax = fig.axes[0]
    assert not [p for p in ax.patches if isinstance(p, Rectangle)]  # 1-2 tasks of a type: no quartiles drawn
    medians = [c for c in ax.collections if isinstance(c, LineCollection)]
    points = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert len(medians) == len(points) > 0  # a median per drawn group
    assert "no boxes" in caption and f"{figure_delta.BOX_MIN} tasks" in caption
    monkeypatch.setattr(figure_delta, "BOX_MIN", 2)
    with paper_style():
        fig, caption = figure_delta.fig_task_type(mixed)  # type: ignore[misc]
    assert [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert "a shaded box spans the quartiles where a paradigm has at least 2 tasks" in caption


def test_task_type_figure_is_not_drawn_for_one_type(one_type: Analysis, tmp_path: Path) -> None:
    assert figure_delta.fig_task_type(one_type) is None
    names = {f.name for f in figures.render_all(one_type, tmp_path)}
    assert "fig_task_type" not in names and "fig3_delta" in names
    assert not (tmp_path / "fig_task_type.png").exists()


def test_delta_vs_ntrain_sets_paradigms_side_by_side_near_their_exact_n_train(mixed: Analysis) -> None:
    comp, f = mixed.comp, max(mixed.comp.fractions)
    with paper_style():
        fig, caption = figure_data_size.fig_delta_vs_ntrain(mixed)  # type: ignore[misc]
        again, _ = figure_data_size.fig_delta_vs_ntrain(mixed)  # type: ignore[misc]
    drawn = [c for c in fig.axes[0].collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in drawn])
    assert len(np.unique(xs)) == len(xs)  # a task's n_train is the same for every paradigm: no two points stacked
    for c, p in zip(drawn, comp.others, strict=True):
        names, _ = comp.delta_values(f, p)
        exact = np.asarray([comp.n_train[(f, t)] for t in names], float)
        assert np.all(np.abs(np.log10(c.get_offsets()[:, 0] / exact)) <= figure_data_size.DODGE_DECADES / 2 + 1e-12)
    redrawn = [c for c in again.axes[0].collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert all(np.array_equal(a.get_offsets(), b.get_offsets()) for a, b in zip(drawn, redrawn, strict=True))
    assert "side by side, a column per paradigm" in caption and "exact per task" in caption


def test_delta_vs_ntrain_says_no_test_was_possible_with_two_groups(one_type: Analysis) -> None:
    """Two clinical groups: the mixed model is not fitted and ρ over groups has no p; too few tasks a paradigm for a
    trend line (`TREND_MIN`), so the caption calls ρ alone descriptive and says why no line is drawn."""
    with paper_style():
        _, caption = figure_data_size.fig_delta_vs_ntrain(one_type)  # type: ignore[misc]
    assert "the mixed model's slope is the test" not in caption
    assert "No test of the relation was possible for this study (mixed model not fitted: 2 clinical groups" in caption
    assert "ρ is descriptive" in caption and "lines and ρ" not in caption
    assert f"no trend lines: no paradigm has the {figure_parts.TREND_MIN} tasks" in caption


def test_delta_vs_ntrain_names_the_tests_the_study_has(mixed: Analysis) -> None:
    from usagg.analysis.mixed import SLOPE

    f = max(mixed.comp.fractions)
    fitted = [s for s in mixed.stats if s.name == SLOPE and s.fraction == f and s.p is not None]
    ranked = [s for s in mixed.stats if s.name == figure_data_size.GROUP_RHO and s.fraction == f and s.p is not None]
    with paper_style():
        _, caption = figure_data_size.fig_delta_vs_ntrain(mixed)  # type: ignore[misc]
    assert fitted or ranked  # three clinical groups: some test exists
    assert "Tests of the relation (statistics table)" in caption and "No test of the relation" not in caption
    for s in fitted:
        assert f"{s.paradigm} {significant(s.value, sign=True)} (p = {s.p:.2g}" in caption
    if ranked:
        assert "Spearman ρ over clinical groups" in caption


def test_factorial_puts_each_scale_on_an_axis_of_its_unit(mixed: Analysis) -> None:
    with paper_style():
        fig, caption = figure_split.fig_factorial(mixed)  # type: ignore[misc]
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["mean effect, relative\n(%)", "mean effect, log ratio\n(log points)"]
    assert "One row per scale, each with its own axis and unit" in caption


def test_the_reviewed_figures_draw_the_same_bytes_twice(mixed: Analysis, tmp_path: Path) -> None:
    """Reports must reproduce byte for byte from the same run store: no unseeded jitter."""
    first = {f.name: f.path.read_bytes() for f in figures.render_all(mixed, tmp_path / "a", dpi=60)}
    second = {f.name: f.path.read_bytes() for f in figures.render_all(mixed, tmp_path / "b", dpi=60)}
    reviewed = {"fig_curves", "fig_task_type", "fig_delta_vs_ntrain", "fig_factorial", "fig3_delta"}
    assert reviewed <= set(first)
    assert all(first[n] == second[n] for n in reviewed)


def test_the_data_size_captions_say_slopes_with_the_statistics_tables_digits(mixed: Analysis) -> None:
    """The caption printed AG's slope '+57' where the statistics table and the headline show 57.0, and a sweep's
    slope interval to one decimal where the fraction table shows 3 significant digits."""
    from usagg.analysis.fraction_trend import FRACTION_SLOPE, POOLED
    from usagg.analysis.mixed import SLOPE
    from usagg.analysis.stats import Stat

    f = max(mixed.comp.fractions)
    slope = Stat(SLOPE, "AU", f, 57.0, 9, "m", p=0.035)
    sweep = Stat(FRACTION_SLOPE, "AU", POOLED, -0.9041, 9, "m", p=0.5, ci=(-176.6, 4.734))
    a = dataclasses.replace(mixed, stats=[slope, sweep])
    assert "AU +57.0 (p = 0.035)" in figure_data_size._scale_test_text(a, f, 1)
    assert "AU -0.904 (95 % CI -177 to +4.73, p = 0.5)" in figure_data_size._slope_text(a)
