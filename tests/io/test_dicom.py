"""DICOM series input: real series from pydicom's wheel, series written from NIfTI, and the bad inputs a hospital
export produces (mixed series, missing slices, gantry tilt, localizers, wrong modality): one line each."""

from __future__ import annotations

import locale
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.data.layouts import detect_cases
from medseg.errors import DataError
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.dicom import LPS_TO_RAS
from medseg.io.nifti import read_case, save_nifti
from medseg.pipelines import get_task
from medseg.pipelines.brats import CHANNELS, LABELS_2021, SUFFIXES_2021
from medseg.pipelines.generic import task_from_description
from tests.conftest import make_bundle

REAL = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "dicomdirtests"
DESCRIPTIONS = {"t1": "T1 axial", "t1ce": "T1 post contrast", "t2": "T2 axial", "flair": "FLAIR axial"}


def write_series(volume: np.ndarray, affine: np.ndarray, folder: Path, modality: str, description: str, uid: str):
    """(X, Y, Z) int16 with a RAS affine -> one DICOM file per slice (positions, orientation, spacing from the
    affine), as a scanner export would be."""
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)).astype(np.int16))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        _write_slices(writer, image, folder, modality, description, uid, spacing)
    finally:  # GDCM's writer sets the C locale and leaves it: later text I/O of this process would turn ASCII
        locale.setlocale(locale.LC_CTYPE, ctype)


def _write_slices(writer, image, folder: Path, modality: str, description: str, uid: str, spacing) -> None:
    d = image.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(image.GetDepth()):
        s = image[:, :, k : k + 1]  # a one-slice 3D image keeps the slice spacing
        for tag, value in [
            ("0008|0060", modality),
            ("0008|103e", description),
            ("0020|000e", uid),
            ("0020|000d", "1.2.826.0.1.3680043.8.498.1"),
            ("0020|0052", "1.2.826.0.1.3680043.8.498.2"),  # frame of reference, shared by the study's series
            ("0010|0010", "P1"),  # a one-component name, as anonymisers write them
            ("0018|0050", str(spacing[2])),  # slice thickness
            ("0018|0088", str(spacing[2])),  # spacing between slices (SimpleITK would write 1)
            ("0020|0037", orientation),
            ("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0013", str(k + 1)),
        ]:
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{uid.rsplit('.', 1)[1]}_{k:03d}.dcm"))
        writer.Execute(s)


def _copy_real(name: str, dest: Path) -> Path:
    shutil.copytree(REAL / name, dest)
    return dest


def _ct_case(root: Path, channel: str = "ct"):
    task = task_from_description([channel], {"organ": 1})
    _, cases = detect_cases(root, task.prediction_layouts)
    return cases


def test_a_real_ct_series_reads_with_hounsfield_units_and_the_scanner_geometry(tmp_path):
    _copy_real("98892001/CT5N", tmp_path / "in" / "ct5n")
    (case,) = _ct_case(tmp_path / "in")
    assert case.id == "ct5n" and case.layout == "dicom"
    vols = read_case(case, with_label=False)
    assert vols.image.shape == (1, 16, 16, 5) and vols.image.min() == -888  # rescale slope/intercept applied
    positions = [pydicom.dcmread(f).ImagePositionPatient for f in (tmp_path / "in" / "ct5n").iterdir()]
    lps_origin = min(positions, key=lambda p: float(p[2]))  # the most inferior slice (axial, feet first)
    np.testing.assert_allclose(vols.affine[:3, 3], [-float(lps_origin[0]), -float(lps_origin[1]), float(lps_origin[2])])
    np.testing.assert_allclose(vols.spacing[2], 2.5, atol=1e-3)


@pytest.mark.parametrize(
    ("source", "channel", "problem"),
    [
        ("98892003/MR700", "t1", "different orientations"),  # a radial series
        ("77654033/CT2", "ct", "uneven slice spacing"),  # slices 1.25 to 202 mm apart
    ],
)
def test_real_series_that_are_not_volumes_are_refused_in_one_line(tmp_path, source, channel, problem):
    _copy_real(source, tmp_path / "in" / "bad")
    (case,) = _ct_case(tmp_path / "in", channel)
    with pytest.raises(DataError, match=problem) as err:
        read_case(case, with_label=False)
    assert "bad" in str(err.value) and "\n" not in str(err.value)


