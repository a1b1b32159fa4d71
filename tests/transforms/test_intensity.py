"""Channel normalisation by modality: MRI per case, CT from dataset foreground statistics (scan -> plan -> bundle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.config import DataConfig, IntensityRule
from medseg.core import CaseVolumes
from medseg.data.planning import plan_preprocessing
from medseg.data.validate import scan_dataset
from medseg.errors import ConfigError
from medseg.io.nifti import save_nifti
from medseg.pipelines import get_task
from medseg.pipelines.brats import CHANNELS
from medseg.transforms.intensity import ChannelNorm
from medseg.transforms.preprocess import PreprocessPlan, preprocess_case

CASE = type("C", (), {"label_map": {}})()


def _ct_dataset(root, n=3):
    """nnU-Net layout, one CT channel: air -1000, body 40 HU, an organ of 100-200 HU (the labelled foreground)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        image = np.full((24, 24, 12), -1000.0)
        image[2:22, 2:22] = 40.0
        label = np.zeros(image.shape, np.uint8)
        label[8:16, 8:16, 3:9] = 1
        image[label == 1] = rng.uniform(100, 200, int(label.sum()))
        save_nifti(image, np.diag([0.8, 0.8, 2.5, 1]), root / "imagesTr" / f"c{i}_0000.nii.gz", np.int16)
        save_nifti(label, np.diag([0.8, 0.8, 2.5, 1]), root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}})
    )


def test_scan_stores_ct_foreground_statistics_and_the_plan_uses_them(tmp_path):
    _ct_dataset(tmp_path)
    task = get_task("generic", tmp_path)
    manifest, bad = scan_dataset(tmp_path, task)
    assert not bad
    stats = manifest.intensity_stats["ct"]
    assert 148 < stats["mean"] < 152 and 100 <= stats["p00_5"] < 102 and 198 < stats["p99_5"] <= 200  # organ only
    plan = plan_preprocessing(DataConfig(), [c.case for c in manifest.cases], task.channels, manifest.intensity_stats)
    (norm,) = plan.intensity
    assert norm.kind == "ct" and norm.lower == stats["p00_5"] and norm.std == pytest.approx(stats["std"])


def test_mri_manifests_carry_no_statistics_and_plan_per_case_zscore(brats2021_dir):
    from medseg.pipelines.brats import brats_task

    manifest, _ = scan_dataset(brats2021_dir, brats_task())
    assert manifest.intensity_stats == {}
    assert plan_preprocessing(DataConfig(spacing="native"), [], CHANNELS).intensity is None


def test_ct_without_statistics_unknown_channels_and_windows_without_numbers_are_refused():
    with pytest.raises(ConfigError, match="no intensity statistics"):
        plan_preprocessing(DataConfig(spacing="native"), [], ["ct"], {})
    with pytest.raises(ConfigError, match="unknown channel"):
        plan_preprocessing(DataConfig(spacing="native", intensity={"pet": IntensityRule()}), [], ["ct"])
    with pytest.raises(ValueError, match="needs window"):
        IntensityRule(kind="window")
    window = DataConfig(spacing="native", intensity={"ct": IntensityRule(kind="window", window=(-160, 240))})
    assert plan_preprocessing(window, [], ["ct"]).intensity == (ChannelNorm("window", -160, 240),)


def test_ct_is_clipped_and_zscored_with_the_plans_numbers_and_windows_scale_to_unit_range():
    image = np.array([-1000.0, 0.0, 100.0, 3000.0], np.float32).reshape(1, 4, 1, 1)
    vols = CaseVolumes(image, None, np.eye(4))
    ct = PreprocessPlan(crop_foreground=False, intensity=(ChannelNorm("ct", -100, 300, 100, 50),))
    np.testing.assert_allclose(preprocess_case(vols, CASE, None, ct).image.ravel(), [-4, -2, 0, 4])
    window = PreprocessPlan(crop_foreground=False, intensity=(ChannelNorm("window", -100, 300),))
    np.testing.assert_allclose(preprocess_case(vols, CASE, None, window).image.ravel(), [0, 0.25, 0.5, 1])
    # The same case under MRI rules: z-scored on its own nonzero voxels.
    mri = preprocess_case(vols, CASE, None, PreprocessPlan(crop_foreground=False)).image.ravel()
    assert mri[1] == 0 and abs(mri[[0, 2, 3]].mean()) < 1e-6
