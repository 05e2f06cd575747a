"""Head architectures on the encoder's multi-depth spatial features; each head owns its loss and its `predict`.

A library, not a dispatcher: each task type (usagg/tasktypes/) picks its head in
`TaskType.build_head`. Every head maps `Features` to one raw output tensor: pixel
class logits at input size (DPT), class logits (MLP), xyxy boxes in [0, 1],
keypoint heatmap logits (`heatmap`) or keypoints (`direct`). `predict` turns it
into the normalised prediction: class map, probabilities, box, keypoints [K, 2]
in [0, 1] (x = column / width, y = row / height).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.dpt.decoder import FusionBlock, ReadoutConcatBlock, ReassembleBlock
from torch import nn

from usagg.model.backbones import Features
from usagg.model.losses import DiceCELoss, box_loss, cross_entropy_loss, keypoint_loss, reduced_dice_ce_loss

PATCH = 16


class TaskHead(nn.Module):
    """Interface: forward(features) -> outputs; loss(outputs, targets) -> 0-dim; predict(outputs) -> prediction."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DPTSegmentationHead(TaskHead):
    """DPT decoder from smp's own blocks (readout-concat, reassemble, fusion) and a pixel classifier.

    smp's `DPTDecoder` upsamples by a fixed x2 per fusion step and breaks on
    grids that are not multiples of 2^(n-3) (e.g. 112 px -> 7x7 tokens), so the
    fusion loop here resizes the coarser map to the finer one; the final
    logits are resized to the input size.

    `loss_stride` (model.heads.seg_loss_stride) > 1: in training mode the logits
    come out at 1/stride of the input (2: the classifier's own grid, as smp's last
    fusion block doubles the stride-4 map; 4: those logits halved) and the loss
    runs there against area-downsampled targets, skipping the full-size
    upsampling, its backward and the full-size loss. In eval mode (evaluation,
    prediction, the affinity probes) the logits are always at the input size, so
    predictions and metrics are what stride 1 gives.
    """

    def __init__(self, embed_dim: int, n_features: int, num_classes: int, channels: int, loss_stride: int = 1) -> None:
        super().__init__()
        self.loss_stride = loss_stride
        mids = [channels * min(2**i, 4) for i in range(n_features)]  # DPT's (256, 512, 1024, 1024) ratios
        scales = [PATCH / 2 ** (i + 2) for i in range(n_features)]  # depths to strides 4, 8, 16, 32, ...
        self.readout = nn.ModuleList(ReadoutConcatBlock(embed_dim, True) for _ in range(n_features))
        self.reassemble = nn.ModuleList(
            ReassembleBlock(embed_dim, mids[i], channels, scales[i]) for i in range(n_features)
        )
        self.fusion = nn.ModuleList(FusionBlock(channels) for _ in range(n_features))
        self.classifier = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )
        self.criterion = DiceCELoss()

    def forward(self, feats: Features) -> torch.Tensor:
        levels = [
            re(ro(m, p)) for ro, re, m, p in zip(self.readout, self.reassemble, feats.maps, feats.prefix, strict=True)
        ]
        fused = None
        for block, level in zip(self.fusion, reversed(levels), strict=True):
            if fused is not None and fused.shape[-2:] != level.shape[-2:]:
                fused = F.interpolate(fused, size=level.shape[-2:], mode="bilinear", align_corners=False)
            fused = block(level, fused)
        logits = self.classifier(fused)
        h, w = feats.image_size
        s = self.loss_stride if self.training else 1
        size = (h // s, w // s)
        if logits.shape[-2:] == size:  # stride 2: the classifier's own grid (smp's last fusion doubles), no resize
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Dice + CE at the logits' resolution: today's full-resolution loss when they have the targets' size,
        else against area-downsampled soft targets (`reduced_dice_ce_loss`)."""
        if outputs.shape[-2:] == targets.shape[-2:]:
            return self.criterion(outputs, targets)
        return reduced_dice_ce_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1).to(torch.int64)


def _cls_and_mean(feats: Features) -> torch.Tensor:
    """[B, 2·D·L]: per depth the cls token and the mean patch token (DINOv2/v3 linear-probe features)."""
    parts = []
    for m, p in zip(feats.maps, feats.prefix, strict=True):
        parts += [p[:, 0], m.mean(dim=(2, 3))]
    return torch.cat(parts, dim=1)


class ClassificationHead(TaskHead):
    """MLP on the cls token and mean-pooled patch tokens of every feature depth; cross-entropy."""

    def __init__(self, embed_dim: int, n_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * embed_dim * n_features, hidden), nn.GELU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, feats: Features) -> torch.Tensor:
        return self.mlp(_cls_and_mean(feats))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=1)


class SpatialPool(nn.Module):
    """Fixed-size summary that keeps coarse layout: 1x1 projections of all depths, summed, pooled to 4x4, + cls."""

    GRID = 4

    def __init__(self, embed_dim: int, n_features: int, hidden: int) -> None:
        super().__init__()
        self.width = max(8, hidden // 8)
        self.proj = nn.ModuleList(nn.Conv2d(embed_dim, self.width, 1) for _ in range(n_features))
        self.out_dim = self.width * self.GRID**2 + embed_dim

    def forward(self, feats: Features) -> torch.Tensor:
        x = sum(p(m) for p, m in zip(self.proj, feats.maps, strict=True))
        x = F.adaptive_avg_pool2d(F.gelu(x), self.GRID).flatten(1)
        return torch.cat([x, feats.prefix[-1][:, 0]], dim=1)


class BoxHead(TaskHead):
    """One box per image regressed from spatially pooled features; L1 + GIoU.

    Parametrised as x1 = σ(a), x2 = x1 + (1 - x1)·σ(b) (same for y), so every
    prediction is a valid box inside the image and GIoU is always defined.
    """

    def __init__(self, embed_dim: int, n_features: int, hidden: int) -> None:
        super().__init__()
        self.pool = SpatialPool(embed_dim, n_features, hidden)
        self.mlp = nn.Sequential(nn.Linear(self.pool.out_dim, hidden), nn.GELU(), nn.Linear(hidden, 4))

    def forward(self, feats: Features) -> torch.Tensor:
        a = self.mlp(self.pool(feats)).float().sigmoid()
        x1, y1 = a[:, 0], a[:, 1]
        x2 = x1 + (1 - x1) * a[:, 2]
        y2 = y1 + (1 - y1) * a[:, 3]
        return torch.stack([x1, y1, x2, y2], dim=1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return box_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()


class KeypointHeatmapHead(TaskHead):
    """K heatmaps at stride 4; outputs are their logits, `predict` takes the soft-argmax to normalised (x, y).

    The default for landmarks: a heatmap keeps the convolutional, translation-
    equivariant structure (a landmark's evidence stays where it is), which
    generalises better from few images than regressing coordinates from a
    pooled vector. Loss (DSNT-style): L1 on the soft-argmax coordinates plus a
    KL term pulling each softmax heatmap towards a Gaussian at the target; the
    KL term gives every heatmap cell a gradient from the first step, where
    the coordinate loss alone barely moves a flat heatmap.
    """

    KL_WEIGHT = 0.1
    SIGMA = 1.0  # Gaussian width in heatmap cells (stride 4 px)

    def __init__(self, embed_dim: int, n_features: int, num_points: int, hidden: int) -> None:
        super().__init__()
        c = max(8, hidden // 4)
        self.proj = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for _ in range(n_features))
        self.refine = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GELU())
        self.out = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, num_points, 1))

    def forward(self, feats: Features) -> torch.Tensor:
        """Heatmap logits [B, K, H/4, W/4]."""
        x = self.refine(sum(p(m) for p, m in zip(self.proj, feats.maps, strict=True)))
        h, w = feats.image_size
        x = F.interpolate(x, size=(h // 4, w // 4), mode="bilinear", align_corners=False)
        return self.out(x)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L1(soft-argmax, target) + KL_WEIGHT · KL(q ‖ softmax), q the target Gaussian.

        One float32 log-softmax serves both terms (no float32 copy of the logits under bf16).
        The Gaussian is separable, q = qy ⊗ qx, so the target is never built as a map: its
        entropy is that of its two marginals, and Σ q·log p contracts log p with qx, then qy.
        The coordinate grids are built once per heatmap size (`_centres`).
        """
        b, k, h, w = outputs.shape
        logp = F.log_softmax(outputs.flatten(2), dim=-1, dtype=torch.float32).view(b, k, h, w)
        pts = targets.float()
        qx, log_qx = _gaussian_marginal(pts[..., 0], w, self.SIGMA)
        qy, log_qy = _gaussian_marginal(pts[..., 1], h, self.SIGMA)
        q_log_q = (qx * log_qx).sum(-1) + (qy * log_qy).sum(-1)
        q_log_p = ((logp * qx.unsqueeze(-2)).sum(-1) * qy).sum(-1)
        kl = (q_log_q - q_log_p).mean()
        return keypoint_loss(_expected_xy(logp.exp()), pts) + self.KL_WEIGHT * kl

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return soft_argmax(outputs)


def _centres(n: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates (i + 0.5) / n, float32 [n], made once per (n, device) and kept."""
    grid = _CENTRES.get((n, str(device)))
    return grid if grid is not None else _build_centres(n, device)


_CENTRES: dict[tuple[int, str], torch.Tensor] = {}


@torch.compiler.disable
def _build_centres(n: int, device: torch.device) -> torch.Tensor:
    """Eagerly, as backbones._build_rope_table (never a compiled graph's output), and a normal tensor even when
    first built under inference_mode (evaluation)."""
    with torch.inference_mode(False), torch.no_grad():
        grid = _CENTRES[(n, str(device))] = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
    return grid


def _gaussian_marginal(coord: torch.Tensor, n: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised 1-D Gaussian over n cells at normalised coordinates [B, K] and its exact log: [B, K, n] each."""
    d = (_centres(n, coord.device) - coord.unsqueeze(-1)) * n
    e = d.square() * (-0.5 / sigma**2)
    log_g = e - e.logsumexp(dim=-1, keepdim=True)
    return log_g.exp(), log_g


def gaussian_heatmaps(points: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Normalised Gaussians [B, K, h, w] centred on normalised points [B, K, 2], width `sigma` cells."""
    h, w = size
    qx, _ = _gaussian_marginal(points[..., 0].float(), w, sigma)
    qy, _ = _gaussian_marginal(points[..., 1].float(), h, sigma)
    return qy.unsqueeze(-1) * qx.unsqueeze(-2)


def _expected_xy(p: torch.Tensor) -> torch.Tensor:
    """Expected normalised (x, y) of probability maps [B, K, h, w]: [B, K, 2]."""
    h, w = p.shape[-2:]
    xs, ys = _centres(w, p.device), _centres(h, p.device)
    return torch.stack([(p.sum(dim=2) * xs).sum(-1), (p.sum(dim=3) * ys).sum(-1)], dim=-1)


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) of softmax(logits) over each map, at pixel centres normalised to [0, 1]: [B, K, 2]."""
    b, k, h, w = logits.shape
    return _expected_xy(F.softmax(logits.flatten(2), dim=-1, dtype=torch.float32).view(b, k, h, w))


class KeypointDirectHead(TaskHead):
    """K keypoints regressed directly (sigmoid) from spatially pooled features; L1. Cheaper, less precise."""

    def __init__(self, embed_dim: int, n_features: int, num_points: int, hidden: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.pool = SpatialPool(embed_dim, n_features, hidden)
        self.mlp = nn.Sequential(nn.Linear(self.pool.out_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * num_points))

    def forward(self, feats: Features) -> torch.Tensor:
        return self.mlp(self.pool(feats)).float().sigmoid().view(-1, self.num_points, 2)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return keypoint_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()


__all__ = [
    "BoxHead",
    "ClassificationHead",
    "DPTSegmentationHead",
    "KeypointDirectHead",
    "KeypointHeatmapHead",
    "TaskHead",
    "gaussian_heatmaps",
    "soft_argmax",
]
