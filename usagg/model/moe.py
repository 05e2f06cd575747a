"""Task-conditioned Mixture-of-Experts replacing the MLP of chosen encoder blocks (M3ViT style).

Each expert starts as a copy of the block's dense MLP (plus a little relative
noise, so experts can drift apart), and a router picks `top_k` experts per
token from the token concatenated with a learned task embedding
(`router_input="token_task"`) or from the task embedding alone (`"task"`).
Tokens are dispatched in batches: one gather / scatter per expert, never a
loop over tokens. A Switch-style load-balancing loss keeps experts in use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from timm.models.eva import EvaBlock
from torch import nn

RouterInput = Literal["token_task", "task"]


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


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch / M3ViT balance loss E·Σ_e f_e·P_e: f_e share of dispatches to e, P_e mean router probability.

    Equals 1 when routing is uniform and grows as it collapses; f carries no gradient, P does.
    """
    counts = torch.bincount(experts.reshape(-1), minlength=num_experts).to(probs.dtype)
    f = counts / experts.numel()
    return num_experts * (f * probs.mean(dim=0)).sum()


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
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, got {top_k}")
        self.num_experts = experts
        self.top_k = top_k
        self.router_input = router_input
        self.experts = nn.ModuleList(noisy_copy(mlp, init_noise) for _ in range(experts))
        self.router = nn.Linear(dim + task_dim if router_input == "token_task" else task_dim, experts)
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)

    def route(self, tokens: torch.Tensor, task: torch.Tensor) -> Routing:
        """Route flat tokens [M, D] given their task embeddings [M, T]; softmax in float32."""
        inp = torch.cat([tokens, task.to(tokens.dtype)], dim=-1) if self.router_input == "token_task" else task
        probs = self.router(inp).float().softmax(dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        return Routing(probs, top_i, top_p / top_p.sum(dim=-1, keepdim=True))

    def forward(self, x: torch.Tensor, task_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D], task_emb [B, T] -> (output [B, N, D], balance loss (0-dim), tokens per expert int64 [E])."""
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        task = task_emb[:, None, :].expand(b, n, task_emb.shape[-1]).reshape(b * n, -1)
        r = self.route(flat, task)
        expert_of = r.experts.reshape(-1)
        order = torch.argsort(expert_of, stable=True)
        token_of = order // self.top_k  # position p of the flattened [M, k] assignment belongs to token p // k
        weight_of = r.weights.reshape(-1)[order]
        counts = torch.bincount(expert_of, minlength=self.num_experts)
        out = torch.zeros_like(flat)
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count:
                tok = token_of[start : start + count]
                y = self.experts[e](flat.index_select(0, tok))
                out.index_add_(0, tok, (y * weight_of[start : start + count, None].to(y.dtype)).to(out.dtype))
            start += count
        aux = load_balancing_loss(r.probs, r.experts, self.num_experts)
        return out.reshape(b, n, d), aux, counts


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
    "MoEBlock",
    "Routing",
    "TaskMoE",
    "convert_to_moe",
    "expert_usage",
    "load_balancing_loss",
    "moe_parameters",
    "noisy_copy",
]
