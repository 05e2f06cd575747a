"""Task-conditioned MoE: top-k routing, batched dispatch (grouped GEMMs, slots, loop), balance loss, task dependence,
MoE off = dense; and the sync-free losses the device path relies on (GIoU equals torchvision's, bit for bit)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import Mlp

from usagg.model.backbones import create_vit
from usagg.model.losses import box_loss, generalized_box_iou_loss
from usagg.model.m2dino import build_model
from usagg.model.moe import MoEBlock, TaskMoE, expert_counts, grouped_mm_is_sync_free, load_balancing_loss
from usagg.spec.models import ModelSpec, TaskSpec

TASKS = [
    TaskSpec(id="a", type="classification", num_classes=2),
    TaskSpec(id="b", type="classification", num_classes=2),
]


def _moe(experts: int = 8, top_k: int = 2, router_input: str = "token_task", noise: float = 0.05) -> TaskMoE:
    torch.manual_seed(0)
    return TaskMoE(Mlp(32, 64), 32, 16, experts, top_k, router_input, noise)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_topk_routing_picks_k_distinct_experts_with_unit_weights(top_k: int) -> None:
    moe = _moe(top_k=top_k)
    x, t = torch.randn(50, 32), torch.randn(50, 16)
    r = moe.route(x, t)
    assert r.experts.shape == (50, top_k) and r.weights.shape == (50, top_k)
    assert all(len(set(row)) == top_k for row in r.experts.tolist())
    assert torch.allclose(r.weights.sum(-1), torch.ones(50))
    # the chosen experts are the k most probable, weighted by their renormalised probabilities
    best = r.probs.argsort(dim=-1, descending=True)[:, :top_k]
    assert torch.equal(r.experts, best)
    chosen = r.probs.gather(1, r.experts)
    assert torch.allclose(r.weights, chosen / chosen.sum(-1, keepdim=True))


def test_batched_dispatch_equals_per_token_reference() -> None:
    moe = _moe()
    x, task = torch.randn(3, 7, 32), torch.randn(3, 16)
    out, aux, counts = moe(x, task)
    flat = x.reshape(-1, 32)
    r = moe.route(flat, task.repeat_interleave(7, dim=0))
    ref = torch.stack(
        [
            sum(w * moe.experts.expert(int(e))(tok[None])[0] for e, w in zip(ei, wi, strict=True))
            for tok, ei, wi in zip(flat, r.experts, r.weights, strict=True)
        ]
    )
    assert torch.allclose(out.reshape(-1, 32), ref, atol=1e-6)
    assert counts.dtype == torch.int64 and counts.sum().item() == 21 * 2
    assert torch.equal(counts, torch.bincount(r.experts.reshape(-1), minlength=8))
    assert aux.ndim == 0 and aux.item() >= 1.0 - 1e-6


def test_balance_loss_is_one_when_uniform_and_e_when_collapsed() -> None:
    e = 4
    uniform = torch.full((8, e), 1 / e)
    spread = torch.arange(8).remainder(e)[:, None]
    assert load_balancing_loss(uniform, spread, e).item() == pytest.approx(1.0)
    collapsed = torch.zeros(8, e)
    collapsed[:, 0] = 1
    assert load_balancing_loss(collapsed, torch.zeros(8, 1, dtype=torch.long), e).item() == pytest.approx(e)


def test_experts_start_from_dense_mlp_with_relative_noise() -> None:
    torch.manual_seed(0)
    mlp = Mlp(32, 64)
    moe = TaskMoE(mlp, 32, 16, experts=4, top_k=2, init_noise=0.01)
    w = mlp.fc1.weight
    for e in range(4):
        diff = moe.experts.expert(e).fc1.weight - w
        rel = (diff.pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item()
        assert 0.005 < rel < 0.02
    assert not torch.equal(moe.experts.fc1.weight[0], moe.experts.fc1.weight[1])
    exact = TaskMoE(mlp, 32, 16, experts=4, top_k=2, init_noise=0.0)
    x = torch.randn(2, 5, 32)
    out, _, _ = exact(x, torch.randn(2, 16))
    assert torch.allclose(out, mlp(x), atol=1e-6)  # identical experts, weights summing to 1: the dense MLP


def test_moe_block_with_identical_experts_equals_dense_block() -> None:
    torch.manual_seed(0)
    vit = create_vit("dinov3_test").eval()
    block = vit.blocks[3]
    x = torch.randn(2, 21, 192)
    rope = vit.rope.get_embed(shape=(4, 4))
    with torch.no_grad():
        dense = block(x, rope=rope)
        moe_block = MoEBlock(block, TaskMoE(block.mlp, 192, 192, 8, 2, "token_task", 0.0))
        got, _, counts = moe_block(x, rope, torch.randn(2, 192))
    assert torch.allclose(got, dense, atol=1e-6)
    assert counts.sum().item() == 2 * 21 * 2


def test_task_only_router_sends_a_whole_task_to_the_same_experts() -> None:
    moe = _moe(router_input="task")
    emb = torch.randn(2, 16) * 5
    picks = []
    for t in range(2):
        r = moe.route(torch.randn(30, 32), emb[t].expand(30, 16))
        assert (r.experts == r.experts[0]).all()
        picks.append(set(r.experts[0].tolist()))
    assert picks[0] != picks[1]


def test_different_tasks_route_differently_in_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="dinov3_test"), TASKS, moe=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ua = model(x, "a").expert_usage
        ub = model(x, "b").expert_usage
        ua2 = model(x, "a").expert_usage
    assert ua.dtype == torch.int64 and ua.shape == (2, 8)  # blocks 2 and 3 of 4, 8 experts
    assert (ua.sum(dim=1) == 2 * 21 * 2).all()  # every token (16 patches + 5 prefix) to k=2 experts
    assert torch.equal(ua, ua2)
    assert not torch.equal(ua, ub)


def test_moe_off_is_the_dense_timm_model() -> None:
    torch.manual_seed(3)
    model = build_model(ModelSpec(backbone="dinov3_test"), TASKS, moe=False).eval()
    torch.manual_seed(3)
    plain = create_vit("dinov3_test").eval()
    assert all(type(b).__name__ == "EvaBlock" for b in model.encoder.vit.blocks)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, "a")
        feats = model.encoder(x).features
        ref = plain.forward_intermediates(x, indices=[0, 1, 2, 3], norm=True, intermediates_only=True)
    assert out.expert_usage is None and out.aux_loss.ndim == 0 and out.aux_loss.item() == 0.0
    for got, want in zip(feats.maps, ref, strict=True):
        assert torch.equal(got, want)


def test_moe_with_zero_noise_matches_dense_features() -> None:
    spec = ModelSpec(backbone="dinov3_test", moe={"init_noise": 0.0})
    torch.manual_seed(5)
    dense = build_model(spec, TASKS, moe=False).eval()
    torch.manual_seed(5)
    moe = build_model(spec, TASKS, moe=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fd = dense.encoder(x).features.maps
        fm = moe.encoder(x, moe.task_embed(torch.zeros(2, dtype=torch.long))).features.maps
    for a, b in zip(fd, fm, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_aux_loss_is_weighted_mean_over_moe_blocks() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", moe={"aux_loss_weight": 0.5, "experts": 4, "top_k": 1})
    model = build_model(spec, TASKS, moe=True)
    x = torch.randn(2, 3, 64, 64)
    out = model(x, "a", torch.tensor([0, 1]))
    emb = model.task_embed(torch.zeros(2, dtype=torch.long))
    raw = model.encoder(x, emb).aux_losses
    assert out.aux_loss.item() == pytest.approx(0.5 * torch.stack(raw).mean().item(), rel=1e-5)
    task_only = model.head("a").loss(out.outputs, torch.tensor([0, 1]))
    assert out.loss.item() == pytest.approx(task_only.item() + out.aux_loss.item(), rel=1e-5)


def _grads(module: torch.nn.Module, x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, balance loss, counts, input grad and every parameter grad of one fwd+bwd."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out, aux, counts = module(x, task)
    (out.pow(2).sum() + aux).backward()
    return (out.detach(), aux.detach(), counts, x.grad, *(p.grad for p in module.parameters()))


@pytest.mark.parametrize("mode", ["grouped", "grouped-padded", "slots"])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
def test_grouped_dispatch_gives_the_loop_numbers(top_k: int, mode: str) -> None:
    """Packed groups (the CPU's), groups padded to GROUP_ALIGN rows (CUDA's) and slots, top-k up to every expert."""
    moe = _moe(experts=4, top_k=top_k)
    x, task = torch.randn(4, 37, 32), torch.randn(4, 16)
    moe.dispatch = "loop"
    loop = _grads(moe, x, task)
    moe.dispatch = mode.removesuffix("-padded")  # type: ignore[assignment]
    moe.pad_groups = mode.endswith("-padded")
    grouped = _grads(moe, x, task)
    assert torch.equal(loop[1], grouped[1]) and torch.equal(loop[2], grouped[2])  # balance loss and counts: exact
    for a, b in zip(loop, grouped, strict=True):
        assert a is not None and b is not None
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["grouped", "grouped-padded", "slots"])
def test_dispatch_backward_gathers_and_never_accumulates_by_index(mode: str) -> None:
    """The gradient of dispatch and combine is read by gathers and the biases' by a matrix product: no
    index_add_ / index_put_(accumulate) / scatter_add, whose CUDA kernels pile rows up with atomics (the top kernel
    of an H100 AU step, and nondeterministic); two backward passes give the same bits."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.append(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    moe = _moe(top_k=2)
    moe.dispatch = mode.removesuffix("-padded")  # type: ignore[assignment]
    moe.pad_groups = mode.endswith("-padded")
    x, task = torch.randn(3, 29, 32, requires_grad=True), torch.randn(3, 16)
    grads = []
    for _ in range(2):
        moe.zero_grad(set_to_none=True)
        x.grad = None
        out, aux, _ = moe(x, task)
        ops = Ops()
        with ops:
            (out.pow(2).sum() + aux).backward()
        assert not {"index_add", "index_add_", "index_put", "index_put_", "scatter_add", "scatter_add_"} & set(
            ops.names
        ), sorted(set(ops.names))
        assert "index_select" in ops.names  # the gathers that replace them
        grads.append([x.grad.clone(), *(p.grad.clone() for p in moe.parameters() if p.grad is not None)])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_grouped_dispatch_with_an_idle_expert() -> None:
    moe = _moe(experts=4, top_k=1, router_input="task")
    task = torch.randn(1, 16).expand(3, 16) * 5  # one task: every token goes to the same expert
    x = torch.randn(3, 9, 32)
    moe.dispatch = "loop"
    loop = _grads(moe, x, task)
    moe.dispatch = "grouped"
    grouped = _grads(moe, x, task)
    assert sorted(grouped[2].tolist()) == [0, 0, 0, 27]
    assert torch.allclose(loop[0], grouped[0], atol=1e-6)
    assert torch.allclose(loop[3], grouped[3], atol=1e-6)


