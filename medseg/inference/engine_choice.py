"""Opening an engine by name, and `auto`: the fastest engine of this machine, measured once and remembered.

`auto` times every available engine on windows of the model's patch size (after a warm-up), keeps only those whose
probabilities match PyTorch fp32 (mean difference <= 5e-3, max <= 0.1), and caches the winner per model, device,
window batch, CPU and library versions in `~/.cache/medseg/engines.json`: a measured choice, never a guess.
ONNX graphs exported on the fly for a PyTorch model are cached beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError, first_line
from medseg.inference.engines import (
    Engine,
    NetworkFacts,
    OnnxRuntimeEngine,
    OpenVinoEngine,
    TensorRtEngine,
    TorchEngine,
    check_finite,
    cpu_has_bf16,
    tensorrt_available,
)
from medseg.io.atomic import atomic_write_text
from medseg.io.bundle import ModelBundle

MEAN_TOLERANCE, MAX_TOLERANCE = 5e-3, 0.1


def _probabilities_match(diff: torch.Tensor) -> bool:
    """|sigmoid difference| within what `auto` keeps an engine by (NaN never matches)."""
    return float(diff.mean()) <= MEAN_TOLERANCE and float(diff.max()) <= MAX_TOLERANCE


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medseg"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_engines(device: torch.device, onnx_only: bool = False) -> list[str]:
    """Engines this machine can run for this model (an ONNX file has no PyTorch weights)."""
    names = [] if onnx_only else ["torch"]
    if device.type == "cpu" and cpu_has_bf16() and not onnx_only:
        names.append("torch-bf16")
    exportable = onnx_only or (_installed("onnx") and _installed("onnxruntime"))  # export verifies in onnxruntime
    if exportable and _installed("onnxruntime"):
        names.append("onnxruntime")
    if exportable and device.type == "cpu" and _installed("openvino"):
        names.append("openvino")
    return names  # not tensorrt: its first build takes minutes, so it is asked for by name


def _onnx_for(bundle: ModelBundle, onnx_path: Path | None, fingerprint: str) -> Path:
    if onnx_path is not None:
        return onnx_path
    from medseg.inference.onnx_export import export_onnx

    path = cache_dir() / "onnx" / f"{fingerprint}.onnx"
    if not path.exists() or not _loads(path):  # a damaged cache (disk, an editor) is rebuilt, not an error forever
        export_onnx(bundle, path)
    return path


def _loads(path: Path) -> bool:
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return True


def check_engine(name: str, device: torch.device, onnx_path: Path | None = None) -> None:
    """Refuse an engine this machine or model cannot run, in one line and without building anything (so before
    a folder is read)."""
    if name in ("torch", "torch-bf16"):
        if onnx_path is not None:
            raise MedsegError(f"--engine {name} needs PyTorch weights, not an ONNX file", hint="use onnxruntime")
        if name == "torch-bf16" and device.type == "cpu" and not cpu_has_bf16():
            raise MedsegError("this CPU has no native bf16 (AVX-512 BF16 / AMX)", hint="use --engine torch")
        return
    if name not in ("onnxruntime", "openvino", "tensorrt"):
        hint = "use auto, torch, torch-bf16, onnxruntime, openvino or tensorrt"
        raise MedsegError(f"unknown engine '{name}'", hint=hint)
    if name == "tensorrt":
        if not tensorrt_available(device):
            raise MedsegError(
                "--engine tensorrt needs a CUDA GPU and onnxruntime-gpu with TensorRT",
                hint="pip install onnxruntime-gpu tensorrt, and --device cuda; or use auto",
            )
    elif not _installed(name):
        raise MedsegError(f"engine {name} is not installed", hint=f"pip install {name}")


def open_engine(
    name: str,
    bundle: ModelBundle,
    device: torch.device,
    amp: bool,
    fingerprint: str,
    onnx_path: Path | None = None,
    facts: NetworkFacts | None = None,
    sw_batch: int = 1,
) -> Engine:
    """The engine `name` for `bundle` on `device` (`onnx_path`: the model is an exported graph; `sw_batch`: the
    most windows per call, which TensorRT builds for)."""
    check_engine(name, device, onnx_path)
    if name in ("torch", "torch-bf16"):
        return TorchEngine(bundle.build_model(), device, bf16=(amp and device.type == "cuda") or name == "torch-bf16")
    path = _onnx_for(bundle, onnx_path, fingerprint)
    if facts is None:
        facts = NetworkFacts.of(bundle.build_model())
    if name == "onnxruntime":
        return OnnxRuntimeEngine(path, facts, device)
    if name == "openvino":
        return OpenVinoEngine(path, facts)
    window = (len(bundle.channels), *bundle.patch_size)
    engine = TensorRtEngine(path, facts, device, cache_dir() / "tensorrt" / fingerprint, window, sw_batch)
    refuse_if_wrong(engine, _reference(bundle, device, path, facts), bundle, device, sw_batch)
    return engine


def _reference(bundle: ModelBundle, device: torch.device, path: Path, facts: NetworkFacts) -> Engine:
    """PyTorch fp32 where the model has weights; for an exported file, its own graph in ONNX Runtime on the CPU."""
    if bundle.state_dict:
        return TorchEngine(bundle.build_model(), device, bf16=False)
    return OnnxRuntimeEngine(path, facts, torch.device("cpu"))


def refuse_if_wrong(
    engine: Engine, reference: Engine, bundle: ModelBundle, device: torch.device, batch: int = 2
) -> None:
    """Refuse an engine whose outputs are not the reference's on random windows: FP16 engines can overflow into NaN
    or collapse to empty masks (nnU-Net #2874) without any error of their own. Logits are compared as well as
    probabilities: a trained model is sure of background on noise, where collapsed probabilities would still agree."""
    channels = len(bundle.channels)
    windows = torch.randn(batch, channels, *bundle.patch_size, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones(batch, channels, dtype=torch.bool, device=device) if engine.supports_modality_mask else None
    got, want = engine(windows, mask).float(), reference(windows, mask).float().to(device)
    prob = (torch.sigmoid(got) - torch.sigmoid(want)).abs().nan_to_num(1.0)
    logit = float((got - want).abs().nan_to_num(float("inf")).mean())
    # FP16 error grows with the logits' size: a model sure of background has large, nearly constant logits
    allowed = 0.02 * float(want.abs().mean()) + 0.1 * float(want.std()) + 0.05
    if not torch.isfinite(got).all() or not _probabilities_match(prob) or logit > allowed:
        raise MedsegError(
            f"{engine.name} gives wrong outputs for this model (max probability difference {float(prob.max()):.3g}, "
            f"mean logit difference {logit:.3g} from the fp32 reference: non-finite or collapsed outputs)",
            hint="use --engine auto or torch",
        )


def _machine_key(device: torch.device, fingerprint: str, sw_batch: int) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    versions = [torch.__version__]
    for module in ("onnxruntime", "openvino"):
        if _installed(module):
            versions.append(f"{module}={__import__(module).__version__}")
    return "|".join([fingerprint, str(device), f"sw{sw_batch}", f"threads{torch.get_num_threads()}", cpu, *versions])


def measure(engine: Engine, windows: torch.Tensor, mask: torch.Tensor | None, rounds: int = 3) -> float:
    """Median seconds of one call on `windows`, after a warm-up call."""
    engine(windows, mask)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        engine(windows, mask)
        if windows.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def choose_engine(
    bundle: ModelBundle,
    device: torch.device,
    amp: bool,
    fingerprint: str,
    sw_batch: int,
    onnx_path: Path | None = None,
    facts: NetworkFacts | None = None,
    on_message=None,
    sample: Callable[[int], torch.Tensor | None] | None = None,
) -> Engine:
    """The fastest accurate engine for this model on this machine (measured on first use, then cached).

    `sample(n)`: n windows of real cases (`inference.data_windows`), on which accuracy is judged; without it (or
    when it returns None), random windows, which a trained model finds certain background, so probabilities barely
    differ anywhere."""
    key = _machine_key(device, fingerprint, sw_batch)
    store = cache_dir() / "engines.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    candidates = available_engines(device, onnx_only=onnx_path is not None)
    if key in known and known[key]["engine"] in candidates:
        return open_engine(known[key]["engine"], bundle, device, amp, fingerprint, onnx_path, facts)
    channels = len(bundle.channels)
    windows = sample(sw_batch) if sample is not None else None
    if windows is None:
        windows = torch.randn(sw_batch, channels, *bundle.patch_size, generator=torch.Generator().manual_seed(0))
    windows = windows.to(device)
    # PyTorch fp32 (or ONNX Runtime for a file): the reference must open and run, before any other is exported
    first = open_engine(candidates[0], bundle, device, amp, fingerprint, onnx_path, facts)
    mask = torch.ones(sw_batch, channels, dtype=torch.bool, device=device) if first.supports_modality_mask else None
    reference = torch.sigmoid(check_finite(first(windows, mask), bundle.model_name))
    engines = {candidates[0]: first}
    for name in candidates[1:]:
        try:
            engines[name] = open_engine(name, bundle, device, amp, fingerprint, onnx_path, facts)
        except MedsegError as exc:  # e.g. a graph OpenVINO cannot compile: not a candidate here
            if on_message:
                on_message(f"engine auto: {name} left out ({exc})")
    timings, accepted = {}, {}
    for name, engine in engines.items():
        try:
            diff = (torch.sigmoid(engine(windows, mask)) - reference).abs()
            timings[name] = measure(engine, windows, mask)
        except Exception as exc:  # compiled but cannot run (OpenVINO on swinunetr's reshapes): not a candidate
            if engine is first:
                raise
            if on_message:
                on_message(f"engine auto: {name} left out (it fails on a window: {first_line(exc)})")
            continue
        if _probabilities_match(diff):
            accepted[name] = timings[name]
    best = min(accepted, key=accepted.get)
    known[key] = {"engine": best, "seconds_per_call": timings, "accurate": sorted(accepted)}
    store.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(store, json.dumps(known, indent=1))
    if on_message:
        parts = ", ".join(
            f"{n} {t * 1000:.0f} ms" + ("" if n in accepted else " (not accurate enough: left out)")
            for n, t in sorted(timings.items(), key=lambda x: x[1])
        )
        on_message(f"engine auto: measured {parts} per {sw_batch} window(s); chose {best} (cached)")
    return engines[best]
