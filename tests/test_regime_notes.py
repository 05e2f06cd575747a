"""The aggregates table says where regime and task type are confounded, or every group falls in one regime
(audit finding 9)."""

from __future__ import annotations

from pathlib import Path

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.regime_notes import regime_notes
from usagg.analysis.tables import aggregate_table

DEMO = Path(__file__).parent / "data" / "demo_results.csv"


def test_the_demo_regimes_are_said_to_confound_size_with_type() -> None:
    """The demo (analysis.regime_threshold 64): 2 tasks of 77 images, both classification, are the data-rich regime;
    every group is below the study's 5,000 images."""
    comp = compare(load_input(None, DEMO))
    comp.regime_threshold = 64
    notes = regime_notes(comp, 1.0)
    assert notes == [
        "The data-rich (n≥64) regime is 2 tasks, every one classification: its row confounds data size with task "
        "type in this design.",
        "Every clinical group falls in one regime, low-data group (n<5000) (analysis.group_regime_threshold): the "
        "group-regime row repeats the mean over all tasks and says nothing of group size.",
    ]
    assert set(notes) <= set(aggregate_table(comp, 1.0).notes)


def test_a_regime_of_mixed_types_and_groups_in_both_regimes_get_no_note() -> None:
    comp = compare(load_input(None, DEMO))
    comp.regime_threshold, comp.group_regime_threshold = 50, 100
    assert regime_notes(comp, 1.0) == []
