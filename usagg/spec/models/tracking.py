"""`tracking:`: the experiment trackers (TensorBoard, MLflow) fed while jobs run."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from usagg.spec.jobhash import NOT_IN_HASH
from usagg.spec.models.base import Strict


class MlflowSpec(Strict):
    """Where MLflow runs go: one parent run per study, one nested run per job (reopened when the job runs again)."""

    uri: Annotated[str, NOT_IN_HASH] = Field(
        description="MLflow tracking URI: a server (http://host:5000) or a local database (sqlite:///mlflow.db).",
        min_length=1,
    )
    experiment: Annotated[str | None, NOT_IN_HASH] = Field(
        None,
        description="MLflow experiment name (default: the study's name). Studies may share one: with a local URI "
        "(sqlite:, file:) each study's runs keep their artifacts in its own run store, <run store>/mlflow-artifacts.",
    )


class TrackingSpec(Strict):
    """Live curves in an experiment tracker, beside the run store (which stays the record). Never changes a job id."""

    tensorboard: Annotated[bool, NOT_IN_HASH] = Field(
        False,
        description="Write TensorBoard event files per job under <run store>/tensorboard/<job id> "
        "(needs the tensorboard extra: pip install 'usagg[tensorboard]').",
    )
    mlflow: Annotated[MlflowSpec | None, NOT_IN_HASH] = Field(
        None,
        description="Log params, per-epoch and final metrics, and the report to MLflow (needs the mlflow extra: "
        "pip install 'usagg[mlflow]').",
    )
    mlflow_checkpoints: Annotated[bool, NOT_IN_HASH] = Field(
        False,
        description="Also log each done job's tested weights to its MLflow run (metrics.json and the predictions "
        "always go): best.pt, the selected weights (under `training.selection: last`, the last epoch's), as large as "
        "the trainable part of the model.",
    )

    @model_validator(mode="after")
    def _extras_installed(self) -> TrackingSpec:
        import importlib.util

        for wanted, module, extra in (
            (self.tensorboard, "tensorboard", "tensorboard"),
            (self.mlflow, "mlflow", "mlflow"),
        ):
            if wanted and importlib.util.find_spec(module) is None:
                raise ValueError(
                    f"tracking.{extra} needs the {module} package, which is not installed: "
                    f"pip install 'usagg[{extra}]' (or switch tracking.{extra} off)"
                )
        return self
