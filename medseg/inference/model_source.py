"""Resolve `--model`: a checkpoint/bundle file, or an MLflow model URI (runs:/, models:/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.errors import ModelFileError
from medseg.io.bundle import ModelBundle, load_checkpoint

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def load_bundle(model_ref: str, tracking_uri: str | None = None) -> ModelBundle:
    """The self-describing model bundle behind a file path or an MLflow model URI.

    MLflow models are read through the weights-only bundle medseg stores inside them; the pickled module
    MLflow also keeps is never unpickled.
    """
    if model_ref.startswith(MLFLOW_SCHEMES):
        from medseg.tracking import resolve_tracking_uri
        from medseg.tracking.registry import downloaded_bundle

        with downloaded_bundle(model_ref, resolve_tracking_uri(tracking_uri)) as path:
            return _read_bundle(path, model_ref)  # named by its URI: the download is removed
    path = Path(model_ref)
    if not path.exists():
        raise ModelFileError(
            "model not found",
            path=str(path),
            hint="pass a .pt from `medseg train` or runs:/<run_id>/model",
        )
    return _read_bundle(path, str(path))


def _read_bundle(path: Path, name: str) -> ModelBundle:
    try:
        return ModelBundle.from_dict(load_checkpoint(path)["bundle"])
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: pydantic's, for malformed settings
        raise ModelFileError(f"incomplete model bundle (missing {exc})", path=name) from None


@dataclass(frozen=True)
class ModelRef:
    """A model loaded from a reference, with the MLflow run it came from when that can be known (for run links)."""

    bundle: ModelBundle
    ref: str
    run_id: str | None = None


def load_model_ref(model_ref: str, tracking_uri: str | None = None) -> ModelRef:
    """`load_bundle` plus the source run: runs:/ URIs and medseg checkpoints name it; registry URIs do not. For the
    models a training starts from (teacher, pruning source), which need PyTorch weights."""
    if Path(model_ref).suffix.lower() == ".onnx":
        raise ModelFileError(
            "an ONNX export holds no PyTorch weights to train from",
            path=model_ref,
            hint="pass the .pt it was exported from (best.pt) or runs:/<run_id>/model",
        )
    bundle = load_bundle(model_ref, tracking_uri)
    run_id = None
    if model_ref.startswith("runs:/"):
        run_id = model_ref.removeprefix("runs:/").split("/")[0]
    elif Path(model_ref).is_file():
        run_id = load_checkpoint(model_ref).get("run_id")
    return ModelRef(bundle, model_ref, run_id)
