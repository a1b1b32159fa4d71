"""Loss, optimiser and schedule."""

from __future__ import annotations

import math

import torch
from monai.losses import DeepSupervisionLoss, DiceFocalLoss, DiceLoss
from torch import nn


class DiceBCELoss(nn.Module):
    """Dice + BCE over independent sigmoid region channels.

    Not MONAI's `DiceCELoss`: with more than one channel it applies softmax cross-entropy even when
    `sigmoid=True`, which is wrong for overlapping regions (ET within TC within WT).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        return self.dice(logits, target) + self.bce(logits, target)


def build_loss(name: str, deep_supervision: bool = False) -> nn.Module:
    """The region loss; with deep supervision, MONAI's `DeepSupervisionLoss` over [full, 1/2, 1/4 ...] outputs
    (target resized to each, weights halving per level)."""
    loss = DiceFocalLoss(sigmoid=True) if name == "dice_focal" else DiceBCELoss()
    return DeepSupervisionLoss(loss, weight_mode="exp") if deep_supervision else loss


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` epochs, then cosine decay to 0 at `total` (stepped once per epoch)."""

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
