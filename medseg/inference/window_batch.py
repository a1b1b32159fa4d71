"""Sliding windows of several small cases in one forward pass.

A case whose foreground box holds fewer windows than the window batch leaves most of every forward pass empty
(a 40 mm hippocampus crop is one 64^3 window); a folder of such cases runs the network once per case. Here the
windows of several cases share forward passes. MONAI's `sliding_window_inference` stitches one image (or a batch of
equally sized ones) at a time, so the stitching is MONAI's arithmetic written out for a list of images: its window
grid (`dense_patch_slices`, the scan interval of `_get_scan_interval`), its symmetric zero padding of images smaller
than the window, its importance map (`compute_importance_map`), the same accumulation order; tested equal to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices

from medseg.inference.engines import Engine


def _scan_interval(size: Sequence[int], roi: Sequence[int], overlap: float) -> tuple[int, ...]:
    """MONAI's window step per axis: the window itself where it fits exactly, else (1 - overlap) of it."""
    return tuple(r if r == s else max(1, int(r * (1 - overlap))) for s, r in zip(size, roi, strict=True))


def _padding(shape: Sequence[int], roi: Sequence[int]) -> list[int]:
    """MONAI's symmetric zero padding up to the window, in `F.pad` order (last axis first)."""
    pad = []
    for s, r in zip(reversed(shape), reversed(roi), strict=True):
        diff = max(r - s, 0)
        pad.extend([diff // 2, diff - diff // 2])
    return pad


def window_slices(shape: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows MONAI's sliding window visits in a (padded) volume of `shape`, in its order."""
    size = [max(s, r) for s, r in zip(shape, roi, strict=True)]
    return dense_patch_slices(size, roi, _scan_interval(size, roi, overlap))


@dataclass
class _Stitch:
    """One image being stitched: its padded input, its windows and the weighted sums of their outputs."""

    image: torch.Tensor
    mask: torch.Tensor | None
    pad: list[int]
    slices: list[tuple[slice, ...]]
    total: torch.Tensor | None = None


def _batch_mask(masks: list[torch.Tensor | None], channels: int, device: torch.device) -> torch.Tensor | None:
    """The (B, M) modality mask of a batch of windows: None when no case misses a channel."""
    if all(m is None for m in masks):
        return None
    full = torch.ones((1, channels), dtype=torch.bool, device=device)
    return torch.cat([full if m is None else m for m in masks])


@torch.no_grad()
def sliding_predict_many(
    network: Engine,
    images: Sequence[torch.Tensor],
    roi: Sequence[int],
    *,
    overlap: float,
    mode: str,
    sw_batch_size: int,
    device: torch.device,
    modality_masks: Sequence[torch.Tensor | None],
    exclusive: bool = False,
) -> list[torch.Tensor]:
    """Region probabilities (R, x, y, z) on `device` for each (M, x, y, z) image, as `sliding.sliding_predict`
    gives them one at a time (without TTA), with windows of consecutive images sharing forward passes of
    `sw_batch_size` windows. `modality_masks`: each image's (M,) mask of present channels, or None."""
    roi = tuple(roi)
    weight = compute_importance_map(roi, mode=mode, device=device)[None, None]
    stitches = []
    for image, mask in zip(images, modality_masks, strict=True):
        x = image.to(device=device, dtype=torch.float32)[None]
        pad = _padding(x.shape[2:], roi)
        x = F.pad(x, pad) if any(pad) else x
        stitches.append(
            _Stitch(x, None if mask is None else mask.to(device)[None], pad, window_slices(x.shape[2:], roi, overlap))
        )
    windows = [(s, w) for s in stitches for w in s.slices]
    for first in range(0, len(windows), sw_batch_size):
        chunk = windows[first : first + sw_batch_size]
        batch = torch.cat([s.image[(slice(None), slice(None), *w)] for s, w in chunk])
        logits = network(batch, _batch_mask([s.mask for s, _ in chunk], batch.shape[1], device))
        for (s, w), out in zip(chunk, logits, strict=True):
            if s.total is None:
                s.total = torch.zeros((1, out.shape[0], *s.image.shape[2:]), dtype=torch.float32, device=device)
            s.total[(slice(None), slice(None), *w)] += out[None] * weight
    probs = []
    for s in stitches:
        count = torch.zeros((1, 1, *s.image.shape[2:]), dtype=torch.float32, device=device)
        for w in s.slices:
            count[(slice(None), slice(None), *w)] += weight
        logits = s.total / count
        if any(s.pad):
            spatial = [
                slice(before, size - after)
                for before, after, size in zip(s.pad[4::-2], s.pad[5::-2], logits.shape[2:], strict=True)
            ]
            logits = logits[(slice(None), slice(None), *spatial)]
        p = torch.softmax(logits, dim=1)[:, 1:] if exclusive else torch.sigmoid(logits)
        probs.append(p[0])
    return probs
