"""A plug-in task type's metrics: one name means one metric across every registered type, and `score()` returns the
metrics its type declares.

results.csv, compare, advise and the figures read a metric's direction, unit and bounds by its name alone
(usagg/tasktypes `metric_direction`), so a plug-in that redeclares a built-in's name differently is refused at
registration, from code, a `USAGG_PLUGINS` module or an entry point alike; a type scoring names it never declared
fails its job instead of leaving the task out of every aggregate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from usagg.engine.evaluate import EvalSet, score
from usagg.errors import UsaggError
from usagg.spec.models import TaskSpec
from usagg.tasktypes import (
    TASK_TYPES,
    Metric,
    TaskType,
    metric_direction,
    metric_unit,
    register_task_type,
    unregister_task_type,
)


class Grading(TaskType):
    """The audit's plug-in: 'HD' as a higher-is-better hit fraction, which segmentation declares as a distance."""

    name = "grading"
    metrics = (Metric("HD", True, None, 0.0, 1.0),)
    num_classes_meaning = "grades"
    prediction_file = "grading_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_grade")


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Names a test registers, unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_task_type(name)


def _type(name: str, *metrics: Metric) -> type[TaskType]:
    return type(name.title(), (Grading,), {"name": name, "metrics": metrics})


def test_a_metric_a_built_in_declares_otherwise_is_refused_naming_both_types(cleanup: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        register_task_type(Grading)
    text = str(err.value)
    assert "task type 'grading' (test_plugin_metrics.Grading) declares metric 'HD' differently" in text
    assert "task type 'segmentation' (usagg.tasktypes.segmentation.Segmentation)" in text
    assert "direction higher is better here, lower is better in segmentation" in text
    assert "unit none here, px in segmentation" in text and "bounds [0, 1] here, [0, ∞) in segmentation" in text
    assert "distinct name, such as 'HD_grading'" in text and "\n" not in text
    assert "grading" not in TASK_TYPES and metric_direction("HD") is False and metric_unit("HD") == "px"

    same = _type("landmarks", Metric("MRE", False, "px", lower=0.0))  # the built-in's definition: the same metric
    register_task_type(same)
    cleanup.append("landmarks")
    assert TASK_TYPES["landmarks"].metrics == same.metrics


def test_a_clash_between_two_plugins_names_the_first_and_only_what_differs(cleanup: list[str]) -> None:
    register_task_type(_type("staging", Metric("Stage_err", False, "grades", lower=0.0)))
    cleanup.append("staging")
    with pytest.raises(
        ValueError,
        match=r"differently from task type 'staging' \(test_plugin_metrics.Staging\): "
        r"unit stages here, grades in staging\. usagg knows",
    ):
        register_task_type(_type("scoring", Metric("Stage_err", False, "stages", lower=0.0)))
    assert "scoring" not in TASK_TYPES and metric_unit("Stage_err") == "grades"


def test_a_prediction_file_or_csv_name_another_type_has_is_refused(cleanup: list[str]) -> None:
    """The extension audit's F6: a subclass inheriting its parent's prediction_file had one type's predictions
    overwrite the other's in an AU job, silently; a csv_names spelling a built-in has was never used."""
    register_task_type(_type("staging", Metric("Stage_err", False, "grades", lower=0.0)))
    cleanup.append("staging")
    with pytest.raises(ValueError) as err:
        register_task_type(_type("staging2", Metric("Stage2_err", False, "grades", lower=0.0)))
    assert str(err.value) == (
        "task type 'staging2' (test_plugin_metrics.Staging2) writes its predictions to 'grading_predictions.json', "
        "as task type 'staging' (test_plugin_metrics.Staging) does: one would overwrite the other's in a job with "
        "tasks of both; give it a prediction_file of its own"
    )
    own = {"prediction_file": "staging3_predictions.json", "csv_names": ("Regression",)}
    with pytest.raises(ValueError, match=r"accepts the CSV task_name 'regression', as task type 'regression' \("):
        register_task_type(type("Staging3", (_type("staging3", Metric("S3", False, lower=0.0)),), own))
    assert "staging2" not in TASK_TYPES and "staging3" not in TASK_TYPES
    register_task_type(type("Staging4", (_type("staging4", Metric("S4", False, lower=0.0)),), {**own, "csv_names": ()}))
    cleanup.append("staging4")


def test_a_metric_name_read_as_a_per_class_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"declares metric 'HD_classic'.*read it as a variant of 'HD'"):
        register_task_type(_type("classic", Metric("HD_classic", True, lower=0.0, upper=1.0)))
    assert "classic" not in TASK_TYPES


