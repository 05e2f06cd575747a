"""`usagg compare --format csv --table NAME`: a name the study has no table of is refused before the analysis
(its bootstrap and mixed model are the slow part), with the message the analysis gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from usagg.analysis.inputs import load_input
from usagg.analysis.outputs import Memoised
from usagg.analysis.results import write_results
from usagg.analysis.simulate import simulate_rows
from usagg.analysis.summary import analyse, check_table, named_table
from usagg.errors import UsaggError

TASKS = [{"id": f"t{i}", "type": "classification", "num_classes": 2, "group": g} for i, g in enumerate("AABB")]


def _results(tmp_path: Path, *, swept: bool = False, **design: tuple) -> Path:
    """A simulated results table of four tasks; `swept`: two points of training.lr_encoder."""
    rows = simulate_rows(TASKS, **design)
    if swept:
        rows = [
            dataclasses.replace(r, job_id=f"{r.job_id}-{lr}", sweep=(("training.lr_encoder", lr),))
            for lr in ("0.0001", "0.001")
            for r in rows
        ]
    write_results(rows, tmp_path / "results.csv")
    return tmp_path / "results.csv"


@pytest.mark.parametrize("swept", [False, True], ids=["study", "swept"])
def test_an_unknown_table_is_refused_before_the_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], swept: bool
) -> None:
    def analysed(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis ran before --table was checked")

    monkeypatch.setattr(Memoised, "analyse", analysed)
    path = str(_results(tmp_path, swept=swept))
    code, out = run_cli(["compare", "--results", path, "--format", "csv", "--table", "sumary"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out
    assert "--table 'sumary' is not a table of this study (did you mean 'summary'?); its tables: delta, summary" in out


def test_the_early_refusal_is_the_message_the_analysis_gives(tmp_path: Path) -> None:
    inp = load_input(None, _results(tmp_path, paradigms=("TS", "CG"), fractions=(0.5, 1.0)))
    with pytest.raises(UsaggError) as early:
        check_table(inp, "tasks")
    with pytest.raises(UsaggError) as late:
        named_table(analyse(inp), "tasks")
    assert str(early.value) == str(late.value)
    assert "(did you mean 'tasks_f1'?)" in str(early.value) and "uncertainty_f1" in str(early.value)


def test_every_table_of_the_study_and_the_commands_own_pass_the_check(tmp_path: Path) -> None:
    inp = load_input(None, _results(tmp_path, paradigms=("TS", "TSM", "AUD", "AU", "CG")))
    for name in ("delta", "selection_gap", "expectations", "summary", "factorial", "split", "statistics", "power"):
        check_table(inp, name)


def test_the_intervals_table_needs_the_statistics_so_it_is_checked_again_after_them(tmp_path: Path) -> None:
    """The baseline alone: no Δ, so no interval of one and no uncertainty table, which only the statistics tell;
    the check lets the name through and the analysis refuses it as before."""
    inp = load_input(None, _results(tmp_path, paradigms=("TS",)))
    check_table(inp, "uncertainty")
    with pytest.raises(UsaggError, match=r"--table 'uncertainty' is not a table of this study"):
        named_table(analyse(inp), "uncertainty")


def test_a_note_repeated_under_later_tables_is_said_once_in_compares_text() -> None:
    """A new user's `compare` printed the one-task-group note under nearly every table (412 lines for the demo):
    the first table says it whole, later ones its subject and "(see above)"; LaTeX and CSV keep every note."""
    from usagg.analysis.tables import Table, said_once

    note = "CG: 1 task alone in its clinical group left out of every CG aggregate and test (heart): a long reason."
    first = Table("a", "A", ["x"], [[1]], ["A's own note.", note])
    second = Table("b", "B", ["x"], [[2]], [note, "B's own note."])
    a, b = said_once([first, second])
    assert a.notes == first.notes
    assert b.notes == [
        "CG: 1 task alone in its clinical group left out of every CG aggregate and test (heart) (see above).",
        "B's own note.",
    ]
    assert second.notes[0] == note  # the tables themselves (their CSV and LaTeX files) keep it whole
