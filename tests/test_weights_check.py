"""`model.weights` checked before any job: validate and run refuse a bad file (exit 2), job ids follow its content."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import cli_run
import pytest
import timm
import torch

from tests.tiny_study import write_tiny_study
from usagg import api
from usagg.errors import UsaggError
from usagg.filehash import file_sha256
from usagg.model.backbones import create_vit
from usagg.model.weights import to_official_state_dict
from usagg.model.weights_check import check_weights
from usagg.plan import plan
from usagg.spec.load import load_study


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: the check builds the backbone without downloading."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def official(seed: int = 0) -> dict[str, torch.Tensor]:
    """A dinov3_test checkpoint under the official DINOv3 key names (storage_tokens, ls1.gamma, fused qkv bias)."""
    torch.manual_seed(seed)
    return to_official_state_dict(create_vit("dinov3_test"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A good checkpoint and four bad ones: text, truncated, a narrower DINOv3 ViT, a ResNet."""
    folder = tmp_path / "w"
    folder.mkdir()
    out = {name: folder / f"{name}.pth" for name in ("good", "text", "truncated", "narrow", "resnet")}
    torch.save(official(), out["good"])
    out["text"].write_text("<html>Access denied: log in to download DINOv3</html>\n")
    blob = out["good"].read_bytes()
    out["truncated"].write_bytes(blob[: len(blob) // 2])
    narrow = timm.create_model(
        "vit_small_patch16_dinov3_qkvb", pretrained=False, num_classes=0, embed_dim=96, num_heads=2, depth=2
    )
    torch.save(to_official_state_dict(narrow), out["narrow"])
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), out["resnet"])
    return out


def write_study(tmp_path: Path, weights: Path | None) -> Path:
    return write_tiny_study(
        tmp_path / "study.yaml",
        "wcheck",
        tmp_path / "data",
        model={"weights": None if weights is None else str(weights)},
        execution={"devices": "cpu"},
        output_root=tmp_path / "runs",
    )


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return cli_run.run_cli(args, monkeypatch, capsys, columns=400)


# --------------------------------------------------------------------------- the check itself


def test_good_checkpoint_fits(files: dict[str, Path]) -> None:
    assert check_weights(files["good"], "dinov3_test") == len(create_vit("dinov3_test").state_dict())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("text", ["Could not read the weights file", "starting b'<html>Access denied"]),
        ("truncated", ["Could not read the weights file", "truncated"]),
        ("narrow", ["does not fit backbone dinov3_test", "30 missing keys (blocks.2.", "cls_token: file (1, 1, 96)"]),
        ("resnet", ["does not fit backbone dinov3_test", "66 missing keys (cls_token", "unexpected keys (conv1."]),
    ],
)
def test_bad_checkpoint_is_refused_naming_file_backbone_and_misfits(
    files: dict[str, Path], name: str, expected: list[str]
) -> None:
    with pytest.raises(UsaggError) as err:
        check_weights(files[name], "dinov3_test")
    msg = str(err.value)
    assert str(files[name]) in msg and "dinov3_test" in msg
    assert "\n" not in msg  # one paragraph
    for part in expected:
        assert part in msg, (part, msg)


def test_a_file_fitting_no_backbone_is_told_what_to_give_after_the_semicolon_in_lower_case(
    files: dict[str, Path],
) -> None:
    """The real-data audit (F14): "...; Give the official ..." had a capital after ';'."""
    with pytest.raises(UsaggError) as err:
        check_weights(files["narrow"], "dinov3_test")
    said = str(err.value)
    assert "; give the official DINOv3 checkpoint of the same model size as `model.backbone`" in said
    assert "download it again" not in said  # other shapes: another model, not a damaged copy


