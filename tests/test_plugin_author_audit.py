"""What a plug-in author's audit found, each fixed: real plug-in modules written into a folder on sys.path
(tests/plugin_module.py) and used as a lab uses its package."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from cli_run import run_cli

from tests.plugin_module import PluginFolder, plugin_folder
from tests.tiny_study import MALIGNANCY, write_tiny_study
from usagg import api
from usagg.analysis.inputs import load_input
from usagg.analysis.memo import Memo
from usagg.analysis.outputs import Memoised
from usagg.analysis.simulate import simulate_run_store
from usagg.analysis.summary import analyse
from usagg.atomic import read_json_checked, write_json_checked
from usagg.engine.evaluate import EvalSet, score
from usagg.errors import UsaggError
from usagg.jobmetrics import running_code
from usagg.model.m2dino import build_model
from usagg.paradigms import PARADIGMS, paradigm_names
from usagg.spec.load import load_study
from usagg.spec.models import ModelSpec, TaskSpec
from usagg.store import RunStore
from usagg.tasktypes import TASK_TYPES, TaskTypeError


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[PluginFolder]:
    with plugin_folder(tmp_path / "plugins") as folder:
        yield folder


# --------------------------------------------------------------------------- the analysis memo and registrations

PAIR = """
from usagg.paradigms import Unit, register_paradigm


@register_paradigm("PAIR", "tasks in consecutive pairs, MoE on", scope={scope!r}, moe={moe!r})
def plan_pair(study):
    ids = [t.id for t in study.tasks]
    return [Unit(paradigm="PAIR", name=f"p{{i}}", tasks=tuple(ids[i:i + 2]), moe=True) for i in range(0, len(ids), 2)]
"""

#: Two groups of two tasks and one task alone in its group, which a group-scoped paradigm leaves out.
FIVE = [
    {"id": f"t{i}", "type": "classification", "num_classes": 2, "group": g}
    for i, g in enumerate(("G1", "G1", "G2", "G2", "G3"))
]


@pytest.mark.slow
def test_a_changed_plugin_registration_is_computed_afresh_not_taken_from_the_memo(
    plugins: PluginFolder, tmp_path: Path
) -> None:
    plugins.load("lab_pairs", PAIR.format(scope="group", moe=True))
    run_dir = simulate_run_store(tmp_path / "runs" / "lab", FIVE, paradigms=("TS", "PAIR"), seeds=(0, 1, 2))
    memoised = Memoised(Memo(tmp_path / "cache"))
    PARADIGMS.unregister("PAIR")
    plugins.load("lab_pairs", PAIR.format(scope=None, moe=None))
    whole = memoised.analyse(load_input(run_dir, None)).stats  # fills the memo
    PARADIGMS.unregister("PAIR")
    plugins.load("lab_pairs", PAIR.format(scope="group", moe=True))  # the plug-in's author gives it a scope
    grouped = memoised.analyse(load_input(run_dir, None)).stats
    fresh = analyse(load_input(run_dir, None)).stats  # no memo at all
    assert grouped == fresh
    assert grouped != whole


# --------------------------------------------------------------------------- what a plug-in type's code returns

GRADES = """
import numpy as np

from usagg.tasktypes import Metric, TaskType, register_task_type


