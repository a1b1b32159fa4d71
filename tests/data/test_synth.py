from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.data.synth import synth_case


def test_synth_files_read_identically_in_nibabel_and_simpleitk(brats2021_dir):
    t1 = brats2021_dir / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz"
    img = nib.load(t1)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.get_data_dtype() == np.int16
    itk = sitk.ReadImage(str(t1))
    # SimpleITK arrays are (z, y, x): transpose to compare with nibabel's (x, y, z).
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), np.asarray(img.dataobj))
    # ITK is LPS: an LPS-coded NIfTI has an identity-like direction with no flips.
    np.testing.assert_allclose(np.array(itk.GetDirection()).reshape(3, 3), np.eye(3), atol=1e-6)
    assert itk.GetSpacing() == (1.0, 1.0, 1.0)


def test_synth_tumour_has_three_parts_and_modality_contrasts():
    images, label = synth_case((64, 64, 48), seed=3)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    brain = images["t1"] > 0
    assert (np.stack(list(images.values()))[:, ~brain] == 0).all()  # background exactly 0
    et, edema = label == 3, label == 2
    # Enhancing rim only bright on T1ce; edema brighter than white matter on FLAIR.
    assert images["t1ce"][et].mean() > 1.5 * images["t1"][et].mean()
    assert images["flair"][edema].mean() > images["flair"][brain & (label == 0)].mean()


def test_synth_is_deterministic():
    a, la = synth_case((32, 32, 24), seed=9)
    b, lb = synth_case((32, 32, 24), seed=9)
    assert np.array_equal(la, lb) and all(np.array_equal(a[k], b[k]) for k in a)
