"""The torch twins of the host's preprocessing and restoring (`transforms.on_device`) give what the numpy path
gives, for every orientation, crop, normalisation and resampling, so a GPU run predicts what a CPU run predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.core import CaseVolumes
from medseg.pipelines.brats import LABELS_2021, SCHEME
from medseg.transforms import on_device
from medseg.transforms.geometry import restore_grid
from medseg.transforms.intensity import ChannelNorm
from medseg.transforms.labels import regions_to_labels
from medseg.transforms.preprocess import PreprocessPlan, preprocess_case

AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "las_2mm": np.diag([-2.0, 1.0, 2.0, 1.0]),
    "permuted": np.array([[0, 0, -1.2, 10], [1.0, 0, 0, -5], [0, -0.9, 0, 3], [0, 0, 0, 1]]),
}
PLANS = {
    "zscore": PreprocessPlan(),
    "no_crop": PreprocessPlan(crop_foreground=False),
    "resampled": PreprocessPlan(spacing=(1.5, 1.0, 0.8)),
    "ct_and_window": PreprocessPlan(
        intensity=(ChannelNorm("ct", -100.0, 900.5, 120.25, 310.0), ChannelNorm("window", -50.0, 350.0))
    ),
}
CASE = type("C", (), {"label_map": LABELS_2021})()


def _raw(channels: int = 2) -> np.ndarray:
    """int16 volumes with an exactly-zero background around an off-centre head, as skull-stripped MRI."""
    rng = np.random.default_rng(0)
    raw = np.zeros((channels, 22, 19, 17), np.int16)
    raw[:, 3:16, 5:17, 2:12] = rng.integers(-200, 3000, (channels, 13, 12, 10))
    raw[1, 4, 6, 3] = 0  # a zero inside the head stays zero
    return raw


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("orientation", list(AFFINES))
def test_preprocessing_on_a_tensor_matches_the_host(plan, orientation):
    raw, affine = _raw(), AFFINES[orientation]
    host = preprocess_case(CaseVolumes(raw.astype(np.float32), None, affine), CASE, None, PLANS[plan])
    dev = on_device.preprocess(torch.from_numpy(raw), affine, PLANS[plan])
    assert dev.meta == host.meta
    assert isinstance(dev.image, torch.Tensor) and dev.image.dtype == torch.float32
    np.testing.assert_allclose(dev.image.numpy(), host.image, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(dev.stats, host.stats, rtol=1e-5)


def test_a_volume_without_foreground_keeps_its_whole_box():
    raw = np.zeros((2, 6, 5, 4), np.int16)
    assert on_device.foreground_box(torch.from_numpy(raw)) == ((0, 0, 0), (6, 5, 4))
    dev = on_device.preprocess(torch.from_numpy(raw), AFFINES["lps"], PreprocessPlan())
    assert dev.meta.crop_shape == (6, 5, 4) and not dev.image.any()


@pytest.mark.parametrize("orientation", list(AFFINES))
def test_labels_restored_on_a_tensor_match_the_host(orientation):
    raw, affine = _raw(), AFFINES[orientation]
    meta = preprocess_case(CaseVolumes(raw.astype(np.float32), None, affine), CASE, None).meta
    regions = np.random.default_rng(1).random((3, *meta.crop_shape)) > 0.6
    host = regions_to_labels(restore_grid(regions, meta, fill=False), SCHEME, LABELS_2021)
    dev = on_device.restore_grid(
        on_device.regions_to_labels(torch.from_numpy(regions), SCHEME, LABELS_2021)[None], meta
    )
    assert dev.dtype == torch.uint8 and dev.shape[1:] == raw.shape[1:]
    np.testing.assert_array_equal(dev[0].numpy(), host)
    assert set(np.unique(host)) == {0, 1, 2, 4}  # every label painted somewhere: the comparison means something
