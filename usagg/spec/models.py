"""The study spec as pydantic models: every setting a study YAML may hold.

Field descriptions are the documentation (`usagg schema` exports them as JSON
Schema, docs/spec.md lists them). Unknown keys are errors everywhere.
"""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from usagg.execute.registry import EXECUTORS, executor_names
from usagg.model.zoo import BACKBONES
from usagg.names import suggest, unknown_name
from usagg.paradigms import check_paradigm, check_paradigms, paradigm_names
from usagg.spec.jobhash import IN_HASH, JOB_OWN, NOT_IN_HASH, TYPE_SETTING, JobHash
from usagg.spec.typewalk import type_arms
from usagg.sweep import check_block
from usagg.tasktypes import builtin_task_types, get_task_type, scale_problem, task_type_names

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
ParadigmName = Annotated[str, AfterValidator(check_paradigm)]


def _paradigm_entries_schema(schema: dict[str, Any]) -> None:
    """`paradigms` in the JSON Schema as a spec writes it, not as validated: an entry is a name or a one-key mapping
    of a name to its settings (or null), which `Study._paradigm_entries` unpacks; an editor then takes known.yaml."""
    name = schema["items"]
    settings = {"type": "object", "minProperties": 1, "maxProperties": 1, "propertyNames": name}
    schema["items"] = {"anyOf": [name, {**settings, "additionalProperties": {"type": ["object", "null"]}}]}
    schema["examples"] = [[*paradigm_names()], ["TS", "CG", "AU", {"AG": {"groups": 3}}]]


def _check_executor(name: str) -> str:
    known = executor_names()  # plug-ins loaded first
    if name not in known:
        raise ValueError(unknown_name("executor", name, known) + EXECUTORS.hint)
    return name


ExecutorName = Annotated[str, AfterValidator(_check_executor)]


#: checkpoint_every: auto saves last.pt when the last save took at most this share of the time since it: the
#: engine decides by it (usagg/engine/checkpointing.py), the wall-time projection counts saves by it
#: (usagg/projection.py `checkpoint_saves`).
AUTO_CHECKPOINT_SHARE = 0.05
#: Largest seed: what numpy's generators accept (torch takes more).
MAX_SEED = 2**32 - 1


#: No integer in a spec means anything at or beyond this (numpy seeds stop at 2**32, counts far lower).
MAX_INT = 2**63


def _not_a_number(ann: Any, v: Any) -> str | None:
    """Why `v` is not the number `ann` expects, or None: pydantic's lax mode would read YAML `true` as 1 and
    a quoted "3" as 3, so a typo or a stray quote would pass. Lists, mappings and pairs are checked item by item."""
    arms = type_arms(ann)
    if isinstance(v, list | tuple | dict):
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for arm in arms:
            origin, args = get_origin(arm), get_args(arm)
            if origin in (list, dict, tuple) and args and isinstance(v, dict) == (origin is dict):
                for key, item in items:
                    sub = args[-1] if origin is not tuple else args[min(int(key), len(args) - 1)]
                    why = _not_a_number(sub, item)
                    if why:
                        return f"item {key}: {why}" if not isinstance(v, dict) else f"{key!r}: {why}"
                return None
        return None
    if not any(arm in (int, float) for arm in arms):
        return None
    if isinstance(v, bool) and bool not in arms:
        return f"expected a number, got {str(v).lower()} (a YAML boolean)"
    if isinstance(v, str) and not any(arm in (str, Path, Any) or v in get_args(arm) for arm in arms):
        try:
            float(v)
        except ValueError:
            return None  # not a number at all: pydantic's own message says what is expected
        return f"expected a number, got the string {v!r}; write it without quotes"
    return None


def _too_large(v: Any) -> int | None:
    """An integer at or beyond MAX_INT inside a validated value, else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if abs(v) >= MAX_INT else None
    if isinstance(v, list | tuple | dict):
        for item in v.values() if isinstance(v, dict) else v:
            big = _too_large(item)
            if big is not None:
                return big
    return None


class Strict(BaseModel):
    """Base: unknown keys are errors, values are checked on assignment too; no inf/nan, no true or "3" for a
    number, no integer beyond 2**63."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """A number field (or list of numbers) takes numbers only: not YAML `true`, not a quoted "3"."""
        field = cls.model_fields.get(info.field_name or "")
        why = _not_a_number(field.annotation, v) if field is not None else None
        if why:
            raise ValueError(why)
        return v

    @field_validator("*")
    @classmethod
    def _bounded_integers(cls, v: Any) -> Any:
        """After each field's own range: no integer at or beyond 2**63 (YAML reads up to 40 digits)."""
        big = _too_large(v)
        if big is not None:
            raise ValueError(f"got {str(big)[:30]}; integers in a spec are below 2**63")
        return v


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


class SynthSpec(Strict):
    """Settings of the built-in synthetic ultrasound benchmark (`usagg synth`)."""

    seed: Annotated[int, IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Generator seed: the same seed gives the same images."
    )
    image_size: Annotated[int, IN_HASH] = Field(
        128, ge=32, le=1024, description="Side of the generated square images, px."
    )
    sizes: Annotated[
        dict[str, Annotated[int, Field(ge=4, le=1_000_000)]], JobHash("per_task", default="default_size")
    ] = Field(
        default_factory=dict,
        description="Training images per synthetic task id (tasks not named get `default_size`).",
    )
    default_size: Annotated[int, JobHash("task_default")] = Field(
        120, ge=4, le=1_000_000, description="Training images of a task not named in `sizes`."
    )
    val_size: Annotated[int, IN_HASH] = Field(
        40, ge=2, le=1_000_000, description="Images per task in the generated `val` split."
    )
    out: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Where to write the data (default: a folder in the cache keyed by these settings)."
    )


