"""Voxel-spacing resampling shared by training and inference, and the target spacing planned for a dataset.

Images are resampled trilinearly, region masks per region (linear, then >= 0.5), probabilities back onto the
input's crop box before thresholding: nnU-Net's scheme, with torch's `interpolate` on the compute device instead
of scipy/skimage (the export step nnU-Net users find slowest, nnU-Net #1093/#2540). `align_corners=False` maps
box edge to box edge, so a round trip returns exactly the input's crop shape and the grid steps around it
(crop, RAS permutation) stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.errors import DataError

# Spacings within 1 % of the target count as equal: BraTS-style 1 mm data is never interpolated.
SPACING_TOLERANCE = 0.01
# nnU-Net's anisotropy rule: an axis over 3x coarser than the finest keeps a finer target (10th percentile).
ANISOTROPY_RATIO = 3.0

# ~1 G voxels (4 GB a channel in float32): beyond any CT or MRI volume at its planned spacing.
MAX_RESAMPLED_VOXELS = 2**30

Spacing = tuple[float, float, float]


def planned_spacing(spacings: Sequence[Sequence[float]]) -> Spacing:
    """Target spacing (mm, RAS axis order) for a dataset whose cases have `spacings`: the per-axis median, except
    that a strongly anisotropic coarse axis takes the 10th percentile of its spacings (never finer than the other
    axes), so thin-slice cases are not thrown away and thick ones are not over-sampled into huge volumes."""
    s = np.asarray(spacings, np.float64)
    if s.ndim != 2 or s.shape[1] != 3 or not len(s) or (s <= 0).any():
        raise ValueError(f"spacings must be positive (N, 3), got shape {s.shape}")
    target = np.median(s, axis=0)
    coarse = int(np.argmax(target))
    others = np.delete(target, coarse)
    if target[coarse] > ANISOTROPY_RATIO * others.min():
        target[coarse] = max(float(np.percentile(s[:, coarse], 10)), float(others.max()))
    return tuple(round(float(v), 6) for v in target)


def needs_resampling(spacing: Sequence[float], target: Sequence[float] | None) -> bool:
    """Whether a volume at `spacing` must be interpolated to reach `target` (None: keep the native spacing)."""
    if target is None:
        return False
    return any(abs(s - t) > SPACING_TOLERANCE * t for s, t in zip(spacing, target, strict=True))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis covering the same physical extent at `target` spacing (at least 1); DataError past
    `MAX_RESAMPLED_VOXELS`, a header whose voxel size is off by its units (a MemoryError of 156 GiB before)."""
    out = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))
    if math.prod(out) > MAX_RESAMPLED_VOXELS:
        mm = "x".join(f"{v:g}" for v in spacing)
        raise DataError(
            f"voxels of {mm} mm resampled to the model's {'x'.join(f'{v:g}' for v in target)} mm make a "
            f"{'x'.join(map(str, out))} grid: the header's voxel size (pixdim) looks wrong",
            hint="check pixdim and its units (xyzt_units) in the NIfTI header; if they are right, the model's planned "
            "spacing is too fine for this image",
        )
    return out


def resample_channels(
    array: np.ndarray | torch.Tensor, shape: Sequence[int], device: torch.device | None = None
) -> np.ndarray:
    """(C, x, y, z) -> (C, *shape) float32, trilinear, one channel at a time so peak memory is one channel."""
    out = np.empty((array.shape[0], *shape), np.float32)
    for i, channel in enumerate(array):
        out[i] = _interpolate(channel, shape, device).cpu().numpy()
    return out


def resample_masks(masks: np.ndarray, shape: Sequence[int], device: torch.device | None = None) -> np.ndarray:
    """(R, x, y, z) binary region masks -> (R, *shape) uint8: each region interpolated linearly and cut at 0.5,
    smoother than nearest-neighbour on thin structures (nnU-Net resamples segmentations the same way)."""
    out = np.empty((masks.shape[0], *shape), np.uint8)
    for i, mask in enumerate(masks):
        out[i] = (_interpolate(mask, shape, device) >= 0.5).cpu().numpy()
    return out


def resample_probabilities(
    probs: torch.Tensor, shape: Sequence[int], threshold: float, device: torch.device | None = None
) -> np.ndarray:
    """(R, x, y, z) probabilities -> (R, *shape) bool, each region cut at `threshold` as it is interpolated (in
    probability space, so region borders land between voxels of the input grid; one float channel in memory).
    For the probabilities themselves, `resample_channels`."""
    out = np.empty((probs.shape[0], *shape), bool)
    for i in range(probs.shape[0]):
        out[i] = (_interpolate(probs[i], shape, device) > threshold).cpu().numpy()
    return out


def _interpolate(volume: np.ndarray | torch.Tensor, shape: Sequence[int], device: torch.device | None) -> torch.Tensor:
    t = torch.as_tensor(volume)
    t = t.to(device=device or t.device, dtype=torch.float32)
    return F.interpolate(t[None, None], size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]
