"""Folder prediction: exact geometry for any orientation, robust batches, resumable, honest warnings."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.data.layouts import detect_cases
from medseg.errors import MedsegError
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.nifti import save_nifti
from medseg.pipelines.brats import LAYOUTS, SUFFIXES_2021
from medseg.transforms.preprocess import PreprocessPlan
from tests.conftest import make_bundle

SHAPE = (40, 36, 32)


def _rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


def _write_case(root: Path, cid: str, channels: np.ndarray, affine: np.ndarray, dtype=np.float32) -> None:
    for ch, sfx in zip(channels, SUFFIXES_2021, strict=True):
        save_nifti(ch, affine, root / cid / f"{cid}_{sfx}.nii.gz", dtype)


def _volume(seed: int = 0) -> np.ndarray:
    from medseg.synth import synth_case

    images, _, _ = synth_case("anatomy", SHAPE, seed=seed)
    return np.round(np.stack([images[c] for c in ("t1", "t1ce", "t2", "flair")]))  # exact in int16 too


def _predict(root: Path, out: Path, bundle=None, tta: bool | None = None, **kw):
    bundle = bundle or make_bundle(bias=0.3)
    _, cases = detect_cases(root, LAYOUTS)
    return predict_folder(cases, bundle, out, PredictOptions(infer=bundle.infer.override(tta=tta), **kw))


RAS = np.diag([1.2, 1.0, 1.5, 1.0])
ORIENTATIONS = {
    "ras": (RAS, lambda a: a),
    "lps": (np.diag([-1.2, -1.0, 1.5, 1.0]), lambda a: a[:, ::-1, ::-1, :]),
    "oblique": (_rotation_z(25) @ RAS, lambda a: a),
}


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0)], ids=["native", "resampled"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_output_geometry_matches_input_in_nibabel_and_simpleitk(tmp_path, name, spacing):
    """Also when the model works at another spacing (1 mm for this 1.2 x 1 x 1.5 mm input): probabilities are
    resampled back onto the input's own grid."""
    affine, to_voxels = ORIENTATIONS[name]
    vol = _volume()
    bundle = make_bundle(bias=0.3)
    bundle.preprocess = PreprocessPlan(spacing=spacing)
    _write_case(tmp_path / "ref", "c1", vol, RAS)
    _write_case(tmp_path / "in", "c1", np.ascontiguousarray(to_voxels(vol)), affine, np.int16)
    _predict(tmp_path / "ref", tmp_path / "ref_out", bundle)
    results = _predict(tmp_path / "in", tmp_path / "out", bundle)
    assert results[0].status == "ok", results[0].error
    src = tmp_path / "in" / "c1" / "c1_t1.nii.gz"
    out = tmp_path / "out" / "c1.nii.gz"
    img_in, img_out = nib.load(src), nib.load(out)
    assert img_out.shape == img_in.shape and img_out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img_out.affine, img_in.affine, atol=1e-5)
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(img_out.header[key], img_in.header[key])
    s_in, s_out = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert s_in.GetSize() == s_out.GetSize()
    np.testing.assert_allclose(s_in.GetOrigin(), s_out.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(s_in.GetDirection(), s_out.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(s_in.GetSpacing(), s_out.GetSpacing(), atol=1e-5)
    # Same world data -> the same labels at the same world positions as the RAS reference.
    ref = np.asarray(nib.load(tmp_path / "ref_out" / "c1.nii.gz").dataobj)
    got = np.asarray(img_out.dataobj)
    assert ref.any()
    np.testing.assert_array_equal(got, to_voxels(ref[None])[0])
    assert set(np.unique(got)) <= {0, 1, 2, 4}  # BraTS 2021 native labels


def _headers_without_codes(path: Path) -> None:
    """An ANALYZE-style header: qform and sform codes 0, the grid given by pixdim alone."""
    img = nib.load(path)
    header = img.header.copy()
    header["qform_code"], header["sform_code"] = 0, 0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, header), path)


def _qform_differs_from_sform(path: Path) -> None:
    """Both codes set but different matrices: readers disagree on which wins (nibabel: sform)."""
    img = nib.load(path)
    img.set_qform(_rotation_z(10) @ img.affine, code=1)
    nib.save(img, path)


