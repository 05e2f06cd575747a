"""The DINOv3 encoder: one construction path over timm (zoo entries as configuration), multi-depth features.

`DinoEncoder` runs timm's Eva pieces itself (patch embed, `_pos_embed` giving
the RoPE table, the blocks with `rope=` exactly as `Eva.forward_features`
passes it, the final norm) so that MoE blocks can take the task embedding and
report their losses. Without MoE blocks its output equals timm's bit for bit.
Feature maps are the final-normed tokens of the chosen blocks (DINOv3's dense
recipe), as NCHW at stride 16 plus the prefix tokens (cls + 4 registers).

The frozen trunk (usagg/model/trunk.py): the outputs of the frozen blocks that
the model reads (`TrunkLayout`) can be given instead of pixels (`EncoderInput`);
the encoder then runs from the first trainable block. Frozen dense blocks always
run in eval behaviour, so stored and recomputed outputs are the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import timm
import torch
from timm.models.eva import Eva
from torch import nn

from usagg.errors import UsaggError
from usagg.model.moe import MoEBlock, expert_usage
from usagg.model.weights import load_dinov3_weights
from usagg.model.zoo import BACKBONES

log = logging.getLogger(__name__)

#: What a backbone entry must name, said with every refusal of one.
SUPPORTED = (
    "usagg runs timm Eva models of the DINOv3 family (such as vit_small_patch16_dinov3_qkvb) without mixed-mode "
    "RoPE, registered with the depth and embed_dim timm builds (docs/internals.md, 'How to add a backbone')"
)


def create_vit(backbone: str) -> Eva:
    """A randomly initialised timm DINOv3 ViT for a registry name (never downloads); an unknown name is the
    registry's own error (plug-ins loaded first, the closest registered name suggested).

    An entry is checked here, where timm first builds it (on the meta device when `usagg validate` or `usagg run`
    checks `model.weights`, else in the job before training): one UsaggError naming the entry, what timm built
    and what usagg runs, instead of an error from deep inside the encoder ("too many values to unpack").
    """
    entry = BACKBONES.lookup(backbone)
    where = f"backbone {backbone!r} (timm model {entry.timm_name!r})"
    if not timm.is_model(entry.timm_name):
        raise UsaggError(f"{where}: timm {timm.__version__} has no model of that name; {SUPPORTED}")
    kwargs = {"num_classes": 0, "dynamic_img_size": True, **entry.kwargs}
    vit = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
    if not isinstance(vit, Eva):
        raise UsaggError(f"{where} is a timm {type(vit).__name__}, not an Eva; {SUPPORTED}")
    if getattr(vit, "rope_mixed", False):
        raise UsaggError(f"{where} uses mixed-mode RoPE (per-depth tables), which usagg does not run; {SUPPORTED}")
    built = {"depth": len(vit.blocks), "embed_dim": vit.embed_dim}
    wrong = [f"{key} {getattr(entry, key)} but timm built {n}" for key, n in built.items() if n != getattr(entry, key)]
    if wrong:
        raise UsaggError(f"{where} is registered with {' and '.join(wrong)}; {SUPPORTED}")
    return vit


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


@dataclass(frozen=True)
class TrunkLayout:
    """What the frozen trunk holds: the output tokens of `stored` blocks; the encoder goes on from `start`.

    `stored` is the last frozen block (start - 1) and every feature block below it, ascending.
    """

    start: int
    stored: tuple[int, ...]


_V = TypeVar("_V")


def _given(value: _V | None, what: str) -> _V:
    """An EncoderInput part its other parts imply (positions with their rows, tokens when there are no images)."""
    if value is None:
        raise ValueError(f"EncoderInput without {what}: images come with image_pos, tokens with token_pos")
    return value


@dataclass
class EncoderInput:
    """One batch given partly as pixels and partly as trunk tokens; positions say where each row goes.

    `images` [Bp, 3, H, W] at `image_pos` are run through the frozen blocks; `tokens` (one [Bt, T, C] per
    `TrunkLayout.stored` block) at `token_pos` are read from the trunk. Rows keep their batch order.
    """

    size: int
    image_size: tuple[int, int]
    images: torch.Tensor | None = None
    image_pos: torch.Tensor | None = None
    tokens: list[torch.Tensor] | None = None
    token_pos: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        ref = self.images if self.images is not None else _given(self.tokens, "images or tokens")[0]
        return ref.device

    @property
    def shape(self) -> torch.Size:
        """The shape of the image batch this input stands for, [B, 3, H, W] (callers read the batch size)."""
        return torch.Size((self.size, 3, *self.image_size))


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


@torch.compiler.disable
def _build_rope_table(tables: dict, key: tuple[int, int, str], rope: nn.Module) -> torch.Tensor:
    """Build and keep one RoPE table, always eagerly (a graph break when the encoder is compiled).

    Built inside a compiled encoder, the table would be a graph output: under CUDA graphs
    (`execution.accel: graphs`) the next replay overwrites it while `rope_tables` still holds
    it. Built here it is an ordinary tensor, read by every later (recompiled) graph as an input.
    A normal tensor even when first built under inference_mode (evaluation).
    """
    gh, gw, device = key
    with torch.inference_mode(False), torch.no_grad():
        # torch's stubs read a Module's attribute as Tensor | Module; timm's RoPE modules all have get_embed
        table = tables[key] = rope.get_embed(shape=(gh, gw)).to(device)  # type: ignore[operator]
    return table


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
        self.frozen_blocks = 0
        self.rope_tables: dict[tuple[int, int, str], torch.Tensor] = {}

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
        self.frozen_blocks = min(frozen_blocks, self.depth)
        for p in vit.patch_embed.parameters():
            p.requires_grad_(False)
        for name in ("cls_token", "reg_token", "pos_embed"):
            token = getattr(vit, name, None)
            if isinstance(token, nn.Parameter):
                token.requires_grad_(False)
        for blk in vit.blocks[:frozen_blocks]:
            for p in blk.parameters():
                p.requires_grad_(False)
            if isinstance(blk, MoEBlock):
                for p in blk.mlp.parameters():
                    p.requires_grad_(True)
        if frozen_blocks >= self.depth:
            for p in vit.norm.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> DinoEncoder:
        """Train mode, except the frozen dense blocks and what feeds them: they run in eval behaviour (no drop)."""
        super().train(mode)
        if self.frozen_blocks > 0:
            vit = self.vit
            for m in (vit.patch_embed, vit.pos_drop, vit.norm_pre, *vit.blocks[: self.frozen_blocks]):
                if not isinstance(m, MoEBlock):
                    m.eval()
        return self

    def trunk_layout(self) -> TrunkLayout | None:
        """The trunk of this encoder, or None: nothing frozen, or a MoE block inside the frozen range."""
        start = self.frozen_blocks
        if start <= 0 or any(isinstance(b, MoEBlock) for b in self.vit.blocks[:start]):
            return None
        return TrunkLayout(start, (*(b for b in self.feature_blocks if b < start - 1), start - 1))

    def _rope(self, gh: int, gw: int, device: torch.device) -> torch.Tensor | None:
        """The RoPE table of a (gh, gw) token grid, built once per grid and device.

        timm builds the table on the CPU and copies it to the device in every forward, a host
        sync per step on CUDA; without RoPE augmentation the table never changes, so it is kept
        (`rope_tables`, not a buffer: it stays out of state dicts). With augmentation active in
        training it is drawn anew, as timm does.
        """
        rope = self.vit.rope
        if rope is None:
            return None
        if rope.training and getattr(rope, "aug_active", False):
            return rope.get_embed(shape=(gh, gw)).to(device)  # type: ignore[operator]  # torch stubs, as above
        key = (gh, gw, str(device))
        table = self.rope_tables.get(key)
        return _build_rope_table(self.rope_tables, key, rope) if table is None else table

    def prepare_rope(self, image_size: tuple[int, int], device: torch.device) -> None:
        """Build the RoPE table of this image size's grid now, eagerly, where it is missing: called before a
        compiled encoder's forward, whose first trace would otherwise break its graph at `_build_rope_table` and
        be compiled again once the table exists (2 graphs for 1 on the CPU, tests/test_cuda_path.py)."""
        gh, gw = self.vit.patch_embed.dynamic_feat_size(image_size)
        self._rope(gh, gw, device)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch tokens with the class and register tokens in front (timm's `Eva._pos_embed` for DINOv3, which
        has no absolute position embedding), and the RoPE table from `_rope`."""
        vit = self.vit
        if vit.pos_embed is not None or getattr(vit, "patch_drop", None) is not None:
            x, rope = vit._pos_embed(vit.patch_embed(images))  # not a DINOv3 layout: timm's own path
            return vit.norm_pre(x), rope
        x = vit.patch_embed(images)
        b, gh, gw, c = x.shape
        x = x.view(b, -1, c)
        lead = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        if lead:
            x = torch.cat([*lead, x], dim=1)
        return vit.norm_pre(vit.pos_drop(x)), self._rope(gh, gw, x.device)

    def trunk_tokens(self, images: torch.Tensor, layout: TrunkLayout) -> list[torch.Tensor]:
        """The trunk's tokens for these images: the output [B, T, C] of each `layout.stored` block."""
        x, rope = self._embed(images)
        out = []
        for i, blk in enumerate(self.vit.blocks[: layout.start]):
            x = blk(x, rope=rope)
            if i in layout.stored:
                out.append(x)
        return out

    def as_tokens(self, inp: EncoderInput) -> EncoderInput:
        """The same batch given wholly as trunk tokens, the frozen blocks run for its pixel rows: the input of a
        recorded training step (usagg/engine/step.py), whose shape must not depend on which rows were augmented."""
        layout = self.trunk_layout()
        if layout is None:
            raise ValueError("trunk tokens asked of an encoder without a trunk (nothing frozen, or MoE in it)")
        with torch.no_grad():
            tokens = self._assemble(inp, layout)
        positions = torch.arange(inp.size, device=tokens[0].device)
        return EncoderInput(inp.size, inp.image_size, tokens=tokens, token_pos=positions)

    def _assemble(self, inp: EncoderInput, layout: TrunkLayout) -> list[torch.Tensor]:
        """Trunk tokens of the whole batch in batch order: computed rows and stored rows put in place."""
        computed = None if inp.images is None else self.trunk_tokens(inp.images, layout)
        full = []
        for j in range(len(layout.stored)):
            ref = computed[j] if computed is not None else _given(inp.tokens, "images or tokens")[j]
            dtype = torch.float32 if computed is None else ref.dtype
            t = torch.empty((inp.size, *ref.shape[1:]), dtype=dtype, device=ref.device)
            if computed is not None:
                t.index_copy_(0, _given(inp.image_pos, "image_pos"), computed[j])
            if inp.tokens is not None:
                t.index_copy_(0, _given(inp.token_pos, "token_pos"), inp.tokens[j].to(dtype))
            full.append(t)
        return full

    def forward(self, images: torch.Tensor | EncoderInput, task_emb: torch.Tensor | None = None) -> EncoderOutput:
        """images [B, 3, H, W] (sides multiples of 16) or an `EncoderInput`; task_emb [B, T] for MoE blocks."""
        vit = self.vit
        maps: list[torch.Tensor] = []
        prefix: list[torch.Tensor] = []
        aux: list[torch.Tensor] = []
        counts: list[torch.Tensor] = []
        npt = self.num_prefix_tokens
        if isinstance(images, EncoderInput):
            layout = self.trunk_layout()
            if layout is None:
                raise ValueError("trunk tokens given to an encoder without a trunk (nothing frozen, or MoE in it)")
            b, (height, width) = images.size, images.image_size
            gh, gw = vit.patch_embed.dynamic_feat_size((height, width))
            rope = self._rope(gh, gw, images.device)
            stored = self._assemble(images, layout)
            for blk_i, t in zip(layout.stored, stored, strict=True):
                if blk_i in self.feature_blocks:
                    y = vit.norm(t)
                    prefix.append(y[:, :npt])
                    maps.append(y[:, npt:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous())
            x, first = stored[-1], layout.start
        else:
            b, _, height, width = images.shape
            gh, gw = vit.patch_embed.dynamic_feat_size((height, width))
            x, rope = self._embed(images)
            first = 0
        for i in range(first, len(vit.blocks)):
            blk = vit.blocks[i]
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


__all__ = ["DinoEncoder", "EncoderInput", "EncoderOutput", "Features", "TrunkLayout", "build_vit", "create_vit"]
