"""The contract every registered network follows: (B, M, D, H, W) in, (B, out, D, H, W) logits out."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """Base class: declares the input stride and whether missing modalities can be masked.

    Subclasses set `stride` (every spatial size must be a multiple of it), optionally `fixed_size`
    (models whose position embeddings pin the input size) or `min_size` (a deepest stage that normalises over its
    own voxels needs more than one there), and `supports_modality_mask`.
    """

    stride: int = 1
    min_size: int = 1
    fixed_size: tuple[int, int, int] | None = None
    supports_modality_mask: bool = False
    in_channels: int
    out_channels: int

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise ValueError unless `x` is (B, in_channels, D, H, W) with a valid spatial size."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        problem = self.size_problem(spatial)
        if problem:
            raise ValueError(f"{type(self).__name__} needs {problem}, got {spatial}")

    def size_problem(self, spatial: tuple[int, ...]) -> str | None:
        """What spatial size this network needs where `spatial` is not one it takes (None: it takes it)."""
        if self.fixed_size is not None and tuple(spatial) != tuple(self.fixed_size):
            return f"spatial size {tuple(self.fixed_size)}"
        if any(s < self.min_size for s in spatial):
            return f"spatial sizes of at least {self.min_size}"
        if any(s % self.stride for s in spatial):
            return f"spatial sizes that are multiples of {self.stride}"
        return None