def test_grouped_dispatch_under_bf16_autocast_matches_the_loop() -> None:
    moe = _moe()
    x, task = torch.randn(2, 21, 32), torch.randn(2, 16)
    outs = {}
    for mode in ("loop", "grouped"):
        moe.dispatch = mode  # type: ignore[assignment]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs[mode] = moe(x, task)[0].float()
    assert torch.allclose(outs["loop"], outs["grouped"], atol=3e-2)


def test_bf16_dispatch_adds_a_tokens_k_gradients_in_float32() -> None:
    """Under bf16 autocast the buffer is bf16 but the tokens float32: each token's k gradient rows are summed in
    float32 (cast after the gather), as the per-expert loop sums them, so slots give the loop's gradients to the bit
    (summed in bf16 they were 3e-3 apart)."""
    moe = _moe(experts=4, top_k=2)
    x, task = torch.randn(3, 29, 32), torch.randn(3, 16)
    grads = {}
    for mode in ("loop", "slots"):
        moe.dispatch = mode  # type: ignore[assignment]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads[mode] = _grads(moe, x, task)
    assert grads["slots"][3].dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(grads["loop"], grads["slots"], strict=True))


def test_auto_dispatch_groups_on_the_cpu_and_refuses_unstackable_experts() -> None:
    moe = _moe()
    assert moe.dispatch == "auto" and moe.groupable
    assert moe.use_grouped(torch.randn(4, 32))  # the CPU: grouped GEMMs, no sync to speak of
    assert grouped_mm_is_sync_free(torch.device("cpu"), torch.bfloat16)
    odd = TaskMoE(Mlp(30, 60), 30, 16, 4, 2)  # type: ignore[arg-type]
    assert not odd.groupable and odd.use_grouped(torch.randn(4, 30))  # alignment matters on CUDA only
    with pytest.raises(ValueError, match="without norm or dropout"):
        TaskMoE(Mlp(32, 64, drop=0.1), 32, 16, 4, 2)  # type: ignore[arg-type]


