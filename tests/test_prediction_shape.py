"""Each task type declares what one image's prediction is (`TaskType.prediction_shape`): its shape as a function of
the task (classes, keypoints) and the model's image size, and its dtype kind. The engine checks every split's
predictions against it before `score` (usagg/engine/typechecks.py), so a plug-in head predicting another shape fails
its job naming the task, the type, the plug-in and both shapes, where it was scored with wrong numbers (a mask at
half size stretched onto the image) or failed inside a metric. A type declaring nothing keeps the row-count check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from tests.plugin_module import PluginFolder, plugin_folder
from tests.tiny_study import BIOMETRY, FETAL_HEAD, MALIGNANCY, NODULE, write_tiny_study
from usagg import api
from usagg.engine.evaluate import EvalSet, normalised, score
from usagg.engine.typechecks import check_predictions
from usagg.errors import UsaggError
from usagg.model.m2dino import build_model
from usagg.spec.models import HeadSpec, ModelSpec, TaskSpec
from usagg.store.records import ERROR_CHARS
from usagg.tasktypes import TASK_TYPES, PredictionShape, TaskTypeError, builtin_task_types, type_origin


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[PluginFolder]:
    with plugin_folder(tmp_path / "plugins") as folder:
        yield folder


# --------------------------------------------------------------------------- the built-ins' declarations

#: (task, what one image's prediction is at image size 32): 2 classes, one box, 3 keypoints, a 32 x 32 class map.
BUILTIN_ROWS = {
    "classification": (TaskSpec(id="c", type="classification", num_classes=2), PredictionShape((2,), "float")),
    "detection": (TaskSpec(id="d", type="detection", num_classes=1), PredictionShape((4,), "float")),
    "regression": (TaskSpec(id="r", type="regression", num_classes=3), PredictionShape((3, 2), "float")),
    "segmentation": (TaskSpec(id="s", type="segmentation", num_classes=4), PredictionShape((32, 32), "integer")),
}


@pytest.mark.parametrize("keypoints", ["heatmap", "direct"])
def test_every_builtin_head_predicts_what_its_type_declares(keypoints: str) -> None:
    """The built-in heads' real predictions pass the check the built-in types declare, keypoint heads of both kinds."""
    assert sorted(t.name for t in builtin_task_types()) == sorted(BUILTIN_ROWS)
    tasks = [task for task, _ in BUILTIN_ROWS.values()]
    for name, (task, row) in BUILTIN_ROWS.items():
        assert TASK_TYPES[name].prediction_shape(task, 32) == row
    spec = ModelSpec(backbone="dinov3_test", image_size=32, heads=HeadSpec(hidden=32, keypoints=keypoints))
    model = build_model(spec, tasks, moe=False).eval()
    with torch.inference_mode():
        for task in tasks:
            preds = normalised(model.predict(model(torch.randn(3, 3, 32, 32), task.id).outputs, task.id))
            check_predictions(TASK_TYPES[task.type], task, preds, 3, 32)  # raises on a mismatch
            assert preds.shape[1:] == BUILTIN_ROWS[task.type][1].shape


def test_integer_predictions_reach_score_as_int64_and_floating_ones_as_float32() -> None:
    """So a type's declared kind reads one dtype: a plug-in's uint8 or bool class map is an integer map."""
    for dtype in (torch.uint8, torch.int32, torch.bool):
        assert normalised(torch.zeros(2, 3, dtype=dtype)).dtype == torch.int64
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        assert normalised(torch.zeros(2, 3, dtype=dtype)).dtype == torch.float32


def test_a_prediction_shape_that_no_prediction_can_be_is_refused() -> None:
    assert PredictionShape([2, 3]).shape == (2, 3)  # any sequence of ints, kept as a tuple
    with pytest.raises(ValueError, match=r"shape must hold positive sizes, got \(2, 0\)"):
        PredictionShape((2, 0))
    with pytest.raises(ValueError, match=r"shape must be a tuple of ints, got \(2\.5,\)"):
        PredictionShape((2.5,))
    with pytest.raises(ValueError, match=r"kind must be one of 'integer', 'float' or None, got 'int'"):
        PredictionShape((2,), "int")  # type: ignore[arg-type]  # what a plug-in author might write


# --------------------------------------------------------------------------- a plug-in type's own declaration

