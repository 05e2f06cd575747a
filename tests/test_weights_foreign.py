"""A checkpoint usagg cannot read is named for what it is (Hugging Face transformers DINOv3, DINOv2, timm's DINOv3
without qkv bias) with the download that works; one of another size says which backbone it fits; shapes quoted are
the file's own; `usagg weights check` expands `~`. Real files, built here from timm models with keys renamed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import timm
import torch

from tests.cli_run import error_paragraph, run_cli
from tests.tiny_study import write_tiny_study
from usagg.errors import UsaggError
from usagg.model.backbones import create_vit
from usagg.model.weights import foreign_format, read_checkpoint
from usagg.model.weights_check import check_weights
from usagg.model.zoo import BACKBONES

TINY = {"num_classes": 0, "embed_dim": 192, "depth": 4, "num_heads": 3}  # dinov3_test's width and depth


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: every backbone is built without downloading."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def hf_dinov3_state() -> dict[str, torch.Tensor]:
    """dinov3_test's weights under Hugging Face transformers' DINOv3ViTModel names (embeddings.*, layer.N.*)."""
    sd = create_vit("dinov3_test").state_dict()
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": torch.zeros_like(sd["cls_token"]),
        "embeddings.register_tokens": sd["reg_token"],
        "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    for n in range(4):
        q, k, v = sd[f"blocks.{n}.attn.qkv.weight"].chunk(3)
        names = {"q_proj": q, "k_proj": k, "v_proj": v, "o_proj": sd[f"blocks.{n}.attn.proj.weight"]}
        out |= {f"layer.{n}.attention.{name}.weight": w.contiguous() for name, w in names.items()}
        out |= {
            f"layer.{n}.norm1.weight": sd[f"blocks.{n}.norm1.weight"],
            f"layer.{n}.layer_scale1.lambda1": sd[f"blocks.{n}.gamma_1"],
            f"layer.{n}.mlp.up_proj.weight": sd[f"blocks.{n}.mlp.fc1.weight"],
            f"layer.{n}.mlp.down_proj.weight": sd[f"blocks.{n}.mlp.fc2.weight"],
        }
    return out


@pytest.fixture
def hf_file(tmp_path: Path) -> Path:
    """An HF transformers DINOv3 `model.safetensors`, as the gated Hugging Face repo serves it."""
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(hf_dinov3_state(), str(path))
    return path


@pytest.fixture
def dinov2_file(tmp_path: Path) -> Path:
    """A DINOv2-layout ViT (14-px patches, learned pos_embed, ls1.gamma) of dinov3_test's width and depth."""
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(timm.create_model("vit_small_patch14_dinov2", pretrained=False, **TINY).state_dict(), path)
    return path


@pytest.fixture
def test_sized(dinov3_test_weights: Path) -> Path:
    """A good dinov3_test checkpoint under the official key names: of the wrong size for every other backbone."""
    return dinov3_test_weights


# --------------------------------------------------------------------------- Hugging Face transformers DINOv3


