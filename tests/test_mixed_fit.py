"""The mixed model's verdict is the REML maximum of the data, whatever the order of the rows (audit finding 4)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import BOUNDARY, SLOPE, UNIT, interaction_model

#: The demo's one-seed results (`make demo`): 4 clinical groups, 9 tasks of 19-77 images, TSM breast_lesion collapsed.
DEMO = Path(__file__).parent / "data" / "demo_results.csv"


def _shuffled(tmp_path: Path, seed: int) -> Path:
    """The demo's results.csv with its rows in another order."""
    with DEMO.open() as f:
        head, *rows = list(csv.reader(f))
    random.Random(seed).shuffle(rows)
    out = tmp_path / f"r{seed}.csv"
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([head, *rows])
    return out


def _fitted(path: Path) -> list[tuple[str, float | None, tuple[float, float] | None, float | None, str]]:
    return [(s.paradigm, s.value, s.ci, s.p, s.note) for s in interaction_model(compare(load_input(None, path)), 1.0)]


def test_shuffled_rows_give_the_same_fit_at_the_reml_maximum(tmp_path: Path) -> None:
    """The demo's fit was "not fitted: the optimiser did not converge" in its own row order and fitted in 5 of 10
    shuffles, at a point below the REML maximum (where the paradigm-within-group variance is 0). Every order now
    gives the same numbers, the maximum's, said as a boundary fit."""
    ref = _fitted(DEMO)
    for seed in range(3):
        assert _fitted(_shuffled(tmp_path, seed)) == ref
    stats = {s.paradigm: s for s in interaction_model(compare(load_input(None, DEMO)), 1.0)}
    cg = stats["CG"]
    assert cg.name == SLOPE and cg.value is not None and cg.ci is not None and BOUNDARY in cg.note
    assert "of paradigm within a group 0.00 pp" in cg.method and "lbfgs, bfgs, powell, nm, cg" in cg.method
    # per doubling: the reviewer's lbfgs maximum, +192.35 pp per tenfold, is 192.35 · log10(2) per doubling
    assert cg.value == pytest.approx(192.35 * 0.30103, abs=0.1)
    assert "n_train 19-77 (2.0 doublings)" in cg.method and UNIT == "per doubling of n_train"


def test_a_slope_carried_by_one_task_is_said(tmp_path: Path) -> None:
    """TSM's collapsed breast_lesion run (−92.5 % at the smallest size) carries TSM's slope: without that task it
    halves (+79.6 to +39.0 pp per doubling), and the note names it. The interaction rows carry no such note."""
    stats = {s.paradigm: s for s in interaction_model(compare(load_input(None, DEMO)), 1.0)}
    assert "carried by one task: without breast_lesion the slope is +39.0 pp (with it +79.6)" in stats["TSM"].note
    assert "carried by one task" not in stats["AU-CG"].note
