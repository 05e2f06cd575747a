"""The denominator of `make gpu-check` (issue 24.1): the plainest training loop of the same encoder.

A timm DINOv3 ViT of the job's backbone (usagg/model/backbones.py `create_vit`, random init), a linear
head on the class token, cross-entropy, bf16 autocast on CUDA and a fused AdamW: what anyone would
write to train this encoder, with nothing of usagg's (no MoE, heads, task sampling, clipping,
frozen blocks, callbacks). Measured eager and compiled (`torch.compile`, inductor's default mode, on
the whole forward and loss; backward through AOT autograd) at the same image size and batch, its
FLOPs counted by the same counter as the jobs' (torch.utils.flop_counter, fwd+bwd of a batch of
two). Every job and accel mode of the check is then reported as achieved FLOP/s over the bare
compiled loop's: the MFU ratio, also where the card's peak is unknown (and on the CPU, whose flow
test runs the loop eager only). Like with like: every block of this loop trains, so its FLOPs
are counted on pixels, while the check counts its own loops' on what their steps are given
(trunk tokens in the steady loops, whose frozen blocks never run; a job's rows weighted by
what its trunk served), not the frozen forward they skip.
"""

from __future__ import annotations

import time
from typing import Any

#: Classes of the bare loop's head (its cost is negligible beside the encoder's).
BARE_CLASSES = 2


def _net(backbone: str, device: Any) -> Any:
    import torch
    from torch import nn

    from usagg.model.backbones import create_vit

    class BareNet(nn.Module):
        """ViT + linear head on the class token, returning the cross-entropy (so compile sees the loss too)."""

        def __init__(self) -> None:
            super().__init__()
            self.vit = create_vit(backbone)
            self.head = nn.Linear(self.vit.num_features, BARE_CLASSES)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = self.head(self.vit.forward_features(x)[:, 0])
            return nn.functional.cross_entropy(logits.float(), y)

    return BareNet().to(device).train()


def _batch(batch: int, size: int, device: Any, seed: int = 0) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, BARE_CLASSES, (batch,), generator=gen)
    return x.to(device), y.to(device)


def bare_flops_per_image(backbone: str, size: int, device: Any) -> float:
    """FLOPs (2 per multiply-add) of one image's forward+backward in the bare loop, counted as the jobs' are."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = _net(backbone, device)
    x, y = _batch(2, size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x, y).backward()
    return counter.get_total_flops() / 2


def bare_rate(backbone: str, size: int, batch: int, device: Any, compiled: bool, steps: int, warmup: int) -> float:
    """Training images/s of the bare loop: `warmup` untimed steps (compilation happens there), then `steps` timed."""
    import torch

    torch.manual_seed(0)
    net = _net(backbone, device)
    amp = device.type == "cuda"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=amp)
    if compiled:
        net.compile()
    x, y = _batch(batch, size, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = net(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if amp:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if amp:
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def achieved_ratio(gflop: float | None, images_per_s: float | None, bare: dict[str, Any] | None) -> float | None:
    """Achieved FLOP/s of a job or mode over the bare denominator's (= MFU / bare MFU on any card); None when
    either side is missing."""
    if not bare or gflop is None or images_per_s is None or not bare.get("denominator_flops"):
        return None
    return gflop * 1e9 * images_per_s / bare["denominator_flops"]
