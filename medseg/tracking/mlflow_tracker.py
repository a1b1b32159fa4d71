"""The MLflow tracker: runs, params, step metrics, images, the dataset, the model and the registry."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import TrackingError
from medseg.tracking.tracker import redact_uri

ML_VIEW = "?workflowType=machine_learning"


def _mlflow():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


def connect(uri: str):
    """MLflow pointed at `uri`. An unreachable server is one clear error at once, not a traceback after
    MLflow's HTTP retries (about two minutes)."""
    mlflow = _mlflow()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(health, timeout=10).close()
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind authentication): reachable
    except (OSError, ValueError) as exc:
        reason = redact_uri(str(getattr(exc, "reason", exc)))
        raise TrackingError(
            f"cannot reach the MLflow server {redact_uri(uri)} ({reason})",
            hint="start it, fix --tracking-uri / MLFLOW_TRACKING_URI, or train with --no-tracking",
        ) from None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise creation of a SQLite store across processes: MLflow's schema migrations race when several
    processes open a fresh database at once ("database is locked", duplicate tables)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file, not in `./mlruns` of whatever folder
    the command happened to run in (MLflow's default for database stores)."""
    if not uri.startswith("sqlite:///"):
        return None  # servers and other stores choose their own artifact root
    db = Path(uri.removeprefix("sqlite:///"))
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in experiment)
    return (db.parent / "mlartifacts" / safe).resolve().as_uri()


def prepare_experiment(uri: str, experiment: str) -> str:
    """Create the store and the experiment up front (before any worker), returning the experiment id.

    Sets the experiment-kind tag the MLflow UI's own selector writes, so it opens the training view.
    """
    mlflow = connect(uri)
    with _store_lock(uri):
        return _get_or_create(mlflow, uri, experiment)


def _get_or_create(mlflow, uri: str, experiment: str) -> str:
    try:
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location(uri, experiment))
        client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
        return exp_id
    except Exception as exc:
        if "already exists" in str(exc):  # another process created it between our two calls
            return mlflow.MlflowClient().get_experiment_by_name(experiment).experiment_id
        raise TrackingError(
            f"cannot open MLflow store {redact_uri(uri)} ({exc.__class__.__name__})",
            hint="check --tracking-uri / MLFLOW_TRACKING_URI and that the server is running",
        ) from None


def runs_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI address of the experiment's training-runs table (or the run), for `medseg ui` on port 5000."""
    base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    if run_id:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{ML_VIEW}"


