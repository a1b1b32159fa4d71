"""Experiment tracking interface, URI resolution, and the no-op tracker for untracked runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


def resolve_tracking_uri(cli_uri: str | None = None, config_uri: str | None = None) -> str:
    """`--tracking-uri`, else $MLFLOW_TRACKING_URI, else the config's, else `sqlite:///<cwd>/mlflow.db`.

    Never the deprecated `./mlruns` file store (MLflow >= 3.13 refuses it by default).
    """
    return cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or config_uri or default_tracking_uri()


def default_tracking_uri() -> str:
    """The store used when no URI is given: `mlflow.db` in the current folder."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


@dataclass(frozen=True)
class TrackingTarget:
    """Where a training run is tracked: `uri=None` switches tracking off."""

    uri: str | None
    experiment: str = "medseg"
    run_name: str | None = None
    register_name: str | None = None
    system_metrics: bool = True


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_dataset(self, manifest_json: dict, source: str, name: str, digest: str) -> None: ...
    def log_bundle_model(self, model: Any, bundle_path: Path, example: np.ndarray) -> str | None: ...
    def register(self, model_uri: str, name: str, metric: float) -> list[str]: ...
    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracking switched off (`--no-tracking`, tests, non-zero DDP ranks): every call is a no-op."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        pass

    def log_dataset(self, manifest_json: dict, source: str, name: str, digest: str) -> None:
        pass

    def log_bundle_model(self, model: Any, bundle_path: Path, example: np.ndarray) -> str | None:
        return None

    def register(self, model_uri: str, name: str, metric: float) -> list[str]:
        return []

    def end(self, status: str = "FINISHED") -> None:
        pass