@pytest.mark.parametrize("damage", [_headers_without_codes, _qform_differs_from_sform], ids=["no-codes", "q-vs-s"])
def test_unusual_headers_are_copied_so_every_reader_places_the_output_like_the_input(tmp_path, damage):
    """With codes 0 the output was written with invented 'scanner' codes: SimpleITK put it elsewhere, flipped."""
    _write_case(tmp_path / "in", "c1", _volume(), np.diag([1.2, 1.0, 1.5, 1.0]), np.int16)
    for path in (tmp_path / "in" / "c1").iterdir():
        damage(path)
    assert _predict(tmp_path / "in", tmp_path / "out")[0].status == "ok"
    src, out = tmp_path / "in" / "c1" / "c1_t1.nii.gz", tmp_path / "out" / "c1.nii.gz"
    np.testing.assert_allclose(nib.load(out).affine, nib.load(src).affine, atol=1e-5)
    s_in, s_out = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(s_out.GetOrigin(), s_in.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(s_out.GetDirection(), s_in.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(s_out.GetSpacing(), s_in.GetSpacing(), atol=1e-5)


# (layout fixture, {painted class: its code in that layout's files})
NATIVE_CODES = [
    ("brats2021_dir", {"necrotic": 1, "edema": 2, "enhancing": 4}),
    ("brats2023_dir", {"necrotic": 1, "edema": 2, "enhancing": 3}),
    ("msd_dir", {"necrotic": 2, "edema": 1, "enhancing": 3}),
]
# Head biases (ET, TC, WT) that make the network paint one class everywhere in the brain box.
PAINT = {"edema": (-20, -20, 20), "necrotic": (-20, 20, 20), "enhancing": (20, 20, 20)}


@pytest.mark.parametrize(("fixture", "codes"), NATIVE_CODES, ids=[f for f, _ in NATIVE_CODES])
def test_all_layouts_predict_in_their_native_label_codes(request, tmp_path, fixture, codes):
    root = request.getfixturevalue(fixture)
    _, cases = detect_cases(root, LAYOUTS)
    case = cases[0]
    for cls, bias in PAINT.items():
        out = tmp_path / cls
        (result,) = predict_folder([case], make_bundle(bias=bias), out, PredictOptions())
        assert result.status == "ok"
        labels = np.asarray(nib.load(out / f"{case.id}.nii.gz").dataobj)
        assert labels.shape == nib.load(case.label).shape[:3]
        assert set(np.unique(labels).tolist()) == {0, codes[cls]}, cls


def test_bad_cases_are_reported_and_the_batch_goes_on(tmp_path):
    vol = _volume()
    _write_case(tmp_path / "in", "good", vol, RAS)
    _write_case(tmp_path / "in", "nan", vol, RAS)
    bad = tmp_path / "in" / "nan" / "nan_t2.nii.gz"
    arr = np.asarray(nib.load(bad).dataobj).copy()
    arr[1, 1, 1] = np.nan
    save_nifti(arr, RAS, bad, np.float32)
    _write_case(tmp_path / "in", "missing", vol, RAS)
    (tmp_path / "in" / "missing" / "missing_flair.nii.gz").unlink()
    results = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out")}
    assert results["good"].status == "ok"
    assert results["nan"].status == "failed" and "NaN" in results["nan"].error
    assert results["missing"].status == "failed" and "missing_flair" in results["missing"].error
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert report["summary"] == {"ok": 1, "skipped": 0, "failed": 2, "interrupted": 0}
    assert (report["model"], report["engine"], report["device"]) == ("transunet3d_tiny", "torch", "cpu")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["good.nii.gz"]


def test_missing_modality_is_masked_when_allowed(tmp_path):
    vol = _volume()
    _write_case(tmp_path / "in", "c", vol, RAS)
    (tmp_path / "in" / "c" / "c_t1ce.nii.gz").unlink()
    (result,) = _predict(tmp_path / "in", tmp_path / "out", allow_missing=True)
    assert result.status == "ok" and result.missing_modalities == ["t1ce"]
    early = make_bundle(bias=0.3, cross_modal=False)
    (result,) = _predict(tmp_path / "in", tmp_path / "out2", bundle=early, allow_missing=True)
    assert result.status == "failed" and "cannot mask" in result.error


def test_a_modality_written_as_zeros_is_masked_like_an_absent_file_when_allowed(tmp_path):
    vol = _volume()
    _write_case(tmp_path / "in", "absent", vol, RAS)
    (tmp_path / "in" / "absent" / "absent_t1ce.nii.gz").unlink()
    vol[1] = 0
    _write_case(tmp_path / "in", "zeros", vol, RAS)
    refused = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out0")}
    assert "image is all 0" in refused["zeros"].error and "--allow-missing-modality" in refused["zeros"].error
    results = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out", allow_missing=True)}
    assert results["zeros"].status == "ok" and results["zeros"].missing_modalities == ["t1ce"]
    masks = [np.asarray(nib.load(tmp_path / "out" / f"{cid}.nii.gz").dataobj) for cid in ("absent", "zeros")]
    np.testing.assert_array_equal(masks[0], masks[1])


def test_rerun_skips_complete_outputs_and_redoes_broken_ones(tmp_path):
    vol = _volume()
    for cid in ("a", "b"):
        _write_case(tmp_path / "in", cid, vol, RAS)
    first = _predict(tmp_path / "in", tmp_path / "out")
    reference = np.asarray(nib.load(tmp_path / "out" / "b.nii.gz").dataobj)
    broken = tmp_path / "out" / "b.nii.gz"
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated file left by some other tool
    (tmp_path / "out" / ".b.nii.gz.x1.part.nii.gz").write_bytes(b"junk")  # temp file of a killed run
    (tmp_path / "out" / ".z.nii.gz.x2.part.nii.gz").write_bytes(b"junk")  # another shard's case: not ours
    second = {r.id: r.status for r in _predict(tmp_path / "in", tmp_path / "out")}
    assert [r.status for r in first] == ["ok", "ok"]
    assert second == {"a": "skipped", "b": "ok"}
    np.testing.assert_array_equal(np.asarray(nib.load(broken).dataobj), reference)
    assert [p.name for p in (tmp_path / "out").glob(".*.part*")] == [".z.nii.gz.x2.part.nii.gz"]


def test_side_outputs_asked_on_a_rerun_are_written_and_overwrite_removes_another_runs(tmp_path):
    """A re-run with --save-probabilities skipped every case and wrote no probabilities; --overwrite with another
    model left the first model's probabilities beside its new labels (disagreeing on 28,000 voxels a case)."""
    _write_case(tmp_path / "in", "a", _volume(), RAS)
    probabilities = tmp_path / "out" / "a_probabilities.npz"
    _predict(tmp_path / "in", tmp_path / "out")
    (again,) = _predict(tmp_path / "in", tmp_path / "out", save_probabilities=True)
    assert again.status == "ok" and probabilities.is_file()
    (rerun,) = _predict(tmp_path / "in", tmp_path / "out", save_probabilities=True)
    assert rerun.status == "skipped"
    (other,) = _predict(tmp_path / "in", tmp_path / "out", bundle=make_bundle(bias=-0.3), overwrite=True)
    assert other.status == "ok" and not probabilities.exists()


def test_an_output_folder_that_holds_the_inputs_is_refused(tmp_path):
    """MSD's imagesTr holds `<case>.nii.gz`, the 4D input: predicting into it (with --overwrite, the fix the
    'not empty' refusal suggested) replaced the images with label maps; labelsTr would lose the ground truth."""
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "msd", 1, "msd", (24, 24, 16), seed=1, kind="simple")
    _, cases = detect_cases(tmp_path / "msd", LAYOUTS)
    before = {p: p.read_bytes() for p in (tmp_path / "msd").rglob("*.nii.gz")}
    for folder in ("imagesTr", "labelsTr"):
        with pytest.raises(MedsegError, match=r"the output \w+\.nii\.gz would replace an input file of case"):
            predict_folder(cases, make_bundle(), tmp_path / "msd" / folder, PredictOptions(overwrite=True))
    assert {p: p.read_bytes() for p in (tmp_path / "msd").rglob("*.nii.gz")} == before


def test_a_header_whose_placement_fields_disagree_is_predicted_with_a_warning(tmp_path):
    """The same file is placed or measured otherwise by another tool when its sform and qform disagree (ITK may
    use the qform) or pixdim differs from the affine (the BraTS challenge's eval.py measures by pixdim): silent."""
    from medseg.io.nifti import placement_notes

    vol = _volume()
    _write_case(tmp_path / "in", "plain", vol, RAS)
    _write_case(tmp_path / "in", "moved", vol, RAS)
    shifted = RAS.copy()
    shifted[0, 3] += 5.0
    for path in (tmp_path / "in" / "moved").iterdir():
        img = nib.load(path)
        img.set_qform(shifted, code=1)
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, img.header), path)
    results = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out")}
    assert results["plain"].warnings == []
    (warning,) = results["moved"].warnings
    assert warning.startswith("the header's sform and qform disagree (up to 5): placed by the sform")
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_sform(np.diag([1.0, 1.0, 3.0, 1.0]), code=1)  # no qform; pixdim left at 1 mm
    assert placement_notes(header) == [
        "pixdim says 1 x 1 x 1 mm voxels, the affine 1 x 1 x 3 mm: measured by the affine (tools reading pixdim, "
        "such as the BraTS challenge's eval.py, measure otherwise)"
    ]


