"""`training:`: optimisation and augmentation, the same for every paradigm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from usagg.spec.jobhash import IN_HASH, NOT_IN_HASH, JobHash
from usagg.spec.models.base import Strict

#: checkpoint_every: auto saves last.pt when the last save took at most this share of the time since it: the
#: engine decides by it (usagg/engine/checkpointing.py), the wall-time projection counts saves by it
#: (usagg/projection.py `checkpoint_saves`).
AUTO_CHECKPOINT_SHARE = 0.05


def _ordered_range(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"a range is [low, high] with low <= high, got {list(v)}")
    return v


Range = Annotated[tuple[float, float], AfterValidator(_ordered_range)]


class AugmentationSpec(Strict):
    """Training augmentation, on the device, drawn per (job seed, step) (usagg/engine/augment.py).

    Only training batches are augmented, never selection or test. A sample left untouched is still read
    from the frozen trunk (usagg/model/trunk.py); a touched one goes through the frozen blocks.
    """

    preset: Annotated[Literal["baseline", "none"], IN_HASH] = Field(
        "baseline",
        description="baseline: the transforms below with their probabilities (by default the challenge baseline's "
        "photometric set, brightness/contrast p=0.2 and Gaussian noise p=0.1: about 72 % of samples untouched); "
        "none: no augmentation at all, whatever the fields below say.",
    )
    brightness_contrast_p: Annotated[float, IN_HASH] = Field(
        0.2, ge=0, le=1, description="Probability of brightness/contrast."
    )
    brightness_limit: Annotated[float, IN_HASH] = Field(
        0.2, ge=0, le=1, description="Brightness shift drawn from U(-limit, limit), a fraction of 255."
    )
    contrast_limit: Annotated[float, IN_HASH] = Field(
        0.2, ge=0, le=1, description="Contrast factor 1 + U(-limit, limit)."
    )
    noise_p: Annotated[float, IN_HASH] = Field(0.1, ge=0, le=1, description="Probability of additive Gaussian noise.")
    noise_std: Annotated[Range, IN_HASH] = Field(
        (0.2, 0.44), description="Noise standard deviation drawn from this range, a fraction of 255 (0..1)."
    )
    hflip_p: Annotated[float, IN_HASH] = Field(
        0.0, ge=0, le=1, description="Probability of a horizontal flip (masks, boxes and keypoints follow)."
    )
    scale_p: Annotated[float, IN_HASH] = Field(0.0, ge=0, le=1, description="Probability of a zoom about the centre.")
    scale_range: Annotated[Range, IN_HASH] = Field((0.9, 1.1), description="Zoom factor range (> 0); > 1 enlarges.")
    rotate_p: Annotated[float, IN_HASH] = Field(
        0.0, ge=0, le=1, description="Probability of a rotation about the centre."
    )
    rotate_deg: Annotated[float, IN_HASH] = Field(
        10.0, ge=0, le=180, description="Rotation angle drawn from U(-deg, deg)."
    )

    @field_validator("noise_std")
    @classmethod
    def _unit_std(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0 or v[1] > 1:
            raise ValueError(f"noise_std is a fraction of 255 in [0, 1], got {list(v)}")
        return v

    @field_validator("scale_range")
    @classmethod
    def _positive_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0 or v[1] > 10:
            raise ValueError(f"scale_range must lie in (0, 10], got {list(v)}")
        return v

    @property
    def geometric(self) -> bool:
        """Whether a sample can be flipped, scaled or rotated, so every task's targets must move with it."""
        return self.preset != "none" and any(p > 0 for p in (self.hflip_p, self.scale_p, self.rotate_p))


