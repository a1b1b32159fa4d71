"""Writing one MLflow run: params, step metrics, artifacts, images, the dataset, system metrics and the model.

All through a client bound to the run's store; only `mlflow.pytorch.log_model`, which reads MLflow's global URI and
active run, runs inside `scoped_tracking_uri` with the run briefly active.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import TrackingError
from medseg.redact import redact_secrets
from medseg.tracking.registry import register_version
from medseg.tracking.store import (
    client,
    mlflow_module,
    prepare_experiment,
    retry_lost_race,
    scoped_tracking_uri,
)


class MlflowTracker:
    """One MLflow run; `run_id` resumes an existing run (its params are then kept, new ones added)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        system_metrics: bool = False,
    ) -> None:
        self.uri = uri
        self.experiment_id = prepare_experiment(uri, experiment)
        self.resumed = run_id is not None
        self._client = client(uri)
        try:
            if run_id:
                self._client.update_run(run_id, status="RUNNING")
                run = self._client.get_run(run_id)
            else:
                run = self._client.create_run(self.experiment_id, run_name=run_name, tags=tags or {})
        except Exception as exc:
            raise TrackingError(
                f"cannot start MLflow run ({exc.__class__.__name__}: {redact_secrets(str(exc))[:120]})",
                hint="check the run id and the tracking URI",
            ) from None
        self.run_id = run.info.run_id
        self._monitor = None
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=self.resumed, tracking_uri=uri)
            self._monitor.start()

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; a resumed run keeps the ones it has (MLflow params are immutable) and gains the new ones,
        such as the post-processing rules of a run interrupted before it chose them."""
        from mlflow.entities import Param

        if self.resumed:
            logged = self._client.get_run(self.run_id).data.params
            params = {k: v for k, v in params.items() if k not in logged}

        clean = [Param(k, ("" if v is None else str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(clean), 100):  # MLflow's batch limit
            self._client.log_batch(self.run_id, params=clean[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, v)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self._client.log_image(self.run_id, image, key=key, step=step)

    def log_dataset(self, manifest_json: dict, source: str, name: str, digest: str) -> None:
        """The manifest as the run's dataset (the UI's Dataset column), context `training`."""
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        rows = [{"id": c["id"], "fold": c["fold"], "shape": str(c["shape"])} for c in manifest_json["cases"]]
        with warnings.catch_warnings():
            # MLflow guessing among equivalent local sources, and hinting about integer columns (fold numbers).
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow_module().data.from_pandas(pd.DataFrame(rows), source=source, name=name, digest=digest)
            entry = DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])
        # Two runs logging the same manifest at once collide on its unique row: the retry links the other's row.
        retry_lost_race(lambda: self._client.log_inputs(self.run_id, datasets=[entry]))

    def log_bundle_model(self, model: Any, bundle_path: Path, example: np.ndarray) -> str | None:
        """Log the network as an MLflow model, with our weights-only bundle inside as an extra file.

        medseg loads the bundle (state_dict path, `weights_only=True`), never the pickled module.
        """
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            out = model(torch.from_numpy(example)).numpy()
        mlflow = mlflow_module()
        with warnings.catch_warnings(), scoped_tracking_uri(self.uri):
            # MLflow warns about pickle and integer schemas; medseg never unpickles and inputs are float.
            warnings.simplefilter("ignore", UserWarning)
            logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
            with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
                info = mlflow.pytorch.log_model(
                    model,
                    name="model",
                    serialization_format="pickle",
                    signature=infer_signature(example, out),
                    input_example=example,
                    extra_files=[str(bundle_path)],
                    pip_requirements=["torch", "monai", "einops"],
                )
            self._client.update_run(self.run_id, status="RUNNING")  # leaving the block marked it FINISHED
        return info.model_uri

    def register(self, model_uri: str, name: str, metric: float) -> list[str]:
        """Register the model as a new version; alias `champion` if it beats the champion's val_dice_mean."""
        return register_version(self.uri, model_uri, name, metric, [])

    def end(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:
            self._monitor.finish()
        self._client.set_terminated(self.run_id, status=status)


def require_run(run_id: str, tracking_uri: str) -> None:
    """Fail on one line when `run_id` is not in the store or deleted (checked before work whose results it should
    receive)."""
    from medseg.tracking.review import active_run

    active_run(tracking_uri, run_id)


def log_to_existing_run(run_id: str, tracking_uri: str, metrics: dict[str, float], files: list[Path]) -> None:
    """Attach evaluation metrics and files to a finished run (e.g. test-set Dice after training)."""
    require_run(run_id, tracking_uri)
    c = client(tracking_uri)
    for key, value in metrics.items():
        c.log_metric(run_id, key, float(value))
    for f in files:
        c.log_artifact(run_id, str(f), "evaluation")