def _synthetic_ct(root: Path, shape=(12, 10, 6), spacing=(0.8, 0.8, 2.5)) -> tuple[np.ndarray, np.ndarray]:
    vol = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [30, 40, -10]
    write_series(vol, affine, root, "CT", "abdomen", "1.2.826.0.1.3680043.8.498.100")
    return vol, affine


def test_a_series_written_from_nifti_reads_back_to_the_same_voxels_and_affine(tmp_path):
    vol, affine = _synthetic_ct(tmp_path / "in" / "c1")
    vols = read_case(_ct_case(tmp_path / "in")[0], with_label=False)
    np.testing.assert_array_equal(vols.image[0], vol)
    np.testing.assert_allclose(vols.affine, affine, atol=1e-4)


def test_missing_slices_gantry_tilt_mixed_series_and_wrong_modality(tmp_path):
    _synthetic_ct(tmp_path / "gap" / "c1")
    sorted((tmp_path / "gap" / "c1").iterdir())[2].unlink()
    _synthetic_ct(tmp_path / "dup" / "c1")
    import pydicom

    slice_ = pydicom.dcmread(sorted((tmp_path / "dup" / "c1").iterdir())[2])
    slice_.SOPInstanceUID, slice_.InstanceNumber = "1.2.826.0.1.3680043.8.498.99", 99
    slice_.save_as(tmp_path / "dup" / "c1" / "again.dcm")
    _synthetic_ct(tmp_path / "mixed" / "c1")
    write_series(
        np.zeros((12, 10, 6)), np.eye(4), tmp_path / "mixed" / "c1", "CT", "scout", "1.2.826.0.1.3680043.8.498.7"
    )
    tilted = np.diag([0.8, 0.8, 2.5, 1.0])
    tilted[1, 2] = 0.6  # each slice shifted 0.6 mm along A: a tilted gantry
    write_series(np.zeros((12, 10, 6)), tilted, tmp_path / "tilt" / "c1", "CT", "tilted", "1.2.826.0.1.3680043.8.498.8")
    write_series(np.zeros((12, 10, 6)), np.eye(4), tmp_path / "mr" / "c1", "MR", "t1", "1.2.826.0.1.3680043.8.498.9")
    for folder, problem in [
        # where the series breaks, not "(-130 to 5 mm)"
        ("gap", r"uneven slice spacing: a step of 5 mm between \S+ and \S+ where slices are 2.5 mm apart"),
        ("dup", r"uneven slice spacing: two slices at one position \(\S+, \S+\)"),
        ("mixed", "2 DICOM series in one case folder"),
        ("tilt", "gantry tilt"),
        ("mr", "modality MR where channel ct expects CT"),
    ]:
        with pytest.raises(DataError, match=problem):
            read_case(_ct_case(tmp_path / folder)[0], with_label=False)


def _brats_study(root: Path) -> None:
    """One case as NIfTI files (root/nii/c1) and as a DICOM study of four described series (root/dcm/c1, series
    UIDs ...20 to ...23 in channel order)."""
    from medseg.synth import synth_case

    images, _, _ = synth_case("anatomy", (40, 36, 32), seed=0)
    affine = np.diag([-1.2, -1.0, 1.5, 1.0])
    for i, ch in enumerate(CHANNELS):
        vol = np.round(images[ch]).astype(np.int16)
        save_nifti(vol, affine, root / "nii" / "c1" / f"c1_{SUFFIXES_2021[i]}.nii.gz", np.int16)
        write_series(vol, affine, root / "dcm" / "c1", "MR", DESCRIPTIONS[ch], f"1.2.826.0.1.3680043.8.498.{20 + i}")


