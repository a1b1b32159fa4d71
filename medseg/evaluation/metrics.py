"""Region metrics with the classic BraTS conventions for empty regions, stated in every output.

Dice: both empty -> 1, exactly one empty -> 0. HD95 in millimetres (voxel spacing applied): both empty -> 0,
exactly one empty -> 373.13 (the 240x240x155 image diagonal). MONAI's `DiceMetric` instead gives NaN for an
empty ground truth; where neither is empty the numbers agree (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

EMPTY_HD95_MM = 373.13
CONVENTION = "BraTS classic: both empty Dice 1/HD95 0; one empty Dice 0/HD95 373.13 mm"


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks (BraTS convention for empty masks)."""
    p, g = pred.astype(bool), gt.astype(bool)
    ps, gs = int(p.sum()), int(g.sum())
    if ps == 0 and gs == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (ps + gs)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile symmetric Hausdorff distance in mm (MONAI), BraTS convention for empty masks."""
    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return EMPTY_HD95_MM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.5+ internal deprecation chatter
        value = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(g)[None, None],
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing],
        )
    return float(value.item())


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    return float(mask.astype(bool).sum() * np.prod(spacing) / 1000.0)


# The metric table: name -> f(pred_mask, gt_mask, spacing). Add a metric by adding a line.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, Sequence[float]], float]] = {
    "dice": lambda p, g, s: dice(p, g),
    "hd95": hd95,
    "vol_pred_ml": lambda p, g, s: volume_ml(p, s),
    "vol_gt_ml": lambda p, g, s: volume_ml(g, s),
}


def region_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    names: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    metrics: Sequence[str] = tuple(METRICS),
) -> dict[str, float]:
    """(R, ...) predicted and ground-truth region masks -> {f"{metric}_{region}": value}."""
    out = {}
    for i, name in enumerate(names):
        for metric in metrics:
            out[f"{metric}_{name.lower()}"] = METRICS[metric](pred[i], gt[i], spacing)
    return out
