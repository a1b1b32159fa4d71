"""Export a trained model to a self-contained ONNX file (fp32, fp16 or int8), verified before it is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.layouts import detect_cases
from medseg.errors import ModelFileError
from medseg.inference.data_windows import data_windows
from medseg.inference.model_source import load_bundle
from medseg.inference.onnx_export import ExportReport, export_onnx
from medseg.io.atomic import remove_temporaries
from medseg.io.bundle import ModelBundle
from medseg.io.onnx_bundle import require_modules
from medseg.pipelines import task_for_model

PRECISIONS = ("fp32", "fp16", "int8")


def calibration_windows(bundle: ModelBundle, data_dir: Path, count: int = 16, seed: int = 0) -> list[np.ndarray]:
    """`count` preprocessed windows from the cases of `data_dir`, half of them centred on the brightest voxels
    (tumour) and half anywhere in the brain, so int8 ranges cover both."""
    task = task_for_model(bundle.task, bundle.channels, bundle.label_map)
    _, cases = detect_cases(data_dir, task.prediction_layouts)
    return data_windows(bundle, cases, count, seed)


def export_model(
    model_ref: str,
    out: Path,
    precision: str = "fp32",
    calibration: Path | None = None,
    tracking_uri: str | None = None,
) -> ExportReport:
    """Load a checkpoint / runs:/ / models:/ model, export it, verify it, write `out`."""
    if Path(model_ref).suffix.lower() == ".onnx":
        raise ModelFileError(
            "already an ONNX export: it holds no PyTorch weights to export again",
            path=model_ref,
            hint="pass the .pt it was exported from (best.pt) or runs:/<run_id>/model; to predict, use it as it is",
        )
    require_modules("medseg export", "onnx", "onnxruntime", *(["onnxconverter_common"] if precision == "fp16" else []))
    bundle = load_bundle(model_ref, tracking_uri)
    windows = calibration_windows(bundle, calibration) if calibration is not None else []
    # What a SIGKILLed export to this --out left: the user's file, one export at a time (not the engine cache,
    # where predict's shards may be exporting the same graph at once).
    remove_temporaries(out)
    return export_onnx(bundle, out, precision, windows)