GRADES = """
import numpy as np

from usagg.tasktypes import Metric, PredictionShape, TaskType, register_task_type


@register_task_type
class Grades(TaskType):
    name = "grades"
    metrics = (Metric("GradeErr", False, lower=0.0),)
    num_classes_meaning = "ordered grades"
    prediction_file = "grades_predictions.json"
    prediction_keys = ("image_path", "task_id", "grade")
    declared = None  # what prediction_shape returns (a test sets it; None: declares nothing)
    sizes = None  # the sizes it builds a PredictionShape of instead (a test sets it)

    def prediction_shape(self, task, image_size):
        return self.declared if self.sizes is None else PredictionShape(self.sizes)

    def score(self, task, preds, items, writer=None, metrics=None):
        truth = np.array([it.gt for it in items], dtype=float)
        return {"GradeErr": float(np.abs(np.asarray(preds, dtype=float) - truth).mean())}
"""


@pytest.fixture
def grades(plugins: PluginFolder) -> Iterator[tuple[ModuleType, EvalSet]]:
    """The plug-in type `grades` and a four-image test split of its task `knee` (labels 0..3) at image size 32."""
    module = plugins.load("lab_grades", GRADES)
    task = TaskSpec(id="knee", type="grades", num_classes=4)
    metas = [{"image_path": f"knee/{i}.png", "orig_hw": (8, 8), "gt": i} for i in range(4)]
    dataset = SimpleNamespace(task_type=TASK_TYPES["grades"], samples=[None] * 4, image_size=32)
    yield module, EvalSet(task, dataset, None, _metas=metas)  # type: ignore[arg-type]  # score() reads only these


def test_a_type_declaring_nothing_keeps_only_the_row_count_check(grades: tuple[ModuleType, EvalSet]) -> None:
    _, split = grades
    assert score(split, torch.arange(4.0)) == {"GradeErr": 0.0}
    assert score(split, torch.arange(4.0)[:, None]) == {"GradeErr": 1.25}  # [4, 1]: scored as today (broadcast)
    with pytest.raises(UsaggError, match=r"head predict\(\) gave 3 prediction row\(s\) for the 4 image\(s\)"):
        score(split, torch.arange(3.0))


def test_a_declared_shape_or_kind_the_head_misses_fails_naming_task_type_origin_and_shapes(
    grades: tuple[ModuleType, EvalSet],
) -> None:
    module, split = grades
    module.Grades.declared = PredictionShape((), "float")  # one number per image
    assert score(split, torch.arange(4.0)) == {"GradeErr": 0.0}
    for wrong, got in ((torch.zeros(4, 1), "float32 [4, 1]"), (torch.arange(4), "int64 [4]")):
        with pytest.raises(UsaggError) as err:
            score(split, wrong)
        assert str(err.value) == (
            f"task type 'grades' (lab_grades) head predict() for task 'knee' gave {got} for 4 images, but the type "
            "declares float [] per image (prediction_shape(), num_classes 4, image size 32): predict must return "
            "float [4], or prediction_shape() must declare what score() reads"
        )
    module.Grades.declared = PredictionShape((4, 2))  # no kind declared: either dtype
    check_predictions(TASK_TYPES["grades"], split.task, torch.zeros(4, 4, 2, dtype=torch.int64), 4, 32)
    with pytest.raises(UsaggError, match=r"gave float32 \[4, 2, 4\] for 4 images, but the type declares \[4, 2\] per"):
        check_predictions(TASK_TYPES["grades"], split.task, torch.zeros(4, 2, 4), 4, 32)


def test_a_declaration_that_raises_or_is_no_prediction_shape_fails_naming_the_type(
    grades: tuple[ModuleType, EvalSet],
) -> None:
    module, split = grades
    module.Grades.sizes = (-1,)  # a plug-in's bug, raised inside its prediction_shape
    with pytest.raises(TaskTypeError) as raised:
        score(split, torch.arange(4.0))
    assert str(raised.value) == (
        "task type 'grades' (lab_grades) prediction_shape() for task 'knee' raised ValueError: "
        "PredictionShape.shape must hold positive sizes, got (-1,)"
    )
    module.Grades.sizes, module.Grades.declared = None, (4,)
    with pytest.raises(UsaggError) as refused:
        score(split, torch.arange(4.0))
    assert str(refused.value) == (
        "task type 'grades' (lab_grades) prediction_shape() for task 'knee' returned (4,); it returns a "
        "tasktypes.PredictionShape, or None to have only the number of prediction rows checked"
    )


