"""Task-conditioned Mixture-of-Experts replacing the MLP of chosen encoder blocks (M3ViT style).

Each expert starts as a copy of the block's dense MLP (plus a little relative
noise, so experts can drift apart), and a router picks `top_k` experts per
token from the token concatenated with a learned task embedding
(`router_input="token_task"`) or from the task embedding alone (`"task"`).
A Switch-style load-balancing loss keeps experts in use.

Two dispatch paths give the same numbers (tests/test_model_moe.py):
- `grouped`: tokens sorted by expert, the experts' weights stacked per call
  ([E, ...], so parameters and state-dict keys stay per expert), expert
  boundaries as a device tensor of offsets, and two `torch._grouped_mm` calls.
  No host sync: the default where `_grouped_mm` has its sync-free kernel
  (CUDA sm 9.x / 10.x in bf16).
- `loop`: one gather / expert MLP / scatter per expert, sized by the counts
  copied to the host (one sync per MoE block): the default elsewhere (CPU,
  fp32, older GPUs), where `_grouped_mm` would itself loop after such a copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.eva import EvaBlock
from torch import nn

RouterInput = Literal["token_task", "task"]
Dispatch = Literal["auto", "loop", "grouped"]

#: The grouped GEMM: public as `F.grouped_mm` in recent torch, private `torch._grouped_mm` since 2.8 (the GPU
#: images' torch 2.11 may have only that one), absent before; without it MoE dispatch always loops.
GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)

#: Rows each expert's group is padded to in grouped dispatch: 16 bytes of bf16, as torchtitan aligns token groups.
GROUP_ALIGN = 8


@dataclass
class Routing:
    """One routing decision: full softmax `probs` [M, E], chosen `experts` [M, k], their `weights` [M, k] (sum 1)."""

    probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor


def noisy_copy(module: nn.Module, rel_noise: float) -> nn.Module:
    """A deep copy whose every parameter gets Gaussian noise of `rel_noise` times that tensor's RMS."""
    clone = copy.deepcopy(module)
    if rel_noise > 0:
        with torch.no_grad():
            for p in clone.parameters():
                rms = p.float().pow(2).mean().sqrt()
                p.add_((torch.randn_like(p, dtype=torch.float32) * rel_noise * rms).to(p.dtype))
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


def expert_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Dispatches per expert, int64 [E], from expert ids of any shape.

    A scatter-add into E slots: unlike `torch.bincount`, which reads the largest
    id back to the host on CUDA, it never syncs; integer sums are exact.
    """
    flat = experts.reshape(-1)
    return torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


def load_balancing_loss(
    probs: torch.Tensor, experts: torch.Tensor, num_experts: int, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch / M3ViT balance loss E·Σ_e f_e·P_e: f_e share of dispatches to e, P_e mean router probability.

    Equals 1 when routing is uniform and grows as it collapses; f carries no gradient, P does.
    `counts` (int64 [E], `expert_counts` of `experts`) saves recounting when the caller has them.
    """
    if counts is None:
        counts = expert_counts(experts, num_experts)
    f = counts.to(probs.dtype) / experts.numel()
    return num_experts * (f * probs.mean(dim=0)).sum()


