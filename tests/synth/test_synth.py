from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.synth import brats_affine, synth_case, to_lps
from medseg.synth.anatomy import grid_spacing
from medseg.synth.atlas import shared_atlas
from medseg.synth.tumour import EDEMA, ENHANCING, NECROTIC, draw_grade, draw_lesions

SMALL = (64, 64, 40)  # the whole head at 3.75 mm: the anatomy generator at test speed


@pytest.fixture(scope="module")
def high_grade_case():
    """The first seed whose case has all three tumour classes (deterministic)."""
    for seed in range(20):
        images, label, spacing = synth_case("anatomy", SMALL, seed)
        if {NECROTIC, EDEMA, ENHANCING} <= set(np.unique(label).tolist()):
            return images, label, spacing
    raise AssertionError("no high-grade case in 20 seeds")


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
    spacing = grid_spacing(img.shape)
    assert itk.GetSpacing() == pytest.approx((spacing,) * 3)


def test_small_grids_hold_the_whole_head_at_a_coarser_spacing():
    assert grid_spacing((240, 240, 155)) == 1.0
    assert grid_spacing((120, 120, 78)) == 2.0
    aff = brats_affine((120, 120, 78), 2.0)
    assert nib.aff2axcodes(aff) == ("L", "P", "S") and np.allclose(nib.affines.voxel_sizes(aff), 2.0)


def test_lps_flip_puts_the_left_hemisphere_first():
    ras = np.zeros((4, 3, 2))
    ras[-1, 0, 0] = 1  # rightmost voxel
    lps = to_lps(ras)
    assert lps[0, -1, 0] == 1
    world = brats_affine(lps.shape) @ np.array([0, lps.shape[1] - 1, 0, 1])
    assert world[0] == 0 and world[1] == 0  # x is highest (rightmost) at LPS index 0


def test_anatomy_case_has_a_brain_a_three_part_glioma_and_mri_contrasts(high_grade_case):
    images, label, _ = high_grade_case
    brain = images["t1"] > 0
    stack = np.stack(list(images.values()))
    assert (stack[:, ~brain] == 0).all() and (stack[:, brain] > 0).all()  # background exactly 0
    assert 0.15 < brain.mean() < 0.6
    normal = brain & (label == 0)
    wm = {ch: np.median(v[normal]) for ch, v in images.items()}  # roughly white matter level
    et, edema = label == ENHANCING, label == EDEMA
    assert images["t1ce"][et].mean() / wm["t1ce"] > 1.3 * images["t1"][et].mean() / wm["t1"]  # enhancement
    assert images["flair"][edema].mean() > 1.2 * wm["flair"]
    # CSF: the brightest normal T2 voxels are dark on FLAIR (ventricles), unlike edema.
    csf = normal & (images["t2"] > np.percentile(images["t2"][normal], 97))
    assert np.median(images["flair"][csf]) < wm["flair"]


def test_anatomy_keeps_a_real_brains_size_at_any_grid():
    for shape in (SMALL, (120, 120, 78)):
        images, _, spacing = synth_case("anatomy", shape, 3)
        brain_ml = (images["t1"] > 0).sum() * spacing**3 / 1000
        assert 1300 < brain_ml < 2100, (shape, brain_ml)  # the MNI ICBM152 brain mask is ~1.7 l


def test_grade_mix_and_multifocal_cases():
    rng = np.random.default_rng(0)
    grades = [draw_grade(rng) for _ in range(400)]
    assert 0.1 < grades.count("low") / 400 < 0.3 and grades.count("edema_only") > 0
    atlas = shared_atlas()
    counts = [len(draw_lesions(np.random.default_rng(s), atlas.wm, atlas.depth)) for s in range(60)]
    assert 2 in counts and counts.count(1) > counts.count(2)


def test_synth_is_deterministic_for_both_kinds():
    for kind, shape in (("anatomy", (32, 32, 24)), ("simple", (32, 32, 24))):
        a, la, _ = synth_case(kind, shape, 9)
        b, lb, _ = synth_case(kind, shape, 9)
        assert np.array_equal(la, lb) and all(np.array_equal(a[k], b[k]) for k in a)


def test_simple_case_keeps_three_parts_and_contrasts():
    images, label, spacing = synth_case("simple", (64, 64, 48), 3)
    assert spacing == 1.0 and set(np.unique(label)) == {0, 1, 2, 3}
    et = label == ENHANCING
    assert images["t1ce"][et].mean() > 1.5 * images["t1"][et].mean()
