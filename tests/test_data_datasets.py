"""TaskDataset and the decode cache: targets in model space, round trips to pixels, cache hits and safety."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_support import tiny_layout

from usagg.data import cache
from usagg.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TaskDataset,
    to_model_input,
)
from usagg.data.fmc_uia import read_split
from usagg.errors import DataError
from usagg.spec.models import TaskSpec
from usagg.tasktypes.detection import box_to_pixels
from usagg.tasktypes.regression import points_to_pixels
from usagg.tasktypes.segmentation import resize_nearest

SPECS = {
    "seg_t": TaskSpec(id="seg_t", type="segmentation", num_classes=3),
    "cls_t": TaskSpec(id="cls_t", type="classification", num_classes=2),
    "det_t": TaskSpec(id="det_t", type="detection", num_classes=1),
    "reg_t": TaskSpec(id="reg_t", type="regression", num_classes=2),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_layout(tmp_path_factory.mktemp("tiny"), hw=(40, 56))


@pytest.fixture(scope="module")
def square(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_layout(tmp_path_factory.mktemp("square"), n=4, hw=(32, 32))


def _dataset(
    root: Path, task: str, size: int, cache_dir: Path, split: str = "train", color: str = "gray"
) -> TaskDataset:
    return TaskDataset(read_split(root, split)[task], SPECS[task], size, cache_dir, color)


def test_boxes_and_points_round_trip_within_half_a_pixel(tiny: Path, tmp_path: Path) -> None:
    det = _dataset(tiny, "det_t", 32, tmp_path)
    reg = _dataset(tiny, "reg_t", 32, tmp_path)
    for i in range(len(det)):
        item = det[i]
        assert item["target"].dtype == torch.float32 and item["target"].shape == (4,)
        assert item["target"].min() >= 0 and item["target"].max() <= 1
        meta = det.meta(i)
        assert meta["orig_hw"] == (40, 56)
        back = box_to_pixels(item["target"].numpy(), meta["orig_hw"])
        np.testing.assert_allclose(back, meta["gt"], atol=0.5)
        np.testing.assert_allclose(back, det.samples[i].label, atol=1e-3)
    assert det[1]["target"].tolist() == pytest.approx([4.5 / 56, 2.25 / 40, 31 / 56, 37.75 / 40], abs=1e-6)
    for i in range(len(reg)):
        target = reg[i]["target"]
        assert target.dtype == torch.float32 and target.shape == (2, 2)
        back = points_to_pixels(target.numpy(), reg.meta(i)["orig_hw"])
        np.testing.assert_allclose(back, np.array(reg.samples[i].label), atol=0.5)
    assert reg[0]["target"][1].tolist() == pytest.approx([55.5 / 56, 38.75 / 40], abs=1e-6)


def test_masks_survive_the_nearest_round_trip(square: Path, tmp_path: Path) -> None:
    same = _dataset(square, "seg_t", 32, tmp_path)  # unresized: 32 x 32 originals
    double = _dataset(square, "seg_t", 64, tmp_path)  # an integer upscale is also exact
    for i in range(len(same)):
        gt = same.meta(i)["gt"]
        assert gt.dtype == np.uint8 and gt.shape == (32, 32) and gt.max() == 1 + i % 2
        target = same[i]["target"]
        assert target.dtype == torch.int64 and target.shape == (32, 32)
        np.testing.assert_array_equal(resize_nearest(target, (32, 32)), gt)
        np.testing.assert_array_equal(resize_nearest(double[i]["target"], (32, 32)), gt)
    assert resize_nearest(np.ones((8, 8), np.int64), (5, 7)).shape == (5, 7)


def test_images_are_normalised_grayscale_in_three_channels(tiny: Path, tmp_path: Path) -> None:
    ds = _dataset(tiny, "cls_t", 32, tmp_path)
    item = ds[3]
    assert item["index"] == 3 and item["target"].dtype == torch.int64 and int(item["target"]) == 1
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    with Image.open(ds.samples[3].image_file) as im:
        gray = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    for c in range(3):
        expected = (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(image[c].numpy(), expected, atol=1e-5)
    assert ds.meta(3) == {"image_path": "../Classification/cls_t/train_3.png", "orig_hw": (40, 56), "gt": 1}


def test_tensors_fast_path_matches_getitem(tiny: Path, tmp_path: Path) -> None:
    for task, shape, dtype in [
        ("seg_t", (6, 32, 32), torch.uint8),
        ("cls_t", (6,), torch.int64),
        ("det_t", (6, 4), torch.float32),
        ("reg_t", (6, 2, 2), torch.float32),
    ]:
        ds = _dataset(tiny, task, 32, tmp_path)
        t = ds.tensors()
        assert t["images"].dtype == torch.uint8 and t["images"].shape == (6, 32, 32)
        assert t["targets"].shape == shape and t["targets"].dtype == dtype
        assert t["orig_hw"].tolist() == [[40, 56]] * 6
        idx = torch.tensor([4, 1])
        batch = to_model_input(t["images"][idx])
        assert batch.shape == (2, 3, 32, 32)
        torch.testing.assert_close(batch[1], ds[1]["image"])
        torch.testing.assert_close(t["targets"][4].to(ds[4]["target"].dtype), ds[4]["target"])


def test_colour_follows_the_data_and_grayscale_keeps_its_numbers(tiny: Path, tmp_path: Path) -> None:
    """`auto` keeps RGB for coloured images (3 channels in the cache), and is the `gray` decode for gray ones."""
    colour = _dataset(tiny, "seg_t", 32, tmp_path, color="auto")  # its images are RGB noise
    images = colour.tensors()["images"]
    assert images.shape == (6, 3, 32, 32)
    assert not torch.equal(images[:, 0], images[:, 1])
    x = to_model_input(images[:2])
    want = (images[1, 2].float() / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    torch.testing.assert_close(x[1, 2], want)
    torch.testing.assert_close(colour[1]["image"], x[1])
    assert _dataset(tiny, "seg_t", 32, tmp_path, color="rgb").tensors()["images"].shape == (6, 3, 32, 32)
    assert _dataset(tiny, "seg_t", 32, tmp_path).tensors()["images"].shape == (6, 32, 32)
    assert len(list((tmp_path / "decode").glob("*.hw.npy"))) == 3 + 1  # an entry per colour mode, one of masks

    files = []
    for i, (mode, arr) in enumerate(
        [("L", np.arange(40 * 56).reshape(40, 56) % 251), ("RGB", np.repeat((np.arange(40 * 56) % 97)[:, None], 3, 1))]
    ):
        files.append(tmp_path / f"gray{i}.png")
        Image.fromarray(arr.reshape(40, 56, -1).squeeze().astype(np.uint8), mode).save(files[-1])
    auto = cache.load(files, 24, tmp_path / "c", "image", "auto")
    gray = cache.load(files, 24, tmp_path / "c", "image", "gray")
    assert auto.arrays.shape == (2, 24, 24) and auto.path != gray.path
    np.testing.assert_array_equal(auto.arrays, gray.arrays)
    rgb = cache.load(files, 24, tmp_path / "c", "image", "rgb")
    np.testing.assert_array_equal(rgb.arrays, np.repeat(np.asarray(gray.arrays)[:, None], 3, 1))
    mixed = cache.load([files[0], *[s.image_file for s in colour.samples[:1]]], 24, tmp_path / "c", "image", "auto")
    assert mixed.arrays.shape == (2, 3, 24, 24)  # a gray image beside a coloured one is broadcast
    np.testing.assert_array_equal(mixed.arrays[0], np.repeat(np.asarray(gray.arrays)[:1], 3, 0))


def test_pickles_without_copying_the_cache(tiny: Path, tmp_path: Path) -> None:
    ds = _dataset(tiny, "seg_t", 32, tmp_path)
    blob = pickle.dumps(ds)
    assert len(blob) < 6 * 32 * 32  # the arrays stay on disk; workers reopen them
    clone = pickle.loads(blob)
    torch.testing.assert_close(clone[5]["image"], ds[5]["image"])
    torch.testing.assert_close(clone[5]["target"], ds[5]["target"])


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = cache.decode_image

    def counting(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        calls.append(path)
        return real(path, size)

    monkeypatch.setitem(cache.DECODERS, "image", counting)
    return calls


def test_cache_is_hit_on_second_use_and_invalidated_by_a_changed_file(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decodes(monkeypatch)
    samples = read_split(tiny, "val")["cls_t"]
    first = TaskDataset(samples, SPECS["cls_t"], 24, tmp_path)
    assert len(calls) == 3
    second = TaskDataset(samples, SPECS["cls_t"], 24, tmp_path)
    assert len(calls) == 3  # nothing decoded: served from the memory-mapped entry
    assert isinstance(second._images, np.memmap)
    torch.testing.assert_close(first[2]["image"], second[2]["image"])
    TaskDataset(samples, SPECS["cls_t"], 16, tmp_path)  # another size is another entry
    assert len(calls) == 6

    changed = samples[0].image_file
    Image.fromarray(np.full((40, 56), 200, np.uint8)).save(changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    third = TaskDataset(samples, SPECS["cls_t"], 24, tmp_path)
    assert len(calls) == 9
    expected = (200 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert third[0]["image"][0].mean().item() == pytest.approx(expected, abs=1e-5)


def test_a_failed_build_leaves_no_entry(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [s.image_file for s in read_split(tiny, "train")["det_t"]]
    real = cache.decode_image

    def dies_on_the_fourth(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
        if path == files[3]:
            raise KeyboardInterrupt  # a killed process, as near as a test gets
        return real(path, size)

    monkeypatch.setitem(cache.DECODERS, "image", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        cache.load(files, 16, tmp_path)
    assert not [p for p in (tmp_path / "decode").iterdir() if p.suffix == ".npy"]
    key = cache.cache_key(files, 16, "image")
    (tmp_path / "decode" / f"{key}.999999.tmp.npy").write_bytes(b"half")  # as a SIGKILL would leave it
    monkeypatch.setitem(cache.DECODERS, "image", real)
    entry = cache.load(files, 16, tmp_path)
    assert entry.arrays.shape == (6, 16, 16) and entry.orig_hw.tolist() == [[40, 56]] * 6
    assert sorted(p.name for p in (tmp_path / "decode").glob("*.npy")) == [f"{key}.hw.npy", f"{key}.npy"]


def test_concurrent_loads_decode_once(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_decodes(monkeypatch)
    files = [s.image_file for s in read_split(tiny, "train")["reg_t"]]
    results: list[cache.Decoded] = []
    threads = [threading.Thread(target=lambda: results.append(cache.load(files, 20, tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 6 and len(results) == 3
    np.testing.assert_array_equal(results[0].arrays, results[2].arrays)


def test_unreadable_image_is_a_data_error(tiny: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png cannot be decoded"):
        cache.load([bad], 16, tmp_path / "c")


def test_every_synthetic_task_round_trips(tmp_path: Path) -> None:
    from usagg.data.splits import make_splits
    from usagg.data.synth import TASKS, generate_benchmark
    from usagg.spec.models import DataSpec, SynthSpec

    root = generate_benchmark(tmp_path / "synth", SynthSpec(image_size=64, default_size=6, val_size=2))
    tasks = [TaskSpec(id=t.id, type=t.type, num_classes=t.num_classes) for t in TASKS.values()]
    splits = make_splits(DataSpec(root=root), root, tasks, 1.0, 0)
    for task in tasks:
        train = splits[task.id].train
        assert len(train) == 5 and len(splits[task.id].select) == 1 and len(splits[task.id].test) == 2
        ds = TaskDataset(train, task, 64, tmp_path / "cache")  # 64 px originals: unresized
        for i in range(len(ds)):
            item, meta = ds[i], ds.meta(i)
            assert item["image"].shape == (3, 64, 64) and meta["orig_hw"] == (64, 64)
            target = item["target"].numpy()
            if task.type == "segmentation":
                np.testing.assert_array_equal(resize_nearest(target, meta["orig_hw"]), meta["gt"])
                assert target.min() >= 0 and target.max() < task.num_classes
            elif task.type == "classification":
                assert int(target) == meta["gt"] < task.num_classes
            elif task.type == "detection":
                np.testing.assert_allclose(box_to_pixels(target, meta["orig_hw"]), meta["gt"], atol=0.5)
            else:
                assert target.shape == (task.num_classes, 2)
                np.testing.assert_allclose(points_to_pixels(target, meta["orig_hw"]), meta["gt"], atol=0.5)


def test_training_targets_read_a_palette_mask_as_scoring_does(tmp_path: Path) -> None:
    """One mask reader for targets and scores (usagg/data/masks.py): a palette PNG's classes are its luminance."""
    from PIL import Image

    from usagg.data.cache import read_mask
    from usagg.data.masks import read_mask_grayscale

    index = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 1, 1, 1] + [0] * 762)  # index 1 is the colour (1, 1, 1): gray 1, the class
    path = tmp_path / "m.png"
    im.save(path)
    assert read_mask(path).tolist() == read_mask_grayscale(path).tolist() == index.tolist()
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 drawn red: luminance 76, not class 1
    im.save(path)
    assert read_mask(path).tolist() == [[0, 76], [76, 0]]


