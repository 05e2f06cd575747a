"""Leakage between train and val and label sanity in `usagg data check`, on generated data with planted defects.

Each planted defect must come back once, with its kind, CSV file and row; a clean set must
report none; `data.leakage` and `data.near_duplicate_threshold` decide what near duplicates do.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_support import read_csv, write_csv

from usagg.data.check import check_dataset
from usagg.data.synth import generate_benchmark
from usagg.spec.models import DataSpec, SynthSpec

LEAK_TASK = "fetal_head_position"
# kind -> (CSV relative to the root, data row)
PLANTED = {
    "leak_same_file": (f"val/csv_files/{LEAK_TASK}.csv", 1),
    "leak_exact_copy": (f"val/csv_files/{LEAK_TASK}.csv", 2),
    "leak_near_duplicate": (f"val/csv_files/{LEAK_TASK}.csv", 3),
    "keypoint_outside": ("train/csv_files/fetal_head_biometry.csv", 1),
    "degenerate_box": ("train/csv_files/thyroid_nodule_det.csv", 1),
    "conflicting_duplicate": ("train/csv_files/thyroid_malignancy.csv", 9),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "data", SynthSpec(image_size=64, default_size=8, val_size=4)
    )


def _edit(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    header, rows = read_csv(path)
    edit(rows)
    write_csv(path, header, rows)


def plant(root: Path) -> None:
    """One instance of each defect in PLANTED, plus one empty mask (counted, not a problem)."""
    val_csv = root / "val/csv_files" / f"{LEAK_TASK}.csv"
    _, train_rows = read_csv(root / "train/csv_files" / f"{LEAK_TASK}.csv")
    train_images = [root / "train/csv_files" / r["image_path"] for r in train_rows]
    images_dir = val_csv.parent / Path(read_csv(val_csv)[1][0]["image_path"]).parent

    def leaks(rows: list[dict]) -> None:
        # (a) a val row pointing into train, (b) the same pixels re-encoded under another name,
        # (c) the same frame with a small intensity change, re-encoded as JPEG
        rows[0]["image_path"] = os.path.relpath(train_images[0], val_csv.parent)
        pixels = np.asarray(Image.open(train_images[1]).convert("L"))
        Image.fromarray(pixels).save(images_dir / "renamed_copy.png", compress_level=1)
        rows[1]["image_path"] = str(Path(rows[1]["image_path"]).parent / "renamed_copy.png")
        brighter = np.clip(np.asarray(Image.open(train_images[2]).convert("L"), float) * 0.9 + 12, 0, 255)
        Image.fromarray(brighter.astype(np.uint8)).save(images_dir / "resaved.jpg", quality=85)
        rows[2]["image_path"] = str(Path(rows[2]["image_path"]).parent / "resaved.jpg")

    def keypoints(rows: list[dict]) -> None:
        rows[0]["point_1_xy"] = "[900, -300]"

    def box(rows: list[dict]) -> None:
        rows[0].update(x_min="70", y_min="10", x_max="90", y_max="20")  # wholly right of the 64x64 image

    def conflicting(rows: list[dict]) -> None:
        rows.append(dict(rows[0], mask=str(1 - int(rows[0]["mask"]))))

    def empty_mask(rows: list[dict]) -> None:
        mask = root / "train/csv_files" / rows[0]["mask_path"]
        Image.fromarray(np.zeros(Image.open(mask).size[::-1], np.uint8)).save(mask)

    _edit(val_csv, leaks)
    _edit(root / "train/csv_files/fetal_head_biometry.csv", keypoints)
    _edit(root / "train/csv_files/thyroid_nodule_det.csv", box)
    _edit(root / "train/csv_files/thyroid_malignancy.csv", conflicting)
    _edit(root / "train/csv_files/fetal_head.csv", empty_mask)


@pytest.fixture(scope="module")
def planted(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("planted") / "data"
    shutil.copytree(synth, root)
    plant(root)
    return root


def test_clean_dataset_reports_no_leak(synth: Path) -> None:
    report = check_dataset(synth)
    leaks = [w for w in report.warnings if w.kind.startswith("leak_")]  # a val split missing a class warns too
    assert report.ok and not leaks, report.problems + report.warnings
    assert report.leakage == {"leak_same_file": 0, "leak_exact_copy": 0, "leak_near_duplicate": 0}
    assert "empty" not in report.tasks["fetal_head"].labels


def test_each_planted_defect_is_reported_once_by_file_and_row(planted: Path) -> None:
    report = check_dataset(planted)
    assert Counter(p.kind for p in report.problems) == Counter(list(PLANTED)), [p.to_dict() for p in report.problems]
    for p in report.problems:
        assert (p.csv_file, p.row) == PLANTED[p.kind]
    msg = {p.kind: p.message for p in report.problems}
    train_csv = f"train/csv_files/{LEAK_TASK}.csv"
    assert f"{train_csv} row 1" in msg["leak_same_file"] and "similarity 1.0" in msg["leak_same_file"]
    assert f"{train_csv} row 2" in msg["leak_exact_copy"] and "renamed_copy.png" in msg["leak_exact_copy"]
    assert f"{train_csv} row 3" in msg["leak_near_duplicate"] and "resaved.jpg" in msg["leak_near_duplicate"]
    similarity = float(msg["leak_near_duplicate"].split("similarity ")[1].split(" ")[0])
    assert 0.9 <= similarity < 1.0
    assert "[900, -300]" in msg["keypoint_outside"]
    assert "zero area" in msg["degenerate_box"]
    assert "different label" in msg["conflicting_duplicate"] and "row 1" in msg["conflicting_duplicate"]
    assert report.leakage == {"leak_same_file": 1, "leak_exact_copy": 1, "leak_near_duplicate": 1}
    assert report.tasks["fetal_head"].labels["empty"] == 1
    assert "1 empty mask" in report.tasks["fetal_head"].label_text()


def test_near_duplicates_follow_leakage_mode_and_threshold(planted: Path) -> None:
    def kinds(found: list) -> list[str]:
        return sorted(p.kind for p in found if p.kind.startswith("leak_"))

    warn = check_dataset(planted, leakage="warn")
    assert kinds(warn.problems) == ["leak_exact_copy", "leak_same_file"]
    assert kinds(warn.warnings) == ["leak_near_duplicate"] and warn.leakage["leak_near_duplicate"] == 1
    off = check_dataset(planted, leakage="off")
    assert kinds(off.problems) == ["leak_exact_copy", "leak_same_file"] and not kinds(off.warnings)
    assert off.leakage["leak_near_duplicate"] == 0
    strict = check_dataset(planted, near_duplicate_threshold=0.999)
    assert kinds(strict.problems) == ["leak_exact_copy", "leak_same_file"]
    loose = check_dataset(planted, near_duplicate_threshold=0.5)
    assert loose.leakage["leak_near_duplicate"] > 1  # unrelated synthetic frames pass a threshold that low


def test_spec_fields_default_to_error() -> None:
    data = DataSpec(root=Path("/data"))
    assert (data.leakage, data.near_duplicate_threshold) == ("error", 0.9)
    with pytest.raises(ValueError, match="leakage"):
        DataSpec(root=Path("/data"), leakage="sometimes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_prints_leak_counts_and_warnings(planted: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "usagg", "data", "check", str(planted), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    result = cli()
    assert result.returncode == 1, result.stderr
    assert "leakage: 1 same file, 1 exact, 1 near duplicates" in result.stdout
    for kind, (csv_file, row) in PLANTED.items():
        line = next(ln for ln in result.stdout.splitlines() if kind in ln)
        assert f"{csv_file} row {row}" in line
    warned = cli("--leakage", "warn")
    # the near duplicate, and fetal_head_position's val split missing a class (val_scoring)
    assert warned.returncode == 1 and "2 warnings" in warned.stdout
    near = [ln.split()[0] for ln in warned.stdout.splitlines() if "leak_near_duplicate" in ln]
    assert near == ["leak_near_duplicate"]


def test_a_leak_between_two_tasks_blocks_only_a_study_that_trains_both(synth: Path, tmp_path: Path) -> None:
    """A val image of one task that is another task's training image (issue 13.1a, 13.4)."""
    from usagg.data.scope import split_by_scope

    root = tmp_path / "data"
    shutil.copytree(synth, root)
    other = "fetal_head"
    _, other_rows = read_csv(root / "train/csv_files" / f"{other}.csv")
    val_csv = root / "val/csv_files" / f"{LEAK_TASK}.csv"

    def cross(rows: list[dict]) -> None:
        rows[0]["image_path"] = os.path.relpath(root / "train/csv_files" / other_rows[0]["image_path"], val_csv.parent)

    _edit(val_csv, cross)
    report = check_dataset(root)
    leak = [p for p in report.problems if p.kind == "leak_same_file"]
    assert len(leak) == 1 and leak[0].tasks == (LEAK_TASK, other)
    alone, warned = split_by_scope(report, [LEAK_TASK])
    assert leak[0] not in alone and leak[0] in warned
    both, _ = split_by_scope(report, [LEAK_TASK, other])
    assert leak[0] in both


