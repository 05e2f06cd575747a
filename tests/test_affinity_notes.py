"""The affinity table says which lookahead step measured it (a report once said AdamW for every record)."""

from __future__ import annotations

import pytest

from usagg.affinity import Affinity
from usagg.analysis.tables import describe_lookahead


def _aff(lookahead: str, lr: float | None) -> Affinity:
    return Affinity(tasks=["a", "b"], matrix=[[0.1, 0.0], [0.0, 0.1]], lookahead=lookahead, lookahead_lr=lr)


@pytest.mark.parametrize(
    ("lookahead", "lr", "says", "never"),
    [
        ("sgd", None, "θ − lr·g_i on task i's gradient g_i, at the encoder's rate at that step", "AdamW"),
        ("sgd", 0.01, "θ − lr·g_i on task i's gradient g_i, at rate 0.01", "AdamW"),
        ("adamw", None, "one AdamW step of a copy of the job's optimiser on task i's gradient, at each", "θ − lr"),
        ("adamw", 0.5, "AdamW step of a copy of the job's optimiser on task i's gradient, at rate 0.5", "θ − lr"),
        ("", None, "not recorded", "AdamW"),
    ],
)
def test_the_note_names_the_step_the_record_was_measured_with(
    lookahead: str, lr: float | None, says: str, never: str
) -> None:
    text = describe_lookahead(_aff(lookahead, lr))
    assert says in text and never not in text
