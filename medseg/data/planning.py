"""Preprocessing planned from the training cases (nnU-Net's "plans"): the target voxel spacing."""

from __future__ import annotations

from collections.abc import Sequence

from medseg.config import DataConfig
from medseg.core import Case
from medseg.io.nifti import read_affine
from medseg.transforms.geometry import ras_spacing
from medseg.transforms.preprocess import PreprocessPlan
from medseg.transforms.resample import planned_spacing


def plan_preprocessing(data: DataConfig, train_cases: Sequence[Case]) -> PreprocessPlan:
    """The plan training caches with and stores in the model bundle. `auto` spacing reads only the headers of the
    training cases; a dataset whose cases all share one spacing (BraTS) plans that spacing, so nothing is resampled."""
    if data.spacing == "native":
        spacing = None
    elif data.spacing == "auto":
        spacing = planned_spacing([ras_spacing(read_affine(c)) for c in train_cases])
    else:
        spacing = tuple(float(v) for v in data.spacing)
    return PreprocessPlan(crop_foreground=data.crop_foreground, spacing=spacing)
