"""The tiny study the training tests share, written out as a spec file.

Two Thyroid tasks on the synthetic benchmark (48 px images, 16 training and 6 validation images a task), the test
backbone at 32 px and one epoch of one step: a test names only what its study changes. The YAML comes from
yaml.safe_dump of a dict, so paths and values need no format-string braces or quoting; the job ids depend only on
the settings (usagg/plan.py hashes the loaded study), never on how the file lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from usagg.spec.models import Study

MALIGNANCY = {"id": "thyroid_malignancy", "type": "classification", "num_classes": 2, "group": "Thyroid"}
NODULE = {"id": "thyroid_nodule_det", "type": "detection", "num_classes": 1, "group": "Thyroid"}
FETAL_HEAD = {"id": "fetal_head", "type": "segmentation", "num_classes": 2, "group": "Fetal"}
BIOMETRY = {"id": "fetal_head_biometry", "type": "regression", "num_classes": 2, "group": "Fetal"}
BREAST = {"id": "breast_lesion_cls", "type": "classification", "num_classes": 2, "group": "Breast"}
CARDIAC = {"id": "cardiac_chambers", "type": "segmentation", "num_classes": 4, "group": "Heart"}
THYROID_PAIR = (MALIGNANCY, NODULE)


def tiny_study(
    name: str,
    data: Path,
    *,
    paradigms: Sequence[str] = ("TS",),
    tasks: Sequence[Mapping[str, Any]] = THYROID_PAIR,
    epochs: int = 1,
    steps: int | None = 1,
    synthetic: Mapping[str, Any] | None = None,
    data_keys: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    execution: Mapping[str, Any] | None = None,
    output_root: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The YAML text of the tiny study `name`, its synthetic data in DATA/synth and its cache in DATA/cache.

    `steps` is `training.steps_per_epoch` (None: from the data). `synthetic`, `data_keys`, `model` and `training`
    are keys over the tiny ones of `data.synthetic`, `data` (selection_fraction 0.25), `model` and `training`, a
    nested section replaced whole (`model={"heads": {...}}`); `execution` is the section (none: the defaults),
    `output_root` the runs' folder (none: the default) and `extra` further top-level sections (analysis, sweep).
    """
    study: dict[str, Any] = {"name": name}
    if output_root is not None:
        study["output_root"] = str(output_root)
    synth = {"seed": 0, "image_size": 48, "default_size": 16, "val_size": 6, **(synthetic or {})}
    train: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": steps, "batch_size": 8, "eval_batch_size": 16}
    if steps is None:
        del train["steps_per_epoch"]
    study |= {
        "paradigms": list(paradigms),
        "data": {
            "synthetic": {**synth, "out": str(data / "synth")},
            "selection_fraction": 0.25,
            **(data_keys or {}),
            "cache_dir": str(data / "cache"),
        },
        "tasks": [dict(task) for task in tasks],
        "model": {"backbone": "dinov3_test", "image_size": 32, "heads": {"hidden": 32}, **(model or {})},
        "training": {**train, **(training or {})},
    }
    if execution is not None:
        study["execution"] = dict(execution)
    study |= extra or {}
    return yaml.safe_dump(study, sort_keys=False, default_flow_style=None, width=120)


def write_tiny_study(path: Path, name: str, data: Path, **settings: Any) -> Path:
    """`tiny_study(name, data, **settings)` written to `path` (its folder made): the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tiny_study(name, data, **settings))
    return path


#: Tasks of a study built in memory (`small_study`): id, type, classes, group.
ONE_TASK = (("a", "classification", 2, "g"),)
THREE_TASKS = (("a", "classification", 2, "g1"), ("b", "segmentation", 2, "g1"), ("c", "regression", 3, "g2"))


def small_study(name: str, tasks: Sequence[tuple[str, str, int, str]] = ONE_TASK, **fields: Any) -> Study:
    """A study of the synthetic benchmark and the test backbone at 64 px, built in memory for tests that plan its
    jobs or make its store without training: `tasks` as (id, type, classes, group), `fields` any other Study field
    (output_root, paradigms, execution, ...)."""
    from usagg.spec.models import DataSpec, ModelSpec, Study, SynthSpec, TaskSpec

    return Study(
        name=name,
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64),
        tasks=[TaskSpec(id=i, type=t, num_classes=n, group=g) for i, t, n, g in tasks],
        **fields,
    )


def tracked_study(
    name: str, root: Path, tracking: Mapping[str, Any] | None, epochs: int = 1, **fields: Any
) -> dict[str, Any]:
    """The trackers' tests' study, as the dict `run_study` takes: Thyroid malignancy alone on the synthetic
    benchmark at 32 px, trained in-process (cpu_jobs: 1) unless `fields` (top-level keys) say otherwise."""
    return {
        "name": name,
        "output_root": str(root / "runs"),
        "paradigms": ["TS"],
        "data": {
            "synthetic": {"seed": 0, "image_size": 32, "default_size": 8, "val_size": 4},
            "cache_dir": str(root),
        },
        "tasks": [MALIGNANCY],
        "model": {"backbone": "dinov3_test", "image_size": 32},
        "training": {"epochs": epochs, "batch_size": 4},
        "execution": {"cpu_jobs": 1},
        **({"tracking": dict(tracking)} if tracking else {}),
        **fields,
    }