def _predict_both(root: Path, allow_missing: bool = False) -> dict:
    bundle = make_bundle(bias=0.3)
    task = get_task("brats")
    outs = {}
    for kind in ("nii", "dcm"):
        _, cases = detect_cases(root / kind, task.prediction_layouts)
        opts = PredictOptions(infer=bundle.infer, dicom_seg=kind == "dcm", allow_missing=allow_missing)
        results = predict_folder(cases, bundle, root / f"out_{kind}", opts)
        assert results[0].status == "ok", results[0].error
        outs[kind] = nib.load(root / f"out_{kind}" / "c1.nii.gz")
    return outs


def test_brats_dicom_study_predicts_the_same_labels_as_its_nifti(tmp_path):
    """Four series in one study folder, matched to channels by description; the NIfTI output keeps the DICOM grid."""
    import warnings

    _brats_study(tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        outs = _predict_both(tmp_path)
    assert not [w for w in seen if "person name" in str(w.message)]  # highdicom's, raw on stderr
    np.testing.assert_allclose(outs["dcm"].affine, outs["nii"].affine, atol=1e-4)
    labels = np.asarray(outs["nii"].dataobj)
    assert len(np.unique(labels)) > 2
    np.testing.assert_array_equal(np.asarray(outs["dcm"].dataobj), labels)

    # The DICOM-SEG: opens in pydicom and highdicom, references the T1 series' instances, and its segments
    # (one per class, coded) rebuild the NIfTI label map.
    import highdicom as hd

    source = {pydicom.dcmread(f).SOPInstanceUID: f for f in (tmp_path / "dcm" / "c1").glob("s20_*.dcm")}
    ds = pydicom.dcmread(tmp_path / "out_dcm" / "c1.dcm")
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    referenced = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(source)
    seg = hd.seg.segread(tmp_path / "out_dcm" / "c1.dcm")
    names = [s.SegmentLabel for s in seg.SegmentSequence]
    assert names == ["necrotic", "edema", "enhancing"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Edema"
    order = sorted(source, key=lambda uid: source[uid].name)  # files s20_000 ... are slices 0, 1, ...
    frames = seg.get_pixels_by_source_instance(order, combine_segments=True, relabel=False)
    rebuilt = np.zeros_like(labels)
    for number, value in enumerate(LABELS_2021.values(), start=1):
        rebuilt[frames.transpose(2, 1, 0) == number] = value
    np.testing.assert_array_equal(rebuilt, labels)


def test_a_missing_series_is_a_missing_modality_with_allow_missing(tmp_path):
    """No series names T1: with --allow-missing-modality the DICOM study predicts what the NIfTI case without its
    T1 file predicts, and the DICOM-SEG references the first series present (T1ce)."""
    _brats_study(tmp_path)
    (tmp_path / "nii" / "c1" / "c1_t1.nii.gz").unlink()
    for f in (tmp_path / "dcm" / "c1").glob("s20_*.dcm"):
        f.unlink()
    outs = _predict_both(tmp_path, allow_missing=True)
    np.testing.assert_array_equal(np.asarray(outs["dcm"].dataobj), np.asarray(outs["nii"].dataobj))
    t1ce = {pydicom.dcmread(f).SOPInstanceUID for f in (tmp_path / "dcm" / "c1").glob("s21_*.dcm")}
    ds = pydicom.dcmread(tmp_path / "out_dcm" / "c1.dcm")
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == t1ce
    with pytest.raises(DataError, match="no series names channel t1 "):  # without the flag: one clear error
        read_case(detect_cases(tmp_path / "dcm", get_task("brats").prediction_layouts)[1][0], with_label=False)


def test_dicom_seg_output_for_nifti_input_is_one_clear_error(brats2021_dir, bundle_file, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "medseg", "predict", str(brats2021_dir), str(tmp_path / "out"), "-m", str(bundle_file)]
    done = subprocess.run([*cmd, "--output-format", "dicom-seg"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "DICOM-SEG output needs DICOM input" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_dicom_seg_for_nifti_input_is_refused_before_auto_times_engines(brats2021_dir, tmp_path, monkeypatch):
    """The folder is planned before the engine is chosen: `auto` (a minute of timing on a big model) never runs
    for a run that cannot write its DICOM-SEG files."""
    from medseg.workflows import predict as workflow

    opened = []
    monkeypatch.setattr(workflow, "choose_engine", lambda *a, **k: opened.append(a) or pytest.fail("engine chosen"))
    predictor = workflow.FolderPredictor(make_bundle(), device="cpu", engine="auto")
    with pytest.raises(DataError, match="DICOM-SEG output needs DICOM input") as err:
        predictor.plan(brats2021_dir, dicom_seg=True)
    assert str(brats2021_dir) in str(err.value) and not opened
    assert len(predictor.plan(brats2021_dir).cases) > 0 and not opened  # NIfTI output plans as before


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda b: b[: len(b) - 100], "truncated pixel data"),
        (lambda b: b"", "empty file"),
        (lambda b: b[:400], "header cut short"),
    ],
    ids=["pixels-cut", "zero-bytes", "header-cut"],
)
@pytest.mark.parametrize("which", [0, 2, -1], ids=["first", "middle", "last"])
@pytest.mark.parametrize("naming", ["dcm", "uid"], ids=["IM.dcm", "uid-named"])
def test_an_unreadable_slice_fails_the_case_naming_the_file(tmp_path, damage, problem, which, naming):
    """GDCM leaves an unreadable file out of its series without a word: a first or last slice would go missing
    from an evenly spaced volume, predicted one slice short. Files may be named by their UIDs (no .dcm)."""
    _synthetic_ct(tmp_path / "in" / "c1")
    if naming == "uid":
        for k, f in enumerate(sorted((tmp_path / "in" / "c1").iterdir())):
            f.rename(f.with_name(f"1.3.12.2.1107.5.2.32.35162.{2012 + k}"))
    broken = sorted((tmp_path / "in" / "c1").iterdir())[which]
    broken.write_bytes(damage(broken.read_bytes()))
    with pytest.raises(DataError, match=f"unreadable DICOM file .*{problem}") as err:
        read_case(_ct_case(tmp_path / "in")[0], with_label=False)
    assert err.value.path == str(broken)


def test_notes_hidden_files_and_a_dicomdir_beside_a_series_are_ignored(tmp_path):
    vol, _ = _synthetic_ct(tmp_path / "in" / "c1")
    (tmp_path / "in" / "c1" / "README.txt").write_text("exported from PACS")
    (tmp_path / "in" / "c1" / ".DS_Store").write_bytes(b"")
    (tmp_path / "in" / "c1" / "Icon\r").write_bytes(b"")  # macOS folder icon: empty, no suffix
    shutil.copy(REAL / "DICOMDIR", tmp_path / "in" / "c1" / "DICOMDIR")
    shutil.copy(REAL / "DICOMDIR", tmp_path / "in" / "DICOMDIR")  # beside the case folders: not a case itself
    assert [c.id for c in _ct_case(tmp_path / "in")] == ["c1"]
    np.testing.assert_array_equal(read_case(_ct_case(tmp_path / "in")[0], with_label=False).image[0], vol)


@pytest.mark.parametrize(
    ("descriptions", "expected"),
    [
        (("AX T1", "AX T1 C+", "AX T2", "AX T2 FLAIR"), None),  # GE-style names
        (("T1 axial", "T1+Gd", "T2 axial", "T2-FLAIR"), None),
        (("AX T1 pre-contrast", "AX T1 post-contrast", "AX T2", "AX T2 FLAIR"), None),  # "pre" negates "contrast"
        (("T1W_3D_TFE", "T1W_3D_TFE +C", "T2W_TSE", "T2W_FLAIR"), None),  # Philips
        # Siemens: "dark-fluid" is its FLAIR (it read as a second T2), "KM" its contrast agent (Kontrastmittel)
        (("t1_mprage_tra", "t1_mprage_tra_KM", "t2_tse_tra", "t2_tirm_tra_dark-fluid"), None),
        (("t1 ohne KM", "t1 mit KM", "t2", "flair"), None),  # German negation ("ohne": without)
        (("T1 W/O contrast", "T1 without Gd", "T2", "FLAIR"), "2 series name channel t1"),  # both plain T1
        (("T1", "T1 C+", "T2* GRE", "PD/T2", "FLAIR"), "no series names channel t2"),  # neither is a T2
        (("t1_mprage", "t1_mprage POST", "t2_tse_tra", "T1 FLAIR"), "2 series name channel t1"),  # T1-weighted
        (("T1", "T1", "T2", "FLAIR"), "2 series name channel t1"),
    ],
)
def test_series_descriptions_as_sites_write_them(tmp_path, descriptions, expected):
    from medseg.io.dicom import Series, choose_series

    series = [Series(f"1.2.{i}", (f"f{i}.dcm",), d, "MR") for i, d in enumerate(descriptions)]
    channels = ("t1", "t1ce", "t2", "flair")
    if expected is None:
        assert [choose_series(series, c, 4, "c1", tmp_path) for c in channels] == series
        return
    with pytest.raises(DataError, match=expected) as err:
        [choose_series(series, c, 4, "c1", tmp_path) for c in channels]
    assert all(f"'{d}'" in str(err.value) for d in descriptions)  # the folder's series are named


def test_scanning_a_dicom_folder_for_training_says_dicom_is_for_prediction(tmp_path):
    _brats_study(tmp_path)
    with pytest.raises(DataError, match=r"no cases found .*DICOM is read by `medseg predict` only.*dcm2niix"):
        detect_cases(tmp_path / "dcm", get_task("brats").layouts)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no images here")
    with pytest.raises(DataError, match="labels alone are none"):  # no DICOM: the usual hint
        detect_cases(tmp_path / "notes", get_task("brats").layouts)


def test_a_study_folder_of_series_folders_named_by_channel_is_one_case(tmp_path):
    """`predict STUDY OUT` with STUDY/t1/, STUDY/t1ce/, ... read each series folder as a case of its own, and each
    failed for lack of the other channels."""
    _brats_study(tmp_path)
    study = tmp_path / "study"
    for i, ch in enumerate(CHANNELS):
        uid = f"1.2.826.0.1.3680043.8.498.{20 + i}"
        shutil.copytree(tmp_path / "dcm" / "c1", study / ch, ignore=_other_series(uid))
    task = get_task("brats")
    _, cases = detect_cases(study, task.prediction_layouts)
    assert [c.id for c in cases] == ["study"]
    _, (nifti,) = detect_cases(tmp_path / "nii", task.layouts)
    np.testing.assert_array_equal(read_case(cases[0], with_label=False).image, read_case(nifti, with_label=False).image)


def _other_series(uid: str):
    """A copytree `ignore` keeping only the slices of series `uid`."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if pydicom.dcmread(Path(folder) / n, stop_before_pixels=True).SeriesInstanceUID != uid]

    return ignore


def test_a_series_split_over_two_folders_is_one_series(tmp_path):
    """`IM_0010`-`IM_0019` of one series moved into a subfolder: GDCM lists each folder's part, and the case failed
    with "2 series name channel t1" for one SeriesInstanceUID."""
    _brats_study(tmp_path)
    case = tmp_path / "dcm" / "c1"
    described = {f: pydicom.dcmread(f, stop_before_pixels=True).SeriesDescription for f in case.iterdir()}
    t1 = sorted(f for f, text in described.items() if text == DESCRIPTIONS["t1"])
    (case / "part2").mkdir()
    for f in t1[::2]:  # every other slice: neither part alone is a regular grid
        f.rename(case / "part2" / f.name)
    task = get_task("brats")
    _, (dicom,) = detect_cases(tmp_path / "dcm", task.prediction_layouts)
    _, (nifti,) = detect_cases(tmp_path / "nii", task.layouts)
    np.testing.assert_array_equal(read_case(dicom, with_label=False).image, read_case(nifti, with_label=False).image)