@register_task_type
class Grades(TaskType):
    name = "grades"
    metrics = (Metric("GradeErr", False, lower=0.0), Metric("GradeAcc", True, lower=0.0, upper=1.0))
    num_classes_meaning = "ordered grades"
    prediction_file = "grades_predictions.json"
    prediction_keys = ("image_path", "task_id", "grade")
    returned = None  # what score returns instead of its metrics (a test sets it)
    fails = False  # whether score raises, as a plug-in's bug does (a test sets it)

    def build_head(self, task, heads, embed_dim, n_features):
        from torch import nn

        class GradeHead(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(embed_dim, 1)

            def forward(self, feats):
                return self.linear(feats.prefix[-1][:, 0]).squeeze(1)

            def loss(self, outputs, targets):
                return nn.functional.binary_cross_entropy_with_logits(outputs, targets[:, None].float())  # a bug

            def predict(self, outputs):
                return outputs.float()

        return GradeHead()

    def score(self, task, preds, items, writer=None, metrics=None):
        if self.fails:
            raise ZeroDivisionError("division by zero in GradeAcc")
        truth = np.array([it.gt for it in items], dtype=float)
        err = float(np.abs(np.asarray(preds, dtype=float) - truth).mean())  # broadcasts a single row
        return dict(self.returned) if self.returned is not None else {"GradeErr": err, "GradeAcc": 1.0 - err / 3}
"""


@pytest.fixture
def grades(plugins: PluginFolder) -> Iterator[EvalSet]:
    """A four-image test split of task `knee` of the plug-in type `grades` (labels 0..3)."""
    module = plugins.load("lab_grades", GRADES)
    task = TaskSpec(id="knee", type="grades", num_classes=4)
    metas = [{"image_path": f"knee/{i}.png", "orig_hw": (8, 8), "gt": i} for i in range(4)]
    dataset = SimpleNamespace(task_type=TASK_TYPES["grades"], samples=[None] * 4, image_size=32)
    yield EvalSet(task, dataset, None, _metas=metas)  # type: ignore[arg-type]  # score() reads only these
    module.Grades.returned, module.Grades.fails = None, False


def test_a_head_predicting_another_number_of_rows_fails_naming_type_task_and_counts(grades: EvalSet) -> None:
    assert score(grades, torch.arange(4.0)) == {"GradeErr": 0.0, "GradeAcc": 1.0}
    with pytest.raises(UsaggError) as err:
        score(grades, torch.zeros(1))  # one row per batch: broadcast, it scored 1.5 on every image
    assert str(err.value) == (
        "task type 'grades' (lab_grades) head predict() gave 1 prediction row(s) for the 4 image(s) of task 'knee'; "
        "predict must return one prediction per input image, stacked along the first dimension (shape (1,))"
    )


BAD_VALUES = [
    (
        {"GradeErr": -0.5, "GradeAcc": 1.7},
        "returned GradeErr = -0.5, below its declared lower bound 0; GradeAcc = 1.7, above its declared upper bound 1",
    ),
    ({"GradeErr": np.array([0.5, 1.0]), "GradeAcc": 0.5}, "returned GradeErr = array([0.5, 1. ]), a ndarray, not"),
    ({"GradeErr": "0.5", "GradeAcc": 0.5}, "returned GradeErr = '0.5', a str, not a real number"),
    ({"GradeErr": None, "GradeAcc": 0.5}, "returned GradeErr = None, a NoneType, not a real number"),
    ({"GradeErr": math.inf, "GradeAcc": 0.5}, "returned GradeErr = inf, not finite"),
]


def test_a_metric_value_of_the_wrong_kind_or_past_its_bounds_fails_naming_type_task_and_metric(
    grades: EvalSet,
) -> None:
    grading = TASK_TYPES["grades"]
    for returned, problem in BAD_VALUES:
        type(grading).returned = returned
        with pytest.raises(UsaggError) as err:
            score(grades, torch.arange(4.0))
        text = str(err.value)
        assert text.startswith(f"task type 'grades' (lab_grades) score() for task 'knee' {problem}"), text
        assert text.endswith("within the bounds its Metric declares"), text
    type(grading).returned = {"GradeErr": np.float32(0.25), "GradeAcc": math.nan}  # NaN: not computable
    scores = score(grades, torch.arange(4.0))
    assert scores["GradeErr"] == 0.25 and type(scores["GradeErr"]) is float and math.isnan(scores["GradeAcc"])


# --------------------------------------------------------------------------- plug-ins registered in code

DINO = "vit_small_patch16_dinov3_qkvb"
LAB_NET = """
__version__ = "0.4"

from usagg.model.zoo import BackboneEntry, register_backbone

register_backbone(
    "lab_net",
    BackboneEntry("vit_small_patch16_dinov3_qkvb", 2, 32, {"embed_dim": 32, "num_heads": 2, "depth": 2}, "lab's"),
)
"""


def _pool_study(tmp_path: Path, name: str, backbone: str) -> Path:
    """The tiny study on a plug-in backbone, run by a local pool of two spawned workers (which import only usagg)."""
    return write_tiny_study(
        tmp_path / f"{name}.yaml",
        name,
        tmp_path / "data",
        model={"backbone": backbone},
        execution={"executor": "local", "devices": "cpu", "cpu_jobs": 2, "threads": 1},
        output_root=tmp_path / "runs",
    )


@pytest.mark.slow  # two spawned workers each import torch and train a job
def test_a_plugin_registered_in_code_reaches_the_local_pool_s_workers(plugins: PluginFolder, tmp_path: Path) -> None:
    plugins.load("lab_net", LAB_NET)  # as a notebook does: imported here, named in no USAGG_PLUGINS
    spec = _pool_study(tmp_path, "pool", "lab_net")
    result = api.run_study(spec)
    assert result.ok and list(result.states.values()) == ["done", "done"], result.errors


def test_a_plugin_registered_in_code_is_recorded_as_the_jobs_code(plugins: PluginFolder) -> None:
    assert "lab_net" not in running_code()["plugins"]
    plugins.write("lab_kit.__init__", '__version__ = "1.2"\n')
    plugins.load("lab_kit.types", GRADES)  # a package's submodule registers: recorded by its package
    plugins.load("lab_net", LAB_NET)
    recorded = running_code()["plugins"]
    assert recorded["lab_net"] == "0.4" and recorded["lab_kit"] == "1.2"
    assert "lab_kit.types" not in recorded


# --------------------------------------------------------------------------- a plug-in executor's mistakes

LAB_EXECUTOR = """
from usagg.execute.base import Executor, call_job
from usagg.execute.registry import register_executor

MODE = "run"  # "raise": run() raises; "skip": it drops the last job


class OneByOne(Executor):
    name = "lab_one_by_one"

    def run(self, job_ids, fn, on_event=None, on_progress=None):
        if MODE == "raise":
            raise RuntimeError("cluster connection refused\\nsecond line")
        states = {}
        for job_id in job_ids[:-1] if MODE == "skip" else job_ids:
            self._emit(on_event, job_id, "started", {})
            states[job_id], event, info = call_job(fn, self.store_root, job_id)
            self._emit(on_event, job_id, event, info)
        return states


@register_executor("lab_one_by_one", "jobs one after another, the lab's way")
def make_one_by_one(execution, store_root, **options):
    return OneByOne(store_root)
"""


@pytest.mark.slow  # the tiny study's data is made
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_an_executor_that_raises_or_runs_no_job_is_one_paragraph_naming_it(
    plugins: PluginFolder, tmp_path: Path, mode: str
) -> None:
    plugins.load("lab_exec", LAB_EXECUTOR).MODE = mode
    spec = write_tiny_study(
        tmp_path / "ex.yaml",
        "ex",
        tmp_path / "data",
        tasks=[MALIGNANCY],
        execution={"executor": "lab_one_by_one"},
        output_root=tmp_path / "runs",
    )
    with pytest.raises(UsaggError) as err:
        api.run_study(spec)
    where = "executor 'lab_one_by_one' (factory lab_exec.make_one_by_one)"
    text = str(err.value)
    assert err.value.exit_code == 1
    if mode == "raise":
        assert text.startswith(
            f"{where} failed while running 1 job: RuntimeError: cluster connection refused; 0 of them ended done or "
            "failed, the others stay as they were for the next `usagg run`."
        ), text
    else:
        assert text.startswith(f"{where} returned without running 1 job of the 1 it was given (TS-thyroid_malignancy-")
        assert (
            "nor returned a state for it, and it is still pending. A bug in the executor" in text
            and "another process" not in text
        )


# --------------------------------------------------------------------------- a plug-in type's figure style


def styled(marker: str, color: str) -> str:
    """GRADES with this figure style."""
    return GRADES.replace('    name = "grades"', f'    name = "grades"\n    marker, color = {marker!r}, {color!r}')


@pytest.mark.parametrize(
    ("marker", "color", "problem"),
    [
        ("D", "reddish", "color 'reddish' is not a colour matplotlib draws; give a hex colour such as '#882255'"),
        ("Q", "#882255", "marker 'Q' is not a matplotlib marker; give one of"),
    ],
)
def test_a_figure_style_matplotlib_cannot_draw_is_refused_at_registration_naming_the_type(
    plugins: PluginFolder, marker: str, color: str, problem: str
) -> None:
    with pytest.raises(ValueError) as err:
        plugins.load("lab_styled", styled(marker, color))
    assert str(err.value).startswith(f"task type 'grades' (lab_styled.Grades): {problem}")
    assert "grades" not in TASK_TYPES
    plugins.load("lab_styled", styled("d", "tab:purple"))  # a matplotlib name is fine
    assert TASK_TYPES["grades"].color == "tab:purple"


@pytest.mark.slow  # a fresh interpreter
def test_a_hex_colour_and_a_usual_marker_are_checked_without_importing_matplotlib(plugins: PluginFolder) -> None:
    plugins.write("lab_styled", styled("D", "#882255"))
    code = (
        "import sys, lab_styled; from usagg.tasktypes import TASK_TYPES; "
        "print('grades' in TASK_TYPES, 'matplotlib' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins.folder), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"], out.stderr


# --------------------------------------------------------------------------- a plug-in type's code raising


def test_a_plugin_score_raising_fails_naming_type_and_task(grades: EvalSet) -> None:
    type(TASK_TYPES["grades"]).fails = True
    with pytest.raises(TaskTypeError) as err:
        score(grades, torch.arange(4.0))
    assert str(err.value) == (
        "task type 'grades' (lab_grades) score() for task 'knee' raised ZeroDivisionError: division by zero in GradeAcc"
    )
    assert isinstance(err.value.__cause__, ZeroDivisionError)


@pytest.mark.slow  # builds a model
def test_a_plugin_head_loss_raising_fails_naming_type_and_task(grades: EvalSet) -> None:
    model = build_model(ModelSpec(backbone="dinov3_test", image_size=32), [grades.task], moe=False)
    images = torch.randn(2, 3, 32, 32)
    assert model.predict(model(images, "knee").outputs, "knee").shape == (2,)
    with pytest.raises(TaskTypeError) as err:
        model(images, "knee", torch.tensor([0, 3]))
    assert str(err.value) == (
        "task type 'grades' (lab_grades) head loss() for task 'knee' raised ValueError: Target size "
        "(torch.Size([2, 1])) must be the same as input size (torch.Size([2]))"
    )


# --------------------------------------------------------------------------- analysing without the plug-in


def test_analysing_a_plugin_study_without_the_plugin_names_the_plugin_its_jobs_recorded(tmp_path: Path) -> None:
    tasks = [{**task, "type": "classification"} for task in FIVE[:3]]
    run_dir = simulate_run_store(tmp_path / "runs" / "lab", tasks, paradigms=("TS",), seeds=(0,))
    store = RunStore(run_dir)
    study = yaml.safe_load(store.study_yaml.read_text())
    study["tasks"][0]["type"] = "grades"  # as the lab's study declared it
    store.study_yaml.write_text(yaml.safe_dump(study))
    path = store.paths(store.job_folders()[0]).metrics
    data, why = read_json_checked(path)
    assert data is not None, why
    write_json_checked(path, {**data, "training": {**data.get("training", {}), "plugins": {"lab_grades": "0.2"}}})
    with pytest.raises(UsaggError) as err:
        load_input(run_dir, None)
    assert str(err.value) == (
        f"{store.study_yaml}: the study's task type(s) 'grades' are not registered in this process (registered: "
        "segmentation, classification, detection, regression); the jobs ran with plug-in(s) lab_grades 0.2 (their "
        "metrics.json training.plugins): load it here as the run did: name its module in USAGG_PLUGINS, or install "
        "its distribution"
    )


def test_analysing_a_plugin_paradigm_study_without_the_plugin_names_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding F0 of the extension audit: a study with a plug-in paradigm (BYTYPE, scope group, MoE on) analysed
    without its plug-in gave other statistics without a word (its one-task groups entered the aggregates, its 2x2
    design vanished): its scope and MoE are the paradigm's registration. Now refused, as an unknown type is."""
    run_dir = simulate_run_store(tmp_path / "runs" / "lab", FIVE[:3], paradigms=("TS", "AU"), seeds=(0,))
    store = RunStore(run_dir)
    study = yaml.safe_load(store.study_yaml.read_text())
    study["paradigms"] = ["TS", "BYTYPE"]  # as the lab's study declared it
    store.study_yaml.write_text(yaml.safe_dump(study))
    with pytest.raises(UsaggError) as err:
        load_input(run_dir, None)
    assert str(err.value) == (
        f"{store.study_yaml}: the study's paradigm(s) 'BYTYPE' are not registered in this process (registered: "
        f"{', '.join(paradigm_names())}); a plug-in registers that paradigm: load it here as the run did: name its "
        "module in USAGG_PLUGINS, or install its distribution (docs/internals.md, 'How to add a paradigm')"
    )
    for command in ("status", "repair"):  # they said plan.json was damaged, and `usagg repair` could not fix it
        code, out = run_cli([command, str(run_dir)], monkeypatch, capsys)
        assert code == 2 and "the study's paradigm(s) 'BYTYPE' are not registered" in " ".join(out.split()), out
    study["paradigms"] = ["TS", "AU"]
    store.study_yaml.write_text(yaml.safe_dump(study))
    assert load_input(run_dir, None).table.rows  # the registered ones read as before


def test_geometric_augmentation_with_a_type_that_cannot_move_its_targets_is_refused_by_the_spec(
    grades: EvalSet, tmp_path: Path
) -> None:
    """The extension audit's F1: a type without a target_geometry (grades) and hflip_p 0.5 passed `usagg validate`,
    then every job of it failed once started. Refused by the study's validation now; no flip, or no
    augmentation at all, is a valid study."""
    task = {"id": "knee", "type": "grades", "group": "Knee", "num_classes": 4}
    flips = {"augmentation": {"hflip_p": 0.5}}
    spec = write_tiny_study(tmp_path / "s.yaml", "s", tmp_path / "data", tasks=[task], training=flips)
    with pytest.raises(UsaggError) as err:
        load_study(spec)
    assert (
        "training.augmentation: flip, scale and rotation have no target transform for task(s) knee of type "
        "'grades' (target_geometry None); one of mask, boxes, points, label is needed: set hflip_p, scale_p and "
        "rotate_p to 0 for a study with them, or give the type a target_geometry"
    ) in " ".join(str(err.value).split())
    for training in ({"augmentation": {"hflip_p": 0.0}}, {"augmentation": {"preset": "none", "hflip_p": 0.5}}):
        spec = write_tiny_study(tmp_path / "ok.yaml", "ok", tmp_path / "data", tasks=[task], training=training)
        assert load_study(spec).training.augmentation.geometric is False


def test_an_unknown_backbone_or_executor_says_where_plugins_come_from(tmp_path: Path) -> None:
    spec = write_tiny_study(
        tmp_path / "s.yaml", "s", tmp_path / "data", model={"backbone": "lab_tiny"}, execution={"executor": "futures"}
    )
    with pytest.raises(UsaggError) as err:
        load_study(spec)
    text = str(err.value)
    for kind, how in (("backbone", "a backbone"), ("executor", "an executor")):
        assert (
            f"(plug-ins register more: name a plug-in's module in USAGG_PLUGINS, or install its distribution, whose "
            f"entry points load it; see docs/internals.md, 'How to add {how}')"
        ) in text, kind


@pytest.mark.slow  # a fresh interpreter runs the study
def test_an_entry_registered_in_an_interactive_session_refuses_a_pool_before_any_job(tmp_path: Path) -> None:
    """The extension audit II: a backbone registered in a notebook cell and cpu_jobs 2 failed every job (built-in
    ones too), each with an error that named no entry. The pool refuses before it starts a worker, naming the
    entry; every job stays pending for a run from a module (or with cpu_jobs 1)."""
    spec = _pool_study(tmp_path, "main", "lab_main")
    code = f"""
import json
from usagg.model.zoo import BackboneEntry, register_backbone
from usagg.api import UsaggError, run_study
from usagg.store import RunStore
register_backbone("lab_main", BackboneEntry("{DINO}", 2, 32, {{"embed_dim": 32, "num_heads": 2, "depth": 2}}))
try:
    run_study({str(spec)!r})
except UsaggError as err:
    store = RunStore({str(tmp_path / "runs" / "main")!r})
    print(json.dumps([str(err), sorted({{store.job_state(j) for j in store.job_ids()}})]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    said, states = json.loads(out.stdout.splitlines()[-1])
    assert said == (
        "backbone 'lab_main' was registered in an interactive session (a notebook, python -c), which this run's "
        "worker processes cannot import: define them in a module and import it, or name it in USAGG_PLUGINS, or set "
        "execution.cpu_jobs: 1 (one job at a time, in this process); 2 jobs stay pending"
    ), out.stderr[-2000:]
    assert states == ["pending"]