CLASHING = """
from usagg.tasktypes import Metric, TaskType{decorator_import}


{decorator}class Grading(TaskType):
    name = "{name}"
    metrics = (Metric("HD", True, None, 0.0, 1.0),)
    num_classes_meaning = "grades"
    prediction_file = "grading_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_grade")
"""


@pytest.mark.parametrize(
    ("how", "name", "expected"),
    [
        (
            "module",
            "grading",
            "module 'lab_types' of USAGG_PLUGINS failed while loading (ValueError: task type "
            "'grading' (lab_types.Grading) declares metric 'HD' differently from task type 'segmentation'",
        ),
        (
            "entry point",
            "grading",
            "task type class lab_types.Grading (an entry point of group 'usagg.task_types') "
            "failed while loading (ValueError: task type 'grading' (lab_types.Grading) declares metric 'HD' "
            "differently from task type 'segmentation'",
        ),
        (
            "entry point",
            "classification",
            "task type class lab_types.Grading (an entry point of group "
            "'usagg.task_types') failed while loading (ValueError: task type 'classification' is already registered "
            "by usagg.tasktypes.classification.Classification)",
        ),
    ],
    ids=["module-metric", "entry-point-metric", "entry-point-name"],
)
def test_a_refused_plugin_is_one_paragraph_at_validate(tmp_path: Path, how: str, name: str, expected: str) -> None:
    """Entry points are loaded lazily and the class they name registered after the import, outside the guard that
    words a module's errors: both reach `usagg validate` as exit 2 with no traceback."""
    module = how == "module"
    (tmp_path / "lab_types.py").write_text(
        CLASHING.format(
            name=name,
            decorator_import=", register_task_type" if module else "",
            decorator="@register_task_type\n" if module else "",
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "400"}
    env.pop("USAGG_PLUGINS", None)
    if module:
        env["USAGG_PLUGINS"] = "lab_types"
    else:
        dist = tmp_path / "lab_types-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-types\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text("[usagg.task_types]\ngrading = lab_types:Grading\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\ndata: {{root: {tmp_path / 'data'}}}\nparadigms: [TS]\n"
        "tasks:\n  - {id: c, type: classification, num_classes: 2}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "usagg", "validate", str(spec)], env=env, capture_output=True, text=True
    )
    text = " ".join(out.stderr.split())  # the terminal wraps the paragraph
    assert out.returncode == 2, out.stdout + out.stderr
    assert expected in text and "Traceback" not in out.stderr


class Undeclared(TaskType):
    """Declares 'Score' and 'Spread' but scores whatever `returned` holds."""

    name = "undeclared"
    metrics = (Metric("Score", True), Metric("Spread", False))
    num_classes_meaning = "classes"
    prediction_file = "undeclared_predictions.json"
    prediction_keys = ("image_path", "task_id")
    returned: ClassVar[dict[str, float]] = {}

    def score(
        self, task: Any, preds: np.ndarray, items: Sequence[Any], writer: Any = None, metrics: Any = None
    ) -> dict[str, float]:
        return dict(self.returned)


@pytest.fixture
def undeclared() -> Iterator[EvalSet]:
    """An empty test split of a task of type `undeclared`."""
    register_task_type(Undeclared)
    try:
        task = TaskSpec(id="lesions", type="undeclared", num_classes=2)
        dataset = SimpleNamespace(task_type=TASK_TYPES["undeclared"], samples=[], image_size=32)
        yield EvalSet(task, dataset, None, _metas=[])  # type: ignore[arg-type]  # score() reads only these
    finally:
        unregister_task_type("undeclared")


BAD_SCORES = [
    ({"Score": 0.5, "Other": 1.0}, "returned the undeclared 'Other'"),
    ({"Spread": 0.5}, "returned 'Spread', without the task's metric 'Score'"),
    ({}, "returned no metric, without the task's metric 'Score'"),
]


def test_a_score_that_is_not_the_declared_metrics_fails_naming_the_type(
    undeclared: EvalSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    for returned, problem in BAD_SCORES:
        monkeypatch.setattr(Undeclared, "returned", returned)
        with pytest.raises(UsaggError) as err:
            score(undeclared, torch.zeros(0))
        assert str(err.value) == (
            f"task type 'undeclared' (test_plugin_metrics) score() for task 'lesions' {problem}; it must return "
            "the metrics it declares (Score, Spread), keyed by those names (per-class variants such as DSC_class2 "
            "included)"
        )
    declared = {"Score": 0.5, "Score_class1": 0.25, "Spread": 2.0}  # per-class variants are the metric's own
    monkeypatch.setattr(Undeclared, "returned", declared)
    assert score(undeclared, torch.zeros(0)) == declared
