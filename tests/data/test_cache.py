from __future__ import annotations

import os

import numpy as np

from medseg.data.cache import load_preprocessed
from medseg.data.layouts import detect_cases
from pipelines import get_task
from pipelines.brats import SCHEME


def test_cache_miss_then_hit_then_invalidation(brats2021_dir, tmp_path):
    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    case = cases[0]
    first, hit1 = load_preprocessed(case, SCHEME, tmp_path)
    second, hit2 = load_preprocessed(case, SCHEME, tmp_path)
    assert (hit1, hit2) == (False, True)
    assert isinstance(second.image, np.memmap)
    np.testing.assert_array_equal(first.image, second.image)
    assert first.meta == second.meta
    # Preprocessing settings are part of the key.
    _, hit3 = load_preprocessed(case, SCHEME, tmp_path, crop_foreground=False)
    assert not hit3
    # Touching a file invalidates its entry.
    st = os.stat(case.images[0])
    os.utime(case.images[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, hit4 = load_preprocessed(case, SCHEME, tmp_path)
    assert not hit4
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind
