"""The case's grid and intensity steps in torch, so that a GPU run sends the decoded volume (int16 for most MRI) to
the device and receives the uint8 label volume: reorientation, foreground crop, statistics and normalisation on the
way in, threshold, labels, uncrop and un-permutation on the way out. The same arithmetic as `transforms.preprocess`,
`geometry` and `labels` (tested against them), on whichever device the tensors live; the host then only decodes
and encodes gzip.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import torch

from medseg.core import LabelScheme
from medseg.transforms.geometry import RAS, GridMeta, box_in_ras, ras_spacing
from medseg.transforms.intensity import ChannelNorm
from medseg.transforms.preprocess import Preprocessed, PreprocessPlan
from medseg.transforms.resample import needs_resampling, resampled_shape


def _apply(array: torch.Tensor, transform: np.ndarray) -> torch.Tensor:
    """nibabel's `apply_orientation` on a channel-first tensor: flip the input axes marked -1, then put each
    input axis where the transform sends it (a view; no copy)."""
    flips = [1 + axis for axis, (_, flip) in enumerate(transform) if flip < 0]
    out = array.flip(flips) if flips else array
    order = np.argsort(transform[:, 0])
    return out.permute(0, *(1 + int(a) for a in order))


def foreground_box(image: torch.Tensor, enabled: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`geometry.foreground_box` on a (C, X, Y, Z) tensor: the box of voxels nonzero in any channel."""
    if enabled:
        nonzero = (image != 0).any(dim=0)
        projections = [nonzero.any(dim=d) for d in ((1, 2), (0, 2), (0, 1))]
        stacked = torch.cat(projections).cpu().numpy()  # one small transfer for the whole box
        axes = np.split(stacked, np.cumsum([p.numel() for p in projections])[:-1])
        hits = [np.flatnonzero(a) for a in axes]
        if all(h.size for h in hits):
            return tuple(int(h[0]) for h in hits), tuple(int(h[-1]) + 1 for h in hits)
    return (0, 0, 0), tuple(int(s) for s in image.shape[1:])


def crop_to_ras(
    image: torch.Tensor, affine: np.ndarray, crop_foreground: bool = True
) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """`geometry.crop_to_ras` on a tensor: the nonzero box found on the input's axes, only the cropped block put
    in RAS order. Returns the RAS crop (contiguous), the input orientation, the full RAS shape and the box in RAS."""
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, RAS)
    start, end = foreground_box(image, crop_foreground)
    block = image[(slice(None), *(slice(s, e) for s, e in zip(start, end, strict=True)))]
    return _apply(block, transform).contiguous(), ornt, *box_in_ras(transform, tuple(image.shape[1:]), start, end)


def channel_stats(image: torch.Tensor, volume_voxels: int) -> np.ndarray:
    """`preprocess.channel_stats`: per channel the mean and std of the nonzero voxels and the zero fraction of the
    whole volume (`image` is its foreground crop), (M, 3) float64 on the host."""
    out = torch.zeros((image.shape[0], 3), dtype=torch.float64, device=image.device)
    for i, channel in enumerate(image):
        values = channel[channel != 0].double()
        if values.numel():
            out[i, 0], out[i, 1] = values.mean(), values.std(correction=0)
        out[i, 2] = 1.0 - values.numel() / volume_voxels
    return out.cpu().numpy()


def normalise(image: torch.Tensor, stats: np.ndarray, norms: tuple[ChannelNorm, ...] | None) -> torch.Tensor:
    """`preprocess.normalise` to float32: MRI channels z-scored on their nonzero voxels (MONAI's
    `NormalizeIntensity(nonzero=True)`), CT / window channels with the plan's numbers."""
    out = torch.empty(image.shape, dtype=torch.float32, device=image.device)
    for i, channel in enumerate(image):
        norm = norms[i] if norms else ChannelNorm()
        x = channel.float()
        if norm.kind == "zscore":
            mean, std = float(stats[i][0]), float(stats[i][1])
            out[i] = torch.where(channel != 0, (x - mean) * (1.0 / std if std > 0 else 1.0), 0.0)
        else:
            x = x.clamp(norm.lower, norm.upper)
            if norm.kind == "window":
                out[i] = (x - norm.lower) * (1.0 / max(norm.upper - norm.lower, 1e-8))
            else:
                out[i] = (x - norm.mean) * (1.0 / max(norm.std, 1e-8))
    return out


def preprocess(raw: torch.Tensor, affine: np.ndarray, plan: PreprocessPlan) -> Preprocessed:
    """`preprocess.preprocess_case` for inference on a decoded (M, X, Y, Z) tensor of any dtype: RAS, crop,
    normalise, resample; the image stays on the tensor's device (the statistics come to the host for warnings)."""
    image, ornt, ras_shape, start, end = crop_to_ras(raw, affine, plan.crop_foreground)
    spacing = ras_spacing(affine)
    resample = needs_resampling(spacing, plan.spacing)
    meta = GridMeta(
        tuple(int(s) for s in raw.shape[1:]),
        tuple(tuple(float(v) for v in row) for row in ornt),
        ras_shape,
        start,
        end,
        spacing,
        plan.spacing if resample else spacing,
    )
    stats = channel_stats(image, math.prod(raw.shape[1:]))
    normalised = normalise(image, stats, plan.intensity)
    if resample:
        shape = resampled_shape(normalised.shape[1:], spacing, plan.spacing)
        normalised = torch.nn.functional.interpolate(
            normalised[None], size=shape, mode="trilinear", align_corners=False
        )[0]
    return Preprocessed(normalised, None, meta, stats)


def regions_to_labels(regions: torch.Tensor, scheme: LabelScheme, label_map: dict[str, int]) -> torch.Tensor:
    """`labels.regions_to_labels` on a tensor: (R, ...) masks -> uint8 native labels in `scheme.paint_order`."""
    names = scheme.region_names
    out = torch.zeros(regions.shape[1:], dtype=torch.uint8, device=regions.device)
    for region, cls in scheme.paint_order:
        out.masked_fill_(regions[names.index(region)], label_map[cls])
    return out


def restore_grid(array: torch.Tensor, meta: GridMeta) -> torch.Tensor:
    """`geometry.restore_grid` on a (C, ...) tensor of the cropped RAS grid: zero-filled uncrop, then the input's
    own axis order and directions (contiguous)."""
    full = torch.zeros((array.shape[0], *meta.ras_shape), dtype=array.dtype, device=array.device)
    full[(slice(None), *(slice(s, e) for s, e in zip(meta.box_start, meta.box_end, strict=True)))] = array
    back = nib.orientations.ornt_transform(RAS, np.asarray(meta.ornt))
    return _apply(full, back).contiguous()
