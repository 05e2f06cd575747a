"""Losses the heads call (LibMTL-style separation of losses from heads), named for what they compute.

All take predictions and targets in model space (normalised coordinates for
boxes and keypoints) and return a 0-dim mean over the batch. None reads a
value back to the host or makes a shape that depends on data (no boolean-mask
indexing, nonzero or `.item()`), so a CUDA training step never waits on them:
smp's DiceLoss one-hot encodes with a fixed class count (no sync on CUDA), and
the GIoU term below is torchvision's with its masked assignment written as a
`torch.where`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

#: DETR's weights for the box terms: L1 on normalised xyxy and generalised IoU.
BOX_L1_WEIGHT = 5.0
BOX_GIOU_WEIGHT = 2.0


class DiceCELoss(nn.Module):
    """Soft Dice (smp, multiclass) plus pixel cross-entropy: Dice for overlap, CE for stable gradients.

    One log-softmax in float32 serves both terms: smp's DiceLoss from logits and F.cross_entropy
    each take their own, and under bf16 autocast the logits were first copied to float32 whole.
    The values are the same numbers (smp's `log_softmax(dim=1).exp()` and cross-entropy's
    `nll_loss(log_softmax(...))`, on the same float32 log-probabilities; tests/test_reduced_stride.py).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss("multiclass", from_logits=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1, dtype=torch.float32)
        return self.dice(logp.exp(), target) + F.nll_loss(logp, target)


#: smp DiceLoss's clamp on the Dice denominator.
DICE_EPS = 1e-7


def area_class_fractions(target: torch.Tensor, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """Per-cell class fractions [B, C, h, w] of an int64 label map [B, H, W] pooled to `size` (area, not nearest).

    The one-hot map is built in bfloat16: 0/1 and the means of up to 256 of them are exact
    there, so the fractions are exact and the transient full-size map is half an fp32 one.
    """
    b, hh, ww = target.shape
    onehot = torch.zeros((b, num_classes, hh, ww), dtype=torch.bfloat16, device=target.device)
    onehot.scatter_(1, target.unsqueeze(1), 1.0)
    return F.adaptive_avg_pool2d(onehot, size).float()


def reduced_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Dice + CE of low-resolution logits [B, C, h, w] against full-size labels [B, H, W], at the logits' size.

    The labels become area fractions q per cell (`area_class_fractions`), the soft target of each
    term: CE = mean over cells of -Σ_c q_c log p_c, and soft Dice per class 2Σpq / (Σp + Σq) over
    batch and cells, 1 - Dice zeroed for a class absent from the batch and averaged over classes
    (smp's multiclass DiceLoss, whose Σ min(p, q) equals Σ pq only for hard targets). With s×s
    cells of constant logits, every sum is 1/s² of the full-size loss's sum on those logits, so
    both terms equal it; on the decoder's smooth logits they agree within the tolerances that
    tests/test_reduced_stride.py shows. One log-softmax in float32 serves both terms (no float32
    copy of the logits under bf16 autocast).
    """
    logp = F.log_softmax(logits, dim=1, dtype=torch.float32)
    p = logp.exp()
    q = area_class_fractions(target, logits.shape[1], (logits.shape[-2], logits.shape[-1]))
    dims = (0, 2, 3)
    q_sum = q.sum(dims)
    dice = 2 * (p * q).sum(dims) / (p.sum(dims) + q_sum).clamp_min(eps)
    dice_loss = ((1 - dice) * (q_sum > 0)).mean()
    ce = -(q * logp).sum(1).mean()
    return dice_loss + ce


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class logits [B, C] against int64 labels [B]."""
    return F.cross_entropy(logits, target)


def _intersection_union(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union areas of paired xyxy boxes (torchvision's `_loss_inter_union`, without a mask)."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xi1, yi1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xi2, yi2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlap = (yi2 > yi1) & (xi2 > xi1)
    inter = torch.where(overlap, (xi2 - xi1) * (yi2 - yi1), torch.zeros_like(x1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def generalized_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean GIoU loss of xyxy boxes [N, 4]: `torchvision.ops.generalized_box_iou_loss(..., reduction="mean")`.

    The same numbers and gradients, bit for bit (the same operations in the same order;
    tests/test_model_moe.py); torchvision writes the intersection with `intsct[mask] = ...`,
    whose boolean indexing syncs on CUDA.
    """
    inter, union = _intersection_union(boxes1, boxes2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    area_c = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    loss = 1 - (iou - ((area_c - union) / (area_c + eps)))
    return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()


def box_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """5·L1 + 2·GIoU on xyxy boxes in [0, 1] (both need x2 >= x1, y2 >= y1)."""
    pred, target = pred.float(), target.float()
    l1 = F.l1_loss(pred, target)
    giou = generalized_box_iou_loss(pred, target)
    return BOX_L1_WEIGHT * l1 + BOX_GIOU_WEIGHT * giou


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on normalised keypoints [B, K, 2] (robust to the occasional far-off landmark)."""
    return F.l1_loss(pred.float(), target.float())


__all__ = [
    "DiceCELoss",
    "area_class_fractions",
    "box_loss",
    "cross_entropy_loss",
    "generalized_box_iou_loss",
    "keypoint_loss",
    "reduced_dice_ce_loss",
]
