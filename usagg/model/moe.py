"""Task-conditioned Mixture-of-Experts replacing the MLP of chosen encoder blocks (M3ViT style).

Each expert starts as a copy of the block's dense MLP (plus a little relative
noise, so experts can drift apart), and a router picks `top_k` experts per
token from the token concatenated with a learned task embedding
(`router_input="token_task"`) or from the task embedding alone (`"task"`).
A Switch-style load-balancing loss keeps experts in use.

The experts are stored stacked (`StackedExperts`): one parameter per projection,
weight [E, out, in] and bias [E, out], so no call stacks or copies them; state
dicts of the earlier per-expert layout (`experts.<e>.fc1.weight`) still load (a
load_state_dict pre-hook stacks them). Dispatch is gather-only and never reads
a device value on the host: one stable sort of the expert ids orders the
assignments, its inverse permutation places each in a buffer, the buffer is
filled by one gather, and each assignment's output is gathered back and
weighted over its k experts; both gathers' gradients are gathers too
(`_Dispatch`, `_Combine`) and the expert biases' a matrix product with the
rows' one-hot experts, so backward has no index_add_ (atomics: nondeterministic
on CUDA, and the top kernel of an H100 AU step) (tests/test_model_moe.py checks
it against the per-token formulation). Two buffer layouts, same numbers up to float rounding:
- `grouped`: expert groups packed, each padded to GROUP_ALIGN rows, two
  `torch._grouped_mm` calls; the default where grouped GEMMs exist without a
  host sync (the CPU; CUDA sm 9.x / 10.x in bf16).
- `slots`: one slot of M rows per expert ([E, M, in]; top-k experts are distinct,
  so M is enough), batched matmuls; sync-free everywhere, E/k times the products:
  the default on other GPUs and where torch has no grouped GEMM.
`loop` (one MLP per expert, counts read on the host) stays for flop counting,
which has no formula for `_grouped_mm`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp, SwiGLU
from timm.models.eva import EvaBlock
from torch import nn

RouterInput = Literal["token_task", "task"]
Dispatch = Literal["auto", "grouped", "slots", "loop"]

#: The grouped GEMM: public as `F.grouped_mm` in recent torch, private `torch._grouped_mm` since 2.8 (the GPU
#: images' torch 2.11 may have only that one), absent before; without it MoE dispatch uses `slots`.
GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)

#: Rows each expert's group is padded to in grouped dispatch: 16 bytes of bf16, as torchtitan aligns token groups.
GROUP_ALIGN = 8


@dataclass
class Routing:
    """One routing decision: full softmax `probs` [M, E], chosen `experts` [M, k], their `weights` [M, k] (sum 1)."""

    probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor


def _submodule(module: nn.Module, name: str) -> nn.Module:
    """`module.name`, a module (torch's stubs read any Module attribute as Tensor | Module)."""
    sub = getattr(module, name)
    if not isinstance(sub, nn.Module):
        raise TypeError(f"{type(module).__name__}.{name} is a {type(sub).__name__}, not a module")
    return sub


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
    """Whether `torch._grouped_mm` runs without a host sync here: the CPU (where a sync costs nothing), or its
    CUTLASS kernel on CUDA sm 9.x / 10.x in bf16 (torch 2.14); elsewhere on CUDA it copies the offsets to the host.
    """
    if GROUPED_MM is None:
        return False
    if device.type == "cpu":
        return True
    if device.type != "cuda" or dtype != torch.bfloat16:
        return False
    return torch.cuda.get_device_properties(device).major in (9, 10)  # constant-folded under torch.compile


#: Projections of the MLPs experts can stack: the inputs' (one for Mlp; gate and value for SwiGLU) and the output's.
_PROJECTIONS: dict[type, tuple[tuple[str, ...], str]] = {Mlp: (("fc1",), "fc2"), SwiGLU: (("fc1_g", "fc1_x"), "fc2")}


def stackable(mlp: nn.Module) -> str | None:
    """Why E copies of `mlp` cannot be stacked (None when they can): a timm Mlp or SwiGLU, no norm, no dropout."""
    if type(mlp) not in _PROJECTIONS or not isinstance(mlp, (Mlp, SwiGLU)):  # exactly one (isinstance: for mypy)
        return f"a timm Mlp or SwiGLU, got {type(mlp).__name__}"
    if not isinstance(mlp.norm, nn.Identity) or mlp.drop1.p != 0 or mlp.drop2.p != 0:
        return "an MLP without norm or dropout"
    return None


def groupable(mlp: nn.Module) -> bool:
    """Whether grouped GEMMs fit the experts on CUDA: stackable, sides multiples of 8 (16-byte aligned bf16 rows)."""
    if stackable(mlp) is not None:
        return False
    inputs, output = _PROJECTIONS[type(mlp)]
    fcs = [getattr(mlp, n) for n in (*inputs, output)]
    return all(fc.in_features % 8 == 0 and fc.out_features % 8 == 0 for fc in fcs)


class StackedLinear(nn.Module):
    """E Linear layers as one `weight` [E, out, in] and one `bias` [E, out] (or None)."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([fc.weight.detach() for fc in linears]))
        bias = [fc.bias for fc in linears]
        self.bias = nn.Parameter(torch.stack([b.detach() for b in bias])) if bias[0] is not None else None

    def grouped(self, x: torch.Tensor, offs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Rows of x, packed in expert groups ending at `offs`, through their expert (`onehot` [rows, E]: each
        row's expert, in x's dtype, for the biases)."""
        if GROUPED_MM is None:  # dispatch picks `grouped` only where this torch has it (see GROUPED_MM)
            raise RuntimeError("grouped MoE dispatch needs torch's grouped GEMM, which this torch lacks")
        out = GROUPED_MM(x, _cast(self.weight, x.dtype).transpose(-2, -1), offs=offs)
        if self.bias is None:
            return out
        # Each row's expert bias as a product with the rows' one-hot experts: its gradient is one matrix product
        # [E, rows] x [rows, out], where a gather's (index_add_) piles every row onto E rows with atomics.
        return torch.addmm(out, onehot, _cast(self.bias, x.dtype))

    def slots(self, x: torch.Tensor) -> torch.Tensor:
        """x [E, S, in] -> [E, S, out], slot e through expert e."""
        w = _cast(self.weight, x.dtype).transpose(-2, -1)
        if self.bias is None:
            return torch.bmm(x, w)
        return torch.baddbmm(_cast(self.bias, x.dtype)[:, None, :], x, w)

    def one(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """x [S, in] through expert e alone."""
        bias = None if self.bias is None else _cast(self.bias[e], x.dtype)
        return F.linear(x, _cast(self.weight[e], x.dtype), bias)

    def expert(self, e: int) -> nn.Linear:
        """Expert e's layer as a plain Linear (copies): the reference that the stacked products must match."""
        out_f, in_f = self.weight.shape[1:]
        fc = nn.Linear(in_f, out_f, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            fc.weight.copy_(self.weight[e])
            if self.bias is not None:
                fc.bias.copy_(self.bias[e])
        return fc


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


class StackedExperts(nn.Module):
    """E noisy copies of a timm Mlp or SwiGLU, each projection stacked into one StackedLinear of the same name."""

    def __init__(self, mlp: nn.Module, experts: int, init_noise: float) -> None:
        super().__init__()
        why = stackable(mlp)
        if why is not None:
            raise ValueError(f"MoE experts need {why}")
        copies = [noisy_copy(mlp, init_noise) for _ in range(experts)]  # the noise draws of one expert after another
        self.num_experts = experts
        self.inputs, output = _PROJECTIONS[type(mlp)]
        self.names = (*self.inputs, output)
        for name in self.names:
            self.add_module(name, StackedLinear([getattr(c, name) for c in copies]))
        self.act = _submodule(copies[0], "act")
        self.template = type(mlp)

    def hidden(self, pre: list[torch.Tensor]) -> torch.Tensor:
        """The activation from the input projections' outputs: act(fc1) for Mlp, act(gate) * value for SwiGLU."""
        return self.act(pre[0]) if len(pre) == 1 else self.act(pre[0]) * pre[1]

    def output(self) -> StackedLinear:
        return getattr(self, self.names[-1])

    def expert(self, e: int) -> nn.Module:
        """Expert e as a module of the dense MLP's type (copies of its weights): the per-token reference."""
        mlp = copy.deepcopy(self._dense_like())
        for name in self.names:
            setattr(mlp, name, getattr(self, name).expert(e))
        return mlp

    def _dense_like(self) -> nn.Module:
        fc1 = getattr(self, self.inputs[0]).weight
        out = self.output().weight
        kwargs: dict[str, Any] = {"hidden_features": fc1.shape[1], "out_features": out.shape[1]}
        if self.template is Mlp:
            return Mlp(fc1.shape[2], act_layer=type(self.act), **kwargs)
        return SwiGLU(fc1.shape[2], act_layer=type(self.act), **kwargs)


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
        self.experts = StackedExperts(mlp, experts, init_noise)
        self.groupable = groupable(mlp)
        #: "auto": grouped GEMMs where they are sync-free (`grouped_mm_is_sync_free`) and fit, else slots.
        self.dispatch: Dispatch = dispatch
        #: Grouped layout: groups padded to GROUP_ALIGN rows (the CUDA kernels' alignment) or packed; None: on CUDA.
        self.pad_groups: bool | None = None
        self.router = nn.Linear(dim + task_dim if router_input == "token_task" else task_dim, experts)
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)
        self.register_load_state_dict_pre_hook(_stack_per_expert_keys)

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
        """Whether this call packs expert groups for grouped GEMMs (else slots; see the module docstring).

        Under torch.compile only in bf16 / fp16: the compiler's shape function of `_grouped_mm` refuses
        float32, which the CPU's eager kernel takes.
        """
        if self.dispatch == "auto":
            dtype = self.compute_dtype(x)
            sync_free = grouped_mm_is_sync_free(x.device, dtype)
            compilable = not torch.compiler.is_compiling() or dtype in (torch.bfloat16, torch.float16)
            return sync_free and compilable and (x.device.type == "cpu" or self.groupable)
        return self.dispatch == "grouped"

    def forward(self, x: torch.Tensor, task_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D], task_emb [B, T] -> (output [B, N, D], balance loss (0-dim), tokens per expert int64 [E])."""
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        task = task_emb[:, None, :].expand(b, n, task_emb.shape[-1]).reshape(b * n, -1)
        r = self.route(flat, task)
        counts = expert_counts(r.experts, self.num_experts)
        if self.dispatch == "loop":
            y = self._looped(flat, r.experts, counts)
        else:
            y = self._dispatched(flat, r.experts, counts)
        out = _cast((y * _cast(r.weights, y.dtype)[..., None]).sum(dim=1), flat.dtype)
        aux = load_balancing_loss(r.probs, r.experts, self.num_experts, counts)
        return out.reshape(b, n, d), aux, counts

    def _dispatched(self, flat: torch.Tensor, experts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each (token, chosen expert)'s expert output [M, k, D], gather-only and sync-free.

        One stable sort of the M·k expert ids; its inverse permutation `rank` gives each
        assignment's place in expert order, hence its buffer row; one gather fills the buffer,
        one reads each assignment's output back. Packed groups (the CPU) are the sorted
        tokens themselves. Padded groups (CUDA) and slots have rows that hold no token: they
        gather row M of the padded tokens (zeros) and get exactly zero gradient. Padded groups
        let the last group run to the buffer's end, so the grouped GEMM writes every row (it
        leaves rows past the last offset untouched).
        """
        m, k = experts.shape
        e_num, dev = self.num_experts, flat.device
        a = experts.reshape(-1)
        sorted_ids, order = torch.sort(a, stable=True)
        positions = torch.arange(m * k, device=dev)
        rank = torch.empty_like(order).scatter_(0, order, positions)  # the inverse permutation
        dtype, ex = self.compute_dtype(flat), self.experts
        grouped = self.use_grouped(flat)
        pad = self.pad_groups if self.pad_groups is not None else flat.device.type == "cuda"
        if grouped and not pad:
            row, assignment = rank, order  # buffer row of each assignment; assignment of each buffer row
            offs, expert_row = counts.cumsum(0).to(torch.int32), sorted_ids
            padding = False  # whether the buffer has rows that hold no assignment
        else:
            starts = counts.cumsum(0) - counts  # packed start of each expert's assignments
            if grouped:
                padded = (counts + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
                ends = padded.cumsum(0)
                row = rank + (ends - padded - starts).index_select(0, a)
                size = m * k + e_num * GROUP_ALIGN  # > ends[-1] for any routing
            else:
                row = rank + (torch.arange(e_num, device=dev) * m - starts).index_select(0, a)
                size = e_num * m
            # rows holding no assignment name m·k: past the end, they read zeros (token m·k // k = m, a zero row)
            assignment = torch.full((size,), m * k, dtype=torch.int64, device=dev).scatter_(0, row, positions)
            padding = size > m * k  # slots with every expert chosen (k = E) have none
            if grouped:
                offs = F.pad(ends[:-1], (0, 1), value=size).to(torch.int32)
                expert_row = torch.zeros(size, dtype=torch.int64, device=dev).scatter_(0, row, a)
        x = _Dispatch.apply(flat, assignment, row, k, padding, dtype)
        if grouped:
            # F.one_hot would read the ids' range on the host (on the CPU)
            onehot = (expert_row[:, None] == torch.arange(e_num, device=dev)).to(dtype)
            h = ex.hidden([getattr(ex, n).grouped(x, offs, onehot) for n in ex.inputs])
            y = ex.output().grouped(h, offs, onehot)
        else:
            xs = x.view(e_num, m, -1)
            h = ex.hidden([getattr(ex, n).slots(xs) for n in ex.inputs])
            y = ex.output().slots(h).view(e_num * m, -1)
        return _Combine.apply(y, row, assignment, padding).view(m, k, -1)

    def _looped(self, flat: torch.Tensor, experts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """`_dispatched`'s result, one expert at a time with its counts read on the host (for flop counting)."""
        m, k = experts.shape
        a = experts.reshape(-1)
        order = torch.argsort(a, stable=True)
        dtype = self.compute_dtype(flat)
        ys = []
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count:
                xe = _cast(flat.index_select(0, order[start : start + count] // k), dtype)
                h = self.experts.hidden([getattr(self.experts, n).one(xe, e) for n in self.experts.inputs])
                ys.append(self.experts.output().one(h, e))
            start += count
        y = torch.cat(ys)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(m * k, device=flat.device))
        return y.index_select(0, rank).view(m, k, -1)


class _Dispatch(torch.autograd.Function):
    """Fill the expert buffer from the tokens, a gather whose gradient is a gather too (no atomics, deterministic).

    forward(tokens [m, D], assignment [S], row [m·k], k, padding, dtype): buffer row r holds token
    assignment[r] // k in `dtype`, or zeros where assignment[r] = m·k (a padding row; `padding`: there may be
    some). backward: each token's gradient is the sum over its k assignments of their rows' gradients, read by
    `row` (each assignment has exactly one row) and summed in float32 in the tokens' dtype (the cast after the
    gather, so a bf16 buffer's k gradients add in float32), where torch's own index_select backward scatters
    with index_add_ (atomics, every padding row on one).
    """

    @staticmethod
    def forward(
        ctx: Any,
        tokens: torch.Tensor,
        assignment: torch.Tensor,
        row: torch.Tensor,
        k: int,
        padding: bool,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        ctx.save_for_backward(row)
        ctx.k, ctx.dtype = k, tokens.dtype
        src = F.pad(tokens, (0, 0, 0, 1)) if padding else tokens
        return _cast(src.index_select(0, assignment // k), dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
        (row,) = ctx.saved_tensors
        k = ctx.k
        rows = grad.index_select(0, row).view(row.numel() // k, k, -1)
        return _cast(rows.sum(dim=1, dtype=torch.float32), ctx.dtype), None, None, None, None, None


class _Combine(torch.autograd.Function):
    """Read each assignment's expert output back from the buffer; the gradient goes back by the inverse gather.

    forward(buffer [S, D], row [m·k], assignment [S], padding) -> [m·k, D]. backward: buffer row r gets assignment[r]'s
    gradient, zeros for padding rows (assignment m·k).
    """

    @staticmethod
    def forward(
        ctx: Any, buffer: torch.Tensor, row: torch.Tensor, assignment: torch.Tensor, padding: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(assignment)
        ctx.padding = padding
        return buffer.index_select(0, row)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (assignment,) = ctx.saved_tensors
        src = F.pad(grad, (0, 0, 0, 1)) if ctx.padding else grad
        return src.index_select(0, assignment), None, None, None


def _stack_per_expert_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: stack the earlier per-expert keys (`experts.<e>.<proj>.<weight|bias>`, one per
    expert) into this layout's `experts.<proj>.<weight|bias>` [E, ...], in place, before loading."""
    experts: StackedExperts = module.experts  # type: ignore[assignment]  # torch stubs: Tensor | Module
    for name in experts.names:
        for leaf in ("weight", "bias"):
            old = [f"{prefix}experts.{e}.{name}.{leaf}" for e in range(experts.num_experts)]
            if all(k in state_dict for k in old):
                state_dict[f"{prefix}experts.{name}.{leaf}"] = torch.stack([state_dict.pop(k) for k in old])


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
        if not isinstance(block, EvaBlock):
            raise TypeError(f"MoE replaces the MLP of timm EvaBlocks; block {i} is a {type(block).__name__}")
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
    "StackedExperts",
    "StackedLinear",
    "TaskMoE",
    "convert_to_moe",
    "expert_counts",
    "expert_usage",
    "groupable",
    "grouped_mm_is_sync_free",
    "load_balancing_loss",
    "moe_parameters",
    "noisy_copy",
    "stackable",
]
