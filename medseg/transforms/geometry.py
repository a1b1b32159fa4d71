"""Exact, invertible geometry steps: reorientation to RAS (axis flips/permutations, no resampling) and
foreground cropping. Inference undoes both on probabilities, so outputs land on the input's exact grid."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class GridMeta:
    """What was done to a (C, X, Y, Z) volume: original shape and orientation, and the crop box (in RAS);
    `spacing` is the input's voxel size in mm along the RAS axes, `model_spacing` that of the arrays the network
    sees (the planned spacing when the crop was resampled, else `spacing`): millimetre metrics and volume
    thresholds use the one that matches the array they measure."""

    orig_shape: tuple[int, int, int]
    ornt: tuple[tuple[float, float], ...]
    ras_shape: tuple[int, int, int]
    box_start: tuple[int, int, int]
    box_end: tuple[int, int, int]
    spacing: tuple[float, float, float]
    model_spacing: tuple[float, float, float]

    @property
    def resampled(self) -> bool:
        return self.model_spacing != self.spacing

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(e - s for s, e in zip(self.box_start, self.box_end, strict=True))

    def to_json(self) -> dict:
        return {k: [list(x) for x in v] if k == "ornt" else list(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> GridMeta:
        return cls(**{k: tuple(tuple(x) for x in v) if k == "ornt" else tuple(v) for k, v in d.items()})


def _apply(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    # nibabel's apply_orientation works on the first 3 axes; move channels last and back.
    moved = np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(np.moveaxis(nib.orientations.apply_orientation(moved, transform), -1, 0))


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, X, Y, Z) -> the same voxels with axes in RAS order; returns the array and its orientation."""
    ornt = nib.orientations.io_orientation(affine)
    return _apply(array, nib.orientations.ornt_transform(ornt, RAS)), ornt


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the R, A, S axes (the order of `to_ras` arrays), from a voxel-to-world affine."""
    out = [0.0, 0.0, 0.0]
    voxel = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    for axis, (target, _flip) in enumerate(nib.orientations.io_orientation(affine)):
        out[int(target)] = float(voxel[axis])
    return tuple(out)


def from_ras(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo `to_ras` exactly."""
    return _apply(array, nib.orientations.ornt_transform(RAS, np.asarray(ornt)))


def foreground_box(image: np.ndarray, enabled: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box of voxels nonzero in any channel (skull-stripped MRI has background exactly 0): MONAI's
    `generate_spatial_bounding_box` with margin 0, from one pass per channel and per-axis projections."""
    if enabled:
        nonzero = image[0] != 0
        for channel in image[1:]:
            nonzero |= channel != 0
        if nonzero.any():
            axes = [np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != i))) for i in range(3)]
            return tuple(int(a[0]) for a in axes), tuple(int(a[-1]) + 1 for a in axes)
    return (0, 0, 0), tuple(int(s) for s in image.shape[1:])


def crop_to_ras(
    image: np.ndarray, affine: np.ndarray, crop_foreground: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """`crop(to_ras(image), foreground_box(...))` without reorienting the voxels that the crop drops: the box is
    found on the input's own axes and only the cropped block is copied into RAS order. Returns the RAS crop, the
    input orientation, the full RAS shape and the box (start, end) in RAS."""
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, RAS)
    start, end = foreground_box(image, crop_foreground)
    ras = _apply(crop(image, start, end), transform)
    return ras, ornt, *box_in_ras(transform, image.shape[1:], start, end)


def box_in_ras(
    transform: np.ndarray, shape: tuple[int, ...], start: tuple[int, ...], end: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The full shape and the box (start, end) in RAS of a box found on the input's own axes, where `transform`
    (nibabel's `ornt_transform` to RAS) sends input axis i to RAS axis transform[i, 0], flipped if transform[i, 1] < 0.
    """
    ras_shape, ras_start, ras_end = [0, 0, 0], [0, 0, 0], [0, 0, 0]
    for axis, (target, flip) in enumerate(transform):
        t, n = int(target), shape[axis]
        ras_shape[t] = n
        ras_start[t], ras_end[t] = (start[axis], end[axis]) if flip > 0 else (n - end[axis], n - start[axis])
    return tuple(ras_shape), tuple(ras_start), tuple(ras_end)


def crop(array: np.ndarray, start, end) -> np.ndarray:
    return array[(slice(None), *(slice(s, e) for s, e in zip(start, end, strict=True)))]


def uncrop(array: np.ndarray, meta: GridMeta, fill: float = 0.0) -> np.ndarray:
    """Place a cropped (C, ...) array back into the full RAS grid."""
    out = np.full((array.shape[0], *meta.ras_shape), fill, dtype=array.dtype)
    out[(slice(None), *(slice(s, e) for s, e in zip(meta.box_start, meta.box_end, strict=True)))] = array
    return out


def restore_grid(array: np.ndarray, meta: GridMeta, fill: float = 0.0) -> np.ndarray:
    """Cropped RAS (C, ...) -> the input's original grid and orientation."""
    return from_ras(uncrop(array, meta, fill), np.asarray(meta.ornt))
