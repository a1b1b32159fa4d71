"""Resampling to the planned spacing and back: planning rule, no-op detection, round-trip accuracy, exact shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.core import CaseVolumes
from medseg.evaluation.metrics import dice
from medseg.pipelines.brats import SCHEME
from medseg.transforms.geometry import restore_grid
from medseg.transforms.preprocess import PreprocessPlan, preprocess_case
from medseg.transforms.resample import (
    needs_resampling,
    planned_spacing,
    resample_masks,
    resample_probabilities,
    resampled_shape,
)

CASE = type("C", (), {"label_map": {"necrotic": 1, "edema": 2, "enhancing": 4}})()


def _ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre_mm, radii_mm, strict=True)) <= 1


def test_planned_spacing_is_the_median_with_nnunets_anisotropy_rule():
    assert planned_spacing([(1, 1, 1), (0.8, 0.9, 1.2), (1.2, 1, 1)]) == (1.0, 1.0, 1.0)
    # Thick slices (5 mm) in most cases, thin in a few: the coarse axis takes the 10th percentile, not the median.
    ct = [(0.7, 0.7, 5.0)] * 8 + [(0.8, 0.8, 1.0)] * 2
    target = planned_spacing(ct)
    assert target[:2] == (0.7, 0.7) and target[2] == pytest.approx(np.percentile([5.0] * 8 + [1.0] * 2, 10))
    # ...but never finer than the in-plane spacing.
    assert planned_spacing([(0.7, 0.7, 5.0)] * 8 + [(0.8, 0.8, 0.5)] * 2)[2] == pytest.approx(0.7)
    with pytest.raises(ValueError):
        planned_spacing([(1, 1, 0)])


def test_spacing_within_one_percent_is_not_resampled():
    assert not needs_resampling((1.0, 1.0, 1.005), (1.0, 1.0, 1.0))
    assert not needs_resampling((0.7, 0.7, 2.5), None)
    assert needs_resampling((0.7, 0.7, 2.5), (1.0, 1.0, 1.0))


def test_mask_round_trip_through_an_anisotropic_grid_keeps_dice_above_098():
    """CT-like: 0.7 x 0.7 x 2.5 mm -> 1.5 mm isotropic -> back, as training (labels) and inference (probabilities)
    see it."""
    native, target, shape = (0.7, 0.7, 2.5), (1.5, 1.5, 1.5), (160, 150, 40)
    truth = _ellipsoid(shape, native, (56, 52, 50), (25, 18, 30))
    model_shape = resampled_shape(shape, native, target)
    assert model_shape == (75, 70, 67)
    down = resample_masks(truth[None].astype(np.uint8), model_shape)
    back = resample_probabilities(torch.from_numpy(down.astype(np.float32)), shape, threshold=0.5)
    assert back.shape == (1, *shape)
    assert dice(back[0], truth) >= 0.98


def test_preprocessing_resamples_image_and_regions_to_the_plan_and_restores_the_input_grid():
    image = np.zeros((2, 30, 24, 12), np.float32)
    image[:, 4:26, 3:21, 1:11] = 5.0 + np.random.default_rng(0).normal(size=(2, 22, 18, 10))
    label = np.zeros((30, 24, 12), np.int16)
    label[10:20, 8:16, 4:8] = 2
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS, 2 mm slices
    plan = PreprocessPlan(spacing=(1.0, 1.0, 1.0))
    pre = preprocess_case(CaseVolumes(image, label, affine), CASE, SCHEME, plan)
    assert pre.meta.resampled and pre.meta.spacing == (1.0, 1.0, 2.0) and pre.meta.model_spacing == (1.0, 1.0, 1.0)
    assert pre.image.shape == (2, 22, 18, 20) and pre.regions.shape == (3, 22, 18, 20)  # slices doubled
    assert pre.regions[2].sum() == pytest.approx(2 * (label == 2).sum(), rel=0.1)  # WT volume in voxels doubles
    back = resample_probabilities(torch.from_numpy(pre.regions.astype(np.float32)), pre.meta.crop_shape, 0.5)
    restored = restore_grid(back, pre.meta, fill=False)
    assert restored.shape == (3, 30, 24, 12)
    assert dice(restored[2], label > 0) >= 0.95
    native = preprocess_case(CaseVolumes(image, label, affine), CASE, SCHEME, PreprocessPlan(spacing=(1.0, 1.0, 2.0)))
    assert not native.meta.resampled and native.image.shape == (2, 22, 18, 10)  # at the plan already: untouched


def test_a_voxel_size_off_by_its_units_is_named_not_a_memory_error():
    """Spacing x100 in a header (cm or a wrong scale read as mm) asked for a 156 GiB array (MemoryError) at 1.5 mm;
    x0.01 fits everything into a few voxels and labelled every voxel one class without a word."""
    from medseg.errors import DataError
    from medseg.inference.case_predict import extent_warnings
    from medseg.transforms.geometry import GridMeta

    assert resampled_shape((512, 512, 100), (0.8, 0.8, 3.0), (1.5, 1.5, 1.5)) == (273, 273, 200)
    with pytest.raises(DataError, match=r"voxels of 80x80x300 mm .* 27307x27307x20000 grid: .*pixdim"):
        resampled_shape((512, 512, 100), (80.0, 80.0, 300.0), (1.5, 1.5, 1.5))

    def meta(spacing):
        return GridMeta(
            (512, 512, 100), ((0, 1), (1, 1), (2, 1)), (512, 512, 100), (0, 0, 0), (512, 512, 100), spacing, spacing
        )

    assert extent_warnings(meta((0.8, 0.8, 3.0))) == []
    assert extent_warnings(meta((0.008, 0.008, 0.03))) == [
        "the image spans only 4.1 x 4.1 x 3 mm (voxels of 0.008x0.008x0.03 mm): check the header's voxel size "
        "(pixdim) and units"
    ]
