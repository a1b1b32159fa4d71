"""Export a trained model to a self-contained ONNX file (fp32, fp16 or int8), verified before it is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.layouts import detect_cases
from medseg.inference.model_source import load_bundle
from medseg.inference.onnx_export import ExportReport, export_onnx
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import read_case
from medseg.io.onnx_bundle import require_modules
from medseg.pipelines import task_for_model
from medseg.transforms.preprocess import preprocess_case

PRECISIONS = ("fp32", "fp16", "int8")


def calibration_windows(bundle: ModelBundle, data_dir: Path, count: int = 16, seed: int = 0) -> list[np.ndarray]:
    """`count` preprocessed windows of the patch size from the cases of `data_dir`, half of them centred on the
    brightest FLAIR-like voxels (tumour) and half anywhere in the brain, so int8 ranges cover both."""
    task = task_for_model(bundle.task, bundle.channels, bundle.label_map)
    _, cases = detect_cases(data_dir, task.prediction_layouts)
    rng = np.random.default_rng(seed)
    roi = np.array(bundle.patch_size)
    windows = []
    for i in range(count):
        case = cases[i % len(cases)]
        image = preprocess_case(read_case(case, with_label=False), case, None, bundle.preprocess).image
        shape = np.array(image.shape[1:])
        brain = np.argwhere(np.any(image != 0, axis=0))
        centre = brain[rng.integers(len(brain))] if i % 2 else np.unravel_index(image.max(0).argmax(), shape)
        start = np.clip(np.asarray(centre) - roi // 2, 0, np.maximum(shape - roi, 0))
        box = tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
        w = image[(slice(None), *box)]
        pad = [(0, 0), *((0, int(r - n)) for r, n in zip(roi, w.shape[1:], strict=True))]
        windows.append(np.pad(w, pad))
    return windows


def export_model(
    model_ref: str,
    out: Path,
    precision: str = "fp32",
    calibration: Path | None = None,
    tracking_uri: str | None = None,
) -> ExportReport:
    """Load a checkpoint / runs:/ / models:/ model, export it, verify it, write `out`."""
    require_modules("medseg export", "onnx", "onnxruntime", *(["onnxconverter_common"] if precision == "fp16" else []))
    bundle = load_bundle(model_ref, tracking_uri)
    windows = calibration_windows(bundle, calibration) if calibration is not None else []
    return export_onnx(bundle, out, precision, windows)
