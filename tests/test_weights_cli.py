"""`usagg weights check FILE [--backbone NAME]`: the backbone a checkpoint loads into, its sha256, refusals."""

from __future__ import annotations

import hashlib
import socket
import zipfile
from pathlib import Path

import pytest
import timm
import torch
import yaml

from tests.cli_run import error_paragraph, run_cli
from usagg.cli.weights import study_snippet
from usagg.errors import UsaggError
from usagg.model.backbones import create_vit
from usagg.model.weights import to_official_state_dict
from usagg.model.zoo import BACKBONES

TENSORS = len(create_vit("dinov3_test").state_dict())


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: every backbone is built without downloading."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def good(dinov3_test_weights: Path) -> Path:
    """A randomly initialised dinov3_test checkpoint under the official DINOv3 key names (tests/conftest.py)."""
    return dinov3_test_weights


def test_the_backbone_it_fits_is_found_among_all_with_the_sha256(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(BACKBONES) >= 5  # every registered one is tried: only dinov3_test fits
    code, out = run_cli(["weights", "check", str(good)], monkeypatch, capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"ok: {good} fits backbone dinov3_test ({TENSORS} tensors, strict)"
    assert lines[1] == f"sha256: {hashlib.sha256(good.read_bytes()).hexdigest()}"
    assert lines[2] == f"in a study: model: {{backbone: dinov3_test, weights: {good.resolve()}}}"
    assert len(lines) == 3


ODD_NAMES = [
    "wt dir/a,b #1.pth",
    "a: b.pth",
    "x:y #z.pth",
    "it's.pth",
    'say "hi".pth',
    "-lead.pth",
    "*star.pth",
    "&anchor [1] {2}.pth",
    "% 'both' \"quotes\" ?.pth",
    "tab\there é.pth",
    "yes",
    "null",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_the_study_snippet_is_yaml_that_gives_the_path_back(name: str) -> None:
    """A path pasted bare into YAML can be a comment (' #'), a second item (', '), a mapping (': '), an alias
    ('*') or a list ('- '): the snippet is YAML's own writing of it, whatever it holds (leading characters too, as
    a relative path shows them)."""
    for path in (Path(name), Path("/tmp/x") / name):
        snippet = study_snippet("dinov3_test", path)
        assert "\n" not in snippet and snippet.startswith("model: {backbone: dinov3_test, weights: ")
        assert yaml.safe_load(snippet) == {"model": {"backbone": "dinov3_test", "weights": str(path)}}


def test_the_printed_snippet_reads_back_for_a_path_with_spaces_commas_and_a_hash(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = good.parent / "wt dir" / "a,b #1: [it's] *x.pth"
    odd.parent.mkdir()
    good.rename(odd)
    code, out = run_cli(["weights", "check", str(odd)], monkeypatch, capsys)
    assert code == 0, out
    snippet = out.splitlines()[2].removeprefix("in a study: ")
    assert yaml.safe_load(snippet)["model"] == {"backbone": "dinov3_test", "weights": str(odd.resolve())}


def test_a_named_backbone_is_checked_alone(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["weights", "check", str(good), "--backbone", "dinov3_test"], monkeypatch, capsys)
    assert code == 0 and f"fits backbone dinov3_test ({TENSORS} tensors" in out
    code, out = run_cli(["weights", "check", str(good), "--backbone", "dinov3_small"], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert f"The weights file {good} does not fit backbone dinov3_small: 120 missing keys" in text
    assert "sha256" not in text and "ok:" not in text
    code, out = run_cli(["weights", "check", str(good), "--backbone", "dinov3_huge"], monkeypatch, capsys)
    assert code == 2 and "--backbone: unknown backbone 'dinov3_huge'" in error_paragraph(out)
    assert "dinov3_small_plus" in out  # the registered names listed


def test_a_file_lacking_tensors_of_its_backbone_is_told_to_be_downloaded_again(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real-data audit (F14): a checkpoint with one tensor missing and nothing else wrong was told, after a capital
    following ';', to give a checkpoint "of the same model size" (it is one) or to drop model.weights."""
    state = torch.load(good, weights_only=True)
    del state["blocks.1.mlp.fc2.weight"], state["blocks.0.norm1.bias"]
    cut = good.with_name("cut.pth")
    torch.save(state, cut)
    redo = (
        "the file has every other tensor of dinov3_test, each of the right shape, and lacks 2 tensors: it may be "
        "damaged or cut short (an interrupted download or copy); download it again (for example "
        "dinov3_vits16_pretrain_lvd1689m-08c60483.pth for dinov3_small)."
    )
    code, out = run_cli(["weights", "check", str(cut), "--backbone", "dinov3_test"], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and text == (
        f"error: The weights file {cut} does not fit backbone dinov3_test: 2 missing keys (blocks.0.norm1.bias, "
        f"blocks.1.mlp.fc2.weight); {redo}"
    )
    code, out = run_cli(["weights", "check", str(cut)], monkeypatch, capsys)  # every backbone tried
    text = error_paragraph(out)
    assert code == 2 and text.endswith(
        f"--verbose lists every backbone's keys). The file{redo.removeprefix('the file')}"
    )
    assert "ConvNeXt" not in text and "model.weights" not in text


def test_safetensors_fits_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in to_official_state_dict(create_vit("dinov3_test")).items()}, str(path))
    code, out = run_cli(["weights", "check", str(path)], monkeypatch, capsys)
    assert code == 0 and "fits backbone dinov3_test" in out, out


def test_another_models_weights_fit_no_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One summary line, the closest backbone's, not five key lists; --verbose gives them all."""
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    code, out = run_cli(["weights", "check", str(path)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2
    assert f"The weights file {path} loads into none of the {len(BACKBONES)} registered backbones" in text
    assert "(the closest, dinov3_test: " in text and "--verbose lists every backbone's keys" in text
    assert all(f"{name}: " not in text for name in BACKBONES if name != "dinov3_test")
    assert "the official DINOv3 checkpoint of the same model size" not in text  # the advice once, at the end
    assert text.endswith("not a ConvNeXt, a distilled head or another model's weights.")
    code, out = run_cli(["weights", "check", str(path), "--verbose"], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and "--verbose" not in text
    for name in BACKBONES:  # why, for each
        assert f"{name}: " in text and "missing keys (cls_token" in text.split(f"{name}: ")[1]


@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_an_unreadable_file_is_one_error(
    good: Path, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = good.with_name(f"{kind}.pth")
    if kind == "text":
        path.write_text("<html>Access denied: log in to download DINOv3</html>\n")
    else:
        blob = good.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    code, out = run_cli(["weights", "check", str(path)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and text.count("Could not read the weights file") == 1 and str(path) in text
    assert "registered backbones" not in text


def test_a_weights_zip_torch_save_never_writes_is_refused_before_torch_unpacks_it(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model.weights` gets a run's checkpoints' check before torch.load (usagg/torchzip.py
    `archive_problem`): a compressed entry (a zip bomb) is refused naming the file; torch would have unpacked it."""
    bomb = good.with_name("deflated.pth")
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename))
    code, out = run_cli(["weights", "check", str(bomb)], monkeypatch, capsys)
    text = error_paragraph(out)
    assert code == 2 and text.startswith(f"error: The weights file {bomb} holds a compressed entry (")
    assert "(a zip bomb): not a checkpoint as downloaded. Give the official DINOv3 .pth file as downloaded" in text


def test_the_weights_pickle_limit_bounds_data_pkl_never_the_tensors(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ViT-7B file holds many GB of tensors beside a data.pkl of kilobytes: a limit below the tensors' bytes
    and above the pickle's loads the file; one below the pickle's refuses it, naming the file and the sizes."""
    from usagg.model.weights import read_checkpoint

    with zipfile.ZipFile(good) as archive:
        sizes = {e.filename.rsplit("/", 1)[-1]: e.file_size for e in archive.infolist()}
    pickle_bytes = sizes.pop("data.pkl")
    tensor_bytes = sum(size for name, size in sizes.items() if name.isdigit())
    assert tensor_bytes > 4 * pickle_bytes
    monkeypatch.setattr("usagg.torchzip.PICKLE_LIMIT", 2 * pickle_bytes)
    assert read_checkpoint(good).keys() == torch.load(good, weights_only=True).keys()
    monkeypatch.setattr("usagg.torchzip.PICKLE_LIMIT", pickle_bytes - 1)
    with pytest.raises(UsaggError) as err:
        read_checkpoint(good, "dinov3_test")
    assert str(err.value).startswith(
        f"The weights file {good} for backbone dinov3_test has a data.pkl of {pickle_bytes:,} bytes, more than the "
        f"{pickle_bytes - 1:,} a checkpoint's may hold"
    )


def test_a_missing_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["weights", "check", str(tmp_path / "later.pth")], monkeypatch, capsys)
    assert code == 2 and "later.pth does not exist" in error_paragraph(out)


def test_a_missing_file_names_the_official_file_of_the_backbone_checked_and_no_spec_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's audit: `usagg weights check ~/w/dinov3_vitb16.pth --backbone dinov3_base` (the help's example) on
    a missing file suggested a ViT-S file and to "leave it empty to train from a random initialisation", advice
    about `model.weights`, not this command. A study's missing model.weights keeps that advice, for its backbone."""
    from usagg.model.weights import read_checkpoint

    code, out = run_cli(
        ["weights", "check", str(tmp_path / "vitb.pth"), "--backbone", "dinov3_base"], monkeypatch, capsys
    )
    text = error_paragraph(out)
    assert code == 2 and text == (
        f"error: The weights file {tmp_path / 'vitb.pth'} for backbone dinov3_base does not exist. Give the path of a "
        "downloaded official DINOv3 checkpoint (dinov3_vitb16_pretrain_lvd1689m-*.pth for dinov3_base)."
    )
    code, out = run_cli(["weights", "check", str(tmp_path)], monkeypatch, capsys)  # a folder, no backbone named
    text = error_paragraph(out)
    assert code == 2 and "is a folder, not a file" in text and "for example dinov3_vits16_pretrain_lvd1689m" in text
    assert "model.weights" not in text and "random initialisation" not in text
    with pytest.raises(UsaggError) as err:
        read_checkpoint(tmp_path / "vitl.pth", "dinov3_large")
    said = str(err.value)
    assert "dinov3_vitl16_pretrain_lvd1689m-*.pth for dinov3_large" in said and "leave it empty" in said


def test_a_vit_s_file_is_told_from_vit_s_plus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ViT-S/16 and ViT-S+/16 share depth and width: only the strict load tells them apart."""
    path = tmp_path / "dinov3_vits16.pth"
    torch.save(to_official_state_dict(create_vit("dinov3_small")), path)
    code, out = run_cli(["weights", "check", str(path)], monkeypatch, capsys)
    assert code == 0, out
    assert [line.split(" fits backbone ")[1].split(" ")[0] for line in out.splitlines() if line.startswith("ok:")] == [
        "dinov3_small"
    ]