def test_a_checkpoint_of_another_size_is_refused_for_this_backbone(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The good dinov3_test file against a ViT-S/16 and back: every block has the wrong width.

    A deeper file than the model makes timm print a line per extra block; they stay off stdout.
    """
    with pytest.raises(UsaggError, match=r"does not fit backbone dinov3_small: 120 missing keys .* of the wrong shape"):
        check_weights(files["good"], "dinov3_small")
    deeper = files["good"].with_name("small.pth")
    torch.save(to_official_state_dict(create_vit("dinov3_small")), deeper)
    capsys.readouterr()
    with pytest.raises(UsaggError, match=r"does not fit backbone dinov3_test: \d+ unexpected keys"):
        check_weights(deeper, "dinov3_test")
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- validate and run refuse


def test_validate_accepts_a_good_file(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["validate", str(write_study(tmp_path, files["good"]))], monkeypatch, capsys)
    assert code == 0, out
    assert f"weights: {files['good']} fits dinov3_test" in out


@pytest.mark.parametrize("name", ["text", "truncated", "narrow", "resnet"])
def test_validate_refuses_a_bad_file_with_exit_2(
    files: dict[str, Path],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run_cli(["validate", str(write_study(tmp_path, files[name]))], monkeypatch, capsys)
    assert code == 2
    assert out.startswith("error:") and "Traceback" not in out
    assert files[name].name in out and "dinov3_test" in out
    assert "is a valid study" not in out


def test_validate_notes_a_missing_file_and_no_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["validate", str(write_study(tmp_path, tmp_path / "later.pth"))], monkeypatch, capsys)
    assert code == 0 and "does not exist yet" in out
    code, out = run_cli(["validate", str(write_study(tmp_path, None))], monkeypatch, capsys)
    assert code == 0 and "randomly initialised" in out


@pytest.mark.parametrize("name", ["text", "truncated", "narrow"])
def test_run_refuses_before_any_job(
    files: dict[str, Path],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = write_study(tmp_path, files[name])
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 2, out
    assert out.startswith("error:") and "Traceback" not in out
    assert str(files[name]) in out.replace("\n", "") and "dinov3_test" in out
    assert not (tmp_path / "runs").exists()  # no store, no job folder, no plan
    assert not (tmp_path / "data" / "synth").exists()  # refused before the data is even generated


def test_api_run_refuses_too(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsaggError, match="Could not read the weights file"):
        api.run_study(write_study(tmp_path, files["text"]))
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_run_with_a_good_file_trains_with_it(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, files["good"])
    code, out = run_cli(["run", str(study), "--only", plan(load_study(study))[0].id], monkeypatch, capsys)
    assert code == 0, out
    assert "1 to run" in out and "randomly" not in out.lower()


# --------------------------------------------------------------------------- job ids follow the content


def ids(study: Path) -> list[str]:
    return [j.id for j in plan(load_study(study))]


def test_replacing_the_file_under_the_same_name_gives_new_ids(files: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "dino.pth"
    weights.write_bytes(files["text"].read_bytes())
    study = write_study(tmp_path, weights)
    bad = ids(study)
    weights.write_bytes(files["good"].read_bytes())
    good = ids(study)
    assert len(good) == len(bad) == 2
    assert set(good).isdisjoint(bad)
    st = weights.stat()
    torch.save(official(seed=1), weights)  # other weights, same name and size
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime even on a coarse clock
    assert set(ids(study)).isdisjoint(good)


def test_touching_or_moving_the_file_keeps_ids(files: dict[str, Path], tmp_path: Path) -> None:
    study = write_study(tmp_path, files["good"])
    before = ids(study)
    st = files["good"].stat()
    os.utime(files["good"], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert ids(study) == before  # same content, new mtime: re-hashed, same digest
    moved = tmp_path / "elsewhere" / "renamed.pth"
    moved.parent.mkdir()
    moved.write_bytes(files["good"].read_bytes())
    assert ids(write_study(tmp_path, moved)) == before


def test_no_weights_and_missing_weights(tmp_path: Path) -> None:
    none = ids(write_study(tmp_path, None))
    later = ids(write_study(tmp_path, tmp_path / "later.pth"))
    assert set(none).isdisjoint(later)
    assert ids(write_study(tmp_path, tmp_path / "other" / "later.pth")) == later  # counts by name until it exists


# --------------------------------------------------------------------------- the content-hash cache


def test_digest_is_sha256_read_once_and_again_for_a_same_size_replacement_with_its_mtime_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyed by `filehash.identity` (size, mtime, ctime, inode), as the decode and check caches are: size and mtime
    alone kept the old file's digest for a corrected file of the same size whose mtime `cp -p` or `rsync -a` put
    back, so its jobs kept the old ids and their results."""
    import hashlib

    from usagg import filehash

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 3_000_000)
    cache = tmp_path / "cache"
    assert file_sha256(path, cache) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert len(list((cache / "filehash").glob("*.json"))) == 1
    reads: list[Path] = []
    real = filehash.sha256_of
    monkeypatch.setattr(filehash, "sha256_of", lambda p: reads.append(Path(p)) or real(p))
    assert file_sha256(path, cache) == hashlib.sha256(b"a" * 3_000_000).hexdigest() and reads == []  # kept
    st = path.stat()
    path.write_bytes(b"b" * 3_000_000)  # same size, its mtime put back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert file_sha256(path, cache) == hashlib.sha256(b"b" * 3_000_000).hexdigest() and len(reads) == 1
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # any mtime change: read again
    assert file_sha256(path, cache) == hashlib.sha256(b"b" * 3_000_000).hexdigest() and len(reads) == 2
    assert len(list((cache / "filehash").glob("*.json"))) == 1  # one record per file, replaced


@pytest.mark.slow
def test_the_cache_is_shared_between_processes(tmp_path: Path) -> None:
    """A second process trusts the first one's record: it does not read the file (its reader would fail)."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    cache = tmp_path / "cache"
    first = file_sha256(path, cache)
    probe = (
        "from usagg import filehash\n"
        "filehash.sha256_of = lambda path: 1 / 0\n"
        f"print(filehash.file_sha256({str(path)!r}, {str(cache)!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == first
