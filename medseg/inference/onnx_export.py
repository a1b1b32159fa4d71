"""Export a bundle's network to ONNX, verified against PyTorch before the file is kept.

Batch is always dynamic; spatial axes are dynamic where the network allows it (fully convolutional and windowed
attention) and fixed to the patch size where learned position embeddings pin them (TransUNet-3D, UNETR): sliding
windows are always the patch size anyway. fp16 converts the graph's weights and arithmetic (for GPUs; inputs and
outputs stay fp32); int8 quantises statically with ONNX Runtime, calibrated on windows of real cases.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError, environment_failure, first_line
from medseg.inference.engines import NetworkFacts, check_finite
from medseg.io.atomic import atomic_path
from medseg.io.bundle import ModelBundle
from medseg.io.onnx_bundle import bundle_metadata, write_metadata

# Verification tolerances on sigmoid probabilities (max abs difference to PyTorch fp32 over random windows).
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}


class ExportError(MedsegError):
    """A network that cannot be exported, or whose export does not reproduce PyTorch."""


@dataclass
class ExportReport:
    path: Path
    precision: str
    spatial: str  # dynamic | fixed
    max_prob_diff: float
    tolerance: float
    size_mb: float


def _inputs(facts: NetworkFacts, channels: int, size: Sequence[int], batch: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return _with_mask(facts, torch.randn(batch, channels, *size, generator=g))


def _with_mask(facts: NetworkFacts, x: torch.Tensor) -> tuple:
    batch, channels = x.shape[:2]
    if not facts.supports_modality_mask:
        return (x,)
    mask = torch.ones(batch, channels, dtype=torch.bool)
    if channels > 1:  # one sample with a masked modality, so the mask input must work; a lone modality stays
        mask[0, -1] = False
    return x, mask


def _export_graph(model: torch.nn.Module, args: tuple, path: Path, dynamic_spatial: bool) -> None:
    names = ["image", "modality_mask"][: len(args)]
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
    if dynamic_spatial:
        for k in ("image", "logits"):
            axes[k].update({2: "d", 3: "h", 4: "w"})
    if len(args) > 1:
        axes["modality_mask"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python values in shapes
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _session(path: Path):
    """An ONNX Runtime CPU session that reports failures by exception only (not also in colour on stderr)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runs_at(path: Path, args: tuple) -> bool:
    """Whether the graph runs on `args`: a traced reshape can pin a 'dynamic' axis to the export size (Swin's window
    partition), and only running at another size shows it."""
    feed = {"image": args[0].numpy(), **({"modality_mask": args[1].numpy()} if len(args) > 1 else {})}
    try:
        _session(path).run(["logits"], feed)
    except Exception:  # onnxruntime's own error types; any failure means the axes are not free
        return False
    return True


def _max_prob_diff(path: Path, model: torch.nn.Module, batches: Sequence[tuple]) -> float:
    """Largest sigmoid difference between ONNX Runtime and PyTorch fp32 over the input batches."""
    session = _session(path)
    worst = 0.0
    for args in batches:
        with torch.no_grad():
            ref = torch.sigmoid(model(*args)).numpy()
        feed = {"image": args[0].numpy(), **({"modality_mask": args[1].numpy()} if len(args) > 1 else {})}
        (out,) = session.run(["logits"], feed)
        diff = np.abs(1 / (1 + np.exp(-out.astype(np.float64))) - ref)
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max()))  # a NaN output is a failure, not 0
    return worst