def test_empty_prediction_warns(tmp_path):
    _write_case(tmp_path / "in", "c", _volume(), RAS)
    (result,) = _predict(tmp_path / "in", tmp_path / "out", bundle=make_bundle(bias=-20.0))
    assert result.status == "ok"
    assert result.warnings == ["empty prediction (no region above threshold)"]


@pytest.mark.parametrize("zero_fraction", [None, 0.8], ids=["old-bundle", "trained-skull-stripped"])
def test_a_shifted_background_warns_and_a_rescale_does_not(tmp_path, zero_fraction):
    """A background of 100 (scl_inter) or -1000 (CT-like air) puts the whole volume into the crop and the z-score,
    a silently wrong mask; scaling (scl_slope, another scanner's range) is harmless to a per-case z-score."""
    vol = _volume()
    _write_case(tmp_path / "in", "plain", vol, RAS)
    _write_case(tmp_path / "in", "scaled", vol * 50, RAS)
    _write_case(tmp_path / "in", "shifted", vol + 100, RAS)
    _write_case(tmp_path / "in", "air", np.where(vol == 0, -1000, vol), RAS)
    bundle = make_bundle(bias=0.3)
    if zero_fraction is not None:
        bundle.norm_stats = [[500.0, 200.0, zero_fraction]] * 4
    results = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out", bundle=bundle)}
    assert results["plain"].warnings == [] and results["scaled"].warnings == []
    trained = "background 0 expected" if zero_fraction is None else "80% in training"
    for cid in ("shifted", "air"):
        (warning,) = results[cid].warnings
        assert warning.startswith(
            f"t1, t1ce, t2, flair: almost no zero background (at most 0.0% of voxels are 0; {trained}): "
        ), warning