class TrainingSpec(Strict):
    """Optimisation, identical across every paradigm."""

    epochs: Annotated[int, IN_HASH] = Field(20, ge=1, le=10_000, description="Training epochs.")
    steps_per_epoch: Annotated[int | None, IN_HASH] = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Batches per epoch (with sampling: matched, per task); default: the job's training images / "
        "batch_size (matched: each task's own images / batch_size, rounded up).",
    )
    batch_size: Annotated[int, IN_HASH] = Field(
        16, ge=1, le=4096, description="Images per batch; every batch holds one task."
    )
    eval_batch_size: Annotated[int, NOT_IN_HASH] = Field(
        32, ge=1, le=4096, description="Images per batch at evaluation."
    )
    optimizer: Annotated[Literal["adamw"], IN_HASH] = Field("adamw", description="Optimiser.")
    lr_encoder: Annotated[float, IN_HASH] = Field(
        1e-4, gt=0, le=1, description="Learning rate of the trainable encoder blocks and MoE."
    )
    lr_heads: Annotated[float, IN_HASH] = Field(
        1e-3, gt=0, le=1, description="Learning rate of the heads and task embeddings."
    )
    weight_decay: Annotated[float, IN_HASH] = Field(0.05, ge=0, le=10, description="AdamW weight decay.")
    schedule: Annotated[Literal["cosine", "constant"], IN_HASH] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_epochs: Annotated[float, IN_HASH] = Field(
        1.0, ge=0, le=10_000, description="Linear warm-up length in epochs."
    )
    sampling: Annotated[Literal["uniform", "proportional", "temperature", "matched"], JobHash("multi_task")] = Field(
        "uniform",
        description="Which task each batch comes from: uniform, proportional to size, size^(1/T), or matched: "
        "every task gets exactly the optimiser steps of its TS job (per epoch ceil(n_train / batch_size), or "
        "steps_per_epoch when set), in a seeded shuffle. One-task jobs draw the same batches in every mode.",
    )
    temperature: Annotated[float, JobHash("temperature")] = Field(
        2.0, gt=0, le=1e6, description="T of temperature sampling."
    )
    loss_weights: Annotated[dict[str, Annotated[float, Field(ge=0)]], JobHash("per_task", default=1.0)] = Field(
        default_factory=dict, description="Per-task loss weight (task id -> weight; default 1)."
    )
    precision: Annotated[Literal["auto", "bf16", "fp32"], IN_HASH] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    grad_clip: Annotated[float | None, IN_HASH] = Field(
        1.0, gt=0, le=1e6, description="Gradient norm clip; null for none."
    )
    augmentation: Annotated[AugmentationSpec, IN_HASH] = Field(
        default_factory=AugmentationSpec, description="Training augmentation."
    )
    selection: Annotated[Literal["best", "last"], IN_HASH] = Field(
        "best",
        description="best: test the epoch chosen on the selection split (selection_scope says how; without one, "
        "data.selection_fraction 0, the last, said once by the run); last: the last.",
    )
    selection_scope: Annotated[Literal["model", "task"], JobHash("multi_task")] = Field(
        "model",
        description="model: one epoch for all of a job's tasks, by the mean relative change of their primary "
        "metrics on the selection split; task: each task tested at its own best epoch (optimistic for multi-task "
        "jobs: it selects per task what one model cannot be). Ties: lower selection loss, then the later epoch.",
    )
    loss_balance: Annotated[Literal["equal", "initial", "uncertainty"], JobHash("multi_task")] = Field(
        "equal",
        description="How task losses are weighed (times loss_weights): equal (as they are), initial (each divided "
        "by its loss at the task's first batch), uncertainty (Kendall et al. 2018: L * exp(-s) + s with a learned "
        "s per task). One-task jobs always use the plain loss.",
    )
    checkpoint_every: Annotated[Annotated[int, Field(ge=1)] | Literal["auto"], NOT_IN_HASH] = Field(
        "auto",
        description="Save last.pt every N epochs (always after the last); auto: after an epoch when the last "
        f"save took under {100 * AUTO_CHECKPOINT_SHARE:g} % of the training time since it. Never changes a result.",
    )
