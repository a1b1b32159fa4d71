"""Where each output voxel samples the template: a random placement, a smooth deformation and mass effect.

All coordinates are millimetres in the output's RAS frame, centred on the grid; the mapping runs from output to
template (pull-back), so sampling is one `map_coordinates` per tissue map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from medseg.synth.atlas import Atlas
from medseg.synth.fields import smooth_noise


@dataclass(frozen=True)
class Placement:
    """A rigid-plus-scale pose of the head: rotation (3x3), per-axis scale, shift (mm)."""

    rotation: np.ndarray
    scale: np.ndarray
    shift_mm: np.ndarray


@dataclass(frozen=True)
class MassEffect:
    """Tissue pushed away from `center_mm`: radius r maps to r * (1 - strength * exp(-(r / sigma)^2)).

    The map is monotonic in r for strength < 1, so the push never folds tissue.
    """

    center_mm: np.ndarray
    sigma_mm: float
    strength: float


def random_placement(rng: np.random.Generator) -> Placement:
    """Head pose jitter of a skull-stripped, co-registered BraTS case: a few degrees, +-6 % size, a few mm."""
    angles = rng.uniform(-6, 6, 3) * np.array([1.0, 1.0, 1.5])
    scale = rng.uniform(0.94, 1.06, 3) * np.array([1.0, 1.0, 0.97])
    return Placement(Rotation.from_euler("xyz", angles, degrees=True).as_matrix(), scale, rng.uniform(-4, 4, 3))


def grid_mm(shape: Sequence[int], spacing: float) -> np.ndarray:
    """(3, X, Y, Z) float32 millimetre coordinates of the output voxels, centred on the grid."""
    axes = [(np.arange(s, dtype=np.float32) - (s - 1) / 2) * spacing for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _push(points: np.ndarray, effect: MassEffect) -> np.ndarray:
    rel = points - effect.center_mm.astype(np.float32)[:, None, None, None]
    r2 = (rel**2).sum(axis=0)
    factor = 1.0 - effect.strength * np.exp(-r2 / effect.sigma_mm**2)
    return effect.center_mm.astype(np.float32)[:, None, None, None] + rel * factor


def template_coordinates(
    shape: Sequence[int],
    spacing: float,
    atlas: Atlas,
    placement: Placement,
    rng: np.random.Generator,
    mass_effects: Sequence[MassEffect] = (),
    deformation_mm: float = 3.0,
) -> np.ndarray:
    """(3, X, Y, Z) template voxel coordinates sampled by each output voxel (pull-back of the pose, a smooth
    random deformation of `deformation_mm` amplitude and the mass effect of each lesion)."""
    pts = grid_mm(shape, spacing)
    for effect in mass_effects:
        pts = _push(pts, effect)
    warp_scale = 30.0 / spacing
    for axis in range(3):
        pts[axis] += deformation_mm * smooth_noise(rng, shape, warp_scale)
    inv = (placement.rotation.T / placement.scale[:, None]).astype(np.float32)
    centred = pts - placement.shift_mm.astype(np.float32)[:, None, None, None]
    src = np.einsum("ij,j...->i...", inv, centred)
    return src + template_anchor(atlas, shape, spacing).astype(np.float32)[:, None, None, None]


def template_anchor(atlas: Atlas, shape: Sequence[int], spacing: float) -> np.ndarray:
    """Template voxel that the grid centre samples: the brain's box centre in x and y; in z, placed so the
    brain's top sits ~6 mm below the top of the grid and the brainstem may leave through the bottom, as in BraTS
    volumes, whose 155 slices do not hold the whole of a large head."""
    idx = np.argwhere(atlas.brain)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    anchor = (lo + hi) / 2.0
    anchor[2] = hi[2] + 6.0 - (shape[2] - 1) * spacing / 2.0
    return anchor


def template_to_output_mm(
    point: np.ndarray, atlas: Atlas, shape: Sequence[int], spacing: float, placement: Placement
) -> np.ndarray:
    """Output millimetre coordinates of a template voxel under `placement` (deformation ignored: a few mm)."""
    rel = np.asarray(point, float) - template_anchor(atlas, shape, spacing)
    return placement.rotation @ (placement.scale * rel) + placement.shift_mm


def sample(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear sample of a template map at `coords` (zero outside the template), float32."""
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0, output=np.float32)
