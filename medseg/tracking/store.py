"""The MLflow store: explicit clients for a tracking URI, the store-creation lock, experiments, UI addresses.

Every call names its store (`MlflowClient(tracking_uri=...)`); nothing sets MLflow's process-wide tracking URI,
except `scoped_tracking_uri` around the few MLflow functions that read only that global (model logging), which
restores it afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from medseg.errors import TrackingError
from medseg.redact import redact_secrets
from medseg.tracking.tracker import default_tracking_uri

ML_VIEW = "?workflowType=machine_learning"
T = TypeVar("T")


def mlflow_module():
    """mlflow, imported on first use (CLI start-up), quiet, without artifact progress bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


def client(uri: str):
    """An MlflowClient bound to `uri`. An unreachable server is one clear error at once, not a traceback after
    MLflow's HTTP retries (about two minutes). A SQLite store is opened under the store lock: MLflow opens its
    stores lazily and runs schema migrations on first open, which race when a review and a training open a
    fresh database at once."""
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    with store_lock(uri):
        return _opened_client(uri)


def existing_store_client(uri: str):
    """`client` for commands that only read (see `check_store_exists`)."""
    check_store_exists(uri)
    return client(uri)


def check_uri(uri: str) -> None:
    """A bare path is not a tracking URI: MLflow would read it as its deprecated file store and fail deep inside
    with a traceback. Checked where a store is opened, so an untracked run never trips on an unused URI."""
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return
    path = Path(uri).expanduser().resolve()
    db = path / "mlflow.db" if path.is_dir() else path
    raise TrackingError(
        f"tracking URI {uri!r} is a path, not a URI",
        hint=f"write it as sqlite:///{db} (or http://host:port for a server)",
    )


def check_store_exists(uri: str) -> None:
    """For commands that only read: a SQLite store that does not exist is an error, not an empty store created on
    the spot (a typo in the URI looked like "0 runs", or an empty MLflow UI)."""
    if not uri.startswith("sqlite:///"):
        return
    where = uri.removeprefix("sqlite:///")
    if Path(where).is_file():
        with open(where, "rb") as f:
            header = f.read(16)
        if header == b"SQLite format 3\x00":
            return
        raise TrackingError(
            f"{where} is not an MLflow store ({'an empty file' if not header else 'not an SQLite database'})",
            hint="pass the --tracking-uri of the mlflow.db your training wrote",
        )
    if uri == default_tracking_uri():  # the user may not know which store a bare command reads
        where += " (the default: no --tracking-uri or MLFLOW_TRACKING_URI given)"
    raise TrackingError(
        f"no MLflow store at {where}",
        hint="train first (`medseg train` creates the store), or pass the --tracking-uri (or MLFLOW_TRACKING_URI) "
        "of your runs",
    )


def _opened_client(uri: str):
    """A client whose tracking and registry stores are open (for SQLite: created and migrated). Call under
    `store_lock`."""
    check_uri(uri)
    c = mlflow_module().MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:///"):
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)
    return c


def check_server(uri: str) -> None:
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
        reason = redact_secrets(str(getattr(exc, "reason", exc)))
        raise TrackingError(
            f"cannot reach the MLflow server {redact_secrets(uri)} ({reason})",
            hint="start it, fix --tracking-uri / MLFLOW_TRACKING_URI, or train with --no-tracking",
        ) from None


@contextlib.contextmanager
def scoped_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for a block, then restore it (and the environment variable
    `mlflow.set_tracking_uri` exports), for MLflow functions that take no URI argument."""
    mlflow = mlflow_module()
    from mlflow.tracking._tracking_service import utils as tracking_utils  # the only holder of the global

    previous, env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
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


def lost_insert_race(exc: Exception) -> bool:
    """MLflow's stores look a row up, then insert it: two writers at once collide on the unique key (a dataset both
    runs log, an alias both set). Such a write can simply be retried; it then finds the other writer's row."""
    text = str(exc).lower()
    return "unique constraint" in text or "duplicate key" in text


def retry_lost_race(write: Callable[[], T], attempts: int = 5) -> T:
    """`write()`, retried (with a short growing pause) while it loses an insert race to another writer."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            if attempt == attempts - 1 or not lost_insert_race(exc):
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


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
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    with store_lock(uri):
        try:
            c = _opened_client(uri)
            exp = c.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else c.create_experiment(experiment, artifact_location(uri, experiment))
            c.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
            return exp_id
        except TrackingError:
            raise
        except Exception as exc:
            if "already exists" in str(exc):  # another process created it between our two calls
                return _opened_client(uri).get_experiment_by_name(experiment).experiment_id
            raise TrackingError(
                f"cannot open MLflow store {redact_secrets(uri)} ({exc.__class__.__name__})",
                hint="check --tracking-uri / MLFLOW_TRACKING_URI and that the server is running",
            ) from None


def latest_experiment_id(uri: str) -> str | None:
    """The experiment of the store's most recent run (None: no runs), read without creating anything."""
    c = existing_store_client(uri)
    try:
        experiments = [e.experiment_id for e in c.search_experiments()]
        latest = (
            c.search_runs(experiments, order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
        )
    except Exception as exc:  # a corrupt or foreign database, a server error: one line, as every store command
        raise TrackingError(
            f"cannot read MLflow store {redact_secrets(uri)} ({exc.__class__.__name__})",
            hint="check --tracking-uri / MLFLOW_TRACKING_URI",
        ) from None
    return latest[0].info.experiment_id if latest else None


def runs_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI address of the experiment's training-runs table (or the run), for `medseg ui` on port 5000."""
    base = redact_secrets(uri) if uri.startswith("http") else "http://127.0.0.1:5000"
    if run_id:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{ML_VIEW}"