def export_onnx(
    bundle: ModelBundle,
    out: Path,
    precision: str = "fp32",
    calibration: Sequence[np.ndarray] = (),
) -> ExportReport:
    """Write `out` (atomically) with the bundle's metadata; raise ExportError if the graph does not reproduce
    PyTorch within `TOLERANCE[precision]` on random windows (and a larger size when spatial axes are dynamic)."""
    if precision == "int8" and not calibration:
        raise ExportError("int8 needs calibration windows", hint="pass --calibration DATA_DIR")
    model = bundle.build_model().cpu().eval()
    facts = NetworkFacts.of(model)
    roi = list(bundle.patch_size)
    channels = len(bundle.channels)
    dynamic = facts.fixed_size is None and not _pins_spatial_size(bundle.model_name)
    larger = [roi[0] + facts.stride, *roi[1:]]
    args = _inputs(facts, channels, roi, batch=1)
    with torch.no_grad():
        check_finite(model(*args), bundle.model_name)  # a graph that reproduces NaN would pass any comparison
    with atomic_path(out) as tmp:
        _export_or_refuse(model, args, tmp, dynamic, bundle.model_name)
        if dynamic and not _runs_at(tmp, _inputs(facts, channels, larger, batch=1)):
            dynamic = False  # its traced shapes hold at the window size only: export that size
            _export_or_refuse(model, args, tmp, dynamic, bundle.model_name)
        sizes = [roi, larger] if dynamic else [roi]
        try:
            if precision == "fp16":
                _to_fp16(tmp)
            elif precision == "int8":
                quantise_int8(tmp, calibration, facts, channels)
            diff = _max_prob_diff(tmp, model, _check_batches(facts, channels, sizes, calibration, precision))
        except Exception as exc:  # a converted graph ONNX Runtime cannot load or run
            raise ExportError(
                f"the {precision} graph of {bundle.model_name} does not run in ONNX Runtime ({first_line(exc, 200)})",
                hint="export fp32"
                if precision != "fp32"
                else "use medseg predict with the checkpoint (--engine torch)",
            ) from None
        tolerance = TOLERANCE[precision]
        if not diff <= tolerance:
            raise ExportError(
                f"the {precision} ONNX graph differs from PyTorch by {diff:.3g} in probability (tolerance "
                f"{tolerance:g}); not written",
                path=str(out),
                hint="export fp32, or check the model with `medseg predict --engine torch`",
            )
        record = {"precision": precision, "spatial": "dynamic" if dynamic else "fixed", "max_prob_diff": diff}
        write_metadata(tmp, bundle_metadata(bundle, facts.__dict__, record))
    return ExportReport(out, precision, record["spatial"], diff, tolerance, out.stat().st_size / 2**20)


def _export_or_refuse(model: torch.nn.Module, args: tuple, path: Path, dynamic: bool, name: str) -> None:
    try:
        _export_graph(model, args, path, dynamic)
    except Exception as exc:  # the exporter's own failures: one line, the family named
        if environment_failure(exc):  # a full disk is not the family's fault
            raise
        raise ExportError(f"{name} cannot be exported to ONNX ({first_line(exc)})") from None


def _check_batches(facts: NetworkFacts, channels: int, sizes, calibration: Sequence[np.ndarray], precision: str):
    """What the graph is checked on: random windows (batches of 2, at each size) for fp32/fp16, which exercise every
    path; real windows for int8, whose ranges are calibrated on real intensities and are meant to hold only there
    (random noise saturates them)."""
    if precision != "int8":
        return [_inputs(facts, channels, size, batch=2, seed=i + 1) for i, size in enumerate(sizes)]
    real = torch.from_numpy(np.stack([np.asarray(w, np.float32) for w in calibration]))
    return [_with_mask(facts, real[i : i + 2]) for i in range(0, len(real) - 1, 2)]


def _pins_spatial_size(model_name: str) -> bool:
    from medseg.nets import model_info

    return model_info(model_name).img_size_kwarg


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(path))
    # Casts to float32 the tracer recorded (e.g. attention masks) would be left as they are and feed fp32 into fp16
    # nodes: keep them fp32, with casts around them.
    to_float = [
        n.name
        for n in model.graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == 1 for a in n.attribute)
    ]
    with warnings.catch_warnings():  # "-inf will be truncated to -10000" (attention masks): the verified export
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)  # says if it matters
        model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=to_float)
    onnx.save(model, str(path))


# What int8 quantises: the convolutions, where a segmentation network's arithmetic is. Attention (MatMul, Softmax)
# and normalisation stay fp32: quantising them too moved probabilities by 0.31 on real windows and was slower in
# OpenVINO (1.20-1.52 s against 1.04 s per 4 windows over three runs; benchmarks/bench_int8.py, RESULTS.md).
INT8_OPS = ["Conv", "ConvTranspose"]


def quantise_int8(
    path: Path,
    windows: Sequence[np.ndarray],
    facts: NetworkFacts,
    channels: int,
    ops: Sequence[str] | None = INT8_OPS,
) -> None:
    """Static QDQ quantisation of `path` in place (per-channel weights), calibrated on real windows (M, D, H, W);
    `ops`: the op types quantised (None: every op ONNX Runtime can, which bench_int8 compares against)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(windows)

        def get_next(self):
            w = next(self.items, None)
            if w is None:
                return None
            feed = {"image": np.ascontiguousarray(w[None], dtype=np.float32)}
            if facts.supports_modality_mask:
                feed["modality_mask"] = np.ones((1, channels), bool)
            return feed

    # The fp32 source in a folder of its own: the quantiser writes a shape-inferred copy beside it, which an
    # interrupt left as a hidden 1.4 MB file beside the output.
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as work:
        source = Path(work) / "fp32.onnx"
        path.replace(source)
        try:
            # The quantiser warns on the root logger about every normalisation bias it leaves in float: not news.
            logging.disable(logging.WARNING)
            quantize_static(
                str(source),
                str(path),
                Windows(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                op_types_to_quantize=list(ops) if ops is not None else None,
            )
        finally:
            logging.disable(logging.NOTSET)
