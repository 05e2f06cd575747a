"""Issue 24.5: the segmentation loss at a reduced stride and the keypoint loss without target maps.

Checked against independent computations: smp's DiceLoss + cross-entropy at full size (the loss
stride 1 keeps), the keypoint loss as it was written before (2-D Gaussian maps, two softmaxes),
and the job ids of the shipped demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from usagg.data.synth.sample import make_sample
from usagg.errors import SpecError
from usagg.model.heads import DPTSegmentationHead, KeypointHeatmapHead, gaussian_heatmaps
from usagg.model.losses import area_class_fractions, reduced_dice_ce_loss
from usagg.model.m2dino import build_model
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.spec.models import ModelSpec, TaskSpec

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def synth_masks(task: str, n: int = 8) -> torch.Tensor:
    """Masks of the synthetic benchmark (what the demo trains on), int64 [n, 64, 64]."""
    return torch.from_numpy(np.stack([make_sample(task, "train", i, 0, SIZE).mask for i in range(n)])).long()


def full_size_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The stride-1 loss, written from smp and torch directly: Dice (multiclass, from logits) + cross-entropy."""
    return DiceLoss("multiclass", from_logits=True)(logits, masks) + F.cross_entropy(logits, masks)


@pytest.mark.parametrize(("task", "classes"), [("fetal_head", 2), ("cardiac_chambers", 4)])
@pytest.mark.parametrize("stride", [2, 4])
def test_reduced_loss_is_the_full_loss_on_blockwise_constant_logits(task: str, classes: int, stride: int) -> None:
    """Logits constant on stride x stride cells: every sum of the full-size loss is stride² times the reduced
    loss's, so value and gradient agree to float rounding (the reduced loss's definition, checked)."""
    masks = synth_masks(task)
    assert int(masks.max()) == classes - 1
    torch.manual_seed(0)
    z = (torch.randn(8, classes, SIZE // stride, SIZE // stride) * 2).requires_grad_(True)
    full = full_size_loss(z.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3), masks)
    (g_full,) = torch.autograd.grad(full, z)
    reduced = reduced_dice_ce_loss(z, masks)
    (g_reduced,) = torch.autograd.grad(reduced, z)
    assert reduced.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(g_reduced, g_full, rtol=1e-4, atol=1e-7)


def test_area_fractions_are_exact_class_shares() -> None:
    masks = synth_masks("cardiac_chambers")
    q = area_class_fractions(masks, 4, (16, 16))
    by_hand = F.one_hot(masks, 4).permute(0, 3, 1, 2).double().reshape(8, 4, 16, 4, 16, 4).mean(dim=(3, 5))
    assert q.dtype == torch.float32 and torch.equal(q.double(), by_hand)


def seg_model(stride: int):
    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", heads={"decoder_channels": 16, "seg_loss_stride": stride})
    return build_model(spec, [TaskSpec(id="seg", type="segmentation", num_classes=2)], moe=False)


def images(n: int = 8) -> torch.Tensor:
    x = np.stack([make_sample("fetal_head", "train", i, 0, SIZE).image for i in range(n)]).astype(np.float32) / 255
    return torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1).contiguous()


