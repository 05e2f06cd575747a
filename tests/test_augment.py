"""Training augmentation: counter-based determinism, the baseline's photometric set, geometric consistency."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from usagg.data.datasets import to_model_input
from usagg.engine.augment import Augmenter, Draw, forward_matrix, geometric, map_boxes, map_points
from usagg.engine.batches import TensorSplit
from usagg.spec.models import AugmentationSpec
from usagg.tasktypes import get_task_type

CPU = torch.device("cpu")


def _split(task_type: str, n: int = 8, s: int = 32, augment: Augmenter | None = None) -> TensorSplit:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, s, s), generator=g, dtype=torch.uint8)
    targets = {
        "classification": torch.arange(n) % 2,
        "segmentation": (images > 128).to(torch.uint8),
        "detection": torch.tensor([[0.1, 0.2, 0.5, 0.7]] * n),
        "regression": torch.tensor([[[0.25, 0.3], [0.6, 0.8]]] * n),
    }[task_type]
    hw = torch.tensor([[s, s]] * n)
    return TensorSplit("t", get_task_type(task_type), images, targets, hw, augment=augment)


def _draw(n: int, **fields: object) -> Draw:
    """A hand-made draw: nothing applied unless given."""
    base = {
        "bc": torch.zeros(n, dtype=torch.bool),
        "alpha": torch.ones(n),
        "beta": torch.zeros(n),
        "noise": torch.zeros(n, dtype=torch.bool),
        "noise_std": torch.zeros(n),
        "flip": torch.zeros(n, dtype=torch.bool),
        "geo": torch.zeros(n, dtype=torch.bool),
        "scale": torch.ones(n),
        "angle": torch.zeros(n),
    }
    base.update(fields)
    return Draw(step=0, **base)  # type: ignore[arg-type]


def test_draws_depend_only_on_seed_and_step() -> None:
    a, b = Augmenter(AugmentationSpec(hflip_p=0.5), 7), Augmenter(AugmentationSpec(hflip_p=0.5), 7)
    for step in (0, 1, 1000):
        da, db = a.draw(step, 16), b.draw(step, 16)
        assert all(torch.equal(getattr(da, k), getattr(db, k)) for k in ("bc", "alpha", "noise_std", "flip"))
    assert not torch.equal(a.draw(0, 64).alpha, a.draw(1, 64).alpha)
    assert not torch.equal(a.draw(0, 64).alpha, Augmenter(AugmentationSpec(), 8).draw(0, 64).alpha)
    # a resumed job (a fresh Augmenter) gets the very same batch, noise included
    split_a, split_b = _split("classification", augment=a), _split("classification", augment=b)
    idx = torch.tensor([5, 0, 3, 3, 7, 1, 2, 6])
    for step in (3, 4):
        xa, _ = split_a.batch(idx, CPU, step)
        xb, _ = split_b.batch(idx, CPU, step)
        assert torch.equal(xa, xb)


def test_baseline_leaves_about_72_percent_untouched_and_none_switches_everything_off() -> None:
    aug = Augmenter(AugmentationSpec(), 0)
    touched = torch.cat([aug.draw(step, 100).touched for step in range(200)])
    assert touched.float().mean().item() == pytest.approx(1 - 0.8 * 0.9, abs=0.01)
    d = torch.cat([aug.draw(step, 100).bc for step in range(200)]).float().mean().item()
    assert d == pytest.approx(0.2, abs=0.01)
    assert aug.active and not aug.geometric
    for spec in (AugmentationSpec(preset="none"), AugmentationSpec(brightness_contrast_p=0, noise_p=0)):
        off = Augmenter(spec, 0)
        assert not off.active and not off.draw(0, 50).touched.any()
    split = _split("segmentation", augment=Augmenter(AugmentationSpec(preset="none", hflip_p=1.0), 0))
    idx = torch.tensor([1, 4, 2])
    x_train, y_train = split.batch(idx, CPU, step=0)
    x_eval, y_eval = split.batch(idx, CPU)
    assert torch.equal(x_train, x_eval) and torch.equal(y_train, y_eval)
    assert torch.equal(x_eval, to_model_input(split.images[idx]))


@pytest.mark.parametrize("bad", [{"noise_p": 1.5}, {"noise_std": (0.5, 0.2)}, {"scale_range": (0.0, 1.0)}, {"x": 1}])
def test_settings_are_range_checked(bad: dict) -> None:
    with pytest.raises(ValidationError):
        AugmentationSpec(**bad)


def test_photometric_numbers_follow_the_draw() -> None:
    aug = Augmenter(AugmentationSpec(brightness_contrast_p=1.0, noise_p=0.0), 3)
    d = aug.draw(5, 4)
    img = torch.full((4, 16, 16), 100, dtype=torch.uint8)
    img[:, 0, 0] = 255
    x, _ = aug.apply(img, torch.zeros(4), "label", d)
    want = (img.float() * d.alpha.view(-1, 1, 1) + d.beta.view(-1, 1, 1)).clamp(0, 255)
    assert torch.equal(x, want)
    assert d.alpha.min() >= 0.8 and d.alpha.max() <= 1.2 and d.beta.abs().max() <= 0.2 * 255 + 1e-4

    noisy = Augmenter(AugmentationSpec(brightness_contrast_p=0.0, noise_p=1.0, noise_std=(0.04, 0.06)), 3)
    d = noisy.draw(0, 2)
    rgb = torch.full((2, 3, 64, 64), 128, dtype=torch.uint8)
    x, _ = noisy.apply(rgb, torch.zeros(2), "label", d)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # one noise for all channels
    for i in range(2):
        assert 0.04 * 255 <= d.noise_std[i] <= 0.06 * 255  # small enough that nothing is clipped
        assert (x[i, 0] - 128).std().item() == pytest.approx(d.noise_std[i].item(), rel=0.05)
    assert Augmenter(AugmentationSpec(), 0).draw(0, 100).noise_std.min() >= 0.2 * 255  # the baseline's range
    assert Augmenter(AugmentationSpec(), 0).draw(0, 100).noise_std.max() <= 0.44 * 255
    again, _ = noisy.apply(rgb, torch.zeros(2), "label", d)
    assert torch.equal(x, again)


def test_points_and_boxes_map_through_a_transform_and_back() -> None:
    n = 5
    d = _draw(
        n,
        flip=torch.tensor([True, False, True, False, True]),
        geo=torch.ones(n, dtype=torch.bool),
        scale=torch.tensor([0.9, 1.1, 1.0, 0.95, 1.05]),
        angle=torch.tensor([0.1, -0.2, 0.0, 0.17, -0.05]),
    )
    m = forward_matrix(d)
    pts = torch.rand(n, 3, 2, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    there = map_points(pts, m)
    back = map_points(there, torch.linalg.inv(m))
    torch.testing.assert_close(back, pts, atol=1e-6, rtol=0)
    assert not torch.allclose(there, pts, atol=1e-3)
    # flip and scale keep boxes axis-aligned: a box maps there and back exactly (to rounding)
    flat = _draw(n, flip=d.flip, geo=d.geo, scale=d.scale)
    mf = forward_matrix(flat)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.7]] * n)
    torch.testing.assert_close(map_boxes(map_boxes(boxes, mf), torch.linalg.inv(mf)), boxes, atol=1e-6, rtol=0)
    # a rotated box is the box around the rotated corners, which holds the rotated original corners
    rb = map_boxes(boxes, m)
    corners = map_points(torch.tensor([[[0.1, 0.2], [0.5, 0.2], [0.1, 0.7], [0.5, 0.7]]] * n), m)
    assert (corners >= rb[:, None, :2] - 1e-6).all() and (corners <= rb[:, None, 2:] + 1e-6).all()


@pytest.mark.parametrize(
    "flip,scale,angle", [(True, 1.0, 0.0), (False, 1.2, 0.0), (True, 0.9, 0.3), (False, 1.0, -0.4)]
)
def test_masks_boxes_and_keypoints_move_with_the_image(flip: bool, scale: float, angle: float) -> None:
    """A bright rectangle: after the transform its mask, its box and a marked point still sit on it."""
    s = 64
    img = torch.zeros(1, s, s, dtype=torch.uint8)
    img[0, 20:36, 12:40] = 200  # rows 20..35, columns 12..39: the box (12, 20, 40, 36) / 64 in pixel edges
    img[0, 24:26, 30:32] = 255  # a 2x2 marked point centred at (31, 25) px
    mask = (img > 0).to(torch.uint8)
    d = _draw(1, flip=torch.tensor([flip]), geo=torch.tensor([scale != 1 or angle != 0]), scale=torch.tensor([scale]))
    d = Draw(**{**d.__dict__, "angle": torch.tensor([angle])})
    x, moved_mask = geometric(img.float(), mask, "mask", d)
    assert set(moved_mask.unique().tolist()) <= {0, 1}  # nearest neighbour: no new labels
    bright = x[0] > 100
    agree = (bright == moved_mask[0].bool()).float().mean().item()
    assert agree > 0.97  # pixels and mask moved together (edges may differ by a pixel)
    _, box = geometric(img.float(), torch.tensor([[12 / s, 20 / s, 40 / s, 36 / s]]), "boxes", d)
    ys, xs = torch.nonzero(moved_mask[0], as_tuple=True)
    if angle == 0:  # axis-aligned: the moved box is the moved mask's box (to a pixel)
        want = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / s
        torch.testing.assert_close(box[0], want.float(), atol=1.5 / s, rtol=0)
    else:  # rotated: the box holds the whole moved mask
        assert box[0, 0] * s <= xs.min() + 1 and box[0, 2] * s >= xs.max() and box[0, 1] * s <= ys.min() + 1
    _, pt = geometric(img.float(), torch.tensor([[[31 / s, 25 / s]]]), "points", d)
    peak = torch.nonzero(x[0] == x[0].max()).float().mean(0)  # (row, col) of the marked point
    assert math.hypot(pt[0, 0, 0] * s - (peak[1] + 0.5), pt[0, 0, 1] * s - (peak[0] + 0.5)) < 1.5


def test_only_moved_samples_change_and_batches_keep_their_order() -> None:
    aug = Augmenter(AugmentationSpec(brightness_contrast_p=0.0, noise_p=0.0, hflip_p=0.5, rotate_p=0.3), 11)
    split = _split("regression", n=16, augment=aug)
    idx = torch.arange(16)
    x, y = split.batch(idx, CPU, step=2)
    d = aug.draw(2, 16)
    plain_x, plain_y = split.batch(idx, CPU)
    for i in range(16):
        same = torch.equal(x[i], plain_x[i]) and torch.equal(y[i], plain_y[i])
        assert same == (not bool(d.touched[i])), i
    assert d.touched.any() and not d.touched.all()
