"""Random smooth fields and distance maps, the building blocks of the synthetic generators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], scale: float) -> np.ndarray:
    """Smooth random field in [-1, 1] with features about `scale` voxels wide, float32.

    Made at low resolution and zoomed up (linear), so a 240x240x155 field costs ~0.1 s.
    """
    low = tuple(max(2, round(s / scale)) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(low).astype(np.float32), 1.0)
    field = ndimage.zoom(field, [s / lo for s, lo in zip(shape, low, strict=True)], order=1)
    field = field[: shape[0], : shape[1], : shape[2]]
    if field.shape != tuple(shape):  # zoom can round one voxel short
        field = np.pad(field, [(0, s - f) for s, f in zip(shape, field.shape, strict=True)], mode="edge")
    return (field / (np.abs(field).max() + 1e-8)).astype(np.float32)


def ellipsoid_distance(shape: Sequence[int], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised distance to `center` (1.0 on the ellipsoid with semi-axes `radii`, in voxels), float32."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    sq = sum(((g.astype(np.float32) - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True))
    return np.sqrt(sq, dtype=np.float32)
