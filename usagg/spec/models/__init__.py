"""The study spec as pydantic models: every setting a study YAML may hold.

Field descriptions are the documentation (`usagg schema` exports them as JSON
Schema, docs/spec.md lists them). Unknown keys are errors everywhere.

One module per part of the spec (base.py holds `Strict` and the shared field
types, study.py the root `Study` and its checks across parts); this package
re-exports the models, so callers import them from `usagg.spec.models`.
"""

from __future__ import annotations

from usagg.spec.models.analysis import AffinitySpec, AnalysisSpec, Hypotheses
from usagg.spec.models.base import Strict
from usagg.spec.models.data import DataSpec, SynthSpec
from usagg.spec.models.execution import ExecutionSpec, SlurmSpec
from usagg.spec.models.expect import DeltaRef, Expectation, TaskSelection
from usagg.spec.models.model import HeadSpec, ModelSpec, MoESpec
from usagg.spec.models.study import Study
from usagg.spec.models.tasks import CatalogRef, TaskSpec
from usagg.spec.models.tracking import MlflowSpec, TrackingSpec
from usagg.spec.models.training import AUTO_CHECKPOINT_SHARE, AugmentationSpec, TrainingSpec

__all__ = [
    "AUTO_CHECKPOINT_SHARE",
    "AffinitySpec",
    "AnalysisSpec",
    "AugmentationSpec",
    "CatalogRef",
    "DataSpec",
    "DeltaRef",
    "ExecutionSpec",
    "Expectation",
    "HeadSpec",
    "Hypotheses",
    "MlflowSpec",
    "MoESpec",
    "ModelSpec",
    "SlurmSpec",
    "Strict",
    "Study",
    "SynthSpec",
    "TaskSelection",
    "TaskSpec",
    "TrackingSpec",
    "TrainingSpec",
]
