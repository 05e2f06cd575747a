"""The tasks a study trains: each one's type, classes and metric, or a catalog to take them from."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from usagg.spec.jobhash import IN_HASH, NOT_IN_HASH
from usagg.spec.models.base import Name, Strict
from usagg.tasktypes import builtin_task_types, get_task_type


class TaskSpec(Strict):
    """One task: what it predicts and how it is scored."""

    id: Annotated[Name, IN_HASH] = Field(description="Task id, as in the dataset CSVs' `task_id` column.")
    type: Annotated[str, IN_HASH] = Field(
        description="Task type, one registered in usagg/tasktypes/ or by a plug-in (built in: "
        + ", ".join(t.name for t in builtin_task_types())
        + ").",
        json_schema_extra={"examples": [t.name for t in builtin_task_types()]},
    )
    num_classes: Annotated[int, IN_HASH] = Field(
        ge=1,
        le=1000,
        description="What it counts depends on the type: "
        + "; ".join(f"{t.name}: {t.num_classes_meaning}" for t in builtin_task_types())
        + ".",
    )
    group: Annotated[Name | None, NOT_IN_HASH] = Field(
        None,
        description="Clinical group (CG trains one model per group). When the study gives `groups`, "
        "loading sets this from that mapping, so after loading it is always the task's clinical group.",
    )
    metric: Annotated[str | None, IN_HASH] = Field(
        None,
        description="Primary metric for Δ versus TS; default: the type's first metric ("
        + ", ".join(f"{t.name}: {t.primary_metric}" for t in builtin_task_types())
        + ").",
    )

    @field_validator("type")
    @classmethod
    def _registered_type(cls, v: str) -> str:
        get_task_type(v)  # ValueError naming the registered types
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: Any) -> Any:
        """No metric given: the type's primary one, filled into the input (validators never rewrite fields)."""
        if not isinstance(data, dict) or data.get("metric") is not None or not isinstance(data.get("type"), str):
            return data
        try:
            kind = get_task_type(data["type"])
        except ValueError:
            return data  # the `type` field's own check names the registered types
        return {**data, "metric": kind.primary_metric}

    @field_validator("num_classes")
    @classmethod
    def _classes_fit_type(cls, v: int, info: ValidationInfo) -> int:
        kind = info.data.get("type")
        problem = None if kind is None else get_task_type(kind).check_num_classes(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("metric")
    @classmethod
    def _metric_fits_type(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        allowed = get_task_type(kind).metric_names if kind is not None else ()
        if v is not None and allowed and v not in allowed:
            close = difflib.get_close_matches(v, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"metric {v!r} is not a {kind} metric{hint}; allowed: {', '.join(allowed)}")
        return v


class CatalogRef(Strict):
    """Take tasks from a catalog: one shipped with usagg by name (`fmc_uia`, `synthetic`, `known`) or a YAML file."""

    catalog: Annotated[Path, NOT_IN_HASH] = Field(
        description="A packaged catalog's name (usagg/catalogs/: fmc_uia, synthetic, known), or a catalog YAML with a "
        "`tasks:` list, relative to the study file."
    )
    include: Annotated[list[str] | None, NOT_IN_HASH] = Field(
        None, description="Keep only these catalog task ids, in catalog order (default: all); unknown ids are errors."
    )
    exclude: Annotated[list[str], NOT_IN_HASH] = Field(
        default_factory=list, description="Drop these catalog task ids; unknown ids are errors."
    )
