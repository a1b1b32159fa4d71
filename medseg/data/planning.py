"""Preprocessing planned from the training data (nnU-Net's "plans"): target voxel spacing and channel normalisation."""

from __future__ import annotations

from collections.abc import Sequence

from medseg.config import DataConfig, IntensityRule
from medseg.core import Case
from medseg.errors import ConfigError
from medseg.io.nifti import read_affine
from medseg.transforms.geometry import ras_spacing
from medseg.transforms.intensity import CT_CHANNELS, ChannelNorm, ct_norm
from medseg.transforms.preprocess import PreprocessPlan
from medseg.transforms.resample import planned_spacing


def plan_preprocessing(
    data: DataConfig,
    train_cases: Sequence[Case],
    channels: Sequence[str],
    intensity_stats: dict[str, dict[str, float]] | None = None,
) -> PreprocessPlan:
    """The plan training caches with and stores in the model bundle. `auto` spacing reads only the headers of the
    training cases; a dataset whose cases all share one spacing (BraTS) plans that spacing, so nothing is resampled.
    `intensity_stats` (from the manifest) supplies the numbers of `ct` channels."""
    if data.spacing == "native":
        spacing = None
    elif data.spacing == "auto":
        spacing = planned_spacing([ras_spacing(read_affine(c)) for c in train_cases])
    else:
        spacing = tuple(float(v) for v in data.spacing)
    return PreprocessPlan(data.crop_foreground, spacing, _intensity(data, channels, intensity_stats or {}))


def _intensity(
    data: DataConfig, channels: Sequence[str], stats: dict[str, dict[str, float]]
) -> tuple[ChannelNorm, ...] | None:
    unknown = sorted(set(data.intensity) - set(channels))
    if unknown:
        raise ConfigError(
            f"data.intensity names unknown channel(s) {', '.join(unknown)}", hint=f"channels: {', '.join(channels)}"
        )
    norms = []
    for name in channels:
        rule = data.intensity.get(name) or IntensityRule(kind="ct" if name in CT_CHANNELS else "zscore")
        if rule.kind == "window":
            norms.append(ChannelNorm("window", *rule.window))
        elif rule.kind == "ct":
            if name not in stats:
                raise ConfigError(
                    f"channel {name} uses CT normalisation but the manifest has no intensity statistics for it",
                    hint="re-run `medseg data scan` (it needs labelled cases) or set data.intensity to a window",
                )
            norms.append(ct_norm(stats[name]))
        else:
            norms.append(ChannelNorm())
    return tuple(norms) if any(n.kind != "zscore" for n in norms) else None
