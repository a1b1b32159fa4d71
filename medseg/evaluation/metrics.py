"""Region metrics with the classic BraTS conventions for empty regions, stated in every output.

Dice: both empty -> 1, exactly one empty -> 0. HD95 in millimetres (voxel spacing applied): both empty -> 0,
exactly one empty -> the image diagonal (BraTS fixes it at 373.13 mm, its 240x240x155 diagonal; a task says which
value it uses). MONAI's `DiceMetric` instead gives NaN for an empty ground truth; where neither is empty the numbers
agree (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def convention(empty_hd95_mm: float | None) -> str:
    """The empty-region convention in words, printed beside every table of these metrics."""
    worst = f"{empty_hd95_mm:g} mm" if empty_hd95_mm is not None else "the image diagonal in mm"
    return (
        f"BraTS classic: both empty Dice 1/HD95 0; one empty Dice 0/HD95 {worst}; "
        "lesion-wise (BraTS 2023): a missed or false lesion Dice 0/HD95 374 mm"
    )


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks (BraTS convention for empty masks)."""
    p, g = pred.astype(bool), gt.astype(bool)
    ps, gs = int(p.sum()), int(g.sum())
    if ps == 0 and gs == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (ps + gs)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], empty_mm: float | None = None) -> float:
    """95th percentile symmetric Hausdorff distance in mm (MONAI); exactly one empty mask scores `empty_mm`
    (default: the image diagonal)."""
    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return image_diagonal_mm(p.shape, spacing) if empty_mm is None else float(empty_mm)
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


# The metric table: name -> f(pred_mask, gt_mask, spacing, empty_hd95_mm). Add a metric by adding a line.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, Sequence[float], float | None], float]] = {
    "dice": lambda p, g, s, e: dice(p, g),
    "hd95": hd95,
    "vol_pred_ml": lambda p, g, s, e: volume_ml(p, s),
    "vol_gt_ml": lambda p, g, s, e: volume_ml(g, s),
}


def region_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    names: Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    empty_hd95_mm: float | None = None,
    metrics: Sequence[str] = tuple(METRICS),
) -> dict[str, float]:
    """(R, ...) predicted and ground-truth region masks -> {f"{metric}_{region}": value}."""
    out = {}
    for i, name in enumerate(names):
        for metric in metrics:
            out[f"{metric}_{name.lower()}"] = METRICS[metric](pred[i], gt[i], spacing, empty_hd95_mm)
    return out
