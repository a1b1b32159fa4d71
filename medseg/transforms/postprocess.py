"""Clean region masks by connected components, keeping nested regions nested (ET inside TC inside WT).

A rule per region: keep every component, drop components under a volume, or keep only the largest (nnU-Net's
choice; the BraTS 2023 winners drop small components). Which rule helps is decided on validation cases after
training (`evaluation.postprocess_search`) and carried in the model bundle; here the rules are only applied.
Components are 26-connected, as in the BraTS lesion-wise metrics (scipy.ndimage.label).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.config import RegionRule
from medseg.core import LabelScheme

_STRUCT_26 = np.ones((3, 3, 3), bool)


def describe_plan(rules: dict[str, RegionRule]) -> str:
    """One line for logs and `medseg runs show`: `WT: drop components < 100 mm3; TC: none; ...`."""
    return "; ".join(f"{region}: {rule.describe()}" for region, rule in rules.items()) or "none"


def nesting_order(scheme: LabelScheme) -> list[tuple[int, list[int]]]:
    """(region index, indices of the regions that contain it), outermost region first.

    Region A lies inside region B when A's classes are a proper subset of B's (BraTS: ET in TC in WT); regions
    of a generic task (one class each) contain nothing.
    """
    sets = [set(classes) for classes in scheme.regions.values()]
    order = sorted(range(len(sets)), key=lambda i: -len(sets[i]))
    return [(i, [j for j in range(len(sets)) if sets[i] < sets[j]]) for i in order]


def nest(masks: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Make every region contain its sub-regions (union), as painting labels WT -> TC -> ET does anyway."""
    out = masks.astype(bool, copy=True)
    for i, parents in nesting_order(scheme):
        for p in parents:
            out[p] |= out[i]
    return out


def apply_rule(mask: np.ndarray, rule: RegionRule, voxel_mm3: float) -> np.ndarray:
    """One region's boolean mask after its rule."""
    if rule.kind == "none" or not mask.any():
        return mask
    labels, n = ndimage.label(mask, _STRUCT_26)
    if n <= 1 and rule.kind == "largest":
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    if rule.kind == "largest":
        keep = np.zeros(n + 1, bool)
        keep[int(np.argmax(sizes))] = True
    else:
        keep = sizes * voxel_mm3 >= rule.min_volume_mm3
        keep[0] = False
    return keep[labels]


def postprocess(
    masks: np.ndarray, scheme: LabelScheme, rules: dict[str, RegionRule], spacing: Sequence[float]
) -> np.ndarray:
    """(R, X, Y, Z) region masks -> cleaned, nested masks (bool).

    Outermost regions first; each inner region is then clipped to its cleaned containers, so a speck removed
    from WT takes the TC and ET voxels inside it along.
    """
    voxel_mm3 = float(np.prod(spacing))
    out = nest(masks, scheme)
    names = scheme.region_names
    for i, parents in nesting_order(scheme):
        out[i] = apply_rule(out[i], rules.get(names[i], RegionRule()), voxel_mm3)
        for p in parents:
            out[i] &= out[p]
    return out
