"""ONNX export and the inference engines: a verified, self-contained file that predicts like PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.io.bundle import save_checkpoint
from tests.conftest import make_bundle


def test_auto_says_which_measured_engine_was_not_accurate_enough(exported, tmp_path, monkeypatch):
    """The int8 file's message read "openvino 33 ms, onnxruntime 103 ms ... chose onnxruntime", not saying why the
    faster one lost."""
    from medseg.inference import engine_choice, engines

    real = engines.OnnxRuntimeEngine.__call__
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(engines.OnnxRuntimeEngine, "__call__", lambda self, x, mask=None: real(self, x, mask) + 3.0)
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch", "onnxruntime"])
    messages = []
    _, bundle, _ = exported
    chosen = engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2, on_message=messages.append)
    assert chosen.name == "torch" and "onnxruntime" in messages[-1]
    assert "(not accurate enough: left out)" in messages[-1].split("onnxruntime")[1].split(",")[0]


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


def test_options_an_onnx_file_cannot_honour_are_refused_before_any_case(exported):
    """--single-pass with fixed window axes failed every case with a truncated engine error; an explicit
    --engine torch ran ONNX Runtime while saying nothing."""
    from medseg.workflows.predict import FolderPredictor

    root, _, _ = exported
    with pytest.raises(MedsegError, match="this ONNX file has fixed window axes \\(32x32x32\\)"):
        FolderPredictor.from_model(str(root / "model.onnx"), device="cpu", single_pass=True)
    with pytest.raises(MedsegError, match="--engine torch needs PyTorch weights"):
        FolderPredictor.from_model(str(root / "model.onnx"), device="cpu", engine="torch")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_single_pass_on_a_graph_exported_at_the_window_size_slides_windows_and_says_so(engine, tmp_path, monkeypatch):
    """A checkpoint whose on-the-fly ONNX graph has fixed window axes (position tables, Swin's window partition)
    was fed the whole foreground box by --single-pass, and every case failed in ONNX Runtime or OpenVINO. Each
    engine reads the fixed axes from its own graph's input shape."""
    from medseg.workflows.predict import FolderPredictor

    pytest.importorskip(engine)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    said = []
    bundle = make_bundle()
    predictor = FolderPredictor(bundle, device="cpu", engine=engine, single_pass=True, on_message=said.append)
    assert predictor.engine.fixed_size == (32, 32, 32)
    assert f"--single-pass: {engine} runs this network on 32x32x32 windows only: sliding them" in said


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


def test_auto_leaves_out_an_engine_that_compiles_but_fails_on_a_window(exported, tmp_path, monkeypatch):
    """OpenVINO compiles swinunetr's graph, then its reshape fails on the first window: `auto` must pick another
    engine, not crash every prediction."""
    from medseg.inference import engine_choice, engines

    def broken(self, x, mask=None):
        raise RuntimeError("[CPU] Reshape node '/net/Reshape_2' conflicts with the reshape pattern\nmore")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(engines.OnnxRuntimeEngine, "__call__", broken)
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch", "onnxruntime"])
    messages = []
    _, bundle, _ = exported
    chosen = engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2, on_message=messages.append)
    assert chosen.name == "torch"
    assert any("onnxruntime left out (it fails on a window: RuntimeError: [CPU] Reshape" in m for m in messages)
    (entry,) = json.loads((tmp_path / "medseg" / "engines.json").read_text()).values()
    assert entry["accurate"] == ["torch"]


