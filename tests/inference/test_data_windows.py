"""Windows of real cases for int8 calibration and `--engine auto`'s accuracy check."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import DataError
from tests.conftest import make_bundle


def _cases(folder):
    from medseg.data.layouts import detect_cases
    from medseg.pipelines import get_task

    return detect_cases(folder, get_task("brats").layouts)[1]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_each_case_is_read_once_and_a_bad_one_is_skipped(brats2021_dir, tmp_path, monkeypatch):
    """Calibration re-read (and re-preprocessed) a case for every window, and one bad case aborted the export."""
    from medseg.inference import data_windows as module

    folder = _copy(brats2021_dir, tmp_path / "d")
    cases = _cases(folder)
    Path(cases[1].images[2]).write_bytes(b"")  # an empty t2 file
    reads = []
    real = module.read_case
    monkeypatch.setattr(module, "read_case", lambda case, **kw: reads.append(case.id) or real(case, **kw))
    bundle = make_bundle()
    windows = module.data_windows(bundle, cases, 8)
    assert len(windows) == 8 and all(w.shape == (4, *bundle.patch_size) for w in windows)
    assert reads == [c.id for c in cases]  # each once, the bad one too (skipped)
    with pytest.raises(DataError, match="empty file"):
        module.data_windows(bundle, cases[1:2], 2)  # nothing readable: the first reason


def test_a_foreground_of_one_intensity_and_a_patch_larger_than_the_image(brats2021_dir, tmp_path):
    """Z-scored, a foreground of one value is all 0: choosing a voxel of an empty foreground was a ValueError."""
    from medseg.inference.data_windows import data_windows

    folder = _copy(brats2021_dir, tmp_path / "d")
    case = _cases(folder)[0]
    for path in case.images:
        img = nib.load(path)
        data = np.zeros(img.shape, np.float32)
        data[4:6, 4:6, 4:6] = 5.0
        nib.save(nib.Nifti1Image(data, img.affine), path)
    windows = data_windows(make_bundle(), [case], 4)
    assert len(windows) == 4 and all(w.shape == (4, 32, 32, 32) and not w.any() for w in windows)