COLOR_DESCRIPTION = (
    "Colour of the model input: auto (RGB for a task's images when some of them have colour, i.e. channels that "
    "differ; grayscale data stay one channel, broadcast to three at input, the same numbers as gray), gray "
    "(luminance, as before colour modes existed), rgb (always three channels). Part of the decode cache's key."
)
TRUNK_DESCRIPTION = (
    "Shared frozen trunk (usagg/model/trunk.py): the frozen blocks' outputs that the model reads are computed once "
    "per image, input size, frozen weights, taps, colour mode and device precision, kept in the cache folder and "
    "read by every job and epoch for samples that are not augmented (selection and test too); auto: on whenever "
    "blocks are frozen and no MoE block is among them; off: always recompute. A cache only: on the CPU the same "
    "bits as recomputing, so it is left out of the job hash."
)


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    root: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Dataset root in the FMC_UIA layout (train/, val/)."
    )
    synthetic: Annotated[SynthSpec | None, IN_HASH] = Field(
        None, description="Generate the synthetic benchmark instead of `root`."
    )
    test_split: Annotated[Literal["val", "train"], IN_HASH] = Field(
        "val",
        description="Where test images come from: the dataset's `val` folder, or carved from `train` "
        "(deterministic, seeded by `split_seed`, stratified by class where the type has classes, "
        "same for every paradigm).",
    )
    test_fraction: Annotated[float, JobHash("train_split")] = Field(
        0.2, gt=0, lt=1, description="Share of train held out as test when test_split=train."
    )
    selection_fraction: Annotated[float, IN_HASH] = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of the training pool held out for model selection (0: none); at most half, so "
        "training keeps most of the data.",
    )
    split_seed: Annotated[int, IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the test and selection splits (not of the job)."
    )
    cache_dir: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Decode cache and synthetic data (default: $USAGG_CACHE or ~/.cache/usagg)."
    )
    color: Annotated[Literal["auto", "gray", "rgb"], IN_HASH] = Field("auto", description=COLOR_DESCRIPTION)
    leakage: Annotated[Literal["error", "warn", "off"], NOT_IN_HASH] = Field(
        "error",
        description="Near duplicates between train and test (val) images: a problem that blocks the run (error), "
        "a warning (warn), or not searched (off). The same file or the same decoded pixels in both splits is "
        "always an error.",
    )
    near_duplicate_threshold: Annotated[float, NOT_IN_HASH] = Field(
        0.9,
        gt=0,
        le=1,
        description="Similarity from which a test image and a training image count as near duplicates: the share "
        "of agreeing gradient signs of a 2 x 32 x 32 difference hash of the grayscale image, over the bits that "
        "show the test image's content (a clear gradient, and not the frame every image of its task shares: black "
        "surround, fan edges, overlay text). Re-encoded, resized or brightened copies of ultrasound-like frames "
        "score 0.95 and above; the nearest training frame to an unrelated frame of one scanner 0.74-0.91 "
        "(usagg/data/leakage.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        """`num_workers` configured DataLoader workers the engine never had: said plainly, not ignored."""
        if isinstance(data, dict) and "num_workers" in data:
            raise ValueError(
                "num_workers is no longer a setting: it was never read, since batches are cut from tensors "
                "held in memory (usagg/engine/batches.py) with no DataLoader and no worker processes; delete the "
                "line (CPU parallelism is execution.threads and execution.cpu_jobs)"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError("give exactly one of `root` (an FMC_UIA folder) or `synthetic` (generator settings)")
        return self


def _increasing(blocks: list[int] | None) -> list[int] | None:
    """Block lists are sets written in order: [1, 1] or [7, 3] would be the same model under another job id."""
    if blocks is not None and any(b <= a for a, b in pairwise(blocks)):
        raise ValueError(f"got {blocks}; block indices must be distinct and increasing, such as [2, 5, 8, 11]")
    return blocks


#: Encoder block indices (0-based), distinct and increasing.
Blocks = Annotated[list[Annotated[int, Field(ge=0)]] | None, AfterValidator(_increasing)]


class MoESpec(Strict):
    """Task-conditioned Mixture-of-Experts in the later encoder blocks (the paradigms with MoE on: CG, AU, AG, TSM)."""

    blocks: Annotated[Blocks, IN_HASH] = Field(
        None, min_length=1, description="Block indices (0-based) whose MLP becomes MoE; default the later half."
    )
    experts: Annotated[int, IN_HASH] = Field(8, ge=1, le=64, description="Experts per MoE block.")
    top_k: Annotated[int, IN_HASH] = Field(2, ge=1, description="Experts chosen per token.")
    router_input: Annotated[Literal["token_task", "task"], IN_HASH] = Field(
        "token_task", description="Router sees the token plus a learned task embedding, or the task embedding alone."
    )
    aux_loss_weight: Annotated[float, IN_HASH] = Field(0.01, ge=0, description="Weight of the load-balancing loss.")
    init_noise: Annotated[float, IN_HASH] = Field(
        0.01, ge=0, description="Relative noise added to experts copied from the dense MLP."
    )

    @field_validator("top_k")
    @classmethod
    def _k_le_e(cls, v: int, info: ValidationInfo) -> int:
        experts = info.data.get("experts")
        if experts is not None and v > experts:
            raise ValueError(f"top_k ({v}) cannot exceed experts ({experts})")
        return v


class HeadSpec(Strict):
    """The task heads on the encoder's spatial feature maps."""

    feature_blocks: Annotated[Blocks, IN_HASH] = Field(
        None,
        min_length=1,
        description="Encoder blocks whose outputs feed the heads; default 4 evenly spaced, the last included.",
    )
    decoder_channels: Annotated[int, IN_HASH] = Field(
        64, ge=8, le=4096, description="Width of the DPT-style mask decoder."
    )
    hidden: Annotated[int, IN_HASH] = Field(
        256, ge=8, le=16384, description="Hidden width of the MLP heads (class, box and keypoint heads)."
    )
    keypoints: Annotated[Literal["heatmap", "direct"], IN_HASH] = Field(
        "heatmap", description="Keypoint head: heatmaps with soft-argmax, or coordinates predicted directly."
    )
    seg_loss_stride: Annotated[Literal[1, 2, 4], TYPE_SETTING] = Field(
        1,
        description="Resolution of the segmentation training loss: 1 (default, as before) upsamples the logits "
        "to the input size and scores every pixel; 2 or 4 scores them at 1/2 or 1/4 of it (2: the decoder's own "
        "grid) against area-downsampled targets, cheaper per step. Predictions and metrics stay at full size. "
        "In the job id of segmentation jobs only, and only when not 1.",
    )

    @field_validator("seg_loss_stride", mode="before")
    @classmethod
    def _stride_is_a_number(cls, v: Any) -> Any:
        """YAML `true` equals 1 to a Literal; a stride is a number (the Strict check covers int fields only)."""
        if isinstance(v, bool):
            raise ValueError(f"expected 1, 2 or 4, got {str(v).lower()} (a YAML boolean)")
        return v


class ModelSpec(Strict):
    """M2DINO: one architecture for every paradigm."""

    backbone: Annotated[str, IN_HASH] = Field("dinov3_small", description=f"One of: {', '.join(BACKBONES)}.")
    weights: Annotated[Path | None, JobHash("content")] = Field(
        None, description="Local official DINOv3 checkpoint; none means random initialisation (logged loudly)."
    )
    image_size: Annotated[int, IN_HASH] = Field(224, ge=32, le=2048, description="Input side in px, a multiple of 16.")
    frozen_blocks: Annotated[int | None, IN_HASH] = Field(
        None, ge=0, description="Encoder blocks frozen from the start (with the patch embedding); default half."
    )
    moe: Annotated[MoESpec, JobHash("moe_jobs")] = Field(
        default_factory=MoESpec,
        description="Mixture-of-Experts blocks, used by the paradigms with MoE on: CG, AU, AG, TSM and AG's probe "
        "(not TS, AUD or CGD).",
    )
    heads: Annotated[HeadSpec, IN_HASH] = Field(default_factory=HeadSpec, description="Task heads.")
    trunk: Annotated[Literal["auto", "off"], NOT_IN_HASH] = Field("auto", description=TRUNK_DESCRIPTION)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(unknown_name("backbone", v, list(BACKBONES)) + BACKBONES.hint)
        return v

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"image_size must be a multiple of 16 (the patch size), got {v}")
        return v

    @field_validator("frozen_blocks")
    @classmethod
    def _frozen_in_range(cls, v: int | None, info: ValidationInfo) -> int | None:
        backbone = info.data.get("backbone")
        if v is not None and isinstance(backbone, str) and backbone in BACKBONES and v > BACKBONES[backbone].depth:
            raise ValueError(f"frozen_blocks {v} exceeds the {BACKBONES[backbone].depth} blocks of {backbone}")
        return v

    @field_validator("moe", "heads")
    @classmethod
    def _blocks_in_range(cls, v: MoESpec | HeadSpec, info: ValidationInfo) -> MoESpec | HeadSpec:
        backbone = info.data.get("backbone")
        if not isinstance(backbone, str) or backbone not in BACKBONES:
            return v
        depth = BACKBONES[backbone].depth
        name = "blocks" if isinstance(v, MoESpec) else "feature_blocks"
        bad = [b for b in getattr(v, name) or [] if b >= depth]
        if bad:
            raise ValueError(f"{name} {bad} out of range: {backbone} has blocks 0..{depth - 1}")
        return v

    @property
    def depth(self) -> int:
        return BACKBONES[self.backbone].depth

    def resolved_frozen_blocks(self) -> int:
        return self.depth // 2 if self.frozen_blocks is None else self.frozen_blocks

    def resolved_moe_blocks(self) -> list[int]:
        return list(range(self.depth // 2, self.depth)) if self.moe.blocks is None else sorted(set(self.moe.blocks))

    def resolved_feature_blocks(self) -> list[int]:
        if self.heads.feature_blocks is not None:
            return sorted(set(self.heads.feature_blocks))
        d = self.depth
        return sorted({max(0, round(d * (i + 1) / 4) - 1) for i in range(4)})


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
        description="best: test the epoch chosen on the selection split (selection_scope says how); last: the last.",
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


#: sbatch long options `execution.slurm.additional` may set (submitit writes `#SBATCH --key=value`, `_` as `-`);
#: the ones usagg sets itself (time, partition, array, output, ...) are fields of SlurmSpec instead.
SBATCH_EXTRA_KEYS = (
    "begin", "comment", "constraint", "cpus_per_gpu", "exclude", "exclusive", "gpu_bind", "gpus",
    "gpus_per_task", "gres", "hint", "licenses", "mail_type", "mail_user", "mem_per_cpu", "mem_per_gpu", "nice",
    "nodelist", "prefer", "requeue", "reservation", "switches", "time_min", "wckey",
)  # fmt: skip
#: sbatch options usagg refuses, and why: `--signal` replaced submitit's own (USR2 90 s before the time limit, which
#: checkpoints the job and requeues it; submitit handles no other signal), so a job reaching its limit was killed
#: with nothing saved; `--clusters` put the array where usagg's sacct and squeue calls do not look.
SBATCH_RESERVED = {
    "clusters": "multi-cluster submission is not supported: usagg follows the array with sacct, squeue and scancel "
    "on this cluster, which do not see a job sbatch -M put on another (it would wait for it forever, and submit it "
    "again); run usagg from a login node of that cluster instead",
    "signal": "submitit asks Slurm for USR2 90 s before the time limit and then checkpoints and requeues the job "
    "(it handles no other signal), so another --signal kills a job at its limit with nothing saved; raise "
    "execution.slurm.time_min or execution.slurm.max_requeue instead",
}
#: A Slurm name (partition, account, QOS; comma lists allowed): nothing a shell or sbatch would read as syntax.
SlurmName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+@%:,-]+$", max_length=128)]
#: A value of an extra sbatch option: printable, one line, with Slurm's own syntax (a feature expression's `&`, `|`,
#: `[]`, `*`, `()`, `!`; a hostlist's `node[01-04]`), which submitit shell-quotes and sbatch's `#SBATCH` reader takes
#: quoted; no `#`, quote, `$`, backtick, `;` or control character.
SlurmValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+@%:,=/ |&\[\]*!()-]*$", max_length=256)]
#: sbatch options written as a bare flag (`#SBATCH --requeue`) by `key: true`: `requeue` takes no value (a string
#: would be `--requeue=''`, which sbatch refuses), `exclusive` a value or none.
SBATCH_FLAGS = {"requeue": "flag", "exclusive": "flag or value"}


