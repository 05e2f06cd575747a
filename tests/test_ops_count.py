"""Issue 24 (lean steps): gather-only MoE dispatch against the per-expert formulation it replaced, the per-expert
state-dict layout still loading, fewer torch operator calls per step, and best weights kept in host memory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch.utils._python_dispatch import TorchDispatchMode

from tests.tiny_study import MALIGNANCY, write_tiny_study
from usagg import tensorbytes
from usagg.engine import checkpoint
from usagg.engine.bestweights import BestWeights
from usagg.model.m2dino import build_model
from usagg.model.moe import TaskMoE
from usagg.spec.models import ModelSpec, TaskSpec

E, D, H, T = 4, 32, 64, 16


class CountOps(TorchDispatchMode):
    """Counts every aten operator call made under it, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _per_expert_state(seed: int) -> dict[str, torch.Tensor]:
    """A TaskMoE state dict in the layout before issue 24: one Mlp per expert, keys experts.<e>.fc1.weight..."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for e in range(E):
        for name, shape in (("fc1", (H, D)), ("fc2", (D, H))):
            state[f"experts.{e}.{name}.weight"] = torch.randn(*shape, generator=gen) / shape[1] ** 0.5
            state[f"experts.{e}.{name}.bias"] = torch.randn(shape[0], generator=gen) * 0.1
    state["router.weight"] = torch.randn(E, D + T, generator=gen)
    state["router.bias"] = torch.randn(E, generator=gen) * 0.1
    return state


def _old_dispatch(state: dict[str, torch.Tensor], x: torch.Tensor, task: torch.Tensor, k: int) -> torch.Tensor:
    """The formulation before issue 24, from first principles: route (float32 softmax, top-k, renormalised), then
    per expert gather its tokens, run that expert's own Mlp, and index_add the weighted outputs into place."""
    b, n, d = x.shape
    flat = x.reshape(b * n, d)
    tasks = task[:, None, :].expand(b, n, T).reshape(b * n, T)
    logits = F.linear(torch.cat([flat, tasks], -1), state["router.weight"], state["router.bias"])
    top_p, top_i = logits.float().softmax(-1).topk(k, dim=-1)
    weights = top_p / top_p.sum(-1, keepdim=True)
    out = torch.zeros_like(flat)
    for e in range(E):
        token, slot = torch.nonzero(top_i == e, as_tuple=True)
        if not len(token):
            continue
        w = {name: state[f"experts.{e}.{name}"] for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
        h = F.gelu(F.linear(flat.index_select(0, token), w["fc1.weight"], w["fc1.bias"]))  # timm Mlp: fc1, GELU, fc2
        y = F.linear(h, w["fc2.weight"], w["fc2.bias"])
        out.index_add_(0, token, (y * weights[token, slot][:, None].to(y.dtype)).to(out.dtype))
    return out.reshape(b, n, d)


def _loaded(state: dict[str, torch.Tensor], k: int) -> TaskMoE:
    moe = TaskMoE(Mlp(D, H), D, T, E, k, "token_task", 0.0)  # type: ignore[arg-type]
    moe.load_state_dict(state)  # per-expert keys: the pre-hook stacks them
    return moe


def test_per_expert_state_dicts_load_stacked() -> None:
    state = _per_expert_state(0)
    moe = _loaded(dict(state), 2)
    assert moe.experts.fc1.weight.shape == (E, H, D) and moe.experts.fc2.bias.shape == (E, D)
    for e in range(E):
        assert torch.equal(moe.experts.fc1.weight[e], state[f"experts.{e}.fc1.weight"])
        assert torch.equal(moe.experts.fc2.bias[e], state[f"experts.{e}.fc2.bias"])
    # a whole model: its state dict written out per expert loads back into a fresh model, equal tensor for tensor
    tasks = [TaskSpec(id="a", type="classification", num_classes=2)]
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="dinov3_test", moe={"experts": E}), tasks, moe=True)
    old: dict[str, Any] = {}
    for key, v in model.state_dict().items():
        if ".mlp.experts." in key:
            head, tail = key.split(".mlp.experts.")
            old.update({f"{head}.mlp.experts.{e}.{tail}": v[e].clone() for e in range(E)})
        else:
            old[key] = v.clone()
    torch.manual_seed(1)
    fresh = build_model(ModelSpec(backbone="dinov3_test", moe={"experts": E}), tasks, moe=True)
    fresh.load_state_dict(old)
    assert all(torch.equal(v, fresh.state_dict()[key]) for key, v in model.state_dict().items())