@pytest.fixture(scope="module")
def torch_predictions(exported, brats2021_dir, tmp_path_factory) -> Path:
    """`medseg predict` of the exported model's checkpoint with PyTorch: what each exported file is compared with."""
    from tests.cli.test_cli import medseg

    root, _, _ = exported
    out = tmp_path_factory.mktemp("torch_predictions")
    ref = medseg("predict", "--model", str(root / "model.pt"), "--engine", "torch", str(brats2021_dir), str(out))
    assert ref.returncode == 0, ref.stderr
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_medseg_export_then_predict_with_the_file_alone(
    precision, exported, brats2021_dir, torch_predictions, tmp_path
):
    """The user's path: `medseg export` (int8 calibrated on a data folder), then `medseg predict` with only the
    .onnx file; the masks agree with PyTorch's on nearly every voxel."""
    from tests.cli.test_cli import medseg

    root, _, _ = exported
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--calibration", str(brats2021_dir)]}[precision]
    name = "m[/b].onnx" if precision == "fp32" else "m.onnx"  # brackets are rich markup: a MarkupError traceback
    if precision == "int8":  # what a SIGKILLed `export --int8` to this --out left: its graph, the quantiser's folder
        (tmp_path / ".m.onnx.k1ll.part.onnx").write_bytes(b"partial")
        (tmp_path / "..m.onnx.k1ll.part.onnx.q8w").mkdir()
        (tmp_path / ".other.onnx.k1ll.part.onnx").write_bytes(b"another output's")
    out = medseg("export", "--model", str(root / "model.pt"), "--out", str(tmp_path / name), *flags, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    if precision == "int8":
        assert sorted(p.name for p in tmp_path.glob(".*")) == [".other.onnx.k1ll.part.onnx"]
    assert f"predict with: medseg predict --model {tmp_path / name} IN OUT" in " ".join(out.stdout.split())
    assert f"{precision}" in out.stdout and "max probability difference" in " ".join(out.stdout.split())
    assert "will be truncated" not in out.stderr  # onnxconverter's fp16 warning about the attention mask's -inf
    if precision == "int8":  # convolutions run in int8, attention and normalisation stay fp32
        import onnx as onnx_lib

        graph = onnx_lib.load(str(tmp_path / name)).graph
        weights = {w.name for w in graph.initializer}
        int8_weights = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
        users = {n.op_type for n in graph.node if int8_weights.intersection(n.input)}
        assert "Conv" in users and users <= {"Conv", "ConvTranspose"}, users  # not the attention's MatMul
    onnx = ("--model", str(tmp_path / name), "--engine", "onnxruntime")
    pred = medseg("predict", *onnx, str(brats2021_dir), "pred", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    assert "onnxruntime" in pred.stdout
    for path in sorted(torch_predictions.glob("*.nii.gz")):
        mine = np.asarray(nib.load(tmp_path / "pred" / path.name).dataobj)
        assert (mine == np.asarray(nib.load(path).dataobj)).mean() > 0.99, path.name


def test_int8_without_calibration_is_a_usage_error(exported, tmp_path):
    from tests.cli.test_cli import medseg

    root, _, _ = exported
    out = medseg("export", "--model", str(root / "model.pt"), "--out", str(tmp_path / "m.onnx"), "--int8")
    assert out.returncode == 1 and "int8 needs calibration windows" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "m.onnx").exists()


def test_export_options_that_would_be_ignored_or_mislead_are_usage_errors(exported, tmp_path):
    import typer
    from typer.testing import CliRunner

    from medseg.cli.export import export

    root, _, _ = exported
    app = typer.Typer()
    app.command()(export)
    model = ["--model", str(root / "model.pt")]
    calibrated = CliRunner().invoke(app, [*model, "--out", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path)])
    assert calibrated.exit_code == 2 and "only int8 is calibrated" in calibrated.output  # was silently ignored
    misnamed = CliRunner().invoke(app, [*model, "--out", str(tmp_path / "m.pt")])
    assert misnamed.exit_code == 2 and "name it *.onnx" in misnamed.output  # ONNX under a checkpoint's name
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["torch-bf16", "onnxruntime", "openvino"])
def test_every_engine_gives_pytorch_fp32_probabilities(name, exported):
    """Within the tolerances `auto` keeps an engine by, with and without a masked modality."""
    from medseg.inference.engine_choice import MAX_TOLERANCE, MEAN_TOLERANCE, available_engines, open_engine

    root, bundle, _ = exported
    if name not in available_engines(torch.device("cpu")):
        pytest.skip(f"{name} is not available on this machine")
    onnx = None if name == "torch-bf16" else root / "model.onnx"
    engine = open_engine(name, bundle, torch.device("cpu"), False, "fp", onnx)
    reference = open_engine("torch", bundle, torch.device("cpu"), False, "fp")
    x = torch.randn(2, 4, *bundle.patch_size)
    for mask in (None, torch.tensor([[True, True, True, True], [True, False, True, True]])):
        diff = (torch.sigmoid(engine(x, mask)) - torch.sigmoid(reference(x, mask))).abs()
        assert diff.mean() <= MEAN_TOLERANCE and diff.max() <= MAX_TOLERANCE, (name, mask)