def test_no_background_warning_for_a_model_trained_without_zero_background(tmp_path):
    _write_case(tmp_path / "in", "shifted", _volume() + 100, RAS)
    bundle = make_bundle(bias=0.3)
    bundle.norm_stats = [[500.0, 200.0, 0.0]] * 4  # e.g. an MRI dataset that is not skull-stripped
    (result,) = _predict(tmp_path / "in", tmp_path / "out", bundle=bundle)
    assert result.warnings == []


def test_ct_channels_warn_on_intensities_far_from_training():
    """Fixed-number normalisation (CT) depends on the absolute values: HU read without their rescale slope shows."""
    from medseg.inference.case_predict import input_warnings
    from medseg.transforms.intensity import ChannelNorm

    bundle = make_bundle()
    bundle.channels, bundle.norm_stats = ["ct"], [[40.0, 300.0, 0.0]]
    bundle.preprocess = PreprocessPlan(intensity=(ChannelNorm("ct", -1000, 1000, 40, 300),))
    assert input_warnings(np.array([[60.0, 280.0, 0.0]]), bundle, ()) == []
    assert input_warnings(np.array([[1100.0, 280.0, 0.0]]), bundle, ()) == [
        "ct intensities unusual (mean 1.1e+03 vs training 40)"
    ]
    assert input_warnings(np.array([[1100.0, 280.0, 0.0]]), bundle, (0,)) == []  # a missing channel: not judged


