"""MoE overhead: forward+backward time and parameters of a task-conditioned MoE block versus the dense block.

Same run, same input, medians after warm-up (the machine is shared). Default:
DINOv3 ViT-S/16 block (384-d), E=8, k=2, images of 224 px (201 tokens each):
8 per batch in float32 on the CPU, 64 per batch under bf16 autocast on CUDA
(the training precision there).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from usagg.model.backbones import create_vit
from usagg.model.moe import MoEBlock, TaskMoE

BACKBONE = "dinov3_small"
EXPERTS, TOP_K = 8, 2
SIZE = 224
WARMUP, REPEATS = 3, 15


def _paired(steps: dict, warmup: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step; steps are interleaved each round so load changes hit all of them alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(backbone: str = BACKBONE, batch: int | None = None, size: int = SIZE, repeats: int = REPEATS) -> dict:
    """Print a table and return the timings, their ratio and the parameter counts."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = batch or (64 if device.type == "cuda" else 8)
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    vit = create_vit(backbone).to(device)
    dense = vit.blocks[-1]
    dim = vit.embed_dim
    moe = MoEBlock(dense, TaskMoE(dense.mlp, dim, dim, EXPERTS, TOP_K, "token_task", 0.01)).to(device)
    grid = size // 16
    tokens = grid * grid + vit.num_prefix_tokens
    rope = vit.rope.get_embed(shape=(grid, grid))
    x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)
    task = torch.randn(batch, dim, device=device)

    def dense_step() -> None:
        with cast:
            out = dense(x, rope=rope)
        out.float().sum().backward()

    def moe_step() -> None:
        with cast:
            out, aux, _ = moe(x, rope, task)
        (out.float().sum() + aux).backward()

    h = dense.norm2(x).detach().requires_grad_(True)

    def dense_mlp_step() -> None:
        with cast:
            out = dense.mlp(h)
        out.float().sum().backward()

    def moe_mlp_step() -> None:
        with cast:
            out, aux, _ = moe.mlp(h, task)
        (out.float().sum() + aux).backward()

    steps = {"dense": dense_step, "moe": moe_step, "dense_mlp": dense_mlp_step, "moe_mlp": moe_mlp_step}
    t = _paired(steps, WARMUP, repeats, device)
    t_dense, t_moe, t_dense_mlp, t_moe_mlp = t["dense"], t["moe"], t["dense_mlp"], t["moe_mlp"]
    p_dense = sum(p.numel() for p in dense.parameters())
    p_moe = sum(p.numel() for p in moe.parameters())
    result = {
        "backbone": backbone,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "experts": EXPERTS,
        "top_k": TOP_K,
        "batch": batch,
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "dense_fwd_bwd_s": round(t_dense, 5),
        "moe_fwd_bwd_s": round(t_moe, 5),
        "time_ratio": round(t_moe / t_dense, 3),
        "mlp_dense_fwd_bwd_s": round(t_dense_mlp, 5),
        "mlp_moe_fwd_bwd_s": round(t_moe_mlp, 5),
        "mlp_time_ratio": round(t_moe_mlp / t_dense_mlp, 3),
        "dense_params": p_dense,
        "moe_params": p_moe,
        "param_ratio": round(p_moe / p_dense, 3),
    }
    print(f"MoE block vs dense block ({backbone}, E={EXPERTS}, k={TOP_K}, {batch}x{tokens} tokens, {result['device']})")
    print(f"{'':12}{'fwd+bwd ms':>12}{'params':>12}")
    print(f"{'dense':12}{t_dense * 1e3:12.1f}{p_dense:12,}")
    print(f"{'MoE':12}{t_moe * 1e3:12.1f}{p_moe:12,}")
    print(f"{'ratio':12}{t_moe / t_dense:12.2f}{p_moe / p_dense:12.2f}")
    print(
        f"MLP alone: dense {t_dense_mlp * 1e3:.1f} ms, MoE {t_moe_mlp * 1e3:.1f} ms, "
        f"ratio {t_moe_mlp / t_dense_mlp:.2f}"
    )
    return result


if __name__ == "__main__":
    main()
