"""Inference engines: the same network run by PyTorch, ONNX Runtime or OpenVINO, behind one call.

An engine maps a batch of windows `(B, M, D, H, W)` float32 (and an optional `(B, M)` modality mask) to logits
`(B, R, D, H, W)`, and says what the sliding window needs to know (`out_channels`, `stride`, `fixed_size`,
`supports_modality_mask`). Precision belongs to the engine: `torch` runs fp32 on the CPU and bf16 autocast on CUDA,
`torch-bf16` also uses bf16 on a CPU that has it (AVX-512 BF16 / AMX), the ONNX engines run the exported graph
(`tensorrt`: in FP16, through ONNX Runtime's TensorRT execution provider on a CUDA GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medseg.errors import MedsegError, ModelFileError

ENGINES = ("auto", "torch", "torch-bf16", "onnxruntime", "openvino", "tensorrt")


class Engine(Protocol):
    name: str
    out_channels: int
    stride: int
    fixed_size: tuple[int, int, int] | None
    min_size: int
    supports_modality_mask: bool

    def __call__(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class NetworkFacts:
    """What the sliding window and masking need from a network, whichever engine runs it."""

    out_channels: int
    stride: int
    fixed_size: tuple[int, int, int] | None
    supports_modality_mask: bool
    min_size: int = 1  # absent from files exported before it existed

    @classmethod
    def of(cls, model: torch.nn.Module) -> NetworkFacts:
        fixed = getattr(model, "fixed_size", None)
        return cls(
            int(model.out_channels),
            int(getattr(model, "stride", 1)),
            tuple(fixed) if fixed else None,
            bool(getattr(model, "supports_modality_mask", False)),
            int(getattr(model, "min_size", 1)),
        )


def check_finite(logits: torch.Tensor, model_name: str) -> torch.Tensor:
    """`logits` of a reference run (PyTorch fp32 or the exported graph), refused when any is NaN or Inf: the
    weights themselves are broken (a training that diverged), and every engine or export would be compared with
    garbage."""
    if not torch.isfinite(logits).all():
        raise ModelFileError(
            f"the {model_name} network outputs NaN or Inf on a test window: its weights are broken",
            hint="a training that diverged: use a checkpoint from before it, or retrain with a lower learning rate",
        )
    return logits


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


class TorchEngine:
    """The PyTorch network. `bf16`: autocast to bfloat16 (on CUDA by default, on the CPU when asked for)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, bf16: bool) -> None:
        self.model = model.to(device).eval()
        self.device, self.bf16 = device, bf16
        self.name = "torch-bf16" if bf16 and device.type == "cpu" else "torch"
        facts = NetworkFacts.of(model)
        self.out_channels, self.stride = facts.out_channels, facts.stride
        self.fixed_size, self.supports_modality_mask = facts.fixed_size, facts.supports_modality_mask
        self.min_size = facts.min_size

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x, modality_mask) if modality_mask is not None else self.model(x)
        return out.float()


class _OnnxBase:
    """Feeds an exported graph: inputs `image` (and `modality_mask` for cross-modal models), output `logits`."""

    def __init__(self, facts: NetworkFacts, takes_mask: bool, image_dims: list) -> None:
        """`image_dims`: the graph's `image` input shape, an int per fixed axis. A graph exported with fixed window
        axes (position tables, Swin's traced window partition) takes windows of that size only, whatever the
        PyTorch model could: `--single-pass` then slides windows instead of feeding it the whole box."""
        self.out_channels, self.stride = facts.out_channels, facts.stride
        spatial = image_dims[2:]
        graph_fixed = tuple(spatial) if all(isinstance(d, int) for d in spatial) else None
        self.fixed_size = facts.fixed_size or graph_fixed
        self.supports_modality_mask, self.min_size = facts.supports_modality_mask, facts.min_size
        self.takes_mask = takes_mask

    def _feed(self, x: torch.Tensor, modality_mask: torch.Tensor | None) -> dict[str, np.ndarray]:
        feed = {"image": x.detach().cpu().float().numpy()}
        if self.takes_mask:
            mask = modality_mask if modality_mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
            feed["modality_mask"] = mask.detach().cpu().numpy().astype(bool)
        return feed


class OnnxRuntimeEngine(_OnnxBase):
    """ONNX Runtime on the CPU (or CUDA when onnxruntime-gpu is installed and the device is CUDA); `providers`
    replaces that choice (TensorRT)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        facts: NetworkFacts,
        device: torch.device,
        threads: int | None = None,
        providers: list | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = {i.name: i.shape for i in self.session.get_inputs()}  # a dynamic axis is a name or None
        super().__init__(facts, "modality_mask" in inputs, inputs["image"])

    def __call__(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        (out,) = self.session.run(["logits"], self._feed(x, modality_mask))
        return torch.from_numpy(out).to(x.device).float()


def tensorrt_available(device: torch.device) -> bool:
    """A CUDA device and an onnxruntime-gpu build with the TensorRT execution provider (and TensorRT's libraries)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "TensorrtExecutionProvider" in ort.get_available_providers()


class TensorRtEngine(OnnxRuntimeEngine):
    """TensorRT FP16 (layer fusion, FP16 kernels) through ONNX Runtime, built once for windows of `window` =
    (channels, *patch) in batches of 1 to `max_batch` (one optimisation profile, so no rebuild per batch size) and
    cached in `cache` (one folder per model: ONNX Runtime names engines by graph, not by weights)."""

    name = "tensorrt"

    def __init__(
        self, path: Path, facts: NetworkFacts, device: torch.device, cache: Path, window: tuple, max_batch: int
    ) -> None:
        cache.mkdir(parents=True, exist_ok=True)

        def shapes(batch: int) -> str:
            dims = "x".join(str(d) for d in (batch, *window))
            return f"image:{dims}" + (f",modality_mask:{batch}x{window[0]}" if facts.supports_modality_mask else "")

        gpu = {"device_id": device.index or 0}
        trt = {
            **gpu,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(1),
            "trt_profile_opt_shapes": shapes(max_batch),
            "trt_profile_max_shapes": shapes(max_batch),
        }
        super().__init__(
            path, facts, device, providers=[("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", gpu)]
        )
        if self.session.get_providers()[0] != "TensorrtExecutionProvider":  # ONNX Runtime fell back to CUDA
            raise MedsegError(
                "TensorRT did not take this model (its libraries did not load, or it cannot build this graph)",
                hint="check that tensorrt matches onnxruntime-gpu, or use --engine onnxruntime",
            )
        self.session.disable_fallback()  # a TensorRT failure while running is an error, not a quiet switch to CUDA


class OpenVinoEngine(_OnnxBase):
    """OpenVINO on the CPU (it reads the ONNX file directly)."""

    name = "openvino"

    def __init__(self, path: Path, facts: NetworkFacts) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        except RuntimeError as exc:  # graphs its CPU plugin cannot compile (e.g. some int8 attention graphs)
            last = [line for line in str(exc).splitlines() if line.strip()][-1][:160]
            raise MedsegError(
                f"openvino cannot compile {path.name} ({last})", hint="use --engine onnxruntime"
            ) from None
        inputs = {i.get_any_name(): i.get_partial_shape() for i in model.inputs}
        dims = [d.get_length() if d.is_static else None for d in inputs["image"]]
        super().__init__(facts, "modality_mask" in inputs, dims)

    def __call__(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        result = self.compiled(self._feed(x, modality_mask))
        return torch.from_numpy(np.asarray(result[self.compiled.output("logits")])).to(x.device).float()