def test_older_bundles_of_other_tasks_are_not_assumed_to_expect_a_zero_background():
    """A prostate MRI model (no skull to strip) would have warned on every case."""
    from medseg.inference.case_predict import input_warnings

    bundle = make_bundle()  # norm_stats without the zero fraction, as bundles written before it
    no_zeros = np.array([[500.0, 200.0, 0.0]] * 4)
    assert "almost no zero background" in input_warnings(no_zeros, bundle, ())[0]  # BraTS: skull-stripped
    bundle.task = "generic"
    assert input_warnings(no_zeros, bundle, ()) == []


def test_output_folder_of_another_model_or_other_settings_is_refused(tmp_path):
    """The guard is in `predict_folder` itself, so library callers get it too."""
    vol = _volume()
    _write_case(tmp_path / "in", "c", vol, RAS)
    _predict(tmp_path / "in", tmp_path / "out")
    with pytest.raises(MedsegError, match=r"another model \(other transunet3d_tiny weights\)"):
        _predict(tmp_path / "in", tmp_path / "out", bundle=make_bundle(bias=-1.0))
    with pytest.raises(MedsegError, match=r"made with other settings: tta False -> True \(fix"):  # what differs, named
        _predict(tmp_path / "in", tmp_path / "out", tta=True)
    _predict(tmp_path / "in", tmp_path / "out")  # same model and settings: resumes
    (result,) = _predict(tmp_path / "in", tmp_path / "out", bundle=make_bundle(bias=-1.0), overwrite=True)
    assert result.status == "ok"


def test_probabilities_and_overlays(tmp_path):
    vol = _volume()
    _write_case(tmp_path / "in", "c", vol, RAS)
    _predict(tmp_path / "in", tmp_path / "out", save_probabilities=True, overlays=True, tta=True)
    probs = np.load(tmp_path / "out" / "c_probabilities.npz")
    assert probs["probabilities"].shape == (3, *SHAPE) and probs["probabilities"].dtype == np.float16
    np.testing.assert_allclose(probs["affine"], RAS)
    labels = np.asarray(nib.load(tmp_path / "out" / "c.nii.gz").dataobj)
    # A voxel is labelled when any region is above the threshold (labels paint WT, TC, ET); saved probabilities
    # are float16, so voxels within its rounding of the threshold are left out of the comparison.
    p = probs["probabilities"].astype(np.float32)
    clear = (np.abs(p - 0.5) > 1e-3).all(axis=0)
    assert np.array_equal((labels > 0)[clear], (p > 0.5).any(axis=0)[clear])
    assert (tmp_path / "out" / "overlays" / "c.png").stat().st_size > 1000


def test_single_pass_is_one_forward_over_the_padded_volume():
    import torch

    from medseg.inference.sliding import sliding_predict
    from medseg.nets import create_model

    torch.manual_seed(0)
    from medseg.inference.engines import TorchEngine

    model = TorchEngine(create_model("transunet3d_tiny", img_size=32), torch.device("cpu"), bf16=False)
    image = np.random.default_rng(0).standard_normal((4, 32, 32, 32)).astype(np.float32)
    # A volume of exactly one window: both paths are the same single forward pass.
    sw = {"overlap": 0.5, "mode": "gaussian", "sw_batch_size": 2}
    slid = sliding_predict(model, image, (32, 32, 32), **sw)
    torch.testing.assert_close(sliding_predict(model, image, (32, 32, 32), single_pass=True, **sw), slid)
    # Sizes that are not multiples of the stride are padded for the pass and cropped back.
    odd = sliding_predict(model, image[:, :27, :30, :19], (32, 32, 32), single_pass=True, **sw)
    assert odd.shape == (3, 27, 30, 19)


