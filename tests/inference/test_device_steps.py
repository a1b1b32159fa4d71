"""Preprocessing and restoring on the network's device (`--steps-on-device`, the default on a GPU): readers only
decode, the device gets the files' own int16 voxels, and the outputs equal the host path's. Run here on the CPU
device, where the same torch code runs as on CUDA."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import RegionRule
from medseg.data.layouts import detect_cases
from medseg.inference import case_predict
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.nifti import read_case, save_nifti
from medseg.pipelines.brats import LAYOUTS, SUFFIXES_2021
from tests.conftest import make_bundle

AFFINES = [np.diag([1.2, 1.0, 1.5, 1.0]), np.diag([-1.0, -1.0, 1.0, 1.0]), np.diag([-1.0, 1.0, -2.0, 1.0])]


def _folder(root: Path, dtype=np.int16) -> list:
    from medseg.synth import synth_case

    for i, cid in enumerate(["a", "b", "c"]):
        images, _, _ = synth_case("anatomy", (36, 34, 30), seed=i)
        for name, sfx in zip(("t1", "t1ce", "t2", "flair"), SUFFIXES_2021, strict=True):
            save_nifti(np.round(images[name] * 1000), AFFINES[i], root / cid / f"{cid}_{sfx}.nii.gz", dtype)
    return detect_cases(root, LAYOUTS)[1]


def _outputs(out: Path, pattern: str = "[!.]*.nii.gz") -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob(pattern))}


@pytest.fixture()
def device_inputs(monkeypatch) -> list[torch.dtype]:
    """The dtype of every volume the device preprocessed."""
    seen, real = [], case_predict.on_device.preprocess

    def recording(raw, affine, plan):
        seen.append(raw.dtype)
        return real(raw, affine, plan)

    monkeypatch.setattr(case_predict.on_device, "preprocess", recording)
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_steps_on_device_give_the_host_path_outputs_from_int16_voxels(tmp_path, device_inputs, workers):
    cases = _folder(tmp_path / "in")
    bundle = make_bundle(bias=0.0)
    host = predict_folder(cases, bundle, tmp_path / "host", PredictOptions(steps_on_device=False, workers=workers))
    assert device_inputs == []
    dev = predict_folder(cases, bundle, tmp_path / "dev", PredictOptions(steps_on_device=True, workers=workers))
    assert device_inputs == [torch.int16] * 3  # only decoded by the readers, in the files' own type
    assert [(r.id, r.status, r.warnings) for r in dev] == [(r.id, r.status, r.warnings) for r in host]
    a, b = _outputs(tmp_path / "host"), _outputs(tmp_path / "dev")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        np.testing.assert_array_equal(b[name], a[name])
        assert len(np.unique(a[name])) > 2  # several labels predicted: the comparison means something
        assert np.allclose(nib.load(tmp_path / "dev" / name).affine, nib.load(tmp_path / "host" / name).affine)


def test_components_and_kept_probabilities_finish_on_the_host_from_device_preprocessing(tmp_path, device_inputs):
    cases = _folder(tmp_path / "in", np.float32)
    bundle = make_bundle(bias=0.0)
    rules = {"WT": RegionRule(kind="largest"), "TC": RegionRule(kind="min_volume", min_volume_mm3=50.0)}
    infer = bundle.infer.override(postprocess=rules)
    outputs = {}
    for where in (False, True):
        opts = PredictOptions(infer=infer, steps_on_device=where, save_probabilities=True)
        predict_folder(cases, bundle, tmp_path / str(where), opts)
        outputs[where] = _outputs(tmp_path / str(where))
        outputs[where, "p"] = {p.name: np.load(p)["probabilities"] for p in (tmp_path / str(where)).glob("*.npz")}
    assert device_inputs == [torch.float32] * 3  # float files stay float32
    for name, labels in outputs[False].items():
        np.testing.assert_array_equal(outputs[True][name], labels)
    assert outputs[False, "p"].keys() == outputs[True, "p"].keys() and len(outputs[True, "p"]) == 3
    for name, probs in outputs[False, "p"].items():
        np.testing.assert_allclose(outputs[True, "p"][name], probs, atol=2e-3)  # float16 files


def test_read_case_keeps_a_shared_small_integer_type_only_when_asked(tmp_path):
    case = _folder(tmp_path / "in")[0]
    assert read_case(case, with_label=False).image.dtype == np.float32
    native = read_case(case, with_label=False, native_dtype=True).image
    assert native.dtype == np.int16
    np.testing.assert_array_equal(native, read_case(case, with_label=False).image)
    mixed = Path(case.images[1])
    save_nifti(np.asarray(nib.load(mixed).dataobj), nib.load(mixed).affine, mixed, np.float32)
    assert read_case(case, with_label=False, native_dtype=True).image.dtype == np.float32


def test_small_cases_share_forward_passes_and_predict_what_they_predict_alone(tmp_path, monkeypatch):
    """Cases of one window each (crop under the 32^3 window) with a window batch of 4: four cases per forward
    pass instead of one, the same labels and probabilities as one case at a time, in folder order (by default on
    a GPU only)."""
    from medseg.inference.engines import TorchEngine

    cases = _folder(tmp_path / "in") + _folder(tmp_path / "in2")[:2]
    cases = [c.__class__(**{**c.__dict__, "id": f"{c.id}{i}"}) for i, c in enumerate(cases)]
    bundle = make_bundle(bias=0.0)
    batches = []

    class Counting(TorchEngine):
        def __call__(self, x, modality_mask=None):
            batches.append(x.shape[0])
            return super().__call__(x, modality_mask)

    def run(sw: int, out: Path) -> list:
        batches.clear()
        engine = Counting(bundle.build_model(), torch.device("cpu"), bf16=False)
        infer = bundle.infer.override(sw_batch_size=sw)
        opts = PredictOptions(infer=infer, engine=engine, save_probabilities=True, share_windows=True)
        return predict_folder(cases, bundle, out, opts)

    default = predict_folder(
        cases, bundle, tmp_path / "cpu", PredictOptions(infer=bundle.infer.override(sw_batch_size=4))
    )
    assert all(r.status == "ok" for r in default)
    alone = run(1, tmp_path / "alone")
    assert batches == [1] * 5
    grouped = run(4, tmp_path / "grouped")
    assert batches == [4, 1]  # 4 cases in one pass, the fifth alone
    assert [r.id for r in grouped] == [c.id for c in cases] == [r.id for r in alone]
    assert all(r.status == "ok" for r in grouped)
    a, b = _outputs(tmp_path / "alone"), _outputs(tmp_path / "grouped")
    assert a.keys() == b.keys() and len(a) == 5
    for name in a:
        np.testing.assert_array_equal(b[name], a[name])
    for p in (tmp_path / "alone").glob("*.npz"):
        np.testing.assert_allclose(
            np.load(tmp_path / "grouped" / p.name)["probabilities"], np.load(p)["probabilities"], atol=1e-3
        )


def test_windows_of_many_images_are_stitched_as_monai_stitches_one(tmp_path):
    """Images smaller than, equal to and larger than the window, with and without a modality mask, gaussian and
    constant blending: each image's probabilities are `sliding_predict`'s (MONAI's `sliding_window_inference`)."""
    from medseg.inference.engines import TorchEngine
    from medseg.inference.sliding import sliding_predict
    from medseg.inference.window_batch import sliding_predict_many

    engine = TorchEngine(make_bundle(bias=0.0).build_model(), torch.device("cpu"), bf16=False)
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(s, generator=g) for s in [(4, 20, 25, 18), (4, 40, 33, 32), (4, 32, 32, 32), (4, 50, 21, 45)]]
    masks = [None, torch.tensor([True, False, True, True]), None, None]
    for mode in ("gaussian", "constant"):
        sw = dict(overlap=0.5, mode=mode, sw_batch_size=3)
        many = sliding_predict_many(
            engine, images, (32, 32, 32), device=torch.device("cpu"), modality_masks=masks, **sw
        )
        for image, mask, probs in zip(images, masks, many, strict=True):
            alone = sliding_predict(engine, image, (32, 32, 32), modality_mask=mask, **sw)
            torch.testing.assert_close(probs, alone, atol=1e-5, rtol=1e-5)
