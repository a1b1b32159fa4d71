"""`.nii.gz` through ISA-L (zlib where isal is absent): standard gzip, the same NIfTI bytes as nibabel's own."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medseg.core import Case
from medseg.errors import DataError
from medseg.io import gzip_codec
from medseg.io.nifti import read_case, save_nifti

AFFINE = np.array([[-0.9, 0, 0, 90], [0, 1.1, 0, -120], [0, 0, 1.3, -70], [0, 0, 0, 1.0]])


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((40, 36, 30)) > 0.97).astype(np.uint8) * rng.integers(1, 5, (40, 36, 30), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["default", "zlib"])
def test_written_masks_hold_exactly_the_bytes_nibabel_writes(tmp_path, monkeypatch, backend):
    if backend == "zlib":
        monkeypatch.setattr(gzip_codec, "_gzip", gzip)
    labels = _labels()
    calls, real = [], gzip_codec.compress
    monkeypatch.setattr(gzip_codec, "compress", lambda data: calls.append(len(data)) or real(data))
    save_nifti(labels, AFFINE, tmp_path / "ours.nii.gz")
    assert len(calls) == 1  # through the codec, not nibabel's zlib stream
    reference = nib.Nifti1Image(labels, AFFINE)
    reference.set_qform(AFFINE, code=1)
    reference.set_sform(AFFINE, code=1)
    nib.save(reference, tmp_path / "nibabel.nii")
    ours = (tmp_path / "ours.nii.gz").read_bytes()
    assert ours[:2] == b"\x1f\x8b"  # a standard gzip stream: any tool reads it
    assert gzip.decompress(ours) == (tmp_path / "nibabel.nii").read_bytes()
    back = nib.load(tmp_path / "ours.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, AFFINE)


def test_isal_and_zlib_read_each_others_streams():
    pytest.importorskip("isal")
    assert gzip_codec.BACKEND == "isal"
    data = _labels().tobytes()
    assert gzip_codec.decompress(gzip.compress(data)) == data
    assert gzip.decompress(gzip_codec.compress(data)) == data


def _case(tmp_path, images) -> Case:
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"c_{i}.nii.gz"
        nib.save(nib.Nifti1Image(image, AFFINE), path)  # written by nibabel with zlib, as by any other tool
        paths.append(str(path))
    return Case("c", tuple(paths), (None,) * len(paths), None, {"edema": 2}, "brats2021")


def test_files_from_other_tools_read_as_nibabel_reads_them(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(-100, 3000, (30, 28, 20)).astype(dtype) for dtype in (np.int16, np.float32, np.uint8)]
    images[2] = (images[2] % 200).astype(np.uint8)
    vols = read_case(_case(tmp_path, images), with_label=False)
    for got, path in zip(vols.image, sorted(tmp_path.glob("*.nii.gz")), strict=True):
        np.testing.assert_array_equal(got, np.asarray(nib.load(path).dataobj, dtype=np.float32))
    np.testing.assert_allclose(vols.affine, AFFINE)


def test_a_truncated_gzip_is_one_clear_error(tmp_path):
    case = _case(tmp_path, [np.ones((30, 28, 20), np.int16)])
    path = tmp_path / "c_0.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated"):
        read_case(case, with_label=False)