def test_a_test_set_carved_from_train_is_searched_for_leaks(synth: Path, tmp_path: Path) -> None:
    """data.test_split=train: a carved test row whose pixels another training row repeats is a leak."""
    from usagg.data.fmc_uia import read_split
    from usagg.data.splits import carve_test

    root = tmp_path / "data"
    shutil.copytree(synth, root)
    samples = read_split(root, "train")[LEAK_TASK]
    test, rest = carve_test(samples, 0.25, 3, LEAK_TASK)
    assert check_dataset(root, splits=("train",), test_carve=(0.25, 3)).leakage["leak_exact_copy"] == 0
    pixels = np.asarray(Image.open(test[0].image_file).convert("L"))
    Image.fromarray(pixels).save(rest[0].image_file)  # a training image overwritten with a carved test image
    report = check_dataset(root, splits=("train",), test_carve=(0.25, 3))
    found = [p for p in report.problems if p.kind == "leak_exact_copy"]
    assert report.leakage["leak_exact_copy"] == 1 and len(found) == 1
    assert test[0].image_path in found[0].message and rest[0].image_path in found[0].message


def test_the_nearest_train_hash_is_found_to_the_bit() -> None:
    """`_nearest` (a float32 product of +1/-1 bits, the query's uncompared bits 0) against XOR and popcount over the
    words of the compared bits: the same distance and the first train hash at it, for copies with 0 to 2048 bits
    flipped, queries comparing every bit or a random half, and exact ties."""
    from usagg.data.leakage import HASH_BITS, HASH_WORDS, _nearest, _signs

    rng = np.random.default_rng(7)
    train = rng.integers(0, 2**63, size=(400, HASH_WORDS), dtype=np.int64).view(np.uint64)
    train[10] = train[3]  # a tie: the first index must win
    query = train[rng.integers(0, 400, 64)].copy()
    for i, flips in enumerate(np.linspace(0, HASH_BITS, 64).astype(int)):
        bits = np.unpackbits(query[i].view(np.uint8))
        bits[rng.choice(HASH_BITS, flips, replace=False)] ^= 1
        query[i] = np.packbits(bits).view(np.uint64)
    compared = rng.random((64, HASH_BITS)) < 0.5
    compared[::2] = True
    best, dist = _nearest(_signs(query) * compared, _signs(train))
    words = np.packbits(compared, axis=1).view(np.uint64)
    brute = np.bitwise_count((query[:, None, :] ^ train[None, :, :]) & words[:, None, :]).sum(axis=2)
    assert np.array_equal(dist, brute.min(axis=1)) and np.array_equal(best, brute.argmin(axis=1))
    assert dist[0] == 0 and dist.max() > 800


