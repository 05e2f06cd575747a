"""Registries other than task types and paradigms: a backbone added by one call is a valid `model.backbone`."""

from __future__ import annotations

import pytest
import torch

from usagg.model.m2dino import build_model
from usagg.model.zoo import BACKBONES, BackboneEntry, register_backbone
from usagg.spec.models import ModelSpec, TaskSpec


def test_a_registered_backbone_is_accepted_and_built() -> None:
    entry = BackboneEntry("vit_small_patch16_dinov3_qkvb", 2, 96, {"embed_dim": 96, "num_heads": 2, "depth": 2})
    register_backbone("dinov3_micro", entry)
    try:
        spec = ModelSpec(backbone="dinov3_micro", image_size=32, frozen_blocks=1)
        assert spec.depth == 2 and spec.resolved_moe_blocks() == [1]
        model = build_model(spec, [TaskSpec(id="c", type="classification", num_classes=3)], moe=True)
        out = model(torch.randn(2, 3, 32, 32), "c", torch.tensor([0, 2]))
        assert out.outputs.shape == (2, 3) and torch.isfinite(out.loss)
        assert model.encoder.embed_dim == 96
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("dinov3_micro", BackboneEntry("vit_small_patch16_dinov3_qkvb", 3, 96))
    finally:
        BACKBONES.pop("dinov3_micro")
    with pytest.raises(ValueError, match="unknown backbone 'dinov3_micro'"):
        ModelSpec(backbone="dinov3_micro")