def train_full_size(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """`steps` AdamW steps of the stride-1 loss on one batch (the decoder's logits sharpen as they would)."""
    head = model.head("seg")
    head.loss_stride = 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        out = model(x, "seg", y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()


@pytest.mark.parametrize(
    ("steps", "stride", "max_rel", "min_cos"),
    [
        (0, 2, 0.01, 0.999),
        (0, 4, 0.01, 0.995),
        # 60 training steps of a decoder at full size and at the stride first: about 2.4 s each
        pytest.param(60, 2, 0.01, 0.995, marks=pytest.mark.slow),
        pytest.param(60, 4, 0.06, 0.98, marks=pytest.mark.slow),
    ],
)
def test_decoder_loss_and_gradient_track_the_full_size_ones(steps: int, stride: int, max_rel: float, min_cos: float):
    """The real DPT head on synthetic fetal-head scans and masks, in training mode, at initialisation and after
    60 full-size steps (loss 1.24 -> 0.47): the same weights give the stride-1 loss and the reduced one; values
    within max_rel, head-gradient directions within min_cos (cosine). Further into an 8-image overfit the two
    part (docs/benchmarks.md, "Heads and losses (issue 24.5)")."""
    torch.manual_seed(0)
    model = seg_model(1).train()
    x, y = images(), synth_masks("fetal_head")
    train_full_size(model, x, y, steps)
    head = model.head("seg")
    assert isinstance(head, DPTSegmentationHead)
    grads, losses = {}, {}
    params = [p for p in head.parameters() if p.requires_grad]
    for s in (1, stride):
        head.loss_stride = s
        torch.manual_seed(0)
        out = model(x, "seg", y)
        assert out.outputs.shape[-1] == SIZE // s
        losses[s] = out.loss
        grads[s] = torch.cat([g.flatten() for g in torch.autograd.grad(out.loss, params)])
    rel = abs(losses[stride].item() - losses[1].item()) / losses[1].item()
    cos = F.cosine_similarity(grads[stride], grads[1], dim=0).item()
    assert rel < max_rel and cos > min_cos, (rel, cos)


def test_head_outputs_by_mode_and_stride() -> None:
    """Training mode at stride 2 gives the classifier's own grid; eval mode gives full-size logits, the same as
    stride 1 with the same weights (predictions and metrics do not depend on the stride)."""
    m1, m4 = seg_model(1), seg_model(2)
    m4.load_state_dict(m1.state_dict())
    x, y = images(4), synth_masks("fetal_head", 4)
    m1.eval(), m4.eval()
    with torch.no_grad():
        e1, e4 = m1(x, "seg"), m4(x, "seg")
    assert e4.outputs.shape == (4, 2, SIZE, SIZE) and torch.equal(e1.outputs, e4.outputs)
    m1.train(), m4.train()
    with torch.no_grad():
        torch.manual_seed(0)
        t1 = m1(x, "seg", y)
        torch.manual_seed(0)  # the same draws of anything random in training mode
        t4 = m4(x, "seg", y)
    assert t1.outputs.shape == (4, 2, SIZE, SIZE) and t4.outputs.shape == (4, 2, SIZE // 2, SIZE // 2)
    assert t1.loss is not None and t1.loss.item() == pytest.approx(full_size_loss(t1.outputs, y).item(), rel=1e-6)
    up = F.interpolate(t4.outputs, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert torch.allclose(up, t1.outputs, atol=1e-5)  # stride 1 is stride 2's logits upsampled


def old_keypoint_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The heatmap loss as written before issue 24.5: 2-D target maps, clamped log, a second softmax."""
    h, w = outputs.shape[-2:]
    logp = outputs.float().flatten(2).log_softmax(dim=-1)
    t = targets.float()
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    dx = (xs[None, None, None, :] - t[..., 0, None, None]) * w
    dy = (ys[None, None, :, None] - t[..., 1, None, None]) * h
    g = torch.exp(-(dx**2 + dy**2) / 2)
    q = (g / g.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)).flatten(2)
    kl = (q * (q.clamp_min(1e-12).log() - logp)).sum(-1).mean()
    p = outputs.float().flatten(2).softmax(dim=-1).view(outputs.shape)
    xy = torch.stack([(p.sum(dim=2) * xs).sum(-1), (p.sum(dim=3) * ys).sum(-1)], dim=-1)
    return F.l1_loss(xy, t) + KeypointHeatmapHead.KL_WEIGHT * kl


@pytest.mark.parametrize("hw", [(16, 16), (28, 20)])
def test_keypoint_loss_equals_the_map_built_one(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(4, 3, *hw) * 2).requires_grad_(True)
    points = torch.rand(4, 3, 2)
    points[0, 0] = torch.tensor([0.0, 1.0])  # on the border
    head = KeypointHeatmapHead(8, 1, 3, 32)
    new, old = head.loss(logits, points), old_keypoint_loss(logits, points)
    (g_new,) = torch.autograd.grad(new, logits)
    (g_old,) = torch.autograd.grad(old, logits)
    assert new.item() == pytest.approx(old.item(), rel=1e-5)
    assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-7)
    maps = gaussian_heatmaps(points, hw, 1.0)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(4, 3))


def test_keypoint_grids_built_under_inference_mode_serve_training() -> None:
    head = KeypointHeatmapHead(8, 1, 2, 32)
    with torch.inference_mode():
        head.loss(torch.randn(1, 2, 9, 7), torch.rand(1, 2, 2))  # first use of the 9 x 7 grids
    logits = torch.randn(1, 2, 9, 7, requires_grad=True)
    head.loss(logits, torch.rand(1, 2, 2)).backward()
    assert logits.grad is not None


def test_job_ids_move_only_for_segmentation_jobs() -> None:
    """Default 1 keeps every id (tests/test_plan.py records them); 2 moves exactly the jobs with a segmentation task."""
    demo = REPO / "studies/demo.yaml"
    base = {j.id: j for j in plan(load_study(demo))}
    reduced = {j.id: j for j in plan(load_study(demo, ["model.heads.seg_loss_stride=2"]))}
    explicit = {j.id for j in plan(load_study(demo, ["model.heads.seg_loss_stride=1"]))}
    assert explicit == set(base)
    kept = set(base) & set(reduced)
    assert kept and kept != set(base)
    for job_id, job in base.items():
        has_seg = any(t.type == "segmentation" for t in job.tasks)
        assert (job_id not in kept) == has_seg, job_id


@pytest.mark.parametrize(("value", "why"), [("3", "input should be 1, 2 or 4"), ("true", "got true")])
def test_a_stride_that_is_not_offered_is_a_spec_error(value: str, why: str) -> None:
    with pytest.raises(SpecError, match=f"seg_loss_stride: .*{why}"):
        load_study(REPO / "studies/demo.yaml", [f"model.heads.seg_loss_stride={value}"])


def test_full_size_loss_shares_one_log_softmax_with_the_same_value() -> None:
    """Stride 1's DiceCELoss: the value of smp's DiceLoss (from logits) + cross-entropy bit for bit, the gradient
    to float rounding, with one log-softmax instead of two (and no float32 copy of bf16 logits)."""
    from usagg.model.losses import DiceCELoss

    masks = synth_masks("cardiac_chambers")
    torch.manual_seed(0)
    z = (torch.randn(8, 4, SIZE, SIZE) * 3).requires_grad_(True)
    new, old = DiceCELoss()(z, masks), full_size_loss(z, masks)
    assert torch.equal(new, old)
    (g_new,) = torch.autograd.grad(new, z)
    (g_old,) = torch.autograd.grad(old, z)
    assert torch.allclose(g_new, g_old, rtol=1e-5, atol=1e-9)
    zb = z.detach().bfloat16()
    assert torch.equal(DiceCELoss()(zb, masks), full_size_loss(zb.float(), masks))
