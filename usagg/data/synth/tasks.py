"""The nine synthetic tasks: ids, types and class counts are fixed (studies, tests and other code rely on them).

Tasks of one clinical group share an anatomy generator (`anatomy`), so a model
trained on several of them sees the same kind of image with different labels:
aggregation can genuinely help (shared structure) or hurt (competing heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from usagg.tasktypes import get_task_type
from usagg.tasktypes.segmentation import folder_name


@dataclass(frozen=True)
class SynthTask:
    """One synthetic task and where its files go in the FMC_UIA layout."""

    id: str
    type: str  # segmentation | classification | detection | regression
    num_classes: int  # FMC_UIA meaning: seg incl. background, cls classes, det 1, reg keypoints
    group: str
    anatomy: str  # scene generator shared by the group (see scenes.SCENES)
    class_names: tuple[str, ...] = ()
    planted: str = ""  # known-answer tasks: the planted affinity group (usagg/data/synth/known.py); else `anatomy`
    # ("malignancy": the readers of the scene's malignancy; "other": readers of a convention the lesion does not decide)

    @property
    def metric(self) -> str:
        return get_task_type(self.type).primary_metric

    @property
    def folder(self) -> str:
        """Folder under <split>/, as the challenge lays it out (segmentation by class count)."""
        if self.has_masks:
            return f"{folder_name(self.num_classes)}/{self.id}"
        return f"{self.type.capitalize()}/{self.id}"

    @property
    def has_masks(self) -> bool:
        """Its labels are mask PNGs written beside the images."""
        return self.type == "segmentation"

    @property
    def task_name(self) -> str:
        """The CSV's task_name, spelled as the challenge files spell it (capital R for Regression)."""
        return get_task_type(self.type).csv_name or self.type


_ALL = [
    SynthTask("fetal_head", "segmentation", 2, "Fetal", "fetal", ("background", "head")),
    SynthTask("fetal_head_biometry", "regression", 2, "Fetal", "fetal"),
    SynthTask("fetal_head_position", "classification", 4, "Fetal", "fetal", ("right", "down", "left", "up")),
    SynthTask("thyroid_nodule", "segmentation", 2, "Thyroid", "thyroid", ("background", "nodule")),
    SynthTask("thyroid_nodule_det", "detection", 1, "Thyroid", "thyroid", ("nodule",)),
    SynthTask("thyroid_malignancy", "classification", 2, "Thyroid", "thyroid", ("benign", "malignant")),
    SynthTask("breast_lesion", "segmentation", 2, "Breast", "breast", ("background", "lesion")),
    SynthTask("breast_lesion_cls", "classification", 2, "Breast", "breast", ("benign", "malignant")),
    SynthTask("cardiac_chambers", "segmentation", 4, "Cardiac", "cardiac", ("background", "LV", "LA", "RV")),
]

#: Task id -> SynthTask, in catalog order.
TASKS: dict[str, SynthTask] = {t.id: t for t in _ALL}

#: The known-answer study's tasks (usagg/data/synth/known.py says how each is drawn and which effect it plants): readers
#: grading malignancy on thyroid and breast scans, whose scenes share the malignancy cues (dark, irregular, posterior
#: shadow). Twins on scans of their own (`malignancy_a/_b`), readers whose hidden convention conflicts with the
#: scene on the same scans (`lesion_class_alt` in the study; `malignancy_alt`, the broken run's partner), and a
#: reader of a mark drawn on half of `lesion_class`'s scans (`lesion_mark`), and one of the same mark on thyroid scans
#: of its own (`thyroid_mark`). Generated only when a study's `sizes` names them.
_KNOWN = [
    SynthTask("malignancy_a", "classification", 2, "Thyroid", "thyroid", ("benign", "malignant"), "malignancy"),
    SynthTask("malignancy_b", "classification", 2, "Thyroid", "thyroid", ("benign", "malignant"), "malignancy"),
    SynthTask("malignancy_alt", "classification", 2, "Thyroid", "thyroid", ("benign", "malignant"), "other"),
    SynthTask("lesion_class", "classification", 2, "Breast", "breast", ("benign", "malignant"), "malignancy"),
    SynthTask("lesion_class_alt", "classification", 2, "Breast", "breast", ("benign", "malignant"), "other"),
    SynthTask("lesion_mark", "classification", 2, "Breast", "breast", ("unmarked", "marked"), "other"),
    SynthTask("thyroid_mark", "classification", 2, "Thyroid", "thyroid", ("unmarked", "marked"), "other"),
]
KNOWN_TASKS: dict[str, SynthTask] = {t.id: t for t in _KNOWN}
#: Every task the generator can draw: the nine, then the known-answer ones.
ALL_TASKS: dict[str, SynthTask] = {**TASKS, **KNOWN_TASKS}


def designed_groups(task_ids: list[str]) -> dict[str, str]:
    """The grouping the benchmark is designed to have, for AG to recover (its Rand index in the report).

    Tasks drawn from one anatomy generator (`SynthTask.anatomy`, usagg/data/synth/scenes.py) see the
    same latent anatomy, so their labels describe one shared structure and are designed to help each
    other; across anatomies only the ultrasound physics is shared. The designed groups are therefore the
    anatomies. A known-answer task's group is the one planted in it (`SynthTask.planted`). Ids that are not
    synthetic tasks are left out.
    """
    return {t: ALL_TASKS[t].planted or ALL_TASKS[t].anatomy for t in task_ids if t in ALL_TASKS}
