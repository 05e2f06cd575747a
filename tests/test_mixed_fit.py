"""The mixed model's verdict is the REML maximum of the data, whatever the order of the rows (audit finding 4)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from statsmodels.regression.mixed_linear_model import MixedLMParams

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import (
    BOUNDARY,
    SLOPE,
    UNIT,
    _at_boundary,
    _at_maximum,
    _best_fit,
    _frame,
    _model,
    _one_fit,
    _rows,
    _searched,
    interaction_model,
    shared_notes,
)
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows

#: The demo's one-seed results (`make demo`): 4 clinical groups, 9 tasks of 19-77 images, TSM breast_lesion collapsed.
DEMO = Path(__file__).parent / "data" / "demo_results.csv"
TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
#: The variance component of the joint model of both tables below (several paradigms), as `mixed._fit` asks for it.
PER_PARADIGM = ("paradigm",)


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
    assert "of paradigm within a group 0.00 pp" in cg.method and "by lbfgs, restarted where it stopped" in cg.method
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


def _frame_of(path: Path):
    """The mixed model's data frame of a results table at fraction 1, every paradigm compared."""
    comp = compare(load_input(None, path))
    rows = _rows(comp, 1.0)
    return _frame(rows, [p for p in comp.others if any(r[1] == p for r in rows)])


def test_the_restarted_fit_is_the_searched_maximum_on_the_demo() -> None:
    """The fast path (lbfgs restarted where it stopped) is the five-optimiser search's answer to the last digit
    on the demo: the search's winner is that same restart."""
    df = _frame_of(DEMO)
    fast = _best_fit(df, PER_PARADIGM)
    searched = _searched(_model(df, PER_PARADIGM))
    assert not isinstance(fast, str) and not isinstance(searched, str)
    assert "(1 restart;" in fast[2] and searched[2].startswith("over the optimisers lbfgs, bfgs, powell, nm, cg")
    assert float(fast[0].llf) == pytest.approx(-162.946, abs=1e-3)
    assert float(fast[0].llf) == pytest.approx(float(searched[0].llf), rel=1e-12)
    assert fast[0].fe_params.to_numpy() == pytest.approx(searched[0].fe_params.to_numpy(), rel=1e-9)
    assert fast[0].bse_fe.to_numpy() == pytest.approx(searched[0].bse_fe.to_numpy(), rel=1e-9)
    assert fast[1] == searched[1]  # the same warnings: the boundary note


def test_a_restart_reaches_the_maximum_where_lbfgs_alone_stops_short(tmp_path: Path) -> None:
    """On the simulated 27-task, 3-seed table of seed 4, lbfgs alone says "converged" 0.044 below the REML
    maximum; its first restart climbs that far (so it is no stop), the second gains nothing, and the answer is
    the search's: the same log-likelihood and slopes to 1e-6 pp."""
    write_results(simulate_rows(load_tasks(TASKS), seed=4), tmp_path / "r.csv")
    df = _frame_of(tmp_path / "r.csv")
    vc = (*PER_PARADIGM, "unit")
    model = _model(df, vc)
    alone = _one_fit(model, "lbfgs", None)[1]
    searched = _searched(model)
    fast = _best_fit(df, vc)
    assert not isinstance(fast, str) and not isinstance(searched, str)
    assert alone.converged and float(alone.llf) == pytest.approx(float(searched[0].llf) - 0.044, abs=1e-3)
    assert "(2 restarts;" in fast[2]
    assert float(fast[0].llf) == pytest.approx(float(searched[0].llf), abs=1e-5)
    assert fast[0].fe_params.to_numpy() == pytest.approx(searched[0].fe_params.to_numpy(), abs=1e-6)


def test_a_variance_held_at_0_below_its_optimum_is_no_maximum() -> None:
    """A converged fit with the group variance held at 0 (its REML optimum is 1.96 residual variances) is at the
    boundary and converged, yet freeing that variance raises the REML: not a maximum, so `_best_fit` would
    search. The demo's maximum, with the paradigm variance at 0, is one."""
    df = _frame_of(DEMO)
    best = _best_fit(df, PER_PARADIGM)
    assert not isinstance(best, str) and _at_maximum(best[0], float(best[0].llf))
    assert float(best[0].params_object.cov_re[0, 0]) == pytest.approx(1.96, abs=0.01)
    fe = best[0].params_object.fe_params
    start = MixedLMParams.from_components(fe, cov_re=np.full((1, 1), 5e-5), vcomp=np.array([0.5]))
    held = MixedLMParams.from_components(np.ones(len(fe)), cov_re=np.zeros((1, 1)), vcomp=np.ones(1))
    model = _model(df, PER_PARADIGM)
    pinned = model.fit(reml=True, method="lbfgs", start_params=start, free=held)
    assert pinned.converged and _at_boundary(pinned)
    assert float(pinned.llf) < float(best[0].llf) - 1
    assert not _at_maximum(pinned, float(pinned.llf))
