"""BraTS 2023 lesion-wise Dice and HD95, following the challenge's published description.

GT lesions are 26-connected components; each is dilated (3 iterations) to collect the predicted components
that touch it; GT lesions <= `min_voxels` are ignored; unmatched GT lesions and predicted components that
touch no GT lesion score Dice 0 / HD95 374. Scores are averaged over (GT lesions + false positives).
Not validated against the AGPL `brats-evaluation` package; use that as the external reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.evaluation.metrics import dice, hd95

MISSED_HD95_MM = 374.0
_STRUCT = np.ones((3, 3, 3), bool)


def lesion_wise(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], min_voxels: int = 50, dilation: int = 3
) -> tuple[float, float]:
    """(lesion-wise Dice, lesion-wise HD95 mm) for one region's boolean masks."""
    gt_cc, n_gt = ndimage.label(gt.astype(bool), _STRUCT)
    pred_cc, n_pred = ndimage.label(pred.astype(bool), _STRUCT)
    sizes = ndimage.sum_labels(np.ones_like(gt_cc), gt_cc, index=np.arange(1, n_gt + 1)) if n_gt else []
    gt_ids = [i + 1 for i, s in enumerate(sizes) if s > min_voxels]
    if not gt_ids and n_pred == 0:
        return 1.0, 0.0
    dices, hds, matched_pred = [], [], set()
    for gid in gt_ids:
        lesion = gt_cc == gid
        grown = ndimage.binary_dilation(lesion, _STRUCT, iterations=dilation)
        hits = set(np.unique(pred_cc[grown]).tolist()) - {0}
        matched_pred |= hits
        if not hits:
            dices.append(0.0)
            hds.append(MISSED_HD95_MM)
            continue
        p = np.isin(pred_cc, list(hits))
        dices.append(dice(p, lesion))
        hds.append(hd95(p, lesion, spacing))
    false_pos = [pid for pid in range(1, n_pred + 1) if pid not in matched_pred]
    dices += [0.0] * len(false_pos)
    hds += [MISSED_HD95_MM] * len(false_pos)
    return float(np.mean(dices)), float(np.mean(hds))
