"""`model:`: the M2DINO architecture, its Mixture-of-Experts blocks and task heads."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from usagg.model.zoo import BACKBONES
from usagg.names import unknown_name
from usagg.spec.jobhash import IN_HASH, NOT_IN_HASH, TYPE_SETTING, JobHash
from usagg.spec.models.base import Strict


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


TRUNK_DESCRIPTION = (
    "Shared frozen trunk (usagg/model/trunk.py): the frozen blocks' outputs that the model reads are computed once "
    "per image, input size, frozen weights, taps, colour mode and device precision, kept in the cache folder and "
    "read by every job and epoch for samples that are not augmented (selection and test too); auto: on whenever "
    "blocks are frozen and no MoE block is among them; off: always recompute. A cache only: on the CPU the same "
    "bits as recomputing, so it is left out of the job hash."
)


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