def grouped_mm_is_sync_free(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` runs its CUTLASS kernel here: CUDA sm 9.x / 10.x, bf16 (torch 2.14).

    Anywhere else it loops over groups after copying the offsets to the host,
    which is no better than the per-expert loop.
    """
    if GROUPED_MM is None or device.type != "cuda" or dtype != torch.bfloat16:
        return False
    return torch.cuda.get_device_properties(device).major in (9, 10)  # constant-folded under torch.compile


def groupable(mlp: nn.Module) -> bool:
    """Whether an expert is a plain timm `Mlp` (fc1, activation, fc2; no norm, no dropout) that grouped GEMMs fit.

    Sides must be multiples of 8 so that bf16 rows are 16-byte aligned, as `_grouped_mm` requires.
    """
    return (
        type(mlp) is Mlp
        and isinstance(mlp.norm, nn.Identity)
        and mlp.drop1.p == 0
        and mlp.drop2.p == 0
        and mlp.fc1.bias is not None
        and mlp.fc2.bias is not None
        and mlp.fc1.in_features % 8 == 0
        and mlp.fc1.out_features % 8 == 0
    )


class TaskMoE(nn.Module):
    """E experts copied from a dense MLP and a top-k router conditioned on the task."""

    def __init__(
        self,
        mlp: nn.Module,
        dim: int,
        task_dim: int,
        experts: int = 8,
        top_k: int = 2,
        router_input: RouterInput = "token_task",
        init_noise: float = 0.01,
        dispatch: Dispatch = "auto",
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, got {top_k}")
        self.num_experts = experts
        self.top_k = top_k
        self.router_input = router_input
        self.experts = nn.ModuleList(noisy_copy(mlp, init_noise) for _ in range(experts))
        self.groupable = groupable(mlp)
        if dispatch == "grouped" and not self.groupable:
            raise ValueError(f"grouped dispatch needs plain timm Mlp experts with sides multiple of 8, got {mlp}")
        #: "auto": grouped GEMMs where they are sync-free (`grouped_mm_is_sync_free`), else the per-expert loop.
        self.dispatch: Dispatch = dispatch
        self.router = nn.Linear(dim + task_dim if router_input == "token_task" else task_dim, experts)
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)

    def route(self, tokens: torch.Tensor, task: torch.Tensor) -> Routing:
        """Route flat tokens [M, D] given their task embeddings [M, T]; softmax in float32."""
        inp = torch.cat([tokens, task.to(tokens.dtype)], dim=-1) if self.router_input == "token_task" else task
        probs = self.router(inp).float().softmax(dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        return Routing(probs, top_i, top_p / top_p.sum(dim=-1, keepdim=True))

    def compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype expert matrix products run in: the autocast dtype when autocast is on, else x's."""
        dev = x.device.type
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype

    def use_grouped(self, x: torch.Tensor) -> bool:
        """The path this call takes (see the module docstring)."""
        if self.dispatch == "auto":
            return self.groupable and grouped_mm_is_sync_free(x.device, self.compute_dtype(x))
        return self.dispatch == "grouped"

    def forward(self, x: torch.Tensor, task_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D], task_emb [B, T] -> (output [B, N, D], balance loss (0-dim), tokens per expert int64 [E])."""
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        task = task_emb[:, None, :].expand(b, n, task_emb.shape[-1]).reshape(b * n, -1)
        r = self.route(flat, task)
        counts = expert_counts(r.experts, self.num_experts)
        expert_of = r.experts.reshape(-1)
        order = torch.argsort(expert_of, stable=True)
        token_of = order // self.top_k  # position p of the flattened [M, k] assignment belongs to token p // k
        weight_of = r.weights.reshape(-1)[order]
        if self.use_grouped(flat):
            y = self._grouped_experts(flat.index_select(0, token_of), expert_of[order], counts)
        else:
            y = self._looped_experts(flat, token_of, counts)
        out = torch.zeros_like(flat)
        out.index_add_(0, token_of, (y * weight_of[:, None].to(y.dtype)).to(out.dtype))
        aux = load_balancing_loss(r.probs, r.experts, self.num_experts, counts)
        return out.reshape(b, n, d), aux, counts

    def _looped_experts(self, flat: torch.Tensor, token_of: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs [M·k, D] in expert order: one gather and MLP per expert; `counts` read on the host."""
        ys = []
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count:
                ys.append(self.experts[e](flat.index_select(0, token_of[start : start + count])))
            start += count
        return torch.cat(ys)

    def _grouped_experts(self, xs: torch.Tensor, expert_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs [M·k, D] for tokens `xs` sorted by expert: two grouped GEMMs, offsets stay on the device.

        Each expert's rows start at a multiple of GROUP_ALIGN in a buffer of static size (the
        grouped kernels want 16-byte aligned groups). Rows that hold no token (padding, and
        the tail past the last group, which `_grouped_mm` leaves unwritten) are set to zero
        by a `where`, so they carry no value and no gradient.
        """
        dtype = self.compute_dtype(xs)
        mlps: list[Mlp] = list(self.experts)  # type: ignore[arg-type]
        padded = (counts + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
        ends = padded.cumsum(0)
        shift = (ends - padded) - (counts.cumsum(0) - counts)  # padded start minus packed start, per expert
        rows = torch.arange(xs.shape[0], device=xs.device) + shift.index_select(0, expert_sorted)
        size = xs.shape[0] + self.num_experts * GROUP_ALIGN  # > ends[-1] for any routing
        x = xs.new_zeros((size, xs.shape[1]), dtype=dtype).index_copy(0, rows, xs.to(dtype))
        expert_row = torch.zeros(size, dtype=expert_sorted.dtype, device=xs.device).index_copy(0, rows, expert_sorted)
        used = torch.zeros(size, dtype=torch.bool, device=xs.device).index_fill(0, rows, True)[:, None]
        offs = ends.to(torch.int32)
        h = self._grouped_linear(x, [m.fc1 for m in mlps], expert_row, used, offs, dtype)
        y = self._grouped_linear(mlps[0].act(h), [m.fc2 for m in mlps], expert_row, used, offs, dtype)
        return y.index_select(0, rows)

    @staticmethod
    def _grouped_linear(
        x: torch.Tensor,
        fcs: list[nn.Linear],
        expert_row: torch.Tensor,
        used: torch.Tensor,
        offs: torch.Tensor,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Row i of x through fcs[expert_row[i]] (zero where not `used`): weights stacked per call to [E, out, in]."""
        w = torch.stack([fc.weight for fc in fcs]).to(dtype)
        bias = torch.stack([fc.bias for fc in fcs]).to(dtype)  # type: ignore[misc]
        out = GROUPED_MM(x, w.transpose(-2, -1), offs=offs) + bias.index_select(0, expert_row)
        return torch.where(used, out, 0.0)


class MoEBlock(nn.Module):
    """A timm EvaBlock whose MLP is a TaskMoE; same submodule names, so state-dict keys stay familiar."""

    def __init__(self, block: EvaBlock, moe: TaskMoE) -> None:
        super().__init__()
        if type(block) is not EvaBlock:
            raise TypeError(f"MoE conversion supports timm EvaBlock, got {type(block).__name__}")
        self.norm1 = block.norm1
        self.attn = block.attn
        self.gamma_1 = block.gamma_1
        self.drop_path1 = block.drop_path1
        self.norm2 = block.norm2
        self.mlp = moe
        self.gamma_2 = block.gamma_2
        self.drop_path2 = block.drop_path2

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor | None, task_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """EvaBlock.forward with the MLP swapped for the MoE; returns (x, balance loss, expert counts)."""
        x_attn = self.attn(self.norm1(x), rope=rope)
        if self.gamma_1 is not None:
            x_attn = self.gamma_1 * x_attn
        x = x + self.drop_path1(x_attn)
        x_mlp, aux, counts = self.mlp(self.norm2(x), task_emb)
        if self.gamma_2 is not None:
            x_mlp = self.gamma_2 * x_mlp
        return x + self.drop_path2(x_mlp), aux, counts


def convert_to_moe(
    blocks: nn.ModuleList,
    indices: list[int],
    dim: int,
    task_dim: int,
    experts: int,
    top_k: int,
    router_input: RouterInput,
    init_noise: float,
) -> None:
    """Replace blocks[i] for i in `indices` by MoEBlocks whose experts copy that block's MLP (in place)."""
    for i in indices:
        block = blocks[i]
        moe = TaskMoE(block.mlp, dim, task_dim, experts, top_k, router_input, init_noise)
        blocks[i] = MoEBlock(block, moe)


def moe_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every expert and router parameter under `module`."""
    return [p for m in module.modules() if isinstance(m, TaskMoE) for p in m.parameters()]


def expert_usage(counts: list[torch.Tensor]) -> torch.Tensor | None:
    """Stack per-block counts into int64 [n_moe_blocks, E], or None without MoE blocks."""
    return torch.stack(counts).to(torch.int64) if counts else None


__all__ = [
    "Dispatch",
    "MoEBlock",
    "Routing",
    "TaskMoE",
    "convert_to_moe",
    "expert_counts",
    "expert_usage",
    "groupable",
    "grouped_mm_is_sync_free",
    "load_balancing_loss",
    "moe_parameters",
    "noisy_copy",
]
