"""Images stored as integers with scl_slope / scl_inter read back with their zero background exactly 0."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.core import Case
from medseg.io.nifti import read_case


@pytest.mark.parametrize(("slope", "inter"), [(0.03, -50.0), (0.5, 0.2), (1.0, -1024.0)])
def test_the_stored_code_nearest_zero_reads_as_zero(tmp_path, slope, inter):
    """int16 with an intercept that is not a multiple of the slope has no code for 0: the background read back as
    0.0132 everywhere, so the nonzero crop kept the whole volume and z-scoring counted the air (a case predicted
    119,273 voxels otherwise). Every other voxel keeps nibabel's value."""
    rng = np.random.default_rng(0)
    truth = np.zeros((12, 10, 8), np.float32)
    truth[3:9, 2:8, 2:6] = rng.uniform(20, 800, (6, 6, 4)).round()
    slope = float(np.float32(slope))
    raw = np.rint((truth - inter) / slope).astype(np.int16)
    img = nib.Nifti1Image(raw, np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, tmp_path / "c_t1.nii.gz")
    case = Case("c", (str(tmp_path / "c_t1.nii.gz"),), (None,), None, {}, "generic")
    image = read_case(case, with_label=False).image[0]
    assert ((image != 0) == (truth != 0)).all()  # the background is 0, the brain nonzero
    stored = np.asanyarray(nib.load(tmp_path / "c_t1.nii.gz").dataobj)
    np.testing.assert_array_equal(image[truth != 0], stored[truth != 0].astype(np.float32))
    assert np.abs(image - truth).max() <= slope / 2 + 1e-3