# --------------------------------------------------------------------------- real training: plug-in heads, built-ins

#: The built-in types replaced by a plug-in whose heads are the built-in ones with `predict` cut short: a mask at
#: half the input size, one class column fewer, three box coordinates, one keypoint fewer. Each keeps its built-in's
#: declaration, as a lab's variant of a built-in type does.
WRONG_HEADS = """
from torch import nn

from usagg.tasktypes import register_task_type
from usagg.tasktypes.classification import Classification
from usagg.tasktypes.detection import Detection
from usagg.tasktypes.regression import Regression
from usagg.tasktypes.segmentation import Segmentation


class Cut(nn.Module):
    def __init__(self, head, cut):
        super().__init__()
        self.head, self.cut = head, cut

    def forward(self, feats):
        return self.head(feats)

    def loss(self, outputs, targets):
        return self.head.loss(outputs, targets)

    def predict(self, outputs):
        return self.cut(self.head.predict(outputs))


def replace(builtin, cut):
    class Lab(builtin):
        def build_head(self, task, heads, embed_dim, n_features):
            return Cut(super().build_head(task, heads, embed_dim, n_features), cut)

    Lab.__name__ = Lab.__qualname__ = f"Lab{builtin.__name__}"
    register_task_type(Lab, replace=True)


replace(Segmentation, lambda mask: mask[:, ::2, ::2])
replace(Classification, lambda probs: probs[:, :-1])
replace(Detection, lambda boxes: boxes[:, :3])
replace(Regression, lambda points: points[:, :-1])
"""

#: Each task's job error: the type, the plug-in, the task, what the head gave for the selection split's 4 images
#: and what the type declares at image size 32.
WRONG = {
    "fetal_head": ("segmentation", "int64 [4, 16, 16]", "integer [32, 32]", 2, "integer [4, 32, 32]"),
    "thyroid_malignancy": ("classification", "float32 [4, 1]", "float [2]", 2, "float [4, 2]"),
    "thyroid_nodule_det": ("detection", "float32 [4, 3]", "float [4]", 1, "float [4, 4]"),
    "fetal_head_biometry": ("regression", "float32 [4, 1, 2]", "float [2, 2]", 2, "float [4, 2, 2]"),
}


def _study(tmp_path: Path, name: str) -> Path:
    """The tiny study with one task of each built-in type, trained in this process (TS: a job per task)."""
    return write_tiny_study(
        tmp_path / f"{name}.yaml",
        name,
        tmp_path / "data",
        tasks=(FETAL_HEAD, MALIGNANCY, NODULE, BIOMETRY),
        execution={"devices": "cpu", "cpu_jobs": 1},
        output_root=tmp_path / "runs",
    )


@pytest.mark.slow  # trains eight tiny jobs
def test_plugin_heads_of_the_wrong_shape_fail_their_jobs_by_name_and_the_builtins_pass(
    plugins: PluginFolder, tmp_path: Path
) -> None:
    builtins = api.run_study(_study(tmp_path, "builtins"))
    assert builtins.ok and sorted(builtins.states.values()) == ["done"] * 4, builtins.errors

    plugins.load("lab_heads", WRONG_HEADS)
    assert {type_origin(TASK_TYPES[t]) for t, *_ in WRONG.values()} == {"lab_heads"}
    spec = _study(tmp_path, "lab")
    result = api.run_study(spec)
    assert sorted(result.states.values()) == ["failed"] * 4
    ids = {job.tasks[0].id: job.id for job in api.plan(spec)}
    jobs = {task: result.errors[job_id] for task, job_id in ids.items()}
    assert sorted(jobs) == sorted(WRONG)
    for task, (type_name, got, row, classes, whole) in WRONG.items():
        paragraph = (
            f"UsaggError: task type '{type_name}' (lab_heads) head predict() for task '{task}' gave {got} for 4 "
            f"images, but the type declares {row} per image (prediction_shape(), num_classes {classes}, image size "
            f"32): predict must return {whole}, or prediction_shape() must declare what score() reads"
        )
        assert jobs[task] == paragraph[:ERROR_CHARS].rstrip(), jobs[task]  # job.json keeps 300 characters
        assert f"must return {whole}" in jobs[task]  # ... which hold both shapes
        assert paragraph in (result.store_root / "jobs" / ids[task] / "error.txt").read_text()
