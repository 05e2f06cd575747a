"""Heads: output and prediction shapes for every task type at 64 and 128 px, soft-argmax, box validity, losses."""

from __future__ import annotations

import pytest
import torch

from usagg.model.heads import gaussian_heatmaps, soft_argmax
from usagg.model.losses import box_loss, keypoint_loss
from usagg.model.m2dino import build_model
from usagg.spec.models import ModelSpec, TaskSpec

TASKS = [
    TaskSpec(id="seg", type="segmentation", num_classes=3),
    TaskSpec(id="cls.v1", type="classification", num_classes=4),
    TaskSpec(id="det", type="detection", num_classes=1),
    TaskSpec(id="kp", type="regression", num_classes=5),
]


@pytest.fixture(scope="module", params=["heatmap", "direct"])
def model(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", heads={"keypoints": request.param}, moe={"experts": 4})
    return build_model(spec, TASKS, moe=True).eval()


@pytest.mark.parametrize("size", [64, 128])
def test_every_head_shapes_and_predictions(model, size: int) -> None:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        seg = model(x, "seg")
        assert seg.outputs.shape == (2, 3, size, size)
        p = model.predict(seg.outputs, "seg")
        assert p.dtype == torch.int64 and p.shape == (2, size, size) and p.min() >= 0 and p.max() < 3

        cls = model(x, "cls.v1")
        p = model.predict(cls.outputs, "cls.v1")
        assert p.dtype == torch.float32 and p.shape == (2, 4)
        assert torch.allclose(p.sum(1), torch.ones(2))

        det = model(x, "det")
        p = model.predict(det.outputs, "det")
        assert p.dtype == torch.float32 and p.shape == (2, 4)
        assert (p >= 0).all() and (p <= 1).all()
        assert (p[:, 2] >= p[:, 0]).all() and (p[:, 3] >= p[:, 1]).all()

        kp = model(x, "kp")
        p = model.predict(kp.outputs, "kp")
        assert p.dtype == torch.float32 and p.shape == (2, 5, 2)
        assert (p >= 0).all() and (p <= 1).all()
        assert seg.expert_usage.shape == (2, 4)


def test_segmentation_on_grids_smp_dpt_cannot_fuse(model) -> None:
    # 112 px gives a 7x7 token grid: smp's fixed x2 fusion would mismatch; the head resizes instead
    with torch.no_grad():
        out = model(torch.randn(1, 3, 112, 80), "seg")
    assert out.outputs.shape == (1, 3, 112, 80)


def test_soft_argmax_finds_a_peak_at_pixel_centres() -> None:
    logits = torch.full((1, 2, 8, 16), -1e4)
    logits[0, 0, 2, 5] = 0.0  # row 2, column 5
    logits[0, 1, 7, 0] = 0.0
    pts = soft_argmax(logits)
    assert torch.allclose(pts[0, 0], torch.tensor([5.5 / 16, 2.5 / 8]))
    assert torch.allclose(pts[0, 1], torch.tensor([0.5 / 16, 7.5 / 8]))
    g = gaussian_heatmaps(torch.tensor([[[0.3, 0.7]]]), (32, 32), 1.0)
    assert torch.allclose(g.sum(), torch.tensor(1.0))
    assert torch.allclose(soft_argmax(g.log()), torch.tensor([[[0.3, 0.7]]]), atol=1e-3)


def test_box_and_keypoint_losses_vanish_at_the_target() -> None:
    t = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]])
    assert box_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    shifted = t + torch.tensor([0.1, 0.0, 0.1, 0.0])
    assert box_loss(shifted.clamp(0, 1), t).item() > 0.1
    k = torch.rand(2, 3, 2)
    assert keypoint_loss(k, k).item() == 0.0
    assert keypoint_loss(k + 0.1, k).item() == pytest.approx(0.1, rel=1e-4)
