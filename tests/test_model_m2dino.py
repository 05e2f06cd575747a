"""M2DINO end to end: gradients reach exactly the trainable parameters, save/reload, param groups, overfitting."""

from __future__ import annotations

import pytest
import torch

from usagg.model.m2dino import build_model
from usagg.spec.models import ModelSpec, TaskSpec

TASKS = [
    TaskSpec(id="seg", type="segmentation", num_classes=2),
    TaskSpec(id="cls", type="classification", num_classes=2),
    TaskSpec(id="det", type="detection", num_classes=1),
    TaskSpec(id="kp", type="regression", num_classes=2),
]


def _toy(n: int = 4, s: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bright rectangles on noise; targets derived from them, so every task is learnable."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(n, 3, s, s, generator=g) * 0.3
    masks = torch.zeros(n, s, s, dtype=torch.long)
    boxes = []
    for i in range(n):
        x1, y1 = torch.randint(0, s // 2, (2,), generator=g).tolist()
        w, h = torch.randint(s // 4, s // 2, (2,), generator=g).tolist()
        imgs[i, :, y1 : y1 + h, x1 : x1 + w] += 1.5
        masks[i, y1 : y1 + h, x1 : x1 + w] = 1
        boxes.append([x1, y1, x1 + w, y1 + h])
    b = torch.tensor(boxes, dtype=torch.float32) / s
    targets = {
        "seg": masks,
        "cls": torch.arange(n) % 2,
        "det": b,
        "kp": torch.stack([b[:, :2], b[:, 2:]], dim=1),
    }
    return imgs, targets


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_gradients_reach_exactly_the_trainable_parameters() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="dinov3_test", moe={"experts": 4}), TASKS, moe=True)
    imgs, targets = _toy(2)
    total = sum(model(imgs, t, targets[t]).loss for t in targets)
    total.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert with_grad == trainable
    assert all(model.get_parameter(n).grad is None for n in frozen)
    assert any(n.startswith("encoder.vit.patch_embed") for n in frozen)
    assert any(".mlp.experts." in n for n in trainable) and "task_embed.weight" in trainable
    groups = model.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert {id(p) for p in groups["heads"]} == {id(p) for p in model.heads.parameters()} | {id(model.task_embed.weight)}
    counts = model.trainable_counts()
    assert counts["moe"] == sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n or "router" in n)
    assert counts["encoder_trainable"] + counts["moe"] == sum(p.numel() for p in groups["encoder"])


@pytest.mark.slow  # over a second: out of `make test-fast`
@pytest.mark.parametrize("moe", [True, False])
def test_state_dict_round_trip_gives_identical_outputs(tmp_path, moe: bool) -> None:
    spec = ModelSpec(backbone="dinov3_test", moe={"experts": 4})
    torch.manual_seed(1)
    model = build_model(spec, TASKS, moe=moe).eval()
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(2)
    other = build_model(spec, TASKS, moe=moe).eval()
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for t in ("seg", "cls", "det", "kp"):
            a, b = model(x, t), other(x, t)
            assert torch.equal(a.outputs, b.outputs), t
            if moe:
                assert torch.equal(a.expert_usage, b.expert_usage)


def test_unknown_task_and_loss_without_targets() -> None:
    model = build_model(ModelSpec(backbone="dinov3_test"), TASKS[:1], moe=False)
    out = model(torch.randn(1, 3, 64, 64), "seg")
    assert out.loss is None and out.aux_loss.item() == 0.0
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        model(torch.randn(1, 3, 64, 64), "nope")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "keypoints"), [("seg", ""), ("cls", ""), ("det", ""), ("kp", "heatmap"), ("kp", "direct")]
)
def test_tiny_model_overfits_a_handful_of_images(task: str, keypoints: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", moe={"experts": 4}, heads={"keypoints": keypoints or "heatmap"})
    model = build_model(spec, [t for t in TASKS if t.id == task], moe=True)
    imgs, targets = _toy()
    groups = model.param_groups()
    opt = torch.optim.AdamW([{"params": groups["encoder"], "lr": 1e-3}, {"params": groups["heads"], "lr": 3e-3}])
    losses = []
    for _ in range(80):
        out = model(imgs, task, targets[task])
        losses.append((out.loss - out.aux_loss).item())
        if losses[-1] <= losses[0] / 10:
            break
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert losses[-1] <= losses[0] / 10, f"{task}: {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"