class MlflowTracker:
    """One MLflow run; `run_id` resumes an existing run (params are then not re-logged)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        system_metrics: bool = False,
    ) -> None:
        self._mlflow = _mlflow()
        self.uri = uri
        self.experiment_id = prepare_experiment(uri, experiment)
        self.resumed = run_id is not None
        try:
            run = self._mlflow.start_run(
                run_id=run_id,
                experiment_id=None if run_id else self.experiment_id,
                run_name=None if run_id else run_name,
                tags=tags if not run_id else None,
                log_system_metrics=system_metrics,
            )
        except Exception as exc:
            raise TrackingError(
                f"cannot start MLflow run ({exc.__class__.__name__}: {str(exc)[:120]})",
                hint="check the run id and the tracking URI",
            ) from None
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.resumed:
            return  # MLflow params are immutable: a resumed run keeps its original ones
        clean = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
        self._mlflow.log_params(clean)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self._mlflow.log_image(image, key=key, step=step)

    def log_dataset(self, manifest_json: dict, source: str, name: str, digest: str) -> None:
        import pandas as pd

        rows = [{"id": c["id"], "fold": c["fold"], "shape": str(c["shape"])} for c in manifest_json["cases"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MLflow guessing among equivalent local sources
            ds = self._mlflow.data.from_pandas(pd.DataFrame(rows), source=source, name=name, digest=digest)
            self._mlflow.log_input(ds, context="training")

    def log_bundle_model(self, model: Any, bundle_path: Path, example: np.ndarray) -> str | None:
        """Log the network as an MLflow model, with our weights-only bundle inside as an extra file.

        medseg loads the bundle (state_dict path, `weights_only=True`), never the pickled module.
        """
        import torch

        with torch.no_grad():
            out = model(torch.from_numpy(example)).numpy()
        with warnings.catch_warnings():
            # MLflow warns about pickle and integer schemas; medseg never unpickles and inputs are float.
            warnings.simplefilter("ignore", UserWarning)
            logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
            info = self._log_model(model, bundle_path, example, out)
        return info.model_uri

    def _log_model(self, model: Any, bundle_path: Path, example: np.ndarray, out: np.ndarray):
        from mlflow.models import infer_signature

        return self._mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            signature=infer_signature(example, out),
            input_example=example,
            extra_files=[str(bundle_path)],
            pip_requirements=["torch", "monai", "einops"],
        )

    def register(self, model_uri: str, name: str, metric: float) -> list[str]:
        """Register the model as a new version; alias `champion` if it beats the champion's val_dice_mean.

        MLflow reserves the alias `latest`: `models:/NAME/latest` always resolves to the newest version.
        """
        return register_version(model_uri, name, metric, [])

    def end(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)


def register_version(model_uri: str, name: str, metric: float | None, aliases: list[str]) -> list[str]:
    """Register `model_uri` under `name`, tag its val_dice_mean, set `aliases` (+ `champion` when `metric` beats
    the current champion). Returns the aliases set; MLflow refusals become one-line TrackingErrors."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    aliases = list(aliases)
    try:
        version = mlflow.register_model(model_uri, name).version
        if metric is not None:
            client.set_model_version_tag(name, version, "val_dice_mean", f"{metric:.6f}")
            try:
                champ = client.get_model_version_by_alias(name, "champion")
                champ_metric = float(champ.tags.get("val_dice_mean", "-inf"))
            except Exception:
                champ_metric = float("-inf")
            if metric > champ_metric and "champion" not in aliases:
                aliases.append("champion")
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version)
    except Exception as exc:
        raise TrackingError(
            f"cannot register {model_uri} as '{name}' ({str(exc).splitlines()[0][:160]})",
            hint="aliases must not be 'latest' (reserved by MLflow) or a version number",
        ) from None
    return [f"v{version}", *aliases]


def download_bundle(model_uri: str, tracking_uri: str) -> Path:
    """Fetch the medseg bundle stored inside an MLflow model (`runs:/..`, `models:/..`) to a temp folder."""
    from medseg.io.bundle import BUNDLE_FILE  # here, not at the top: it imports torch (CLI start-up)

    mlflow = connect(tracking_uri)
    dst = Path(tempfile.mkdtemp(prefix="medseg-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:
        raise TrackingError(
            f"cannot fetch MLflow model {model_uri} ({exc.__class__.__name__}: {str(exc)[:160]})",
            hint="check the URI with `medseg runs show RUN_ID` and --tracking-uri",
        ) from None
    found = list(local.rglob(BUNDLE_FILE))
    if not found:
        raise TrackingError(f"MLflow model {model_uri} holds no {BUNDLE_FILE} (not logged by medseg)")
    return found[0]


def run_output_dir(run_id: str, tracking_uri: str) -> str:
    """The local folder (checkpoints) a medseg run wrote, from its `medseg.out_dir` tag."""
    mlflow = connect(tracking_uri)
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception:
        raise TrackingError(
            f"no run {run_id} in {redact_uri(tracking_uri)}",
            hint="pass a checkpoint path or a run id from `medseg runs list`",
        ) from None
    out = run.data.tags.get("medseg.out_dir")
    if not out:
        raise TrackingError(f"run {run_id} was not written by medseg train (no medseg.out_dir tag)")
    return out


def log_to_existing_run(run_id: str, tracking_uri: str, metrics: dict[str, float], files: list[Path]) -> None:
    """Attach evaluation metrics and files to a finished run (e.g. test-set Dice after training)."""
    mlflow = connect(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except Exception:
        raise TrackingError(f"no run {run_id} in {redact_uri(tracking_uri)}", hint="see `medseg runs list`") from None
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for f in files:
        client.log_artifact(run_id, str(f), "evaluation")
