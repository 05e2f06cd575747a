"""The Δ figures mark a task whose baseline is at chance as the analysis treats it: Figure 3 draws its bars pale
with ‡ on its label and names it in the caption, the figures over tasks name it as left out of their points, and
under analysis.chance_tasks: include (kept in every aggregate) nothing is marked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from usagg.analysis.figure_data_size import fig_delta_vs_ntrain, fig_fraction
from usagg.analysis.figure_delta import CHANCE_MARK, fig_delta, fig_task_type
from usagg.analysis.figure_split import fig_delta_split
from usagg.analysis.inputs import load_input
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.style import paper_style
from usagg.analysis.summary import Analysis, analyse

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
#: Two clinical groups of two tasks each (no one-task group under CG), a classification task in each.
FOUR = ("breast_2cls", "breast_lesion", "lung_2cls", "lung")
AT_CHANCE = "breast_2cls"
PARADIGMS = ("TS", "CG", "AU", "TSM", "AUD")  # the controls too, so the split figure is drawn


def _analysis(tmp_path: Path, chance_tasks: str = "exclude", fractions: tuple[float, ...] = (1.0,)) -> Analysis:
    """A four-task study whose TS AUC of AT_CHANCE is 0.40 in every seed: below chance."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in FOUR]
    rows = simulate_rows(tasks, paradigms=PARADIGMS, fractions=fractions, study="chance")
    rows = [
        dataclasses.replace(r, value=0.40) if (r.paradigm, r.task, r.metric) == ("TS", AT_CHANCE, "AUC") else r
        for r in rows
    ]
    write_results(rows, tmp_path / "r.csv")
    inp = load_input(None, tmp_path / "r.csv")
    inp.settings.chance_tasks = chance_tasks
    return analyse(inp)


def _task_bars(fig, task: str) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """(the task's bars, every other bar) of Figure 3, by the row its label sits at."""
    strip, ax = fig.axes[:2]
    rows = dict(zip((t.get_text().split(" ")[0] for t in strip.get_yticklabels()), strip.get_yticks(), strict=True))
    mine = [b for b in ax.patches if abs(b.get_y() + b.get_height() / 2 - rows[task]) < 0.5]
    return mine, [b for b in ax.patches if b not in mine]


def _pale(bar) -> bool:  # type: ignore[no-untyped-def]
    return bar.get_alpha() is not None and bar.get_alpha() < 1


@pytest.fixture(scope="module")
def excluded(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    a = _analysis(tmp_path_factory.mktemp("chance"))
    assert a.comp.chance[1.0] == (AT_CHANCE,) and a.comp.chance_excluded and not a.comp.excluded
    return a


def test_figure_3_draws_a_task_at_chance_pale_marked_and_named(excluded: Analysis) -> None:
    with paper_style():
        fig, caption = fig_delta(excluded)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    (marked,) = [lab for lab in labels if CHANCE_MARK in lab]
    assert marked.startswith(f"{AT_CHANCE} {CHANCE_MARK} (n=")
    assert not any("†" in lab for lab in labels)  # no one-task group here: the dagger is not reused
    mine, rest = _task_bars(fig, AT_CHANCE)
    assert len(mine) == len(PARADIGMS) - 1 and all(_pale(b) for b in mine)  # every paradigm's bar of it
    assert rest and not any(_pale(b) for b in rest)
    assert f"{CHANCE_MARK}: TS at chance ({AT_CHANCE}); pale bar" in caption
    assert "analysis.chance_tasks: exclude" in caption


def test_the_figures_over_tasks_name_the_task_at_chance_they_leave_out(excluded: Analysis) -> None:
    named = f"(analysis.chance_tasks): {AT_CHANCE}."
    with paper_style():
        ntrain, ntrain_cap = fig_delta_vs_ntrain(excluded)  # type: ignore[misc]
        _, split_cap = fig_delta_split(excluded)  # type: ignore[misc]
        _, type_cap = fig_task_type(excluded)  # type: ignore[misc]
    assert f"At chance, left out of every paradigm's points {named}" in ntrain_cap
    assert all(len(c.get_offsets()) == len(FOUR) - 1 for c in ntrain.axes[0].collections if len(c.get_offsets()))
    assert f"At chance, left out of every part {named}" in split_cap
    assert f"every paradigm: {AT_CHANCE} (at chance)" in type_cap


def test_the_fraction_figure_leaves_the_task_at_chance_out_of_every_point_and_says_why(tmp_path: Path) -> None:
    """Its lines are over the tasks with a Δ at every fraction, so a task at chance at any fraction leaves them all."""
    a = _analysis(tmp_path, fractions=(0.5, 1.0))
    assert all(a.comp.chance[f] == (AT_CHANCE,) for f in (0.5, 1.0))
    with paper_style():
        _, caption = fig_fraction(a)  # type: ignore[misc]
    others = "; ".join(f"{p}: {AT_CHANCE} (TS at chance at fraction 0.5)" for p in a.comp.others)
    assert f"Left out: {others}." in caption
    assert "(3 tasks)" in caption or "legend: how many" in caption


def test_kept_under_chance_tasks_include_nothing_is_marked(tmp_path: Path) -> None:
    a = _analysis(tmp_path, chance_tasks="include")
    assert a.comp.chance[1.0] == (AT_CHANCE,) and not a.comp.chance_excluded  # flagged, but kept
    with paper_style():
        fig, caption = fig_delta(a)
        _, ntrain_cap = fig_delta_vs_ntrain(a)  # type: ignore[misc]
    assert not any(CHANCE_MARK in t.get_text() for t in fig.axes[0].get_yticklabels())
    assert not any(_pale(b) for b in fig.axes[1].patches)
    assert "chance" not in caption and "chance" not in ntrain_cap