def test_a_damaged_cache_entry_is_rebuilt_not_trusted(tiny: Path, tmp_path: Path) -> None:
    """Issue 16.4: a truncated decode-cache .npy is decoded again instead of failing every retry."""
    files = [s.image_file for s in read_split(tiny, "val")["cls_t"]]
    good = np.array(cache.load(files, 24, tmp_path).arrays)
    entry = cache.load(files, 24, tmp_path).path
    blob = entry.read_bytes()
    entry.write_bytes(blob[: len(blob) // 2])
    assert np.array_equal(np.array(cache.load(files, 24, tmp_path).arrays), good)
    entry.write_bytes(b"not an npy file")
    assert np.array_equal(np.array(cache.load(files, 24, tmp_path).arrays), good)


def test_a_same_size_file_replaced_with_its_old_mtime_is_decoded_again(tmp_path: Path) -> None:
    """The decode cache keys a file as the data check's cache does (size, mtime, ctime, inode): a corrected mask of
    the same byte size whose mtime was restored (`cp -p`, `rsync -a`, `tar`) trained on the old pixels."""
    mask = tmp_path / "mask.png"
    old = np.zeros((16, 16), np.uint8)
    old[:4, :4] = 4  # 16 px of class 4
    Image.fromarray(old).save(mask, compress_level=0)  # stored uncompressed: the byte size is the shape's
    before = mask.stat()
    assert int(cache.load([mask], 16, tmp_path / "c", "mask").arrays.sum()) == 64
    new = np.zeros((16, 16), np.uint8)
    new[:6, :6] = 4  # 36 px
    replacement = tmp_path / "fixed.png"
    Image.fromarray(new).save(replacement, compress_level=0)
    os.replace(replacement, mask)
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = mask.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert int(cache.load([mask], 16, tmp_path / "c", "mask").arrays.sum()) == 144
