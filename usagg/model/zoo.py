"""The backbone registry: entries as plain data, so the spec can validate names without torch.

One construction path (timm.create_model) with variants as configuration, the
timm way; `usagg.model.backbones` builds them. `BACKBONES` is a
`usagg.registry.Registry`, so plug-ins add entries as they add task types. A new backbone of the DINOv3
family is one `register_backbone` call (docs/internals.md, "How to add a backbone").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from usagg.registry import Registry


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one backbone with timm."""

    timm_name: str
    depth: int
    embed_dim: int
    kwargs: dict = field(default_factory=dict)
    note: str = ""


#: name -> entry, in registration order; plug-ins through the `usagg.backbones` entry points or USAGG_PLUGINS.
BACKBONES: Registry[BackboneEntry] = Registry(
    "backbone",
    group="usagg.backbones",
    hint=" (plug-ins register more: see docs/internals.md, 'How to add a backbone')",
)


def register_backbone(name: str, entry: BackboneEntry, *, replace: bool = False) -> BackboneEntry:
    """Make `name` usable as `model.backbone` (a timm Eva/DINOv3 model name plus its depth and width)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a backbone name is letters, digits and _, such as 'dinov3_huge', got {name!r}")
    if entry.depth < 1 or entry.embed_dim < 1:
        raise ValueError(f"backbone {name!r}: depth and embed_dim must be positive, got {entry}")
    return BACKBONES.register(name, entry, replace=replace)


register_backbone(
    "dinov3_test",
    BackboneEntry(
        "vit_small_patch16_dinov3_qkvb",
        4,
        192,
        {"embed_dim": 192, "num_heads": 3, "depth": 4},
        "tiny 4-block ViT of the DINOv3 family for tests and the CPU demo (random init)",
    ),
)
register_backbone("dinov3_small", BackboneEntry("vit_small_patch16_dinov3_qkvb", 12, 384, {}, "ViT-S/16, 21.6 M"))
register_backbone("dinov3_small_plus", BackboneEntry("vit_small_plus_patch16_dinov3_qkvb", 12, 384, {}, "ViT-S+/16"))
register_backbone("dinov3_base", BackboneEntry("vit_base_patch16_dinov3_qkvb", 12, 768, {}, "ViT-B/16, 86 M"))
register_backbone("dinov3_large", BackboneEntry("vit_large_patch16_dinov3_qkvb", 24, 1024, {}, "ViT-L/16, 300 M"))