def test_a_converted_graph_that_does_not_load_is_one_line_and_no_file(tmp_path, monkeypatch):
    from medseg.inference import onnx_export

    def broken(path):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Type Error: Type (tensor(float16)) does not match\nmore")

    monkeypatch.setattr(onnx_export, "_to_fp16", broken)
    with pytest.raises(
        MedsegError, match=r"fp16 graph of transunet3d_tiny does not run in ONNX Runtime \(RuntimeError: \["
    ):
        onnx_export.export_onnx(make_bundle(), tmp_path / "x.onnx", "fp16")
    assert list(tmp_path.iterdir()) == []


def test_predict_measures_the_engines_once_then_uses_the_cached_choice(exported, brats2021_dir, tmp_path, monkeypatch):
    """The CLI default is `auto`: the first run times the engines and says what it chose; the next one reuses it."""
    from tests.cli.test_cli import medseg

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the suite's cache, where it may be known
    root, _, _ = exported
    model = ("--model", str(root / "model.pt"))
    runs = [medseg("predict", *model, str(brats2021_dir), f"p{i}", cwd=tmp_path) for i in range(2)]
    # Other sliding-window settings change the labels, not the network: the choice still holds.
    runs.append(medseg("predict", *model, str(brats2021_dir), "p2", "--overlap", "0.25", cwd=tmp_path))
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second, third = (" ".join(r.stdout.split()) for r in runs)
    assert "engine auto: measured" in first and "(cached)" in first and "engine auto" not in second
    chosen = first.split("chose ")[1].split()[0]
    assert f"with {chosen}" in first and f"with {chosen}" in second
    assert "engine auto" not in third and f"with {chosen}" in third


def test_tensorrt_without_a_gpu_is_one_line(tmp_path):
    from tests.cli.test_cli import medseg

    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, tmp_path / "m.pt")
    (tmp_path / "in").mkdir()
    out = medseg("predict", "--model", "m.pt", "in", "out", "--engine", "tensorrt", cwd=tmp_path)
    assert out.returncode == 1 and "--engine tensorrt needs a CUDA GPU" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("failure", ["all zero", "nan", "empty where the model is sure of background"])
def test_an_fp16_engine_with_collapsed_outputs_is_refused(failure, exported, monkeypatch):
    """The FP16 failure nnU-Net #2874 reports (empty masks, no error): opening TensorRT compares it with fp32 first.
    A stand-in runs the CPU graph and breaks its output, since no GPU is needed to test the refusal. Where the model
    is sure of background (bias -20), collapsed probabilities agree with fp32: only the logits tell."""
    from medseg.inference import engine_choice, engines

    root, bundle, _ = exported
    if failure.startswith("empty"):
        bundle = make_bundle(bias=-20.0)

    class Broken(engines.OnnxRuntimeEngine):
        name = "tensorrt"

        def __init__(self, path, facts, device, cache, window, max_batch):
            assert window == (4, *bundle.patch_size) and max_batch == 2
            super().__init__(path, facts, device)

        def __call__(self, x, modality_mask=None):
            out = super().__call__(x, modality_mask)
            return out * torch.nan if failure == "nan" else torch.full_like(out, -30.0)

    monkeypatch.setattr(engine_choice, "tensorrt_available", lambda device: True)
    monkeypatch.setattr(engine_choice, "TensorRtEngine", Broken)
    with pytest.raises(MedsegError, match="tensorrt gives wrong outputs"):
        engine_choice.open_engine("tensorrt", bundle, torch.device("cpu"), False, "fp", root / "model.onnx", None, 2)


