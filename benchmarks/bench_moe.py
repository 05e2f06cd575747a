"""MoE overhead: forward+backward time and parameters of a task-conditioned MoE block versus the dense block.

Same run, same input, medians after warm-up (the machine is shared). Default:
DINOv3 ViT-S/16 block (384-d), E=8, k=2, images of 224 px (201 tokens each):
8 per batch in float32 on the CPU, 64 per batch under bf16 autocast on CUDA
(the training precision there). The dispatch paths of usagg/model/moe.py are
timed on the same weights: `grouped` (grouped GEMMs, no host sync; the default on
the CPU and on CUDA sm 9.x / 10.x in bf16), `slots` (one slot per expert, batched
matmuls; the default on other GPUs) and `loop` (per expert, counts read on the
host; kept for flop counting). `time_ratio` is the default's, marked `*`. `stack`
is what casting the stacked experts' weights per call costs.

On CUDA the dense block and the MoE block (its sync-free dispatch) are also timed
recorded as CUDA graphs and replayed (`recorded`): what a step costs the GPU
itself under `execution.accel: step-graphs`, where eager timings of a block this
small are mostly kernel launches (the MoE block launches about twice the dense
block's kernels). Recording that fails is reported in `failed` (and a non-zero exit
when run as a script; `make gpu-check` fails on it), the eager timings standing.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import torch

from usagg.model.backbones import create_vit
from usagg.model.moe import MoEBlock, TaskMoE

BACKBONE = "dinov3_small"
EXPERTS, TOP_K = 8, 2
SIZE = 224
WARMUP, REPEATS = 3, 15
DISPATCHES = ("grouped", "slots", "loop")


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


def _recorded(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """`step` recorded as one CUDA graph after warm-up on a side stream (torch's CUDA-graph recipe); replaying it
    runs the step (its gradients accumulate into the same tensors)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def main(backbone: str = BACKBONE, batch: int | None = None, size: int = SIZE, repeats: int = REPEATS) -> dict:
    """Print a table and return the timings, their ratio and the parameter counts."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = batch or (64 if device.type == "cuda" else 8)
    recording = [False]  # autocast's cache stays off while a CUDA graph records (torch's CUDA-graph notes)

    def cast() -> contextlib.AbstractContextManager:
        if device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not recording[0])

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
        with cast():
            out = dense(x, rope=rope)
        out.float().sum().backward()

    def moe_step(dispatch: str) -> Callable[[], None]:
        def step() -> None:
            moe.mlp.dispatch = dispatch
            with cast():
                out, aux, _ = moe(x, rope, task)
            (out.float().sum() + aux).backward()

        return step

    h = dense.norm2(x).detach().requires_grad_(True)

    def dense_mlp_step() -> None:
        with cast():
            out = dense.mlp(h)
        out.float().sum().backward()

    def moe_mlp_step(dispatch: str) -> Callable[[], None]:
        def step() -> None:
            moe.mlp.dispatch = dispatch
            with cast():
                out, aux, _ = moe.mlp(h, task)
            (out.float().sum() + aux).backward()

        return step

    def stack_step() -> None:  # the experts are stacked parameters (issue 24): what a call still pays is the cast
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        for fc in ("fc1", "fc2"):
            getattr(moe.mlp.experts, fc).weight.to(dtype)
            getattr(moe.mlp.experts, fc).bias.to(dtype)

    steps = {
        "dense": dense_step,
        **{f"moe_{d}": moe_step(d) for d in DISPATCHES},
        "dense_mlp": dense_mlp_step,
        **{f"moe_mlp_{d}": moe_mlp_step(d) for d in DISPATCHES},
        "stack": stack_step,
    }
    t = _paired(steps, WARMUP, repeats, device)
    moe.mlp.dispatch = "auto"
    with cast():
        default = "grouped" if moe.mlp.use_grouped(x) else "slots"  # what "auto" takes
    recorded: dict[str, float] = {}
    failed: list[str] = []
    if device.type == "cuda":
        # the sync-free dispatch a recorded step takes on this card: grouped GEMMs where they need no host read
        sync_free = default
        recording[0] = True
        try:
            graphs = {"dense": _recorded(dense_step, device), "moe": _recorded(moe_step(sync_free), device)}
            recorded = _paired(graphs, WARMUP, repeats, device)
        except RuntimeError as err:  # the eager timings above stand; the caller fails on `failed`
            failed.append(f"recorded blocks failed: {type(err).__name__}: {str(err)[:300]}")
            print(failed[-1])
        finally:
            recording[0] = False
            moe.mlp.dispatch = "auto"
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
        "default_dispatch": default,
        "dense_fwd_bwd_s": round(t["dense"], 5),
        "mlp_dense_fwd_bwd_s": round(t["dense_mlp"], 5),
        "stack_weights_s": round(t["stack"], 6),
        "dense_params": p_dense,
        "moe_params": p_moe,
        "param_ratio": round(p_moe / p_dense, 3),
        "failed": failed,
    }
    for d in DISPATCHES:
        result[f"moe_{d}_fwd_bwd_s"] = round(t[f"moe_{d}"], 5)
        result[f"time_ratio_{d}"] = round(t[f"moe_{d}"] / t["dense"], 3)
        result[f"mlp_moe_{d}_fwd_bwd_s"] = round(t[f"moe_mlp_{d}"], 5)
        result[f"mlp_time_ratio_{d}"] = round(t[f"moe_mlp_{d}"] / t["dense_mlp"], 3)
    result["time_ratio"] = result[f"time_ratio_{default}"]  # the path training takes on this device
    result["grouped_vs_loop"] = round(t["moe_grouped"] / t["moe_loop"], 3)
    if recorded:
        result["dense_recorded_s"] = round(recorded["dense"], 6)
        result["moe_recorded_s"] = round(recorded["moe"], 6)
        result["time_ratio_recorded"] = round(recorded["moe"] / recorded["dense"], 3)
    print(f"MoE block vs dense block ({backbone}, E={EXPERTS}, k={TOP_K}, {batch}x{tokens} tokens, {result['device']})")
    print(f"{'':16}{'block ms':>10}{'ratio':>8}{'MLP ms':>10}{'ratio':>8}")
    print(f"{'dense':16}{t['dense'] * 1e3:10.1f}{1:8.2f}{t['dense_mlp'] * 1e3:10.1f}{1:8.2f}")
    for d in DISPATCHES:
        mark = " *" if d == default else ""
        print(
            f"{'MoE ' + d + mark:16}{t[f'moe_{d}'] * 1e3:10.1f}{t[f'moe_{d}'] / t['dense']:8.2f}"
            f"{t[f'moe_mlp_{d}'] * 1e3:10.1f}{t[f'moe_mlp_{d}'] / t['dense_mlp']:8.2f}"
        )
    print(
        f"* the default dispatch here; grouped / loop {result['grouped_vs_loop']:.2f}; casting the stacked experts "
        f"per call {t['stack'] * 1e3:.2f} ms ({t['stack'] / t['moe_grouped']:.1%} of a grouped MoE block step); "
        f"params MoE / dense {p_moe / p_dense:.2f}"
    )
    if recorded:
        print(
            f"recorded as CUDA graphs (step-graphs): dense {recorded['dense'] * 1e3:.2f} ms, MoE "
            f"{recorded['moe'] * 1e3:.2f} ms, ratio {result['time_ratio_recorded']:.2f}"
        )
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
