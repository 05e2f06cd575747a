"""Launch overhead on CUDA: run the encoder eagerly, compiled, or as CUDA graphs (`execution.accel`).

A ViT-S step at batch 32 launches over a thousand small kernels, so on a fast
GPU the host, not the arithmetic, sets the pace (issue 10). Two remedies, the
encoder alone in both: the whole model would recompile per task (its head is
chosen by the task id) and fall back to eager after eight tasks, and the
detection loss breaks graphs, while the encoder sees the task only as a tensor
(the MoE routers' task embedding), so one compiled encoder serves every task.

- `compile`: `torch.compile` (inductor) fuses the encoder's elementwise work.
- `graphs`: `torch.compile(mode="reduce-overhead")`, inductor plus CUDA graph
  trees: one graph per input shape, replayed with a single launch, shared by
  every task. A graph's outputs live in a pool the next replay reuses; the
  model reads them within the step (the features go to the head, MoE losses
  and counts are stacked into new tensors in `M2DINO.forward`), which is
  what the trees require.

`nn.Module.compile` compiles in place, so parameter names, state dicts and
checkpoints are those of the eager model. The CPU always runs eager (compile
costs over 30 s there and gains about 1 %). `make gpu-check` (benchmarks/gpu_check.py)
measured the AU model's steady loop on an H200 (docs/benchmarks.md): graphs 3.59x eager,
compile 1.20x. The default stays eager until a whole job under graphs has run on a GPU.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import torch

from usagg.model.m2dino import M2DINO

log = logging.getLogger(__name__)

AccelMode = Literal["eager", "compile", "graphs"]
ACCEL_MODES: tuple[str, ...] = get_args(AccelMode)

#: torch.compile mode per accel mode (None: inductor's default).
_COMPILE_MODE: dict[str, str | None] = {"compile": None, "graphs": "reduce-overhead"}

_cpu_notice_given = False


def compile_encoder(model: M2DINO, mode: AccelMode) -> M2DINO:
    """Compile `model.encoder` in place for `mode` (on any device; `accelerate` is the policy), return the model.

    Compilation happens lazily at the first forward; shapes that change (the last,
    smaller batch of a split) get a graph with a dynamic batch size after the second one.
    """
    if mode not in ACCEL_MODES:
        raise ValueError(f"unknown accel mode {mode!r}; choose one of {', '.join(ACCEL_MODES)}")
    if mode != "eager":
        model.encoder.compile(mode=_COMPILE_MODE[mode])
    return model


def accelerate(model: M2DINO, mode: AccelMode, device: torch.device) -> M2DINO:
    """Apply `execution.accel` to a model about to train on `device`: CUDA only; the CPU runs eager (said once)."""
    global _cpu_notice_given
    if mode == "eager":
        return model
    if device.type != "cuda":
        if not _cpu_notice_given:
            log.info("execution.accel=%s applies to CUDA devices only; this job runs eager on %s", mode, device)
            _cpu_notice_given = True
        return model
    log.info(
        "execution.accel=%s: the encoder is compiled (%s) at its first batch", mode, _COMPILE_MODE[mode] or "default"
    )
    return compile_encoder(model, mode)


__all__ = ["ACCEL_MODES", "AccelMode", "accelerate", "compile_encoder"]