def test_tensorrt_is_refused_when_onnxruntime_falls_back_to_cuda(exported, monkeypatch):
    """ONNX Runtime lists the TensorRT provider even when TensorRT's libraries are missing, then quietly runs CUDA."""
    import onnxruntime as ort

    from medseg.inference.engines import NetworkFacts, TensorRtEngine

    root, _, _ = exported
    seen = {}

    class Session:
        def __init__(self, path, options, providers):
            seen["providers"] = providers

        def get_providers(self):
            return seen["running"]

        def disable_fallback(self):
            seen["fallback disabled"] = True

        def get_inputs(self):
            return [SimpleNamespace(name="image", shape=["batch", 4, 32, 32, 32])]

    monkeypatch.setattr(ort, "InferenceSession", Session)
    facts = NetworkFacts(3, 1, None, True)
    seen["running"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(MedsegError, match="TensorRT did not take this model"):
        TensorRtEngine(root / "model.onnx", facts, torch.device("cuda", 0), root / "trt", (4, 32, 32, 32), 4)
    seen["running"] = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    TensorRtEngine(root / "model.onnx", facts, torch.device("cuda", 0), root / "trt", (4, 32, 32, 32), 4)
    assert seen["fallback disabled"]  # a TensorRT failure while running must not quietly become CUDA
    trt = dict(seen["providers"])["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_path"] == str(root / "trt")
    assert trt["trt_profile_min_shapes"] == "image:1x4x32x32x32,modality_mask:1x4"
    assert trt["trt_profile_max_shapes"] == "image:4x4x32x32x32,modality_mask:4x4"


def test_a_correct_engine_passes_the_fp32_comparison(exported, tmp_path):
    """Also for a model sure of background, where fp32 logits are large and nearly constant: the logit check must not
    refuse ONNX Runtime's rounding, nor an FP16 engine's, there."""
    from medseg.inference.engine_choice import open_engine, refuse_if_wrong
    from medseg.inference.onnx_export import export_onnx

    root, bundle, _ = exported
    cpu = torch.device("cpu")
    background = make_bundle(bias=-20.0)
    export_onnx(background, tmp_path / "bg.onnx")
    for b, path in ((bundle, root / "model.onnx"), (background, tmp_path / "bg.onnx")):
        engine = open_engine("onnxruntime", b, cpu, False, "fp", path)
        refuse_if_wrong(engine, open_engine("torch", b, cpu, False, "fp"), b, cpu)

    class Fp16Like:  # fp32 logits rounded to FP16 with 0.1 % relative error on top: what a correct FP16 engine gives
        def __init__(self, inner):
            self.inner, self.name, self.supports_modality_mask = inner, "fp16-like", inner.supports_modality_mask

        def __call__(self, x, mask=None):
            out = self.inner(x, mask).half().float()
            return out * (1 + 1e-3 * torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))

    for b in (bundle, background):
        reference = open_engine("torch", b, cpu, False, "fp")
        refuse_if_wrong(Fp16Like(reference), reference, b, cpu)


def test_tensorrt_is_asked_for_by_name_and_only_for_windows(exported, monkeypatch):
    """`auto` never tries it (a first build takes minutes); `--single-pass` shapes are not what it is built for."""
    from medseg.inference import engine_choice
    from medseg.workflows.predict import FolderPredictor

    _, bundle, _ = exported
    monkeypatch.setattr(engine_choice, "tensorrt_available", lambda device: True)
    assert "tensorrt" not in engine_choice.available_engines(torch.device("cpu"))
    with pytest.raises(MedsegError, match="--single-pass cannot run on --engine tensorrt"):
        FolderPredictor(bundle, device="cpu", engine="tensorrt", single_pass=True)