def test_expert_counts_equal_bincount_and_keep_the_balance_loss() -> None:
    torch.manual_seed(1)
    experts = torch.randint(0, 6, (40, 2))
    counts = expert_counts(experts, 8)
    assert counts.dtype == torch.int64 and counts.shape == (8,)
    assert torch.equal(counts, torch.bincount(experts.reshape(-1), minlength=8))
    probs = torch.rand(40, 8).softmax(-1)
    f = torch.bincount(experts.reshape(-1), minlength=8).float() / experts.numel()
    assert torch.equal(load_balancing_loss(probs, experts, 8), 8 * (f * probs.mean(dim=0)).sum())


def test_model_state_dict_stacks_the_experts() -> None:
    model = build_model(ModelSpec(backbone="dinov3_test"), TASKS, moe=True)
    state = {k: v for k, v in model.state_dict().items() if ".mlp.experts." in k}
    assert len(state) == 2 * 4  # 2 MoE blocks x (fc1, fc2) x (weight, bias)
    assert state["encoder.vit.blocks.2.mlp.experts.fc1.weight"].shape == (8, 768, 192)
    assert state["encoder.vit.blocks.3.mlp.experts.fc2.bias"].shape == (8, 192)


def _random_boxes(n: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    a = torch.rand(n, 4, dtype=dtype, generator=gen)
    x1, y1 = a[:, 0] * 0.7, a[:, 1] * 0.7
    return torch.stack([x1, y1, x1 + a[:, 2] * 0.3, y1 + a[:, 3] * 0.3], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_giou_loss_equals_torchvision_bit_for_bit(dtype: torch.dtype) -> None:
    from torchvision.ops import generalized_box_iou_loss as torchvision_giou

    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = 1 + trial % 17
        pred, target = _random_boxes(n, dtype, gen), _random_boxes(n, dtype, gen)
        if trial % 3 == 0:
            target[: n // 2] = pred[: n // 2]  # identical boxes
        if trial % 4 == 0:
            target += 0.6  # mostly disjoint: no intersection, the enclosing-box term only
        p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
        want = torchvision_giou(p1, target, reduction="mean")
        got = generalized_box_iou_loss(p2, target)
        want.backward()
        got.backward()
        assert torch.equal(got, want) and torch.equal(p2.grad, p1.grad)
    disjoint = box_loss(torch.tensor([[0.0, 0.0, 0.1, 0.1]]), torch.tensor([[0.5, 0.5, 0.6, 0.6]]))
    assert disjoint.item() == pytest.approx(5 * 0.5 + 2 * (1 + (0.36 - 0.02) / 0.36), rel=1e-5)


def test_without_a_grouped_gemm_in_torch_dispatch_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older torch has neither `F.grouped_mm` nor `torch._grouped_mm`: never grouped, and CUDA is not even asked."""
    from usagg.model import moe

    monkeypatch.setattr(moe, "GROUPED_MM", None)
    assert not moe.grouped_mm_is_sync_free(torch.device("cuda"), torch.bfloat16)
