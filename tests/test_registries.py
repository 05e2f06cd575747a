"""Registries other than task types and paradigms: a backbone added by one call is a valid `model.backbone`."""

from __future__ import annotations

import pytest
import torch

from usagg.errors import UsaggError
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


def test_usagg_registry_lists_every_registry_and_refuses_an_unknown_kind() -> None:
    import json

    from typer.testing import CliRunner

    from usagg.cli.app import app

    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert [t["type"] for t in data["task-types"]] == ["segmentation", "classification", "detection", "regression"]
    assert [p["paradigm"] for p in data["paradigms"]][:3] == ["TS", "CG", "AU"]
    assert {"local", "slurm"} <= {e["executor"] for e in data["executors"]}
    assert {b["backbone"]: b["depth"] for b in data["backbones"]}["dinov3_large"] == "24"
    bad = runner.invoke(app, ["registry", "heads"])  # main() turns it into one line and exit 2
    assert isinstance(bad.exception, UsaggError) and "choose one of task-types, paradigms" in str(bad.exception)
