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
    """Soft Dice (smp, multiclass, from logits) plus pixel cross-entropy: Dice for overlap, CE for stable gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss("multiclass", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # Dice's softmax and sums in float32 under bf16 autocast
        return self.dice(logits, target) + F.cross_entropy(logits, target)


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


__all__ = ["DiceCELoss", "box_loss", "cross_entropy_loss", "generalized_box_iou_loss", "keypoint_loss"]
