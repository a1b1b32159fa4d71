"""BraTS 2023 lesion-wise Dice and HD95, with the matching rules of the challenge's evaluation code.

GT lesions: 26-connected components of the ground truth, where components whose 3-fold dilations (18-connected
structuring element) touch count as one lesion. A GT lesion is matched by every predicted 26-connected component
that meets its own dilation; GT lesions of <= `min_volume_mm3` (50 mm3 for BraTS-GLI) are left out of the score,
but predictions meeting them are not false positives. Scored lesions without a match and predicted components
meeting no GT lesion score Dice 0 / HD95 374 mm; the score averages over (scored lesions + false positives).
Compared against the challenge's own code on real-model predictions: `benchmarks/compare_lesionwise.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.evaluation.metrics import dice, hd95

MISSED_HD95_MM = 374.0
_CONNECT = np.ones((3, 3, 3), bool)  # components: 26-connected
_GROW = ndimage.generate_binary_structure(3, 2)  # dilation: 18-connected, as the challenge code


@dataclass(frozen=True)
class _Matching:
    """Scored GT lesions with the predicted components that match each (None: missed), and the number of
    predicted components that meet no GT lesion."""

    pairs: list[tuple[np.ndarray, np.ndarray | None]]
    false_positives: int


def _crop_to_content(pred: np.ndarray, gt: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the box around their union plus `margin` voxels: components and dilations inside it
    are the same as on the whole volume, at a fraction of the cost."""
    union = pred | gt
    if not union.any():
        return pred, gt
    idx = np.argwhere(union)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, union.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return pred[box], gt[box]


def _gt_lesions(gt: np.ndarray, dilation: int) -> tuple[np.ndarray, int]:
    """GT voxels labelled by the component of the dilated GT they lie in: nearby pieces are one lesion."""
    grown_cc, n = ndimage.label(ndimage.binary_dilation(gt, _GROW, iterations=dilation), _CONNECT)
    return np.where(gt, grown_cc, 0), n


def _match(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], min_volume_mm3: float, dilation: int
) -> _Matching:
    # Both dilations start from GT voxels, so a margin of one dilation (+1) keeps every result of the whole volume.
    pred, gt = _crop_to_content(pred.astype(bool), gt.astype(bool), dilation + 1)
    lesions, n_lesions = _gt_lesions(gt, dilation)
    pred_cc, n_pred = ndimage.label(pred, _CONNECT)
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(lesions.ravel(), minlength=n_lesions + 1)
    pairs, matched = [], set()
    for lid in range(1, n_lesions + 1):
        lesion = lesions == lid
        hits = set(np.unique(pred_cc[ndimage.binary_dilation(lesion, _GROW, iterations=dilation)]).tolist()) - {0}
        matched |= hits
        if sizes[lid] * voxel_mm3 > min_volume_mm3:
            pairs.append((lesion, np.isin(pred_cc, list(hits)) if hits else None))
    return _Matching(pairs, n_pred - len(matched))


@dataclass(frozen=True)
class LesionScores:
    """One region's lesion-wise scores and the lesion counts behind them (the challenge code's Num_TP / Num_FN /
    Num_FP: scored GT lesions found and missed, predicted components meeting no GT lesion)."""

    dice: float
    hd95: float
    detected: int
    missed: int
    false_positives: int


def _dices(m: _Matching) -> list[float]:
    """Dice per scored lesion (0 when missed), then 0 per false positive: what the lesion-wise Dice averages."""
    return [dice(p, lesion) if p is not None else 0.0 for lesion, p in m.pairs] + [0.0] * m.false_positives


def lesion_wise(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    min_volume_mm3: float = 50.0,
    dilation: int = 3,
) -> LesionScores:
    """Lesion-wise Dice and HD95 (mm) for one region's boolean (X, Y, Z) masks with voxel `spacing` in mm;
    `dilation` counts voxels (as the challenge code: 3 mm at 1 mm). Dice 1 / HD95 0 when nothing is scored."""
    m = _match(pred, gt, spacing, min_volume_mm3, dilation)
    missed = sum(p is None for _, p in m.pairs)
    counts = (len(m.pairs) - missed, missed, m.false_positives)
    if not m.pairs and not m.false_positives:
        return LesionScores(1.0, 0.0, *counts)
    hds = [hd95(p, lesion, spacing) if p is not None else MISSED_HD95_MM for lesion, p in m.pairs]
    hds += [MISSED_HD95_MM] * m.false_positives
    return LesionScores(float(np.mean(_dices(m))), float(np.mean(hds)), *counts)


def lesion_dice_missed(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], *, min_volume_mm3: float = 50.0, dilation: int = 3
) -> tuple[float, int]:
    """Lesion-wise Dice and the count of missed scored lesions, without HD95 (~10x cheaper): for searches that
    score many candidate masks."""
    m = _match(pred, gt, spacing, min_volume_mm3, dilation)
    missed = sum(p is None for _, p in m.pairs)
    return (float(np.mean(_dices(m))) if m.pairs or m.false_positives else 1.0), missed


def lesion_dice(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], *, min_volume_mm3: float = 50.0, dilation: int = 3
) -> float:
    """Lesion-wise Dice alone (see `lesion_dice_missed`)."""
    return lesion_dice_missed(pred, gt, spacing, min_volume_mm3=min_volume_mm3, dilation=dilation)[0]
