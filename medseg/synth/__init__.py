"""Synthetic BraTS-like cases: `anatomy` (real MNI brain anatomy, the default) or `simple` (tiny test cases).

`synth_case` returns volumes on a RAS voxel grid; `brats_affine` is the LPS affine BraTS releases carry, and
`to_lps` flips a RAS array onto it. Writing cases in a dataset's file layout is the task recipe's job.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from medseg.synth.anatomy import BRATS_SHAPE, anatomy_case
from medseg.synth.atlas import shared_atlas
from medseg.synth.simple import simple_case
from medseg.synth.tumour import EDEMA, ENHANCING, NECROTIC

Kind = Literal["anatomy", "simple"]
KINDS: tuple[Kind, ...] = ("anatomy", "simple")

__all__ = ["BRATS_SHAPE", "EDEMA", "ENHANCING", "KINDS", "NECROTIC", "Kind", "brats_affine", "synth_case", "to_lps"]


def synth_case(
    kind: Kind, shape: tuple[int, int, int] = BRATS_SHAPE, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """(channel -> float32 RAS volume with background 0, int label map with internal codes, spacing in mm)."""
    if kind == "anatomy":
        case = anatomy_case(shared_atlas(), shape, seed)
        return case.images, case.label, case.spacing
    images, label = simple_case(shape, seed)
    return images, label, 1.0


def brats_affine(shape: tuple[int, int, int], spacing: float = 1.0) -> np.ndarray:
    """LPS affine as released with BraTS (axis codes L, P, S), isotropic `spacing` mm."""
    aff = np.diag([-spacing, -spacing, spacing, 1.0])
    aff[:3, 3] = [0.0, (shape[1] - 1.0) * spacing, 0.0]
    return aff


def to_lps(volume: np.ndarray) -> np.ndarray:
    """A RAS-ordered (X, Y, Z) volume re-indexed for `brats_affine` (first two axes reversed)."""
    return np.ascontiguousarray(volume[::-1, ::-1])