def _one_model_per_family() -> list[str]:
    from medseg.nets import list_models, model_info

    first: dict[str, str] = {}
    for name in list_models():
        first.setdefault(model_info(name).family, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _one_model_per_family())
def test_every_family_exports_a_graph_that_reproduces_pytorch(name, tmp_path):
    """Swin's window partition traces its reshapes at the export size: its 'dynamic' graph failed at any other
    size, and the export was refused. Such graphs are exported at the window size instead."""
    import dataclasses

    from medseg.inference.engines import NetworkFacts, OnnxRuntimeEngine
    from medseg.inference.onnx_export import TOLERANCE, export_onnx
    from medseg.nets import create_model, model_info

    info = model_info(name)
    kwargs = {"in_channels": 4, "out_channels": 3, **info.test_kwargs}
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    size = list(model.fixed_size or (max(info.test_size, model.stride, model.min_size),) * 3)
    bundle = dataclasses.replace(
        make_bundle(), model_name=name, model_kwargs=kwargs, state_dict=model.state_dict(), patch_size=size
    )
    report = export_onnx(bundle, tmp_path / "m.onnx")
    assert report.max_prob_diff <= TOLERANCE["fp32"]
    pinned = info.img_size_kwarg or model.fixed_size or info.family == "swinunet3d"  # position tables / windows
    assert report.spatial == ("fixed" if pinned else "dynamic"), name
    engine = OnnxRuntimeEngine(tmp_path / "m.onnx", NetworkFacts.of(model), torch.device("cpu"))
    assert engine.fixed_size == (tuple(size) if pinned else None), name  # what --single-pass may feed it


def test_an_interrupted_int8_quantisation_leaves_nothing_beside_the_output(exported, tmp_path, monkeypatch):
    """ONNX Runtime's quantiser writes a shape-inferred copy beside its input: SIGTERM mid-export left a hidden
    `.m.onnx....part.onnx.fp32-inferred.onnx` (1.4 MB) that no re-run removed."""
    import shutil

    import onnxruntime.quantization as quantization

    from medseg.inference.engines import NetworkFacts
    from medseg.inference.onnx_export import quantise_int8

    def interrupted(source, target, *args, **kwargs):
        inferred = Path(source).with_name(Path(source).stem + "-inferred.onnx")
        shutil.copyfile(source, inferred)
        raise KeyboardInterrupt

    root, _, _ = exported
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(root / "model.onnx", out / "m.onnx")
    monkeypatch.setattr(quantization, "quantize_static", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantise_int8(out / "m.onnx", [], NetworkFacts(3, 1, None, True), 4)
    assert list(out.iterdir()) == []


def test_an_interrupted_export_says_what_became_of_the_output(tmp_path, monkeypatch):
    """Ctrl-C during an export printed predict's advice ("outputs written so far are complete; re-run to resume")."""
    import typer
    from typer.testing import CliRunner

    from medseg.cli import progress
    from medseg.cli.export import export
    from medseg.workflows import export as workflow

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "export_model", interrupted)
    monkeypatch.setattr(progress.InterruptAdvice, "text", progress.InterruptAdvice.text)  # restored afterwards
    app = typer.Typer()
    app.command()(export)
    CliRunner().invoke(app, ["--model", "m.pt", "--out", str(tmp_path / "m.onnx")])
    assert progress.InterruptAdvice.text.startswith(f"{tmp_path / 'm.onnx'} is left as it was")