def test_single_pass_pads_a_small_box_to_the_networks_minimum_size():
    """SwinUNETR takes no axis under 64: a foreground box of 19 slices must be padded to 64, not to 32."""
    import torch

    from medseg.inference.sliding import sliding_predict

    class Network:
        name, out_channels, stride, fixed_size, min_size, supports_modality_mask = "stand-in", 3, 32, None, 64, False

        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def __call__(self, x, modality_mask=None):
            self.shapes.append(tuple(x.shape[2:]))
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    network = Network()
    image = np.zeros((4, 70, 30, 19), np.float32)
    out = sliding_predict(network, image, (64, 64, 64), overlap=0.5, mode="gaussian", sw_batch_size=1, single_pass=True)
    assert network.shapes == [(96, 64, 64)] and out.shape == (3, 70, 30, 19)


@pytest.mark.parametrize("sw_batch_size", [1, 8])
def test_any_failure_of_one_case_is_reported_and_the_batch_goes_on(tmp_path, monkeypatch, sw_batch_size):
    """Not only bad input: a crash inside the network fails that case alone, also when the small cases' windows
    shared forward passes (window batch 8: the group fails, and is redone case by case)."""
    from medseg.inference import predictor

    for cid in ("a", "b", "c"):
        _write_case(tmp_path / "in", cid, _volume(), RAS)
    real, groups = predictor.predict_case, []

    def crashes_on_b(vols, case, *args, **kwargs):
        if case.id == "b":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR\nlong details")
        return real(vols, case, *args, **kwargs)

    def group_crashes(items, *args, **kwargs):
        groups.append([case.id for _, case in items])
        raise RuntimeError("cuDNN error")

    monkeypatch.setattr(predictor, "predict_case", crashes_on_b)
    monkeypatch.setattr(predictor, "predict_small_cases", group_crashes)
    bundle = make_bundle(bias=0.3)
    bundle.infer = bundle.infer.override(sw_batch_size=sw_batch_size)
    results = {r.id: r for r in _predict(tmp_path / "in", tmp_path / "out", bundle=bundle, share_windows=True)}
    assert groups == ([] if sw_batch_size == 1 else [["a", "b", "c"]])
    assert results["a"].status == results["c"].status == "ok"
    alone = "the shared window pass of 3 cases failed (RuntimeError: cuDNN error): predicted alone"
    for cid in "ac":
        assert (alone in results[cid].warnings) == (sw_batch_size > 1)
    assert (
        results["b"].status == "failed"
        and results["b"].error == "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
    )
    assert json.loads((tmp_path / "out" / "predict_report.json").read_text())["summary"]["failed"] == 1


