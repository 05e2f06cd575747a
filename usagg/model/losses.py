"""Losses the heads call (LibMTL-style separation of losses from heads), named for what they compute.

All take predictions and targets in model space (normalised coordinates for
boxes and keypoints) and return a 0-dim mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn
from torchvision.ops import generalized_box_iou_loss

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


def box_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """5·L1 + 2·GIoU on xyxy boxes in [0, 1] (both need x2 >= x1, y2 >= y1)."""
    pred, target = pred.float(), target.float()
    l1 = F.l1_loss(pred, target)
    giou = generalized_box_iou_loss(pred, target, reduction="mean")
    return BOX_L1_WEIGHT * l1 + BOX_GIOU_WEIGHT * giou


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on normalised keypoints [B, K, 2] (robust to the occasional far-off landmark)."""
    return F.l1_loss(pred.float(), target.float())


__all__ = ["DiceCELoss", "box_loss", "cross_entropy_loss", "keypoint_loss"]