def test_a_model_whose_weights_output_nan_is_refused_by_export_and_by_auto(tmp_path, monkeypatch):
    """A training that diverged leaves NaN weights: export reported "max probability difference 0" (max(0, nan) is 0)
    and wrote the file; `auto` crashed with `min() arg is an empty sequence`."""
    from medseg.inference import engine_choice, onnx_export

    bundle = make_bundle(bias=float("nan"))
    with pytest.raises(MedsegError, match="outputs NaN or Inf on a test window: its weights are broken"):
        onnx_export.export_onnx(bundle, tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch", "onnxruntime"])
    with pytest.raises(MedsegError, match="outputs NaN or Inf on a test window"):
        engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2)


def test_a_graph_that_outputs_nan_fails_verification(tmp_path, monkeypatch):
    """An fp16 graph that overflows into NaN (the failure the check exists for) must count as a difference."""
    from medseg.inference import onnx_export

    class NanSession:
        def run(self, names, feed):
            return [np.full((len(feed["image"]), 3, 32, 32, 32), np.nan, np.float32)]

    monkeypatch.setattr(onnx_export, "_session", lambda path: NanSession())
    with pytest.raises(MedsegError, match=r"differs from PyTorch by inf"):
        onnx_export.export_onnx(make_bundle(), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_case_whose_network_output_is_nan_fails_instead_of_passing_as_empty(brats2021_dir, tmp_path):
    """With --engine torch a NaN model's cases were "ok" with an empty-prediction warning: NaN compares as below
    the threshold, so the mask read as healthy."""
    from medseg.workflows.predict import FolderPredictor

    save_checkpoint({"bundle": make_bundle(bias=float("nan")).to_dict()}, tmp_path / "nan.pt")
    predictor = FolderPredictor.from_model(str(tmp_path / "nan.pt"), device="cpu", engine="torch")
    results = predictor.run(predictor.plan(brats2021_dir), tmp_path / "out")
    assert results and all(r.status == "failed" and "network output NaN or Inf" in r.error for r in results)
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_an_onnx_model_or_export_without_the_deploy_extra_is_one_line(exported, tmp_path, monkeypatch):
    """Without onnx installed, `predict --model x.onnx` was an ImportError traceback, and export said only "Module onnx
    is not installed!" as if the family could not be exported."""
    import importlib.util

    from medseg.workflows.export import export_model
    from medseg.workflows.predict import FolderPredictor

    root, _, _ = exported
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(MedsegError, match=r"an \.onnx model needs onnx \(not installed\) \(fix: pip install onnx"):
        FolderPredictor.from_model(str(root / "model.onnx"), device="cpu")
    with pytest.raises(MedsegError, match=r"medseg export needs onnx \(not installed\)"):
        export_model(str(root / "model.pt"), tmp_path / "m.onnx")


def test_auto_judges_accuracy_on_windows_of_the_data_when_it_has_them(exported, tmp_path, monkeypatch):
    """On random windows a trained model is sure of background everywhere, so an engine that moves the
    probabilities of real tissue passed: OpenVINO flipped a quarter of a mask that `auto` had accepted."""
    from medseg.inference import engine_choice, engines

    real = engines.OnnxRuntimeEngine.__call__

    def wrong_on_bright_tissue(self, x, mask=None):  # right on noise (|x| < 6), wrong on the data's windows
        return real(self, x, mask) + 3.0 * (x.abs().amax(dim=(1, 2, 3, 4)) > 6).float().view(-1, 1, 1, 1, 1)

    monkeypatch.setattr(engines.OnnxRuntimeEngine, "__call__", wrong_on_bright_tissue)
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch", "onnxruntime"])
    _, bundle, _ = exported
    data = lambda n: torch.full((n, 4, *bundle.patch_size), 7.0)  # noqa: E731
    verdicts = {}
    for name, sample in (("noise", None), ("data", data)):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))
        engine_choice.choose_engine(bundle, torch.device("cpu"), True, "fp", 2, sample=sample)
        (entry,) = json.loads((tmp_path / name / "medseg" / "engines.json").read_text()).values()
        verdicts[name] = entry["accurate"]
    assert verdicts == {"noise": ["onnxruntime", "torch"], "data": ["torch"]}