def _check_sbatch_keys(extra: dict[str, str | Literal[True]]) -> dict[str, str | Literal[True]]:
    for key, value in extra.items():
        if key in SBATCH_RESERVED:
            raise ValueError(f"{key!r} cannot be set here: {SBATCH_RESERVED[key]}")
        if key not in SBATCH_EXTRA_KEYS:
            raise ValueError(unknown_name("extra sbatch option", key, list(SBATCH_EXTRA_KEYS)))
        if value is False:  # a Literal[True] lets false through
            raise ValueError(f"{key!r}: false is no sbatch value; write true for the flag, or leave {key!r} out")
        if value is True and key not in SBATCH_FLAGS:
            raise ValueError(f"{key!r} takes a value (--{key.replace('_', '-')}=VALUE), not true")
        if value is not True and SBATCH_FLAGS.get(key) == "flag":
            raise ValueError(f"{key!r} is an sbatch flag without a value: write {key}: true")
    return extra


class SlurmSpec(Strict):
    """Slurm parameters passed to submitit (which writes the sbatch script; no value can become a script line)."""

    partition: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm partition.")
    account: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm account.")
    qos: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm QOS.")
    time_min: Annotated[int, NOT_IN_HASH] = Field(
        240, ge=1, le=525_600, description="Wall-time limit per job, minutes."
    )
    gpus_per_node: Annotated[int, NOT_IN_HASH] = Field(1, ge=0, le=64, description="GPUs per job.")
    cpus_per_task: Annotated[int, NOT_IN_HASH] = Field(8, ge=1, le=1024, description="CPU cores per job.")
    mem_gb: Annotated[int, NOT_IN_HASH] = Field(32, ge=1, le=65_536, description="Memory per job, GiB.")
    array_parallelism: Annotated[int, NOT_IN_HASH] = Field(
        16, ge=1, le=100_000, description="Jobs of the array running at once."
    )
    max_requeue: Annotated[int, NOT_IN_HASH] = Field(
        3, ge=0, le=100, description="Requeues after pre-emption or time-out."
    )
    additional: Annotated[Annotated[dict[str, SlurmValue | bool], AfterValidator(_check_sbatch_keys)], NOT_IN_HASH] = (
        Field(
            default_factory=dict,
            description="Extra sbatch options (key: value), from a known list: "
            + ", ".join(SBATCH_EXTRA_KEYS)
            + "; requeue: true and exclusive: true are written as bare flags.",
        )
    )