def test_an_hf_transformers_file_is_named_with_the_download_that_works(
    hf_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["weights", "check", str(hf_file)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert text.startswith(
        f"error: The weights file {hf_file} is a Hugging Face transformers DINOv3 checkpoint (keys embeddings.*, "
        "layer.N.attention.q_proj.weight), which usagg does not read: download DINOv3 weights of its size (width "
        "192, 4 blocks: dinov3_test) as Meta's official .pth"
    )
    assert "or as timm's model.safetensors (Hugging Face repo timm/vit_*_dinov3_qkvb.lvd1689m)." in text
    assert f"It loads into none of the {len(BACKBONES)} registered backbones (the closest, dinov3_test: " in text
    assert text.endswith("--verbose lists every backbone's keys).")
    assert "dinov3_large" not in text and len(text) < 900  # no per-backbone dump (it was 2-3 kB)
    code, out = run_cli(["weights", "check", str(hf_file), "--verbose"], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and all(f"{name}: " in text for name in BACKBONES)


def test_an_hf_transformers_file_in_a_study_is_named_too(
    hf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_tiny_study(
        tmp_path / "study.yaml", "hf", tmp_path / "data", model={"weights": str(hf_file)}, execution={"devices": "cpu"}
    )
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert "is a Hugging Face transformers DINOv3 checkpoint" in text
    assert "Against backbone dinov3_test: 64 missing keys (cls_token, reg_token, ... (62 more))" in text


def test_an_hf_file_of_a_real_size_names_its_backbones_and_timm_repos() -> None:
    """Width 384 and 12 blocks are ViT-S/16 and ViT-S+/16 alike: both are named, with both timm repos."""
    state = {
        "embeddings.cls_token": torch.zeros(1, 1, 384),
        **{f"layer.{n}.attention.q_proj.weight": torch.zeros(384, 384) for n in range(12)},
    }
    text = foreign_format(state, Path("model.safetensors"))
    assert "(width 384, 12 blocks: dinov3_small or dinov3_small_plus)" in text
    assert "Meta's official .pth (ViT-S/16 or ViT-S+/16)" in text
    assert "timm/vit_small_patch16_dinov3_qkvb.lvd1689m or timm/vit_small_plus_patch16_dinov3_qkvb.lvd1689m" in text


# --------------------------------------------------------------------------- DINOv2, timm without qkv bias


def test_a_dinov2_file_is_named_and_quoted_with_its_own_patch_shape(
    dinov2_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """timm's filter resamples a 14-px patch embedding to 16 px: the message quotes the file's (192, 3, 14, 14)."""
    code, out = run_cli(["weights", "check", str(dinov2_file)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert (
        f"The weights file {dinov2_file} is a DINOv2 checkpoint (14-px patches and a learned pos_embed of shape "
        "(1, 1370, 192); DINOv3 has 16-px patches and RoPE), which usagg does not read" in text
    )
    assert "patch_embed.proj.weight: file (192, 3, 14, 14), model (192, 3, 16, 16)" in text
    assert "file (192, 3, 16, 16)" not in text


def test_a_patch14_file_never_fits_by_resampling(dinov2_file: Path) -> None:
    """The strict load compares the file's shapes, so a resampled patch embedding is a misfit, not a fit."""
    with pytest.raises(UsaggError, match=r"patch_embed\.proj\.weight: file \(192, 3, 14, 14\)"):
        check_weights(dinov2_file, "dinov3_test")


def test_timms_dinov3_without_qkv_bias_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(timm.create_model("vit_small_patch16_dinov3", pretrained=False, **TINY).state_dict(), path)
    with pytest.raises(UsaggError) as err:
        check_weights(path, "dinov3_test")
    text = str(err.value)
    assert "is timm's DINOv3 without qkv bias" in text and "dinov3_qkvb" in text
    assert "Against backbone dinov3_test: 8 missing keys (blocks.0.attn.q_bias, blocks.0.attn.v_bias" in text


def test_a_dinov3_file_is_no_foreign_format(test_sized: Path) -> None:
    assert foreign_format(read_checkpoint(test_sized), test_sized) == ""
    assert check_weights(test_sized, "dinov3_test") == len(create_vit("dinov3_test").state_dict())


# --------------------------------------------------------------------------- another size: which backbone it fits


def test_a_file_of_another_size_says_which_backbone_it_fits(test_sized: Path) -> None:
    with pytest.raises(UsaggError) as err:
        check_weights(test_sized, "dinov3_small")
    text = str(err.value)
    assert text.startswith(f"The weights file {test_sized} does not fit backbone dinov3_small: 120 missing keys")
    assert text.endswith("; it fits dinov3_test: set model.backbone: dinov3_test.")


def test_validate_with_a_file_of_another_size_gives_the_backbone_to_set(
    test_sized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_tiny_study(
        tmp_path / "study.yaml",
        "size",
        tmp_path / "data",
        model={"weights": str(test_sized), "backbone": "dinov3_small"},
        execution={"devices": "cpu"},
    )
    code, out = run_cli(["validate", str(study)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and "does not fit backbone dinov3_small" in text
    assert text.endswith("it fits dinov3_test: set model.backbone: dinov3_test.")


# --------------------------------------------------------------------------- ~ in the path


def test_weights_check_expands_a_quoted_tilde(
    test_sized: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quoted '~/w.pth' reaches the command unexpanded; `model.weights: ~/w.pth` expands, and so does this."""
    monkeypatch.setenv("HOME", str(test_sized.parent))
    code, out = run_cli(["weights", "check", f"~/{test_sized.name}"], monkeypatch, capsys)
    assert code == 0, out
    assert out.splitlines()[0].startswith(f"ok: {test_sized} fits backbone dinov3_test")


@pytest.mark.parametrize("name", BACKBONES.names())
def test_the_probe_builds_each_backbone_as_create_vit_does(name: str) -> None:
    """The probe cannot call create_vit (backbones.py imports usagg/model/weights.py): the same keys and shapes."""
    from usagg.model.weights import _meta_vit

    with torch.device("meta"):
        built = {k: tuple(v.shape) for k, v in create_vit(name).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in _meta_vit(name).state_dict().items()} == built
