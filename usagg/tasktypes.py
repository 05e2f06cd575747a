"""The vocabulary every part shares: task types, paradigms, metrics and their directions.

Kept free of torch and pydantic so that the spec, the engine and the analysis
can all import it cheaply.
"""

from __future__ import annotations

from typing import Literal

TaskType = Literal["segmentation", "classification", "detection", "regression"]
TASK_TYPES: tuple[str, ...] = ("segmentation", "classification", "detection", "regression")

Paradigm = Literal["TS", "CG", "AU"]
PARADIGMS: tuple[str, ...] = ("TS", "CG", "AU")

#: Metrics each task type reports; the first is the default primary metric.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "segmentation": ("DSC", "HD"),
    "classification": ("AUC", "ACC", "F1_macro", "F1_weighted", "MCC"),
    "detection": ("IoU",),
    "regression": ("MRE",),
}

DEFAULT_METRIC: dict[str, str] = {t: m[0] for t, m in METRICS_BY_TYPE.items()}

#: Direction of every metric (LibMTL style: a metric always carries its direction).
HIGHER_IS_BETTER: dict[str, bool] = {
    "DSC": True,
    "HD": False,
    "AUC": True,
    "ACC": True,
    "F1_macro": True,
    "F1_weighted": True,
    "MCC": True,
    "IoU": True,
    "MRE": False,
}

#: Columns of the tidy results table (results.csv), the contract between the store and the analysis.
RESULT_COLUMNS: tuple[str, ...] = (
    "study",
    "job_id",
    "paradigm",
    "group",
    "seed",
    "fraction",
    "task",
    "type",
    "metric",
    "value",
    "higher_is_better",
    "n_train",
)

#: Units shown on axes and in tables.
METRIC_UNITS: dict[str, str] = {"HD": "px", "MRE": "px"}


def metric_direction(name: str) -> bool | None:
    """Whether higher is better for a metric, per-class variants (`DSC_class2`) included; None if unknown."""
    base = name.split("_class", 1)[0]
    return HIGHER_IS_BETTER.get(base)