# --------------------------------------------------------------------------- ultrasound frames: a fan on black


def fan_frame(seed: int, half_angle: float, w: int = 320, h: int = 240) -> Image.Image:
    """An ultrasound-like frame (the audit's make_fan.py): tissue inside a sector ("fan") of `half_angle` radians on
    black, attenuated with depth, and a line of burnt-in overlay text; every seed an unrelated frame of one scanner."""
    from PIL import ImageDraw

    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ang, rad = np.arctan2(xx - w / 2, yy + 20), np.hypot(xx - w / 2, yy + 20)
    fan = (np.abs(ang) < half_angle) & (rad > 30) & (rad < h - 10)
    tissue = 70 + r.normal(0, 30, (h, w))
    for _ in range(5):
        cx, cy, s = r.uniform(75, 245), r.uniform(40, 210), r.uniform(10, 40)
        tissue += r.uniform(-60, 80) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    im = Image.fromarray(np.where(fan, np.clip(tissue * np.exp(-rad / 450), 0, 255), 0).astype(np.uint8))
    ImageDraw.Draw(im).text((5, 5), "FR 32Hz 12cm", fill=255)
    return im


def fan_dataset(root: Path, half_angle: float, n_train: int = 40, n_val: int = 12) -> Path:
    """One classification task of unrelated fan frames: train frames of seeds 0.., val frames of seeds 1000.."""
    for split, n, first in (("train", n_train, 0), ("val", n_val, 1000)):
        folder = root / split / "Classification/fan"
        folder.mkdir(parents=True)
        rows = []
        for i in range(n):
            fan_frame(first + i, half_angle).save(folder / f"{i:03d}.png")
            rows.append(
                {
                    "image_path": f"../Classification/fan/{i:03d}.png",
                    "task_id": "fan",
                    "task_name": "classification",
                    "num_classes": 2,
                    "mask": i % 2,
                }
            )
        write_csv(root / split / "csv_files/fan.csv", list(rows[0]), rows)
    return root


