"""The mixed model's verdict is the REML maximum of the data, whatever the order of the rows (audit finding 4)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import BOUNDARY, SLOPE, UNIT, interaction_model, shared_notes

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


def test_the_reports_mixed_model_notes_name_their_paradigm_in_the_headlines_order(tmp_path: Path) -> None:
    """The demo's report had seven "Mixed model, read with care" bullets naming no paradigm, sorted by their text, the
    first without a number ("a variance component is estimated at 0"). The whole fit's note is now said once, naming
    the variance at 0 and its sd, then each slope's own note under its paradigm, in the order of the paradigm bullets
    above them, in report.md and report.html alike."""
    from usagg.analysis.report import write_report
    from usagg.analysis.summary import analyse

    a = analyse(load_input(None, DEMO))
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text().splitlines()
    order = [ln[4:].split(" vs TS**")[0] for ln in md if ln.startswith("- **") and " vs TS** (fraction 1)" in ln]
    assert order == ["CG", "AU", "AG", "TSM", "AUD", "CGD"]
    care = [ln for ln in md if ln.startswith("- **Mixed model") and "read with care" in ln]
    assert care == [
        "- **Mixed model (whole fit: CG, AU, AG, TSM, AUD, CGD vs TS), read with care**: the variance of paradigm "
        "within a group is estimated at 0 (sd 0.00 pp against a residual sd of 12.99 pp: at the boundary of the "
        "parameter space).",
        *(
            f"- **Mixed model ({p} vs TS), read with care**: carried by one task: without {task} the slope is {w} pp "
            f"(with it {with_})."
            for p, task, w, with_ in [
                ("CG", "breast_lesion", "+4.6", "+57.9"),
                ("AU", "breast_lesion_cls", "+10.6", "+28.3"),
                ("AG", "breast_lesion", "+11.2", "+57.0"),
                ("TSM", "breast_lesion", "+39.0", "+79.6"),
                ("AUD", "breast_lesion", "+22.3", "+49.7"),
                ("CGD", "breast_lesion", "-8.3", "+17.5"),
            ]
        ),
    ]
    slope = next(s for s in a.stats if s.name == SLOPE and s.paradigm == "AG")
    assert "of paradigm within a group 0.00 pp, of task" not in slope.method  # one seed: no task x paradigm term
    assert "of paradigm within a group 0.00 pp, residual 12.99 pp" in slope.method  # the note's numbers, as fitted
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("read with care") == 7 and "Mixed model (AG vs TS), read with care" in html


def test_notes_every_estimate_of_a_fit_carries_are_split_from_each_ones_own() -> None:
    """What the report says once (a note on every estimate, in its order) and what stays with one estimate; a fit of
    one estimate keeps its whole note, so its one bullet says everything."""
    from usagg.analysis.stats import Stat

    def est(name: str, paradigm: str, note: str) -> Stat:
        return Stat(name, paradigm, 1.0, 1.0, 9, "m", 0.5, (0.0, 2.0), note)

    cg, au = est(SLOPE, "CG", "fit A; carried CG"), est(SLOPE, "AU", "fit A; warned B")
    inter = est("mixed model: interaction, slope AU − slope CG", "AU-CG", "warned B; fit A")
    assert shared_notes([cg, au, inter]) == ("fit A", [(cg, "carried CG"), (au, "warned B"), (inter, "warned B")])
    bare = est(SLOPE, "AU", "")  # an estimate without a note: no note is on every one
    assert shared_notes([cg, bare]) == ("", [(cg, "fit A; carried CG"), (bare, "")])
    assert shared_notes([cg]) == ("", [(cg, "fit A; carried CG")])