class ExecutionSpec(Strict):
    """Where jobs run."""

    executor: Annotated[ExecutorName, NOT_IN_HASH] = Field(
        "local",
        description="A registered executor (usagg/execute/registry.py): "
        + "; ".join(f"{e.name}: {e.description}" for e in EXECUTORS.values())
        + ".",
    )
    devices: Annotated[
        Literal["auto", "cpu", "cuda"] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)], NOT_IN_HASH
    ] = Field("auto", description="auto (every visible GPU, else CPU), cpu, cuda, or a list of GPU indices.")
    threads: Annotated[int | None, NOT_IN_HASH] = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads per job (default: the usable cores divided by the most workers cpu_jobs allows, "
        "whatever the number of jobs left, at most OMP_NUM_THREADS where set, for every CPU job of the local "
        "executor; torch's choice on a GPU and "
        "under Slurm). A CPU job's numbers depend on it (the order of its sums): pin it for the same numbers on "
        "machines with other core counts.",
    )
    accel: Annotated[Literal["eager", "compile", "graphs", "step-graphs", "compiled-step-graphs"], NOT_IN_HASH] = Field(
        "eager",
        description="Launch-overhead mode on CUDA (usagg/engine/accel.py): eager; compile (torch.compile of the "
        "encoder alone); graphs (CUDA graphs per batch shape, torch.compile mode reduce-overhead of the encoder); "
        "step-graphs (each task's whole training step, AdamW included, recorded as one CUDA graph, no compiler; "
        "usagg/engine/step.py); compiled-step-graphs (both: the encoder and heads compiled, the whole step recorded "
        "around their fused kernels; unmeasured on a GPU). Modes the device cannot run fall back with one line: "
        "compile and graphs to eager without Triton, compiled-step-graphs to step-graphs. The CPU always runs eager. "
        "In a steady "
        "loop graphs trained the AU model 3.6x faster than eager on an H200, step-graphs 2.26x on an H100 "
        "(docs/benchmarks.md); the default stays eager until a whole job has matched eager under one of them on a GPU.",
    )
    jobs_per_gpu: Annotated[Annotated[int, Field(ge=1, le=16)] | Literal["auto"], NOT_IN_HASH] = Field(
        "auto",
        description="Jobs run at once on each local GPU, each in its own worker process with its own lock and log "
        "(1..16); auto: one until the GPU's first job (the largest queued) reports its measured peak memory (once "
        "its training settles, else at its end), then as many as fit in the GPU's free memory "
        "(usagg/execute/pool.py), at most the count `make gpu-check` found fastest on this card under this torch "
        "and accel mode where it measured one (usagg/projection.py: <cache>/jobs_per_gpu/<device>.json for "
        "eager, <device>-<accel>.json for another mode, eager's where that mode has none; a damaged or foreign file "
        "is ignored with one warning). No effect on the CPU or under Slurm.",
    )
    cpu_jobs: Annotated[Annotated[int, Field(ge=1, le=64)] | Literal["auto"], NOT_IN_HASH] = Field(
        "auto",
        description="Jobs run at once on the CPU (devices: cpu, or auto without a GPU), each in its own worker "
        "process with its own lock and log (1..64; 1 runs them one after the other in this process). Each worker "
        "uses `threads` torch threads if given, else the usable cores divided by the workers: small models use "
        "intra-op threads poorly, so jobs side by side on one thread each finish sooner than one job on all cores. "
        "The largest jobs start first. auto: the usable cores divided by `threads` (one each without it; at most "
        "one worker per job), lowered when a measured peak resident memory says fewer fit in the available memory "
        "(usagg/execute/pool.py). No effect on GPUs or under Slurm.",
    )
    slurm: Annotated[SlurmSpec, NOT_IN_HASH] = Field(
        default_factory=SlurmSpec, description="Slurm settings (executor: slurm)."
    )

    @field_validator("jobs_per_gpu", "cpu_jobs", mode="before")
    @classmethod
    def _count_not_boolean(cls, v: Any) -> Any:
        """A count or auto: `true` is not 1 (Strict's check skips fields that also take a word)."""
        if isinstance(v, bool):
            raise ValueError(f"expected a number of jobs or 'auto', got {str(v).lower()} (a YAML boolean)")
        return v


Alternative = Literal["two-sided", "less", "greater"]