def test_out_of_gpu_memory_is_retried_with_one_window_and_cpu_stitching(tmp_path, monkeypatch):
    from medseg.inference import predictor

    _write_case(tmp_path / "in", "c", _volume(), RAS)
    real, calls = predictor.predict_case, []

    def oom_unless_lean(vols, case, model, bundle, infer, **kwargs):
        calls.append((infer.sw_batch_size, kwargs.get("stitch_on_cpu", False)))
        if not kwargs.get("stitch_on_cpu"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(vols, case, model, bundle, infer, **kwargs)

    monkeypatch.setattr(predictor, "predict_case", oom_unless_lean)
    (result,) = _predict(tmp_path / "in", tmp_path / "out")
    assert result.status == "ok" and calls == [(2, False), (1, True)]
    assert any("out of GPU memory" in w for w in result.warnings)


def test_the_bundles_tta_setting_is_used_by_default(tmp_path, monkeypatch):
    """`infer.tta` in a training config ends up in the model and is honoured without --tta."""
    from medseg.inference import case_predict

    _write_case(tmp_path / "in", "c", _volume(), RAS)
    seen, real = [], case_predict.sliding_predict

    def spy(*args, **kwargs):
        seen.append(kwargs["tta"])
        return real(*args, **kwargs)

    monkeypatch.setattr(case_predict, "sliding_predict", spy)
    bundle = make_bundle(bias=0.3)
    bundle.infer = bundle.infer.override(tta=True)
    _predict(tmp_path / "in", tmp_path / "out", bundle=bundle)
    assert seen == [True]


def test_the_network_sees_the_bundles_spacing(tmp_path, monkeypatch):
    """A model planned at 0.6 x 1 x 0.75 mm gets this 1.2 x 1 x 1.5 mm case with twice the voxels on R and S."""
    import medseg.inference.case_predict as case_predict

    seen = []
    real = case_predict.sliding_predict

    def recording(engine, image, *args, **kwargs):
        seen.append(image.shape[1:])
        return real(engine, image, *args, **kwargs)

    monkeypatch.setattr(case_predict, "sliding_predict", recording)
    _write_case(tmp_path / "in", "c1", _volume(), RAS)
    bundle = make_bundle(bias=0.3)
    _predict(tmp_path / "in", tmp_path / "native", bundle)
    bundle.preprocess = PreprocessPlan(spacing=(0.6, 1.0, 0.75))
    results = _predict(tmp_path / "in", tmp_path / "fine", bundle)
    assert results[0].status == "ok", results[0].error
    (x, y, z), fine = seen
    assert fine == (2 * x, y, 2 * z)
    assert nib.load(tmp_path / "fine" / "c1.nii.gz").shape == SHAPE


def test_an_output_path_that_cannot_be_a_folder_fails_before_the_model_is_loaded(tmp_path):
    import typer
    from typer.testing import CliRunner

    from medseg.cli.predict import predict
    from medseg.errors import MedsegError

    app = typer.Typer()
    app.command()(predict)
    (tmp_path / "a_file").write_text("x")
    for out_dir, words in ((tmp_path / "a_file", "is a file"), (tmp_path / "a_file" / "out", "lies under a file")):
        result = CliRunner().invoke(app, [str(tmp_path), str(out_dir), "--model", str(tmp_path / "absent.pt")])
        assert isinstance(result.exception, MedsegError) and words in str(result.exception), result.output


@pytest.mark.parametrize("workers", [0, 1], ids=["thread-writer", "process-writer"])
def test_an_interrupted_run_leaves_a_report_that_matches_the_disk(tmp_path, workers):
    """The report was last rewritten before the interruption and could list a case written since as `writing`."""
    for i, cid in enumerate("abcd"):
        _write_case(tmp_path / "in", cid, _volume(i), RAS)
    _, cases = detect_cases(tmp_path / "in", LAYOUTS)
    bundle = make_bundle(bias=0.3)

    def interrupt(result):
        raise KeyboardInterrupt  # Ctrl-C while the first finished case is being reported

    with pytest.raises(KeyboardInterrupt):
        opts = PredictOptions(infer=bundle.infer, workers=workers)
        predict_folder(cases, bundle, tmp_path / "out", opts, on_case=interrupt)
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    status = {c["id"]: c["status"] for c in report["cases"]}
    assert not report["final"] and status["a"] == "ok"
    for cid in "abcd":
        written = (tmp_path / "out" / f"{cid}.nii.gz").exists()
        assert status.get(cid) in (("ok",) if written else (None, "interrupted")), status


def test_overlays_of_a_resampled_case_and_an_overlay_that_fails_never_cost_the_mask(tmp_path, monkeypatch):
    """The overlay drew the network's image (at the model's spacing) under labels on the input's grid: an
    IndexError for every resampled case (CT at 2.5 mm for a 4 mm model), and the mask was not written either."""
    from medseg.inference import predictor

    _write_case(tmp_path / "in", "c", _volume(), RAS)  # 1.2 x 1 x 1.5 mm
    bundle = make_bundle(bias=0.3)
    bundle.preprocess = PreprocessPlan(spacing=(2.0, 2.0, 2.0))
    (result,) = _predict(tmp_path / "in", tmp_path / "out", bundle, overlays=True)
    assert result.status == "ok" and (tmp_path / "out" / "overlays" / "c.png").stat().st_size > 1000

    def broken(*args, **kwargs):
        raise ValueError("no picture today")

    monkeypatch.setattr(predictor, "overlay_figure", broken)
    (result,) = _predict(tmp_path / "in", tmp_path / "again", bundle, overlays=True)
    assert result.status == "ok" and (tmp_path / "again" / "c.nii.gz").exists()
    assert any("overlay not drawn (ValueError: no picture today)" in w for w in result.warnings)
