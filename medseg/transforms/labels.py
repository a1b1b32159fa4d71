"""Label map <-> overlapping region channels, in any native label convention (2021: ET=4, 2023: ET=3)."""

from __future__ import annotations

import numpy as np
import torch

from medseg.core import LabelScheme


def labels_to_regions(label: np.ndarray, scheme: LabelScheme, label_map: dict[str, int]) -> np.ndarray:
    """(X, Y, Z) native label map -> (R, X, Y, Z) uint8 region masks in `scheme.regions` order."""
    return np.stack([np.isin(label, [label_map[c] for c in classes]) for classes in scheme.regions.values()]).astype(
        np.uint8
    )


def regions_to_labels(regions: np.ndarray, scheme: LabelScheme, label_map: dict[str, int]) -> np.ndarray:
    """(R, X, Y, Z) binary regions -> (X, Y, Z) uint8 native labels, painting in `scheme.paint_order`."""
    names = scheme.region_names
    out = np.zeros(regions.shape[1:], np.uint8)
    for region, cls in scheme.paint_order:
        out[regions[names.index(region)] > 0] = label_map[cls]
    return out


def region_masks(probs: torch.Tensor, threshold: float, exclusive: bool) -> torch.Tensor:
    """(R, X, Y, Z) region probabilities -> bool masks, where the probabilities live (host or GPU): each region
    above `threshold` (sigmoid regions), or the argmax over background (1 - sum) and the regions (softmax classes,
    which the threshold does not apply to)."""
    if not exclusive:
        return probs > threshold
    background = 1.0 - probs.sum(dim=0, keepdim=True)
    winner = torch.cat([background, probs]).argmax(dim=0)
    return torch.stack([winner == i for i in range(1, probs.shape[0] + 1)])
