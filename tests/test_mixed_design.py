"""The mixed model built from arrays (usagg/analysis/mixed_design.py) is the model statsmodels' formula builds:
the same matrices, names and order, so every fit of it is the formula's to the last digit, on the demo's table
and a 3-seed one (a variance component per task × paradigm), whole, without one task (the leverage check's
refits) and with one task type (no type term)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import statsmodels.formula.api as smf

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import _frame, _rows
from usagg.analysis.mixed_design import mixed_model
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows

DATA = Path(__file__).parent / "data"
FORMULAS = {"paradigm": "0 + C(paradigm)", "unit": "0 + C(unit)"}


def _frame_of(path: Path):
    comp = compare(load_input(None, path))
    rows = _rows(comp, 1.0)
    return _frame(rows, [p for p in comp.others if any(r[1] == p for r in rows)])


def _by_formula(df, vc: tuple[str, ...]) -> Any:
    formula = "delta ~ 0 + C(paradigm) + C(paradigm):logn" + (" + C(type)" if df["type"].nunique() > 1 else "")
    return smf.mixedlm(formula, df, groups=df["group"], re_formula="1", vc_formula={k: FORMULAS[k] for k in vc} or None)


def _fit(model: Any, method: str, start: Any = None) -> tuple[float, np.ndarray, np.ndarray, list[str]] | str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(reml=True, method=method, start_params=start)
        except np.linalg.LinAlgError as err:
            return str(err)
    said = [str(w.message) for w in caught]
    return float(res.llf), res.fe_params.to_numpy(), res.cov_params().to_numpy(), said


@pytest.mark.parametrize("table", ["demo", "three_seeds"])
def test_the_array_built_model_is_the_formulas_to_the_last_digit(table: str, tmp_path: Path) -> None:
    if table == "demo":
        df, vcs = _frame_of(DATA / "demo_results.csv"), [("paradigm",), ()]
    else:
        tasks = load_tasks(DATA / "fmc_uia_tasks.yaml")[:12]
        write_results(simulate_rows(tasks, seed=4), tmp_path / "r.csv")
        df, vcs = _frame_of(tmp_path / "r.csv"), [("paradigm", "unit"), ("unit",)]
    first_task, first_type = sorted(set(df["task"]))[0], sorted(set(df["type"]))[-1]
    frames = [
        df,
        df[df["task"] != first_task].reset_index(drop=True),  # a leverage refit
        df[df["type"] == first_type].reset_index(drop=True),  # one type: no type term
    ]
    fits = 0
    for frame in frames:
        for vc in vcs:
            ours, theirs = mixed_model(frame, vc), _by_formula(frame, vc)
            assert ours.data.param_names == theirs.data.param_names and ours.exog_names == theirs.exog_names
            assert ours.exog_vc.names == theirs.exog_vc.names and ours.exog_vc.colnames == theirs.exog_vc.colnames
            assert np.array_equal(ours.exog, theirs.exog) and np.array_equal(ours.endog, theirs.endog)
            assert list(ours.group_labels) == list(theirs.group_labels)
            for method in ("lbfgs", "powell"):
                a, b = _fit(ours, method), _fit(theirs, method)
                assert type(a) is type(b)
                if isinstance(a, str) or isinstance(b, str):
                    assert a == b
                    continue
                assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]
                fits += 1
    assert fits >= 8


def test_an_unknown_variance_component_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown variance components \['task'\]"):
        mixed_model(_frame_of(DATA / "demo_results.csv"), ("task",))
