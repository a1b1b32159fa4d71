"""The preprocessing plan training stores in every bundle: target spacing from the training cases' headers."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.config import DataConfig
from medseg.core import Case
from medseg.data.planning import plan_preprocessing
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import save_nifti
from tests.conftest import make_bundle

STATS = {"mean": 80.0, "std": 40.0, "p00_5": -20.0, "p99_5": 250.0}


def _cases(tmp_path, spacings) -> list[Case]:
    cases = []
    for i, (sx, sy, sz) in enumerate(spacings):
        path = tmp_path / f"c{i}.nii.gz"
        # voxel axes stored as (S, A, R): planning must report spacing along R, A, S whatever the file order
        affine = np.array([[0, 0, sx, 0], [0, sy, 0, 0], [sz, 0, 0, 0], [0, 0, 0, 1.0]])
        save_nifti(np.zeros((4, 4, 4)), affine, path)
        cases.append(Case(f"c{i}", (str(path),), (None,), None, {}, "test"))
    return cases


def test_auto_plans_the_median_spacing_along_ras_from_headers(tmp_path):
    cases = _cases(tmp_path, [(0.8, 0.8, 2.0), (0.7, 0.7, 1.5), (0.9, 0.9, 1.8)])
    assert plan_preprocessing(DataConfig(), cases, ["t1"]).spacing == (0.8, 0.8, 1.8)
    assert plan_preprocessing(DataConfig(spacing="native"), cases, ["t1"]).spacing is None
    fixed = plan_preprocessing(DataConfig(spacing=(1, 1, 1), crop_foreground=False), cases, ["t1"])
    assert fixed.spacing == (1.0, 1.0, 1.0) and not fixed.crop_foreground


def test_bad_spacing_setting_is_refused_at_the_edge():
    with pytest.raises(ValueError):
        DataConfig(spacing=(1, 0, 1))


def test_the_plan_round_trips_through_a_bundle_and_old_bundles_keep_native_spacing():
    bundle = make_bundle()
    bundle.preprocess = plan_preprocessing(DataConfig(spacing=(1, 1, 2)), [], ["ct"], {"ct": STATS})
    assert ModelBundle.from_dict(bundle.to_dict()).preprocess == bundle.preprocess
    old = {k: v for k, v in bundle.to_dict().items() if k != "preprocess"} | {"crop_foreground": False}
    plan = ModelBundle.from_dict(old).preprocess
    assert plan.spacing is None and not plan.crop_foreground