def test_predict_auto_samples_its_windows_from_the_planned_cases(exported, brats2021_dir, tmp_path, monkeypatch):
    from medseg.inference import engine_choice
    from medseg.workflows import predict

    root, _, _ = exported
    calls = []
    real = predict.data_windows

    def recorded(bundle, cases, count, **kw):
        calls.append([c.id for c in cases])
        return real(bundle, cases, count, **kw)

    monkeypatch.setattr(predict, "data_windows", recorded)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch"])
    predictor = predict.FolderPredictor.from_model(str(root / "model.pt"), device="cpu", engine="auto")
    plan = predictor.plan(brats2021_dir)
    assert predictor.engine.name == "torch" and calls == [[c.id for c in plan.cases]]


def test_exporting_an_onnx_file_again_says_so(exported, tmp_path):
    """It said "not a PyTorch checkpoint (fix: pass ... a .onnx from medseg export ...)", contradicting itself."""
    from medseg.workflows.export import export_model

    root, _, _ = exported
    with pytest.raises(MedsegError, match="already an ONNX export: it holds no PyTorch weights to export again"):
        export_model(str(root / "model.onnx"), tmp_path / "again.onnx")


def test_a_damaged_cached_graph_is_exported_again(exported, tmp_path, monkeypatch):
    """A truncated `~/.cache/medseg/onnx/<model>.onnx` was an InvalidProtobuf traceback on every run, never rebuilt."""
    from medseg.inference import engine_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _, bundle, _ = exported
    first = engine_choice.open_engine("onnxruntime", bundle, torch.device("cpu"), False, "fp")
    (cached,) = (tmp_path / "medseg" / "onnx").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])
    again = engine_choice.open_engine("onnxruntime", bundle, torch.device("cpu"), False, "fp")
    x = torch.randn(1, 4, *bundle.patch_size, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert torch.allclose(first(x, mask), again(x, mask)) and cached.stat().st_size > 1000


@pytest.mark.parametrize("allow", [True, False])
def test_auto_on_a_folder_missing_a_modality_still_chooses(exported, brats2021_dir, tmp_path, monkeypatch, allow):
    """Sampling windows read cases strictly: a folder of cases without T2 (what cross-modal models are for) failed
    as a whole at the engine choice, before any case."""
    import shutil

    from medseg.inference import engine_choice
    from medseg.workflows.predict import FolderPredictor

    folder = tmp_path / "d"
    shutil.copytree(brats2021_dir, folder)
    for t2 in folder.rglob("*_t2.nii.gz"):
        t2.unlink()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(engine_choice, "available_engines", lambda device, onnx_only=False: ["torch"])
    root, _, _ = exported
    predictor = FolderPredictor.from_model(str(root / "model.pt"), device="cpu", engine="auto", allow_missing=allow)
    predictor.plan(folder)
    sampled = predictor._sample_windows(2)
    assert (sampled is not None) == allow  # masked channels read as 0; strict: random windows instead
    assert predictor.engine.name == "torch"


def test_a_single_modality_cross_modal_model_exports(tmp_path):
    """The export's check fed a sample with its last modality masked: with one modality that masked them all, and
    `predict` (engine auto exports) and `export` of any one-channel cross-modal model were a ValueError traceback."""
    from medseg.inference.onnx_export import export_onnx
    from medseg.nets import create_model

    bundle = make_bundle()
    bundle.model_kwargs = {**bundle.model_kwargs, "in_channels": 1}
    bundle.state_dict = create_model("transunet3d_tiny", **bundle.model_kwargs).state_dict()
    bundle.channels, bundle.norm_stats = ["flair"], [[500.0, 200.0]]
    report = export_onnx(bundle, tmp_path / "one.onnx")
    assert report.max_prob_diff <= report.tolerance