class Hypotheses(Strict):
    """Directions stated before the data: each turns the matching tests one-sided (default two-sided)."""

    delta: Annotated[dict[ParadigmName, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Δm of a paradigm against 0 (the wild cluster bootstrap-t over clinical groups; the task-level "
        "Wilcoxon is descriptive, without a p): `less` = it loses to the baseline, e.g. {CG: less}.",
    )
    scale: Annotated[dict[ParadigmName, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Δ of a paradigm with log data size (the Spearman ρ over clinical groups and the mixed model's "
        "slope; the task-level ρ has no p): `greater` = aggregation gains with data, e.g. {CG: greater}.",
    )
    paired: Annotated[dict[str, Alternative], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Paired per-task Δ of two paradigms, key `A-B` (the mean of Δ_A − Δ_B, wild cluster "
        "bootstrap-t over clinical groups): `less` = A below B, e.g. {CG-AU: less}. CG-AU is always tested "
        "(two-sided unless stated).",
    )

    @field_validator("paired")
    @classmethod
    def _pair_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            a, sep, b = key.partition("-")
            if not sep or a == b:
                raise ValueError(f"a pair is two paradigms joined by '-', such as CG-AU, got {key!r}")
            check_paradigm(a)
            check_paradigm(b)
        return v


class AffinitySpec(Strict):
    """How the inter-task affinity AG groups by is measured (usagg/engine/affinity.py).

    The lookahead affinity of Fifty et al. (2021): Z[i->j] = 1 - L_j(theta after one step on task i's
    step batch) / L_j(theta), for every task pair, on fixed probe batches drawn from the training split,
    over the job's measurements (losses summed before dividing). Measuring never changes the training it
    watches (same weights, same RNG); a measuring job's id includes these settings because it writes
    affinity.json.
    """

    every: Annotated[int | Literal["auto"], IN_HASH] = Field(
        "auto",
        description="Optimiser steps between measurements; auto: a fifth of the job's steps (5 measurements).",
    )
    probe_size: Annotated[int, IN_HASH] = Field(
        4, ge=1, le=256, description="Images per task in the fixed probe batches."
    )
    probe_epochs: Annotated[int | None, NOT_IN_HASH] = Field(
        None,
        ge=1,
        le=10000,
        description="Measure in a short all-task probe run of this many epochs (largest fraction) instead of the "
        "AU job, so AG can run without AU.",
    )
    lookahead: Annotated[Literal["sgd", "adamw"], IN_HASH] = Field(
        "sgd",
        description="The lookahead step on task i's gradient g_i: sgd, Fifty et al.'s theta - lr·g_i; adamw, one "
        "true AdamW step on a copy of the job's optimiser (its moments, step counts and weight decay; the real one "
        "untouched). Default sgd, from a measurement on planted structures (python -m benchmarks lookahead: the "
        "known-answer study's groups, and four demo tasks twinned across two scan pools): AG's groups from SGD's "
        "matrix matched the planted ones at least as well as AdamW's in every seed (adjusted Rand 0.43 against 0.31 "
        "on the twins, equal on the known study) at the same cost, and AdamW's step, momentum included, overshot "
        '(a task\'s own probe loss up 0.7 %) (docs/benchmarks.md, "Which lookahead step").',
    )
    lookahead_lr: Annotated[float | None, IN_HASH] = Field(
        None,
        gt=0,
        le=1,
        description="Learning rate of the lookahead step; default: the encoder's learning rate at that step (adamw: "
        "each parameter group's own).",
    )

    @field_validator("every")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 10**9:
            raise ValueError(f"every is a number of steps from 1, or auto; got {v}")
        return v


class AnalysisSpec(Strict):
    """What `compare`, `plot` and `report` emphasise."""

    baseline: Annotated[str, NOT_IN_HASH] = Field(
        "TS", description="Paradigm Δ is measured against (a registered paradigm)."
    )
    representative_tasks: Annotated[list[str], NOT_IN_HASH] = Field(
        default_factory=list, description="Tasks of the absolute-performance figure (default: one per type)."
    )
    regime_threshold: Annotated[int, NOT_IN_HASH] = Field(
        1000, ge=1, description="n_train below this is the low-data regime, at or above it data-rich."
    )
    group_regime_threshold: Annotated[int, NOT_IN_HASH] = Field(
        5000,
        ge=1,
        description="A clinical group with fewer training images than this (sum over its tasks) is low-data, "
        "else data-rich; the default puts the study's OB (11,910) in data-rich and Breast (2,920) in low-data.",
    )
    cg_singletons: Annotated[Literal["exclude", "include"], NOT_IN_HASH] = Field(
        "exclude",
        description="Tasks a group-scope paradigm trains alone (CG: alone in their clinical group; AG: alone in a "
        "group AG formed): their Δ measures MoE alone, so by default they are flagged and left out of that "
        "paradigm's aggregates and tests.",
    )
    scale: Annotated[Literal["relative", "log_ratio", "headroom"], NOT_IN_HASH] = Field(
        "relative",
        description="Scale of each task's Δ: relative (% of the baseline metric), log_ratio (100·ln of the ratio: "
        "symmetric, for metrics that cannot be negative) or headroom (normalised change: a gain as % of the distance "
        "from the baseline to the metric's best value, from chance at most for AUC, a loss as % of the distance down "
        "to its worst value, chance for AUC; within ±100 for a bounded metric); the others are shown beside it where "
        "a mean's sign differs (usagg/analysis/scales.py).",
    )
    chance_tasks: Annotated[Literal["exclude", "include"], NOT_IN_HASH] = Field(
        "exclude",
        description="Tasks whose baseline is not above chance have no skill to change: flagged, and by default left "
        "out of every aggregate and test (negative transfer and collapse verdicts included); the per-task tables "
        "keep them. Chance is the metric's own level (AUC 0.5) or the best constant prediction the baseline's job "
        "scored on the same test images (an empty or all-foreground mask, a whole-image or mean training box, the "
        "mean training keypoints, the training class frequencies: metrics.json `trivial`), whichever is higher; the "
        "baseline is not shown above chance where a one-sided 95 % lower bound of its margin over it does not clear "
        "0: the t bound over its seeds, or with one seed the test-set bootstrap's bound of its metric over the job's "
        "test images (the point estimate where the job wrote no per-image scores).",
    )
    hypotheses: Annotated[Hypotheses, NOT_IN_HASH] = Field(
        default_factory=Hypotheses, description="Directional hypotheses (one-sided tests); default all two-sided."
    )
    bootstrap: Annotated[int, NOT_IN_HASH] = Field(
        10000, ge=100, le=1_000_000, description="Bootstrap resamples for confidence intervals."
    )
    task_bootstrap: Annotated[int, NOT_IN_HASH] = Field(
        2000,
        ge=100,
        le=1_000_000,
        description="Resamples of the per-task test-set bootstrap of Δ (item_scores.json of each job).",
    )
    bootstrap_seed: Annotated[int, NOT_IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the bootstrap, so intervals are reproducible."
    )
    affinity: Annotated[AffinitySpec, IN_HASH] = Field(
        default_factory=AffinitySpec,
        description="Inter-task affinity measurement for AG (used only when AG is among the paradigms).",
    )

    @field_validator("baseline")
    @classmethod
    def _registered_baseline(cls, v: str) -> str:
        return check_paradigm(v)


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


class TaskSelection(Strict):
    """Tasks chosen by what they are rather than by id; every key given must hold."""

    type: Annotated[str | None, NOT_IN_HASH] = Field(None, description="Tasks of this type (e.g. classification).")
    group: Annotated[str | None, NOT_IN_HASH] = Field(None, description="Tasks of this clinical group.")


class DeltaRef(Strict):
    """Which Δ % versus the baseline an expectation bounds."""

    paradigm: Annotated[ParadigmName, NOT_IN_HASH] = Field(description="The paradigm whose Δ is meant.")
    task: Annotated[str | None, NOT_IN_HASH] = Field(
        None, description="One task's Δ (default: every task `tasks` selects)."
    )
    versus: Annotated[ParadigmName | None, NOT_IN_HASH] = Field(
        None,
        description="Bound Δ of `paradigm` minus Δ of this paradigm (percentage points), e.g. AU versus CG; its "
        "interval pairs the seed differences over the seeds both ran and adds a test-set bootstrap over each "
        "paradigm's own seeds (one shared seed: that bootstrap alone).",
    )


class Expectation(Strict):
    """A result the study is meant to show, checked by `usagg compare` and the report (usagg/analysis/expect.py).

    Exactly one of `metric_of` (the absolute metric of a paradigm), `delta` (Δ % versus the baseline) or
    `ag_groups` (the grouping AG chose). Over several tasks it is met when every task meets it; a task without a
    result (its job did not run) makes it "not evaluated", never met. Values are at the largest fraction, seeds
    averaged.
    """

    name: Annotated[str, NOT_IN_HASH] = Field(
        min_length=1, max_length=120, description="What the expectation says, as the tables print it."
    )
    metric_of: Annotated[ParadigmName | None, NOT_IN_HASH] = Field(
        None, description="Bound this paradigm's metric (e.g. TS) on each task `tasks` selects."
    )
    delta: Annotated[DeltaRef | None, NOT_IN_HASH] = Field(
        None, description="Bound Δ % of a paradigm versus the baseline, e.g. {paradigm: CG, task: breast_lesion}."
    )
    ag_groups: Annotated[list[list[str]] | None, NOT_IN_HASH] = Field(
        None, description="The grouping AG should find, as lists of task ids, e.g. [[a, b], [c, d]]."
    )
    tasks: Annotated[list[str] | TaskSelection | None, NOT_IN_HASH] = Field(
        None,
        description="The tasks of metric_of or delta: a list of ids, or {type: ...} and/or {group: ...} "
        "(default: every task).",
    )
    metric: Annotated[str | None, NOT_IN_HASH] = Field(
        None, description="With metric_of: which metric (default: each task's primary metric)."
    )
    above: Annotated[float | None, NOT_IN_HASH] = Field(None, description="Met when the value is above this.")
    below: Annotated[float | None, NOT_IN_HASH] = Field(None, description="Met when the value is below this.")
    min_adjusted_rand: Annotated[float | None, NOT_IN_HASH] = Field(
        None,
        ge=-1,
        le=1,
        description="With ag_groups: met when the adjusted Rand index of AG's grouping against it, averaged over "
        "the seeds AG ran, is at least this.",
    )
    require: Annotated[Literal["value", "interval"], NOT_IN_HASH] = Field(
        "value",
        description="value: met when the seed mean clears the bounds; interval: only when its whole 95 % interval "
        "does (a sign that survives the seeds), not evaluated where there is no interval.",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, v: str) -> str:
        """Tables, the terminal and report.md print the name: an escape sequence there would act on the terminal, and
        a formula in a CSV table on a spreadsheet."""
        from usagg.safepath import control_characters

        bad = control_characters(v)
        if bad:
            raise ValueError(f"{v[:80]!r} contains control characters ({', '.join(bad)}); a name is printable text")
        if v.startswith(("=", "+", "-", "@")):  # as usagg/analysis/results.py FORMULA_START (the spec is below it)
            raise ValueError(
                f"{v[:80]!r} begins with {v[0]!r}; start the name with a letter or digit: the CSV tables print it, "
                "and a spreadsheet reads a cell beginning with = + - or @ as a formula"
            )
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Expectation:
        kinds = [k for k in ("metric_of", "delta", "ag_groups") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"expectation {self.name!r}: give exactly one of metric_of, delta or ag_groups, got "
                f"{', '.join(kinds) or 'none'}"
            )
        bounds = self.above is not None or self.below is not None
        if self.ag_groups is not None:
            extra = bounds or self.tasks is not None or self.metric is not None or self.require != "value"
            if self.min_adjusted_rand is None or extra:
                raise ValueError(
                    f"expectation {self.name!r}: ag_groups takes min_adjusted_rand and nothing else "
                    "(no above, below, tasks, metric or require)"
                )
            return self
        if not bounds or self.min_adjusted_rand is not None:
            raise ValueError(f"expectation {self.name!r}: {kinds[0]} needs `above` and/or `below` (a number)")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"expectation {self.name!r}: above ({self.above:g}) must be less than below")
        if self.metric is not None and self.metric_of is None:
            raise ValueError(f"expectation {self.name!r}: `metric` goes with metric_of (Δ is of the primary metric)")
        if self.delta is not None and self.delta.task is not None and self.tasks is not None:
            raise ValueError(f"expectation {self.name!r}: give delta.task or tasks, not both")
        return self

    def paradigm(self) -> str:
        """The paradigm whose results it reads (with delta.versus, also that one's)."""
        return self.metric_of or (self.delta.paradigm if self.delta is not None else "AG")

    def task_ids(self, tasks: list[TaskSpec]) -> list[str]:
        """The study's tasks it covers, in study order."""
        if self.ag_groups is not None:
            return [t for g in self.ag_groups for t in g]
        if self.delta is not None and self.delta.task is not None:
            return [self.delta.task]
        if isinstance(self.tasks, list):
            return list(self.tasks)
        sel = self.tasks or TaskSelection()
        return [t.id for t in tasks if sel.type in (None, t.type) and sel.group in (None, t.group)]

    def problem(self, tasks: list[TaskSpec]) -> str | None:
        """Why it names a task, type, group or metric the study does not have, or None. A registered paradigm the
        study does not run is no error (a `--set paradigms=...` run may leave it out): it is not evaluated."""
        where = f"expect: {self.name!r}"
        by_id = {t.id: t for t in tasks}
        sel = self.tasks if isinstance(self.tasks, TaskSelection) else None
        if sel is not None and sel.type is not None and sel.type not in task_type_names():
            known = task_type_names()
            return (
                f"{where} selects tasks of type {sel.type!r}{suggest(sel.type, known)}; task types: {', '.join(known)}"
            )
        # A type or group the study has no task of (a narrowed copy of a spec) selects nothing: not evaluated.
        ids = self.task_ids(tasks)
        unknown = [t for t in ids if t not in by_id]
        if unknown:
            hint = suggest(unknown[0], list(by_id))
            return f"{where} names unknown task {unknown[0]!r}{hint}; tasks: {', '.join(by_id)}"
        if len(set(ids)) != len(ids):
            return f"{where} names a task twice: {sorted({t for t in ids if ids.count(t) > 1})}"
        for tid in ids if self.metric is not None else ():
            allowed = get_task_type(by_id[tid].type).metric_names
            if self.metric not in allowed:
                return (
                    f"{where} names metric {self.metric!r}{suggest(str(self.metric), list(allowed))}, which task "
                    f"{tid} ({by_id[tid].type}) does not report; its metrics: {', '.join(allowed)}"
                )
        return None


#: Smallest data fraction: the study's tasks have hundreds to thousands of images, so 1 % keeps a few to tens;
#: below it a fraction is a typo (1e-9) or leaves tasks one image, which no job can train and select on.
MIN_FRACTION = 0.01


def _sane_fraction(f: float) -> float:
    if f < MIN_FRACTION:
        raise ValueError(f"got {f:g}; a data fraction is from {MIN_FRACTION} to 1 (0.25 for a quarter)")
    return f


class Study(Strict):
    """A whole task-aggregation study."""

    name: Annotated[Name, NOT_IN_HASH] = Field(description="Study name; the run store is <output_root>/<name>.")
    output_root: Annotated[Path, NOT_IN_HASH] = Field(
        Path("runs"), description="Folder holding run stores (relative paths are from the current directory)."
    )
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], JOB_OWN] = Field(
        [0], min_length=1, description="Training seeds; every job is repeated per seed."
    )
    fractions: Annotated[list[Annotated[float, Field(gt=0, le=1), AfterValidator(_sane_fraction)]], JOB_OWN] = Field(
        [1.0],
        min_length=1,
        description=f"Shares of each task's training set (nested, seeded subsets), from {MIN_FRACTION}: below "
        "that a fraction leaves most tasks a handful of images.",
    )
    paradigms: Annotated[list[ParadigmName], JOB_OWN] = Field(
        ["TS", "CG", "AU"],
        min_length=1,
        description=f"Paradigms to run, registered in usagg/paradigms.py (built in: {', '.join(paradigm_names())}); "
        "an entry may carry the paradigm's settings as a one-key mapping, such as `{AG: {groups: 3}}`.",
        json_schema_extra=_paradigm_entries_schema,
    )
    paradigm_settings: Annotated[dict[str, dict[str, Any]], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Settings of paradigms that take some (AG: groups, search, beam_width), by paradigm; "
        "`paradigms: [{AG: {groups: 3}}]` fills it.",
    )
    data: Annotated[DataSpec, IN_HASH] = Field(
        description="Dataset: an FMC_UIA folder (`root`) or the synthetic benchmark."
    )
    tasks_from: Annotated[CatalogRef | None, NOT_IN_HASH] = Field(None, description="Take tasks from a catalog file.")
    tasks: Annotated[list[TaskSpec], JOB_OWN] = Field(
        default_factory=list, description="Tasks (added to, and overriding by id, those of `tasks_from`)."
    )
    groups: Annotated[dict[Name, list[str]] | None, NOT_IN_HASH] = Field(
        None, description="Clinical groups for CG: group -> task ids; default: each task's `group`."
    )
    singleton_groups: Annotated[Literal["run", "skip"], NOT_IN_HASH] = Field(
        "run",
        description="A CG group with one task: run it (same data as TS but MoE on, so Δ isolates MoE) or skip it. "
        "Run or not, the analysis leaves it out of CG's aggregates and tests unless analysis.cg_singletons is "
        "`include`.",
    )
    model: Annotated[ModelSpec, IN_HASH] = Field(
        default_factory=ModelSpec, description="M2DINO settings, the same for every paradigm."
    )
    training: Annotated[TrainingSpec, IN_HASH] = Field(
        default_factory=TrainingSpec, description="Optimisation settings, the same for every paradigm."
    )
    execution: Annotated[ExecutionSpec, NOT_IN_HASH] = Field(
        default_factory=ExecutionSpec, description="Where jobs run; never changes a result or a job id."
    )
    tracking: Annotated[TrackingSpec, NOT_IN_HASH] = Field(
        default_factory=TrackingSpec, description="Experiment trackers fed while jobs run; never changes a job id."
    )
    analysis: Annotated[AnalysisSpec, JobHash("measuring")] = Field(
        default_factory=AnalysisSpec,
        description="What the analysis emphasises; changes no job id but, in a job measuring affinity, `affinity`'s.",
    )
    expect: Annotated[list[Expectation], NOT_IN_HASH] = Field(
        default_factory=list,
        description="Results the study is meant to show, each met, not met or not evaluated in `usagg compare` "
        "and the report, e.g. {name: classification learns, metric_of: TS, tasks: {type: classification}, "
        "above: 0.65}; a name it reads that the study lacks is an error.",
    )
    sweep: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Spec fields to sweep, dotted key -> values, e.g. {training.lr_encoder: [1.0e-4, 5.0e-4], "
        "model.moe.experts: [4, 8]}: the study runs at every combination (crossed with paradigms, seeds and "
        "fractions), each point validated as if its values were written in the spec, its jobs the ids that spec "
        "has; only fields that enter a job id can be swept (`usagg run --sweep KEY=V1,V2` adds one). The analysis "
        "compares paradigms within each point (usagg/sweep.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _paradigm_entries(cls, data: Any) -> Any:
        """`paradigms: [TS, {AG: {groups: 3}}]`: the mapping's settings go to `paradigm_settings`."""
        if not isinstance(data, dict) or not isinstance(data.get("paradigms"), list):
            return data
        names, settings = [], dict(data.get("paradigm_settings") or {})
        for i, entry in enumerate(data["paradigms"]):
            if isinstance(entry, dict):
                if len(entry) != 1:
                    raise ValueError(
                        f"paradigms[{i}]: a paradigm with settings is a one-key mapping such as {{AG: {{groups: 3}}}}"
                    )
                ((name, opts),) = entry.items()
                settings[str(name)] = opts if opts is not None else {}
                names.append(name)
            else:
                names.append(entry)
        return {**data, "paradigms": names, "paradigm_settings": settings}

    @field_validator("paradigm_settings")
    @classmethod
    def _known_settings(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from usagg.paradigms import PARADIGMS

        out = {}
        for name, opts in v.items():
            check_paradigm(name)
            model = PARADIGMS[name].settings
            if model is None:
                raise ValueError(f"paradigm {name} takes no settings, got {opts!r}")
            if not isinstance(opts, dict):
                raise ValueError(f"settings of paradigm {name} are a mapping such as {{groups: 3}}, got {opts!r}")
            out[name] = model.model_validate(opts).model_dump(exclude_defaults=True)
        return out

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return check_block(v, cls)

    @field_validator("output_root")
    @classmethod
    def _printable_output_root(cls, v: Path) -> Path:
        """The run store's folder reaches file names and Slurm's batch script (#SBATCH --output): one printable line."""
        from usagg.safepath import control_characters

        bad = control_characters(str(v))
        if bad:
            raise ValueError(
                f"{str(v)[:80]!r} contains control characters ({', '.join(bad)}); the run store's folder becomes "
                "file names and lines of the Slurm batch script, so it must be printable text on one line"
            )
        return v

    @field_validator("output_root")
    @classmethod
    def _output_root_is_no_file(cls, v: Path) -> Path:
        """A file where the run stores' folder (or one of its parents) should be is refused now, not when the run
        first writes into it, after the data check."""
        import os
        import stat

        for path in (v, *v.parents):
            try:
                mode = os.stat(path).st_mode
            except OSError:  # not there yet (created by the run), or not readable: the run says
                continue
            if not stat.S_ISDIR(mode):
                what = "a file" if stat.S_ISREG(mode) else "not a folder"
                where = f"{path} is {what}" if path == v else f"{path}, a parent of {v}, is {what}"
                raise ValueError(
                    f"{where}; output_root is the folder holding the run stores (each <output_root>/<name>): give "
                    "a folder, or a path not there yet, which the run creates"
                )
            break
        return v

    @model_validator(mode="after")
    def _slurm_output_root(self) -> Study:
        """Under Slurm the run store's folder reaches `#SBATCH --output/--error`, where Slurm and submitit read `%`
        as a pattern (`%j` the job id, `%a` the array index, ...) and `\\` as turning patterns off: refused, since
        no escape is read the same way by both (submitit replaces `%j` in `%%j` too)."""
        found = [c for c in ("%", "\\") if c in str(self.output_root)]
        if self.execution.executor == "slurm" and found:
            raise ValueError(
                f"output_root {str(self.output_root)!r} contains {' and '.join(map(repr, found))}, which Slurm and "
                "submitit read in log paths as a pattern (%j the job id, %a the array index, ...; \\ turns them off): "
                "the logs would land in another folder and the run would fail after submitting. With executor: "
                "slurm, choose an output_root without them."
            )
        return self

    @field_validator("seeds", "fractions", "paradigms")
    @classmethod
    def _unique(cls, v: list) -> list:
        dup = sorted({x for x in v if v.count(x) > 1}, key=str)
        if dup:
            raise ValueError(f"duplicate entries {dup}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        ids = [t.id for t in self.tasks]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"tasks: duplicate task ids {dup}; each id may appear once")
        if self.tasks_from is not None:  # checked once, on the resolved tasks: never a half-checked Study
            raise ValueError(
                "tasks_from is resolved while loading: read the spec with usagg.spec.load.load_study (or "
                "study_from_mapping), which merges the catalog's tasks into `tasks` before validating"
            )
        if not self.tasks:
            raise ValueError("tasks is empty: the study has no tasks; give `tasks` or `tasks_from`")
        known = set(ids)
        keys: dict[str, str] = {}
        for task_id in ids:  # module names cannot hold dots: a model keys heads by id with "." as "__"
            other = keys.setdefault(task_id.replace(".", "__"), task_id)
            if other != task_id:
                raise ValueError(
                    f"tasks: ids {other!r} and {task_id!r} collide once '.' is written '__' (as model parameter "
                    "names must be); rename one"
                )
        if self.data.synthetic is not None:
            unknown_sizes = [t for t in self.data.synthetic.sizes if t not in known]
            if unknown_sizes:
                raise ValueError(
                    f"data.synthetic.sizes names tasks the study does not have {unknown_sizes}; tasks: {', '.join(ids)}"
                )
        for where, names in (
            ("training.loss_weights", list(self.training.loss_weights)),
            ("analysis.representative_tasks", self.analysis.representative_tasks),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{where} names unknown tasks {unknown}; tasks: {', '.join(ids)}")
        unused = sorted(set(self.paradigm_settings) - set(self.paradigms))
        if unused:
            raise ValueError(f"paradigm_settings names {unused}, which `paradigms` does not run")
        if self.groups is not None:  # loading copies the mapping onto each task (load.py); checked, never rewritten
            for group, tids in self.group_members().items():  # raises on a bad grouping
                for tid in tids:
                    if self.task(tid).group != group:
                        raise ValueError(
                            f"task {tid!r} has group {self.task(tid).group!r} but groups.{group} lists it; "
                            "load the spec with usagg.spec.load.load_study, which takes each task's group from "
                            "`groups`, or make the two agree"
                        )
        why = self._settings_make_sense() or check_paradigms(self)  # each paradigm's own `check` (usagg/paradigms.py)
        names = [e.name for e in self.expect]
        why = why or next((p for e in self.expect if (p := e.problem(self.tasks))), None)
        if not why and len(set(names)) != len(names):
            why = f"expect: names must differ, {sorted({n for n in names if names.count(n) > 1})} repeat"
        if why:
            raise ValueError(why)
        return self

    def _settings_make_sense(self) -> str | None:
        """Settings each valid alone but meaningless together, as one message naming the fields and the fix."""
        training = self.training
        if training.warmup_epochs > training.epochs:
            return (
                f"training.warmup_epochs ({training.warmup_epochs:g}) exceeds training.epochs ({training.epochs}): "
                "the learning rate would never reach its set value; use a warm-up shorter than the run "
                "(e.g. 1, or 0 for none)"
            )
        if all(training.loss_weights.get(t.id, 1.0) == 0 for t in self.tasks):
            return (
                "training.loss_weights: every task's weight is 0, so no job would learn anything; give at least "
                "one task a positive weight (tasks not named weigh 1)"
            )
        for name, opts in self.paradigm_settings.items():
            groups = opts.get("groups")
            if isinstance(groups, int) and groups > len(self.tasks):
                return (
                    f"paradigms: {name}: groups {groups} exceeds the study's {len(self.tasks)} tasks (a group needs "
                    f"a task); use at most {len(self.tasks)}, or leave groups out for the number of clinical groups"
                )
        baseline = self.analysis.baseline  # TS, the default, may be absent: a study can run its other paradigms alone
        if baseline != AnalysisSpec.model_fields["baseline"].default and baseline not in self.paradigms:
            return (
                f"analysis.baseline {baseline!r} is not among the paradigms the study runs "
                f"({', '.join(self.paradigms)}): Δ is measured against the baseline's jobs; add {baseline} to "
                "`paradigms` or choose one of them"
            )
        for i, t in enumerate(self.tasks):
            why = scale_problem(self.analysis.scale, t.metric or get_task_type(t.type).primary_metric)
            if why:
                return f"analysis.scale: {self.analysis.scale} does not fit tasks[{i}] ({t.id}): {why}"
        return None

    def task(self, task_id: str) -> TaskSpec:
        """The task with this id (KeyError naming the known ids otherwise)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"no task {task_id!r}; tasks: {', '.join(t.id for t in self.tasks)}")

    def group_members(self) -> dict[str, list[str]]:
        """Clinical group -> task ids, every task in exactly one group (raises ValueError otherwise)."""
        ids = [t.id for t in self.tasks]
        if self.groups is None:
            missing = [f"tasks[{i}] ({t.id})" for i, t in enumerate(self.tasks) if not t.group]
            if missing:
                raise ValueError(
                    f"every task needs a clinical group (CG and CGD train one model per group; AG counts them "
                    f"unless `paradigm_settings: {{AG: {{groups: K}}}}` is set): set `group` on {', '.join(missing)}, "
                    "or give the study a `groups` mapping"
                )
            members: dict[str, list[str]] = {}
            for t in self.tasks:
                if t.group is not None:  # every task has one: `missing` is empty
                    members.setdefault(t.group, []).append(t.id)
            return members
        seen: dict[str, str] = {}
        for g, tids in self.groups.items():
            if not tids:
                raise ValueError(f"groups.{g} is empty; a group needs at least one task")
            for tid in tids:
                if tid not in ids:
                    close = difflib.get_close_matches(tid, ids, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"groups.{g} names unknown task {tid!r}{hint}; tasks: {', '.join(ids)}")
                if tid in seen:
                    raise ValueError(
                        f"task {tid!r} is in two groups, groups.{seen[tid]} and groups.{g}; "
                        "a task belongs to exactly one group"
                    )
                seen[tid] = g
        ungrouped = [i for i in ids if i not in seen]
        if ungrouped:
            raise ValueError(f"groups leaves tasks in no group: {ungrouped}; every task must be in exactly one")
        return {g: [i for i in ids if i in set(t)] for g, t in self.groups.items()}
