"""Loss, optimiser and schedule."""

from __future__ import annotations

import math

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss
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


class SoftmaxDiceCELoss(nn.Module):
    """Dice + cross-entropy over softmax classes (background + R exclusive regions), from region masks.

    The target gains its background channel (1 - any region) so MONAI's `DiceCELoss` gets one-hot classes; Dice
    leaves the background out, as nnU-Net does, cross-entropy keeps it.
    """

    def __init__(self, focal: bool = False) -> None:
        super().__init__()
        kwargs = {"softmax": True, "include_background": False, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
        self.loss = DiceFocalLoss(**kwargs) if focal else DiceCELoss(**kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        background = (1 - target.sum(dim=1, keepdim=True)).clamp(min=0)
        return self.loss(logits, torch.cat([background, target], dim=1))


def build_loss(name: str, deep_supervision: bool = False, exclusive: bool = False) -> nn.Module:
    """The region loss (sigmoid regions, or softmax classes when `exclusive`); with deep supervision, MONAI's
    `DeepSupervisionLoss` over [full, 1/2, 1/4 ...] outputs (target resized to each, weights halving per level)."""
    if exclusive:
        loss = SoftmaxDiceCELoss(focal=name == "dice_focal")
    else:
        loss = DiceFocalLoss(sigmoid=True) if name == "dice_focal" else DiceBCELoss()
    return DeepSupervisionLoss(loss, weight_mode="exp") if deep_supervision else loss


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def lr_factor(epoch: int, warmup: int, progress: float) -> float:
    """Learning-rate multiplier: linear warm-up over the first `warmup` epochs, then cosine decay to 0 as
    `progress` (the share of the run done, by epochs or by the time budget, whichever is further) reaches 1."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def run_progress(epoch: int, epochs: int, warmup: int, elapsed_s: float, max_minutes: float | None) -> float:
    """How far a run is at the start of `epoch`: past warm-up by epochs, or by time when a budget is set, so a
    time-bounded run still anneals to 0 by its end instead of stopping at a high learning rate."""
    by_epochs = (epoch - warmup) / max(1, epochs - warmup)
    by_time = elapsed_s / (60 * max_minutes) if max_minutes else 0.0
    return max(by_epochs, by_time)
