from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.core import CaseVolumes
from medseg.pipelines.brats import SCHEME
from medseg.transforms.geometry import GridMeta, restore_grid
from medseg.transforms.preprocess import preprocess_case

AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "permuted": np.array([[0, 0, -1.2, 10], [1.0, 0, 0, -5], [0, -0.9, 0, 3], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(AFFINES))
def test_preprocess_then_restore_is_exact(name):
    rng = np.random.default_rng(0)
    image = np.zeros((2, 20, 18, 16), np.float32)
    image[:, 3:15, 4:12, 2:13] = rng.uniform(1, 2, (2, 12, 8, 11))
    label = np.zeros((20, 18, 16), np.int16)
    label[6:9, 5:10, 4:8] = 4
    case = type("C", (), {"label_map": {"necrotic": 1, "edema": 2, "enhancing": 4}})()
    pre = preprocess_case(CaseVolumes(image, label, AFFINES[name]), case, SCHEME)
    assert pre.image.shape[1:] == pre.regions.shape[1:]
    assert np.prod(pre.image.shape[1:]) == 12 * 8 * 11  # cropped to the nonzero box
    restored = restore_grid(pre.regions.astype(np.float32), pre.meta)
    assert restored.shape[1:] == label.shape
    assert np.array_equal(restored[0] > 0, label == 4)  # ET region lands on the original voxels
    assert GridMeta.from_json(pre.meta.to_json()) == pre.meta


def test_normalisation_is_zscore_on_nonzero_voxels():
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    case = type("C", (), {"label_map": {}})()
    pre = preprocess_case(CaseVolumes(image, None, np.eye(4)), case, None)
    assert abs(pre.image.mean()) < 1e-5 and abs(pre.image.std() - 1) < 1e-3
    assert pre.stats[0, 0] == pytest.approx(150, rel=1e-4)
    assert pre.stats[0, 2] == pytest.approx(1 - 216 / 1000)  # zero fraction of the whole volume, not the crop


def test_zscore_matches_monai_normalize_intensity():
    from monai.transforms import NormalizeIntensity

    from medseg.transforms.preprocess import channel_stats, zscore_nonzero

    rng = np.random.default_rng(0)
    image = rng.normal(300, 80, (4, 30, 20, 10)).astype(np.float32)
    image[:, :5] = 0  # background
    image[2, 5:] = 7.0  # constant nonzero channel: std 0
    image[3] = 0  # a missing (all-zero) channel
    expected = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(image.copy())).numpy()
    np.testing.assert_allclose(zscore_nonzero(image, channel_stats(image)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(AFFINES))
def test_thresholding_commutes_with_restoring_the_grid(name):
    """Prediction thresholds before inverting when probabilities are not saved: exact, as no interpolation."""
    rng = np.random.default_rng(1)
    image = np.zeros((1, 20, 18, 16), np.float32)
    image[:, 2:17, 3:15, 1:14] = 1
    case = type("C", (), {"label_map": {}})()
    meta = preprocess_case(CaseVolumes(image, None, AFFINES[name]), case, None).meta
    shape = tuple(e - s for s, e in zip(meta.box_start, meta.box_end, strict=True))
    probs = rng.random((3, *shape)).astype(np.float32)
    np.testing.assert_array_equal(restore_grid(probs, meta) > 0.5, restore_grid(probs > 0.5, meta, fill=False))


def test_spacing_follows_the_axes_into_ras_order():
    """The permuted affine's voxel axes are (y, z, x) in world space, with sizes 1.0, 0.9 and 1.2 mm."""
    image = np.ones((1, 4, 5, 6), np.float32)
    case = type("C", (), {"label_map": {}})()
    meta = preprocess_case(CaseVolumes(image, None, AFFINES["permuted"]), case, None).meta
    assert meta.spacing == pytest.approx((1.2, 1.0, 0.9))
    assert meta.ras_shape == (6, 4, 5)


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1), (-1, 1, -1)])
def test_cropping_before_reorienting_gives_the_same_voxels_and_box(perm, flips):
    """`crop_to_ras` reorients only the cropped block: it must equal reorienting everything, then cropping."""
    from monai.transforms.utils import generate_spatial_bounding_box

    from medseg.transforms.geometry import crop, crop_to_ras, foreground_box, to_ras

    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, list(perm)] * np.array(flips)[None, :]
    rng = np.random.default_rng(1)
    image = np.zeros((3, 21, 17, 13), np.float32)
    image[0, 2:9, 5:11, 1:4] = rng.uniform(1, 2, (7, 6, 3))
    image[2, 7:19, 3:6, 6:12] = rng.uniform(-2, -1, (12, 3, 6))
    ras, _ = to_ras(image, affine)
    start, end = foreground_box(ras)
    monai_start, monai_end = generate_spatial_bounding_box(ras, select_fn=lambda x: x != 0)
    assert (list(start), list(end)) == (list(monai_start), list(monai_end))
    cropped, _, ras_shape, ras_start, ras_end = crop_to_ras(image, affine)
    assert (ras_shape, ras_start, ras_end) == (ras.shape[1:], start, end)
    np.testing.assert_array_equal(cropped, crop(ras, start, end))
    assert cropped.flags.c_contiguous