@pytest.mark.parametrize("half_angle", [0.3, 0.45, 0.6])
def test_unrelated_frames_sharing_the_fan_and_overlay_are_no_near_duplicates(tmp_path: Path, half_angle: float) -> None:
    """Over the whole hash, the black surround, the fan's edges and the overlay text (the same in every frame of a
    scanner) made unrelated frames agree on 0.85-0.95 of the bits: every val frame of a narrow fan was a leak and
    the default `data.leakage: error` stopped `usagg run`. Only the bits that show content are compared now."""
    report = check_dataset(fan_dataset(tmp_path / "data", half_angle))
    assert report.ok, [p.message for p in report.problems]
    assert report.leakage["leak_near_duplicate"] == 0


def _copies(frame: Image.Image) -> dict[str, Image.Image]:
    """The same frame as a leak brings it back: re-encoded, resized, brightened, contrast changed."""
    gray = np.asarray(frame, float)
    jpeg = io.BytesIO()
    frame.save(jpeg, "JPEG", quality=75)
    w, h = frame.size
    return {
        "jpeg75": Image.open(io.BytesIO(jpeg.getvalue())),
        "half": frame.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "x1.5": frame.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC),
        "brighter": Image.fromarray(np.clip(gray * 0.9 + 12, 0, 255).astype(np.uint8)),
        "contrast": Image.fromarray(np.clip((gray - 60) * 1.25 + 60, 0, 255).astype(np.uint8)),
    }


@pytest.mark.parametrize("half_angle", [0.3, 0.45])
def test_a_fan_frame_reencoded_resized_or_brightened_is_still_a_near_duplicate(
    tmp_path: Path, half_angle: float
) -> None:
    root = fan_dataset(tmp_path / "data", half_angle)
    csv = root / "val/csv_files/fan.csv"
    header, rows = read_csv(csv)
    planted = {}
    for i, name in enumerate(("jpeg75", "half", "x1.5", "brighter", "contrast")):  # copies of train rows 4, 5, ...
        path = f"../Classification/fan/{name}.{'jpg' if name == 'jpeg75' else 'png'}"
        _copies(fan_frame(i + 3, half_angle))[name].save(root / "val/csv_files" / path)
        rows[i]["image_path"] = path
        planted[i + 1] = (name, i + 4)
    write_csv(csv, header, rows)
    report = check_dataset(root)
    found = {p.row: p.message for p in report.problems if p.kind == "leak_near_duplicate"}
    assert sorted(found) == sorted(planted), [p.message for p in report.problems]
    for row, (name, train_row) in planted.items():
        assert f"nearly duplicates train/csv_files/fan.csv row {train_row} " in found[row], (name, found[row])
        similarity = float(found[row].split("similarity ")[1].split(" ")[0])
        assert similarity >= 0.95, (name, found[row])
