from __future__ import annotations

import os

import numpy as np

from medseg.data.cache import load_preprocessed
from medseg.data.layouts import detect_cases
from medseg.pipelines import get_task
from medseg.pipelines.brats import SCHEME
from medseg.transforms.preprocess import PreprocessPlan


def test_cache_miss_then_hit_then_invalidation(brats2021_dir, tmp_path):
    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    case = cases[0]
    first, hit1 = load_preprocessed(case, SCHEME, tmp_path, PreprocessPlan())
    second, hit2 = load_preprocessed(case, SCHEME, tmp_path, PreprocessPlan())
    assert (hit1, hit2) == (False, True)
    assert isinstance(second.image, np.memmap)
    np.testing.assert_array_equal(first.image, second.image)
    assert first.meta == second.meta
    # Preprocessing settings are part of the key.
    _, hit3 = load_preprocessed(case, SCHEME, tmp_path, PreprocessPlan(crop_foreground=False))
    assert not hit3
    # Touching a file invalidates its entry.
    st = os.stat(case.images[0])
    os.utime(case.images[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, hit4 = load_preprocessed(case, SCHEME, tmp_path, PreprocessPlan())
    assert not hit4
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_a_lost_race_is_tolerated_but_a_real_io_error_is_raised(brats2021_dir, tmp_path, monkeypatch):
    import pytest

    from medseg.data import cache
    from medseg.errors import DataError

    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    real_replace = os.replace

    def another_worker_won(src, dst):
        real_replace(src, dst)  # the winner's complete entry lands first
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(cache.os, "replace", another_worker_won)
    pre, hit = load_preprocessed(cases[0], SCHEME, tmp_path / "race", PreprocessPlan())
    assert not hit and pre.image.size

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "replace", disk_full)
    with pytest.raises(DataError, match="No space left on device"):
        load_preprocessed(cases[1], SCHEME, tmp_path / "full", PreprocessPlan())
    assert not list((tmp_path / "full").iterdir())  # the temporary folder is cleaned up
