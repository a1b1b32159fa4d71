"""ONNX export and the inference engines: a verified, self-contained file that predicts like PyTorch."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.io.bundle import save_checkpoint
from tests.conftest import make_bundle


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny cross-modal TransUNet-3D exported once (fp32), with its checkpoint."""
    from medseg.inference.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("export")
    bundle = make_bundle(bias=0.3)
    save_checkpoint({"bundle": bundle.to_dict()}, root / "model.pt")
    report = export_onnx(bundle, root / "model.onnx")
    return root, bundle, report


def test_export_is_verified_and_carries_the_bundle(exported):
    from medseg.io.onnx_bundle import read_onnx_bundle

    root, bundle, report = exported
    assert report.max_prob_diff <= report.tolerance and report.spatial == "fixed"  # learned position embeddings
    meta, facts, record = read_onnx_bundle(root / "model.onnx")
    assert meta.channels == bundle.channels and meta.label_map == bundle.label_map
    assert meta.patch_size == bundle.patch_size and meta.infer == bundle.infer and meta.state_dict == {}
    assert facts["supports_modality_mask"] and record["precision"] == "fp32"


def test_the_onnx_file_alone_predicts_what_pytorch_predicts(exported, brats2021_dir, tmp_path):
    from medseg.workflows.predict import FolderPredictor

    root, _, _ = exported
    outputs = {}
    for name, ref in (("torch", root / "model.pt"), ("onnx", root / "model.onnx")):
        predictor = FolderPredictor.from_model(str(ref), device="cpu")
        assert predictor.engine.name == ("torch" if name == "torch" else "onnxruntime")
        results = predictor.run(predictor.plan(brats2021_dir), tmp_path / name)
        assert all(r.status == "ok" for r in results)
        outputs[name] = {r.id: np.asarray(nib.load(r.output).dataobj) for r in results}
    for cid, labels in outputs["torch"].items():
        agree = (labels == outputs["onnx"][cid]).mean()
        assert agree > 0.999, cid


def test_an_export_that_does_not_reproduce_pytorch_is_not_written(tmp_path, monkeypatch):
    from medseg.inference import onnx_export

    monkeypatch.setattr(onnx_export, "_max_prob_diff", lambda *a: 0.4)
    with pytest.raises(MedsegError, match=r"differs from PyTorch by 0\.4"):
        onnx_export.export_onnx(make_bundle(), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_family_the_exporter_cannot_handle_is_refused_in_one_line(tmp_path, monkeypatch):
    from medseg.inference import onnx_export

    def unsupported(*args):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset 17 is not supported\n(details)")

    monkeypatch.setattr(onnx_export, "_export_graph", unsupported)
    with pytest.raises(MedsegError, match=r"transunet3d_tiny cannot be exported to ONNX \(RuntimeError: Exporting"):
        onnx_export.export_onnx(make_bundle(), tmp_path / "x.onnx")


def test_auto_measures_once_and_remembers(exported, tmp_path, monkeypatch):
    from medseg.inference import engine_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _, bundle, _ = exported
    calls = []
    real = engine_choice.measure
    monkeypatch.setattr(engine_choice, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch", "onnxruntime"])
    first = engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2)
    assert len(calls) == 2 and first.name in ("torch", "onnxruntime")
    record = json.loads((tmp_path / "medseg" / "engines.json").read_text())
    (entry,) = record.values()
    assert set(entry["seconds_per_call"]) == {"torch", "onnxruntime"} and entry["engine"] == first.name
    again = engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2)
    assert len(calls) == 2 and again.name == first.name  # from the cache, not measured again
    assert list((tmp_path / "medseg" / "onnx").glob("*.onnx"))  # the graph onnxruntime ran, exported on the fly
