"""The DINOv3 encoder: one construction path over timm (zoo entries as configuration), multi-depth features.

`DinoEncoder` runs timm's Eva pieces itself (patch embed, `_pos_embed` giving
the RoPE table, the blocks with `rope=` exactly as `Eva.forward_features`
passes it, the final norm) so that MoE blocks can take the task embedding and
report their losses. Without MoE blocks its output equals timm's bit for bit.
Feature maps are the final-normed tokens of the chosen blocks (DINOv3's dense
recipe), as NCHW at stride 16 plus the prefix tokens (cls + 4 registers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.eva import Eva
from torch import nn

from usagg.model.moe import MoEBlock, expert_usage
from usagg.model.weights import load_dinov3_weights
from usagg.model.zoo import BACKBONES

log = logging.getLogger(__name__)


def create_vit(backbone: str) -> Eva:
    """A randomly initialised timm DINOv3 ViT for a registry name (never downloads)."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    entry = BACKBONES[backbone]
    kwargs = {"num_classes": 0, "dynamic_img_size": True, **entry.kwargs}
    return timm.create_model(entry.timm_name, pretrained=False, **kwargs)


def build_vit(backbone: str, weights: Path | None) -> tuple[Eva, dict]:
    """The ViT with local weights loaded strictly, or random init (warned loudly); returns (vit, weights_info)."""
    vit = create_vit(backbone)
    if weights is None:
        log.warning(
            "NO PRETRAINED WEIGHTS: the %s encoder is randomly initialised (model.weights is empty). "
            "Results will be far below those of a pretrained DINOv3; give a local official checkpoint to fix this.",
            backbone,
        )
        return vit, {"weights": None, "random_init": True}
    load_dinov3_weights(vit, Path(weights), backbone)
    log.info("loaded %s weights from %s", backbone, weights)
    return vit, {"weights": str(weights), "random_init": False}


@dataclass
class Features:
    """What the heads read: per feature block an NCHW map and its prefix tokens; the input's (H, W)."""

    maps: list[torch.Tensor]
    prefix: list[torch.Tensor]
    image_size: tuple[int, int]


@dataclass
class EncoderOutput:
    """Features plus per-MoE-block balance losses and expert counts (empty lists without MoE)."""

    features: Features
    aux_losses: list[torch.Tensor]
    expert_counts: list[torch.Tensor]

    @property
    def expert_usage(self) -> torch.Tensor | None:
        return expert_usage(self.expert_counts)


class DinoEncoder(nn.Module):
    """A timm DINOv3 ViT run block by block, with features taken after `feature_blocks`."""

    def __init__(self, vit: Eva, feature_blocks: list[int]) -> None:
        super().__init__()
        if getattr(vit, "rope_mixed", False):
            raise ValueError("mixed-mode RoPE (per-depth tables) is not supported")
        if not feature_blocks:
            raise ValueError("at least one feature block is needed")
        last = max(feature_blocks)
        if last >= len(vit.blocks):
            raise ValueError(f"feature block {last} out of range: the encoder has {len(vit.blocks)} blocks")
        if last + 1 < len(vit.blocks):  # blocks past the last feature block could never get gradients
            vit.blocks = vit.blocks[: last + 1]
        self.vit = vit
        self.feature_blocks = sorted(set(feature_blocks))
        self.embed_dim: int = vit.embed_dim
        self.num_prefix_tokens: int = vit.num_prefix_tokens

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    def freeze(self, frozen_blocks: int) -> None:
        """Freeze patch embedding, prefix tokens and the first `frozen_blocks` blocks (none when 0).

        MoE experts and routers stay trainable even inside a frozen block; the
        final norm is frozen only when every block is.
        """
        vit = self.vit
        if frozen_blocks <= 0:
            return
        for p in vit.patch_embed.parameters():
            p.requires_grad_(False)
        for name in ("cls_token", "reg_token", "pos_embed"):
            p = getattr(vit, name, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        for blk in vit.blocks[:frozen_blocks]:
            for p in blk.parameters():
                p.requires_grad_(False)
            if isinstance(blk, MoEBlock):
                for p in blk.mlp.parameters():
                    p.requires_grad_(True)
        if frozen_blocks >= self.depth:
            for p in vit.norm.parameters():
                p.requires_grad_(False)

    def forward(self, images: torch.Tensor, task_emb: torch.Tensor | None = None) -> EncoderOutput:
        """images [B, 3, H, W] (sides multiples of 16); task_emb [B, T], needed when MoE blocks exist."""
        vit = self.vit
        b, _, height, width = images.shape
        gh, gw = vit.patch_embed.dynamic_feat_size((height, width))
        x = vit.patch_embed(images)
        x, rope = vit._pos_embed(x)
        x = vit.norm_pre(x)
        maps: list[torch.Tensor] = []
        prefix: list[torch.Tensor] = []
        aux: list[torch.Tensor] = []
        counts: list[torch.Tensor] = []
        npt = self.num_prefix_tokens
        for i, blk in enumerate(vit.blocks):
            if isinstance(blk, MoEBlock):
                if task_emb is None:
                    raise ValueError("this encoder has MoE blocks: pass the task embedding")
                x, a, c = blk(x, rope, task_emb)
                aux.append(a)
                counts.append(c)
            else:
                x = blk(x, rope=rope)
            if i in self.feature_blocks:
                y = vit.norm(x)
                prefix.append(y[:, :npt])
                maps.append(y[:, npt:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous())
        return EncoderOutput(Features(maps, prefix, (height, width)), aux, counts)


__all__ = ["DinoEncoder", "EncoderOutput", "Features", "build_vit", "create_vit"]