@pytest.mark.parametrize("layout", ["packed", "padded", "slots"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_dispatch_equals_the_per_expert_formulation_in_fp32(layout: str, k: int) -> None:
    state = _per_expert_state(k)
    moe = _loaded(dict(state), k)
    moe.dispatch = "slots" if layout == "slots" else "grouped"
    moe.pad_groups = layout == "padded"
    gen = torch.Generator().manual_seed(10 + k)
    x, task = torch.randn(3, 29, D, generator=gen), torch.randn(3, T, generator=gen) * 3

    xa = x.clone().requires_grad_(True)
    got, _, counts = moe(xa, task)
    got.pow(2).sum().backward()
    ref_state = {key: v.clone().requires_grad_(True) for key, v in state.items()}
    xb = x.clone().requires_grad_(True)
    want = _old_dispatch(ref_state, xb, task, k)
    want.pow(2).sum().backward()

    assert counts.sum().item() == 3 * 29 * k
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    for name in ("fc1", "fc2"):
        for leaf in ("weight", "bias"):
            stacked = getattr(getattr(moe.experts, name), leaf).grad
            per_expert = [ref_state[f"experts.{e}.{name}.{leaf}"].grad for e in range(E)]
            ref = torch.stack([g if g is not None else torch.zeros_like(stacked[0]) for g in per_expert])
            assert torch.allclose(stacked, ref, rtol=1e-4, atol=1e-5)
    assert torch.allclose(moe.router.weight.grad, ref_state["router.weight"].grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["packed", "slots"])
def test_dispatch_equals_the_per_expert_formulation_under_bf16(layout: str) -> None:
    state = _per_expert_state(5)
    moe = _loaded(dict(state), 2)
    moe.dispatch = "slots" if layout == "slots" else "grouped"
    gen = torch.Generator().manual_seed(7)
    x, task = torch.randn(2, 21, D, generator=gen), torch.randn(2, T, generator=gen)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = moe(x, task)[0].float()
        want = _old_dispatch(state, x, task, 2).float()
    assert torch.allclose(got, want, atol=5e-2)
    assert (got - want).abs().mean().item() < 1e-2  # bf16 rounding, not a different function


def _moe_calls(moe: TaskMoE) -> tuple[Counter[str], Counter[str]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 21, D, generator=gen, requires_grad=True)
    task = torch.randn(8, T, generator=gen)
    with CountOps() as fwd:
        out, aux, _ = moe(x, task)
    loss = out.pow(2).sum() + aux
    with CountOps() as bwd:
        loss.backward()
    return fwd.calls, bwd.calls


def test_moe_step_is_gather_only_without_host_reads_and_few_calls() -> None:
    """Before issue 24 a MoE block's CPU step (E=4, k=2) made 62 forward and 148 backward calls, read the
    counts on the host and scattered with index_add_; now one sort, gathers, and two grouped GEMMs."""
    moe = _loaded(_per_expert_state(0), 2)
    fwd, bwd = _moe_calls(moe)
    assert fwd["sort"] == 1 and fwd["_grouped_mm"] == 2
    for op in ("index_add_", "index_add", "index_copy", "index_fill", "index_put_", "_local_scalar_dense", "stack"):
        assert fwd[op] == 0, op
    assert bwd["_local_scalar_dense"] == 0
    assert sum(fwd.values()) <= 50 and sum(bwd.values()) <= 80, (sum(fwd.values()), sum(bwd.values()))
    moe.dispatch = "slots"
    fwd, bwd = _moe_calls(moe)
    assert fwd["_local_scalar_dense"] == 0 and fwd["index_add_"] == 0 and fwd["baddbmm"] == 2
    assert sum(fwd.values()) <= 60 and sum(bwd.values()) <= 80


def test_best_weights_copy_once_and_recycle_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    keys = checkpoint.trainable_keys(model)
    best = BestWeights(model, keys)
    best.keep(1, {1})
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with CountOps() as ops:
        best.keep(2, {1, 2})
    assert sum(ops.calls.values()) == len(keys) + 1  # new buffers for epoch 2, then one foreach copy
    assert torch.equal(best.weights(1)["0.weight"] + 1.0, best.weights(2)["0.weight"])
    second = best.epochs[2]
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with CountOps() as ops:
        best.keep(3, {3})  # epochs 1 and 2 no longer selected: a spare buffer set is reused
    assert dict(ops.calls) == {"_foreach_copy_": 1}
    assert set(best.epochs) == {3} and best.epochs[3] is second
    assert torch.equal(best.weights(3)["0.weight"], model[0].weight.detach())
    assert set(best.state(skip=3)) == set() and set(best.state()) == {3}
    with pytest.raises(ValueError, match="lack"):
        best.load(4, {"0.weight": torch.zeros(4, 3)})


# ----- a real tiny job: fused optimiser step, best.pt written once, kill and resume


def _trainer(tmp: Path, ckpt: Path, on_epoch: Any = None) -> Any:
    from usagg.engine.device import resolve_compute, seed_everything
    from usagg.engine.job import build_trainer
    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = tmp / "study.yaml"
    if not spec.exists():
        training = {"batch_size": 6, "warmup_epochs": 0.5, "checkpoint_every": 1}
        write_tiny_study(spec, "ops-test", tmp, tasks=(MALIGNANCY,), epochs=4, steps=2, training=training)
    (job,) = plan(load_study(spec))
    dev = torch.device("cpu")
    seed_everything(job.seed, dev)
    return build_trainer(job, ckpt, resolve_compute(job.training.precision, dev), on_epoch=on_epoch)


@pytest.mark.slow
def test_best_weights_stay_in_memory_until_the_fit_ends_and_survive_a_kill(tmp_path: Path) -> None:
    seen: list[bool] = []
    straight = _trainer(tmp_path, tmp_path / "straight", on_epoch=lambda h: seen.append(straight.best_path.exists()))
    fit = straight.fit()
    assert seen == [False] * 4 and straight.best_path.is_file()  # best.pt written once, as training ends
    assert set(checkpoint.load(straight.best_path)["weights"]) == {fit.selected_epoch}
    assert checkpoint.load(straight.last_path)["best"] == {}  # the final last.pt leaves them to best.pt

    first = _trainer(tmp_path, tmp_path / "killed")
    with CountOps() as ops:
        first.train_epoch(0)
    assert ops.calls["_fused_adamw_"] == 2 * 4  # 2 steps x 4 parameter groups: one call per group and step
    assert ops.calls["addcdiv_"] == ops.calls["lerp_"] == 0  # not the per-parameter loop
    killed = _trainer(tmp_path, tmp_path / "killed")
    killed.fit(stop_after_epoch=3)
    last = checkpoint.load(killed.last_path)
    chosen = killed.selector.epochs(killed.scope)["model"]
    assert set(last["best"]) == ({chosen} - {3})  # the kept epoch rides in last.pt unless it is last.pt's own
    killed.best_path.unlink()  # a kill before the fit ended leaves no best.pt: last.pt alone must do
    resumed = _trainer(tmp_path, tmp_path / "killed")
    fit_b = resumed.fit()
    assert fit_b.history == fit.history and fit_b.selected_epoch == fit.selected_epoch
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)


def test_checkpoint_checksum_reads_tensor_memory_without_a_torch_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum walks every tensor of a checkpoint at every save: `Tensor.numpy` made a detach per tensor (2,300
    calls per epoch of bench_ops' study), DLPack makes none (usagg/tensorbytes.py); bfloat16, which numpy cannot
    read, goes through torch. The digest is the same bytes either way, so earlier checkpoints still verify."""
    gen = torch.Generator().manual_seed(0)
    tensors = {
        str(dt): (torch.randn(4, 5, generator=gen) * 9).to(dt)
        for dt in (torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool)
    }
    with CountOps() as ops:
        digest = checkpoint.content_digest({"state": tensors, "step": 3})
    assert sum(ops.calls.values()) == 0, ops.calls

    def by_numpy(t: torch.Tensor) -> memoryview:  # the former reading
        return t.numpy().reshape(-1).view("uint8").data

    bf16 = torch.randn(3, 2, generator=gen).to(torch.bfloat16)
    assert bytes(tensorbytes.tensor_memory(bf16)) == bf16.view(torch.int16).numpy().tobytes()
    monkeypatch.setattr(tensorbytes, "tensor_memory", by_numpy)
    assert checkpoint.content_digest({"state": tensors, "step": 3}) == digest


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frozen_weight_fingerprints_are_the_former_digests_read_in_place(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job hashes its frozen weights twice (the checkpoint's fingerprint, the trunk's key): the same digests
    as when each tensor was detached, viewed and copied out through `Tensor.numpy` (stored checkpoints and trunk
    files still match), with no torch call per float32 tensor read."""
    from usagg.model import trunk

    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", image_size=32, frozen_blocks=1)
    model = build_model(spec, [TaskSpec(id="seg", type="segmentation", num_classes=2)], moe=True).to(dtype)
    layout = model.encoder.trunk_layout()
    assert layout is not None
    with CountOps() as ops:
        digests = (checkpoint.frozen_fingerprint(model), trunk.frozen_digest(model.encoder, layout))
    per_tensor = ops.calls["detach"] + ops.calls["view"]
    # float32 weights (a model's, whatever autocast computes in) read in place; bfloat16 through torch's views
    assert per_tensor == 0 if dtype == torch.float32 else per_tensor > 0, ops.calls

    def former_host(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu").contiguous()

    def former_bytes(t: torch.Tensor) -> bytes:
        return t.reshape(-1).view(torch.uint8).numpy().tobytes()

    monkeypatch.setattr(tensorbytes, "on_host", former_host)  # both digests read their tensors through it
    monkeypatch.setattr(tensorbytes, "tensor_memory", former_bytes)
    assert (checkpoint.frozen_fingerprint(model), trunk.frozen_digest(model.encoder, layout)) == digests
