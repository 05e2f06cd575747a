"""DINOv3 encoder: equality with timm, official-checkpoint loading, clear errors, freezing, no network."""

from __future__ import annotations

import logging
import socket

import pytest
import torch

from usagg.errors import UsaggError
from usagg.model.backbones import DinoEncoder, build_vit, create_vit
from usagg.model.m2dino import build_model
from usagg.model.weights import to_official_state_dict
from usagg.spec.models import ModelSpec, TaskSpec

TASKS = [TaskSpec(id="cls", type="classification", num_classes=3)]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: weights are local files only."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("hw", [(64, 64), (128, 128), (64, 128)])
def test_encoder_matches_timm_bit_for_bit(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    vit = create_vit("dinov3_test").eval()
    enc = DinoEncoder(vit, [0, 1, 2, 3]).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = enc(x)
        ref = vit.forward_intermediates(x, indices=[0, 1, 2, 3], norm=True, intermediates_only=True)
        ref_nlc = vit.forward_intermediates(
            x, indices=[0, 1, 2, 3], norm=True, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
        )
        final = vit.forward_features(x)
    assert len(out.features.maps) == 4
    for got, want in zip(out.features.maps, ref, strict=True):
        assert got.shape == (2, 192, hw[0] // 16, hw[1] // 16)
        assert torch.equal(got, want)
    for got, (_, prefix) in zip(out.features.prefix, ref_nlc, strict=True):
        assert got.shape == (2, 5, 192)
        assert torch.equal(got, prefix)
    assert torch.equal(out.features.prefix[-1][:, 0], final[:, 0])
    assert out.aux_losses == [] and out.expert_usage is None


def _official_file(tmp_path, seed: int = 1):
    torch.manual_seed(seed)
    vit = create_vit("dinov3_test").eval()
    state = to_official_state_dict(vit)
    # the official k bias may hold anything: its bias_mask zeroes it, so the loader must drop it
    for k, v in state.items():
        if k.endswith("qkv.bias"):
            d = v.numel() // 3
            v[d : 2 * d] = torch.randn(d)
    path = tmp_path / "dinov3_official.pth"
    torch.save(state, path)
    return vit, state, path


def test_official_keys_load_exactly(tmp_path) -> None:
    vit, state, path = _official_file(tmp_path)
    keys = set(state)
    for k in ("storage_tokens", "mask_token", "rope_embed.periods", "blocks.0.ls1.gamma", "blocks.3.ls2.gamma"):
        assert k in keys
    assert state["blocks.0.attn.qkv.bias"].shape == (576,)
    assert state["blocks.0.attn.qkv.bias_mask"].tolist() == [1.0] * 192 + [0.0] * 192 + [1.0] * 192
    assert not any(("reg_token" in k) or ("gamma_1" in k) or ("q_bias" in k) for k in keys)

    torch.manual_seed(99)  # a different random init, overwritten by the file
    loaded, info = build_vit("dinov3_test", path)
    assert info == {"weights": str(path), "random_init": False}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval().forward_features(x), vit.forward_features(x))
    for k, v in vit.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_m2dino_with_weights_reports_them(tmp_path) -> None:
    _, _, path = _official_file(tmp_path)
    model = build_model(ModelSpec(backbone="dinov3_test", weights=path), TASKS, moe=False)
    assert model.weights_info == {"weights": str(path), "random_init": False}


def test_wrong_file_names_missing_unexpected_and_shapes(tmp_path) -> None:
    _, state, _ = _official_file(tmp_path)
    bad = {k: v for k, v in state.items() if not k.startswith("blocks.3.")}
    bad["decoder.weight"] = torch.zeros(3)
    bad["norm.weight"] = torch.zeros(384)
    path = tmp_path / "wrong.pth"
    torch.save(bad, path)
    with pytest.raises(UsaggError) as err:
        build_vit("dinov3_test", path)
    msg = str(err.value)
    assert str(path) in msg and "dinov3_test" in msg
    assert "15 missing keys (blocks.3." in msg and "(11 more)" in msg
    assert "1 unexpected key (decoder.weight)" in msg
    assert "1 key of the wrong shape (norm.weight: file (384,), model (192,))" in msg


def test_unreadable_or_absent_file(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(UsaggError, match="Could not read the weights file"):
        build_vit("dinov3_test", junk)
    with pytest.raises(UsaggError, match="does not exist"):
        build_vit("dinov3_test", tmp_path / "absent.pth")
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(UsaggError, match="not a state dict"):
        build_vit("dinov3_test", listed)


def test_random_init_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = build_model(ModelSpec(backbone="dinov3_test"), TASKS, moe=False)
    assert model.weights_info == {"weights": None, "random_init": True}
    assert any("NO PRETRAINED WEIGHTS" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_freezing_default_half_and_counts() -> None:
    model = build_model(ModelSpec(backbone="dinov3_test"), TASKS, moe=False)
    vit = model.encoder.vit
    assert not any(p.requires_grad for p in vit.patch_embed.parameters())
    assert not vit.cls_token.requires_grad and not vit.reg_token.requires_grad
    assert not any(p.requires_grad for b in vit.blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in vit.blocks[2:] for p in b.parameters())
    assert all(p.requires_grad for p in vit.norm.parameters())
    counts = model.trainable_counts()
    block = sum(p.numel() for p in vit.blocks[0].parameters())
    embed = sum(p.numel() for p in vit.patch_embed.parameters()) + 5 * 192  # cls + 4 registers
    assert counts["encoder_frozen"] == embed + 2 * block
    assert counts["encoder_trainable"] == 2 * block + 2 * 192
    assert counts["moe"] == 0
    assert counts["heads"] == sum(p.numel() for p in model.heads.parameters())
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_frozen_blocks_setting() -> None:
    full = build_model(ModelSpec(backbone="dinov3_test", frozen_blocks=0), TASKS, moe=False)
    assert full.trainable_counts()["encoder_frozen"] == 0
    none = build_model(ModelSpec(backbone="dinov3_test", frozen_blocks=4), TASKS, moe=False)
    assert none.trainable_counts()["encoder_trainable"] == 0
    assert none.param_groups()["encoder"] == []


def test_blocks_after_last_feature_block_are_dropped() -> None:
    model = build_model(ModelSpec(backbone="dinov3_test", heads={"feature_blocks": [0, 2]}), TASKS, moe=False)
    assert model.encoder.depth == 3
    out = model(torch.randn(1, 3, 64, 64), "cls")
    assert out.outputs.shape == (1, 3)


def test_check_weights_accepts_what_loads_and_refuses_what_does_not(tmp_path) -> None:
    """`check_weights` (validate, run) agrees with the loader, without building real tensors."""
    from usagg.model.weights_check import check_weights

    vit, state, path = _official_file(tmp_path)
    assert check_weights(path, "dinov3_test") == len(vit.state_dict())
    bad = {k: v for k, v in state.items() if k != "norm.weight"}
    torch.save(bad, tmp_path / "bad.pth")
    for check in (
        lambda: check_weights(tmp_path / "bad.pth", "dinov3_test"),
        lambda: build_vit("dinov3_test", tmp_path / "bad.pth"),
    ):
        with pytest.raises(UsaggError, match=r"does not fit backbone dinov3_test: 1 missing key \(norm.weight\)"):
            check()
