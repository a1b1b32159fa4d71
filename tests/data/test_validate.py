"""Every validation error names the file and the problem, and the bad case is excluded from the manifest."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.validate import scan_dataset
from medseg.pipelines import get_task
from medseg.pipelines.brats import write_synthetic_dataset
from medseg.synth.anatomy import grid_spacing

SHAPE = (32, 32, 24)


@pytest.fixture()
def dataset(tmp_path) -> Path:
    write_synthetic_dataset(tmp_path, 2, "brats2021", SHAPE, seed=5)
    return tmp_path


def _case_file(root: Path, suffix: str) -> Path:
    return root / "BraTS2021_00001" / f"BraTS2021_00001_{suffix}.nii.gz"


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), path)


def _truncate(p: Path) -> None:
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])


def _not_nifti(p: Path) -> None:
    p.write_bytes(gzip.compress(b"this is not an image"))


def _shape(p: Path) -> None:
    _rewrite(p, np.ones((30, 32, 24), np.float32))


def _affine(p: Path) -> None:
    img = nib.load(p)
    aff = img.affine.copy()
    aff[0, 3] += 2.0
    _rewrite(p, np.asarray(img.dataobj), aff)


def _singular_affine(p: Path) -> None:
    img = nib.load(p)
    aff = img.affine.copy()
    aff[:3, 2] = 0.0  # a collapsed sform: the third axis has no direction (nibabel cannot make it a qform)
    out = nib.Nifti1Image(np.asarray(img.dataobj), None)
    out.set_qform(None, code=0)
    out.set_sform(aff, code=1)
    nib.save(out, p)


def _nan(p: Path) -> None:
    data = np.asarray(nib.load(p).dataobj).astype(np.float32)
    data[3, 3, 3] = np.nan
    _rewrite(p, data)


def _all_zero(p: Path) -> None:
    _rewrite(p, np.zeros(SHAPE, np.int16))


def _constant(p: Path) -> None:
    _rewrite(p, np.full(SHAPE, 7.5, np.float32))


def _two_d(p: Path) -> None:
    _rewrite(p, np.ones((32, 32, 1), np.float32))


def _four_d(p: Path) -> None:
    _rewrite(p, np.ones((*SHAPE, 2), np.float32))


def _uncompressed(p: Path) -> None:
    """A plain .nii written under a .nii.gz name (nibabel refuses it): the fix is a rename, not a re-export."""
    img = nib.load(p)
    nib.save(img, p.with_name("plain.nii"))
    p.with_name("plain.nii").replace(p)


def _label_value(p: Path) -> None:
    data = np.asarray(nib.load(p).dataobj).copy()
    data[0, 0, 0] = 3  # ET=3 is not a BraTS 2021 label (2021 uses 4)
    _rewrite(p, data.astype(np.uint8))


def _label_noise(p: Path) -> None:
    data = np.asarray(nib.load(p).dataobj).astype(np.float32)
    data[data == 2] = 1.9999  # a label map resampled or exported as float
    _rewrite(p, data)


CASES = [
    ("flair", lambda p: p.unlink(), "missing file BraTS2021_00001_flair"),
    ("t1", lambda p: p.write_bytes(b""), "empty file"),
    ("t2", _truncate, "truncated|not a readable"),
    ("t1ce", _not_nifti, "not a readable NIfTI"),
    ("t2", _uncompressed, r"an uncompressed NIfTI file named \.gz \(fix: rename it to BraTS2021_00001_t2\.nii\)"),
    ("t2", _shape, r"shape .* differs from BraTS2021_00001_t1.nii.gz's"),
    ("t2", _affine, r"affine differs from BraTS2021_00001_t1.nii.gz's by up to 2 mm \(tolerance"),  # both named, sized
    ("flair", _nan, "NaN or Inf"),
    ("t1", _singular_affine, "affine is singular .*sform/qform"),
    ("t1ce", _all_zero, "image is all 0 .*--allow-missing-modality"),
    ("t2", _constant, r"image is constant \(every voxel is 7.5\)"),
    ("t1", _two_d, r"2D .*\(fix: medseg segments 3D volumes"),
    ("t1", _four_d, "expected a 3D image"),
    ("seg", _label_noise, r"non-integer values \(e.g. 1.9999, \d+ voxels\) \(fix: round it"),
    ("seg", _label_value, r"label values \[3\] are not in the brats2021 label map"),
]


@pytest.mark.parametrize(("suffix", "damage", "message"), CASES, ids=[c[2].split()[0] + "-" + c[0] for c in CASES])
def test_bad_case_is_reported_and_excluded(dataset, suffix, damage, message):
    path = _case_file(dataset, suffix)
    damage(path)
    manifest, bad = scan_dataset(dataset, get_task("brats"), folds=2)
    assert [case.id for case, _ in bad] == ["BraTS2021_00001"]
    err = bad[0][1]
    assert err.case == "BraTS2021_00001"
    assert err.path and Path(err.path).name.startswith("BraTS2021_00001")
    assert re.search(message, str(err)), str(err)
    assert [c.case.id for c in manifest.cases] == ["BraTS2021_00000"]


def test_good_dataset_has_no_bad_cases(dataset):
    manifest, bad = scan_dataset(dataset, get_task("brats"), folds=2)
    assert not bad and len(manifest.cases) == 2
    assert manifest.cases[0].shape == SHAPE and manifest.cases[0].spacing == (grid_spacing(SHAPE),) * 3


def test_unrelated_files_are_ignored(dataset):
    (dataset / "README.txt").write_text("hello")
    shutil.copytree(dataset / "BraTS2021_00000", dataset / "extras")
    for f in (dataset / "extras").iterdir():
        f.rename(f.with_name(f.name.replace("BraTS2021_00000", "other")))
    manifest, bad = scan_dataset(dataset, get_task("brats"), folds=2)
    assert len(manifest.cases) == 2 and not bad
