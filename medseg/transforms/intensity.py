"""Intensity normalisation per channel, chosen by modality: MRI per-case z-score, CT with dataset statistics.

MRI intensities have no physical unit, so each case is z-scored on its own nonzero (brain) voxels. CT values are
Hounsfield units, comparable across scans, so nnU-Net's CT scheme uses the dataset: clip to the 0.5 / 99.5
percentiles of the foreground (labelled) voxels of all training cases, then z-score with their mean and std. A
fixed window (MONAI's CT bundles: `ScaleIntensityRanged`) maps [lower, upper] HU to [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Kind = Literal["zscore", "ct", "window"]
# Channel names (lower case, as tasks store them) normalised as CT unless the config says otherwise.
CT_CHANNELS = frozenset({"ct"})
# Foreground voxels sampled per case for the dataset statistics (nnU-Net samples 10 000 as well).
SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class ChannelNorm:
    """How one channel is normalised. `ct`: clip to [lower, upper], then (x - mean) / std; `window`: clip to
    [lower, upper] HU and scale to [0, 1]; `zscore`: per case, on nonzero voxels (no numbers stored)."""

    kind: Kind = "zscore"
    lower: float = 0.0
    upper: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ChannelNorm:
        return cls(**d)


def sample_foreground(channel: np.ndarray, foreground: np.ndarray, seed: int) -> np.ndarray:
    """Up to `SAMPLES_PER_CASE` intensities of the labelled voxels of one case, drawn reproducibly."""
    values = channel[foreground]
    if values.size > SAMPLES_PER_CASE:
        values = np.random.default_rng(seed).choice(values, SAMPLES_PER_CASE, replace=False)
    return values.astype(np.float64)


def foreground_statistics(samples: np.ndarray) -> dict[str, float]:
    """Mean, std and 0.5 / 99.5 percentiles of pooled foreground intensities (the manifest stores these)."""
    if not samples.size:
        raise ValueError("no foreground voxels to compute intensity statistics from")
    return {
        "mean": float(samples.mean()),
        "std": float(samples.std()),
        "p00_5": float(np.percentile(samples, 0.5)),
        "p99_5": float(np.percentile(samples, 99.5)),
    }


def ct_norm(stats: dict[str, float]) -> ChannelNorm:
    return ChannelNorm("ct", stats["p00_5"], stats["p99_5"], stats["mean"], stats["std"])


def normalise_fixed(channel: np.ndarray, norm: ChannelNorm) -> np.ndarray:
    """A `ct` or `window` channel (X, Y, Z) -> float32, with the plan's stored numbers (no per-case statistics)."""
    out = np.clip(channel, norm.lower, norm.upper).astype(np.float32)
    if norm.kind == "window":
        out -= np.float32(norm.lower)
        out *= np.float32(1.0 / max(norm.upper - norm.lower, 1e-8))
    else:
        out -= np.float32(norm.mean)
        out *= np.float32(1.0 / max(norm.std, 1e-8))
    return out
