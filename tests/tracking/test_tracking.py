from __future__ import annotations

import subprocess
import sys

import pytest

from medseg.tracking import redact_secrets, resolve_tracking_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://alice:s3cret@db:5432/mlflow", "postgresql://alice:***@db:5432/mlflow"),
        ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ],
)
def test_credentials_are_redacted(uri, expected):
    assert redact_secrets(uri) == expected
    assert "s3cret" not in redact_secrets(uri) and "abc&" not in redact_secrets(uri)


def test_uri_resolution_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "sqlite:///cfg.db") == "sqlite:///cfg.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "sqlite:///cfg.db") == "http://env:5000"
    assert resolve_tracking_uri("http://cli:5000", "sqlite:///cfg.db") == "http://cli:5000"


@pytest.mark.parametrize(
    "args", [("runs", "list"), ("predict", "--model", "runs:/0123/model", ".", "out")], ids=["runs", "predict"]
)
def test_unreachable_server_is_one_line_without_the_password(args, tmp_path):
    from tests.conftest import free_port

    uri = f"http://bob:s3cret@127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "medseg", *args, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 1
    assert "cannot reach the MLflow server http://bob:***@127.0.0.1" in out.stderr
    assert "s3cret" not in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_tracking_leaves_no_process_wide_uri_behind(brats2021_manifest, tmp_path, monkeypatch):
    """Every MLflow call names its store: after a tracked training (model logging and registration included),
    MLflow's global URI and the environment are as they were."""
    import os

    import mlflow

    from medseg.workflows.train import TrainRequest, run_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    request = TrainRequest(
        "brats",
        config="brats_smoke",
        overrides=["train.epochs=1", "train.overlays=0", "tracking.system_metrics=false", f"data.cache_dir={tmp_path}"],
        manifest=brats2021_manifest,
        fold=0,
        device="cpu",
        tracking_uri=f"sqlite:///{tmp_path / 'own.db'}",
        register="m",
        out=tmp_path / "runs",
    )
    outcome = run_training(request)
    assert outcome.result.model_uri and "v1" in outcome.result.aliases
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ


def test_two_runs_logging_the_same_manifest_at_once_both_record_it(tmp_path, monkeypatch):
    """MLflow looks a dataset up, then inserts it: when another run inserts the same manifest in between, the
    insert hits the unique row. The run must still record its dataset, not die at start-up."""
    from mlflow.exceptions import MlflowException

    from medseg.tracking.run_writer import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    manifest = {"cases": [{"id": "c0", "fold": 0, "shape": [8, 8, 8]}]}
    first, second = MlflowTracker(uri, "exp", "a"), MlflowTracker(uri, "exp", "b")
    real = second._client.log_inputs

    def lose_the_race(run_id, datasets):
        monkeypatch.setattr(second._client, "log_inputs", real)
        first.log_dataset(manifest, "file:///m.json", "manifest", "d1")
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")

    monkeypatch.setattr(second._client, "log_inputs", lose_the_race)
    second.log_dataset(manifest, "file:///m.json", "manifest", "d1")
    for tracker in (first, second):
        inputs = tracker._client.get_run(tracker.run_id).inputs.dataset_inputs
        assert [d.dataset.digest for d in inputs] == ["d1"]
        tracker.end()


def test_a_registration_that_loses_the_alias_race_still_leaves_the_best_champion(tmp_path, monkeypatch):
    """Setting an alias is a look-up-then-insert in MLflow; on PostgreSQL two registrations setting `champion` at
    once collide on its key. The loser must re-derive the champion, not fail the training that registered."""
    from mlflow.exceptions import MlflowException

    from medseg.tracking import registry
    from medseg.tracking.store import client

    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    c = client(uri)
    c.create_registered_model("m")
    for metric in ("0.5", "0.9"):
        v = c.create_model_version("m", source=str(tmp_path)).version
        c.set_model_version_tag("m", v, registry.METRIC_TAG, metric)
    real = c.set_registered_model_alias

    def lose_the_race(name, alias, version):
        monkeypatch.setattr(c, "set_registered_model_alias", real)
        real(name, alias, "1")  # the other registration, which saw only version 1, got there first
        raise MlflowException('duplicate key value violates unique constraint "registered_model_alias_pk"')

    monkeypatch.setattr(c, "set_registered_model_alias", lose_the_race)
    monkeypatch.setattr(registry, "client", lambda _uri: c)
    assert registry.promote_best(uri, "m") == "2"
    assert str(c.get_model_version_by_alias("m", registry.CHAMPION).version) == "2"


def test_a_resumed_run_keeps_its_params_and_gains_new_ones(tmp_path):
    """The post-processing rules of a run interrupted before choosing them were never logged after --resume."""
    from medseg.tracking.run_writer import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = MlflowTracker(uri, "exp", "a")
    first.log_params({"train.epochs": 30})
    resumed = MlflowTracker(uri, "exp", run_id=first.run_id)
    resumed.log_params({"train.epochs": 31, "postprocess.ET": "largest component"})  # 31: immutable, kept at 30
    params = resumed._client.get_run(first.run_id).data.params
    assert params == {"train.epochs": "30", "postprocess.ET": "largest component"}


def test_a_deleted_run_is_shown_as_deleted_and_refused_for_new_work(tmp_path):
    """A run deleted in MLflow (its trash) was shown without a word, `predict --model runs:/<id>/model` used it,
    `train --resume <id>` failed after preparing the data and `evaluate --run` would log to it."""
    import json

    from typer.testing import CliRunner

    from medseg.cli.runs import app
    from medseg.errors import MedsegError, TrackingError
    from medseg.tracking.registry import downloaded_bundle
    from medseg.tracking.run_writer import MlflowTracker, require_run
    from medseg.workflows.train import _check_resume_point

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = MlflowTracker(uri, "exp", "a")
    tracker.end()
    run_id = tracker.run_id
    shown = CliRunner().invoke(app, ["show", run_id, "--tracking-uri", uri, "--format", "json"])
    assert json.loads(shown.stdout)[0]["deleted"] is False
    tracker._client.delete_run(run_id)
    shown = CliRunner().invoke(app, ["show", run_id, "--tracking-uri", uri, "--format", "json"])
    assert json.loads(shown.stdout)[0]["deleted"] is True
    assert "deleted (MLflow's trash" in CliRunner().invoke(app, ["show", run_id, "--tracking-uri", uri]).stdout
    refusals = [
        lambda: require_run(run_id, uri),
        lambda: downloaded_bundle(f"runs:/{run_id}/model", uri).__enter__(),
        lambda: _check_resume_point("last.pt", {"run_id": run_id, "epoch": 0}, uri, 5),
    ]
    from medseg.cli.models import app as models_app

    registered = CliRunner().invoke(models_app, ["register", run_id[:8], "--name", "m", "--tracking-uri", uri])
    assert isinstance(registered.exception, TrackingError) and "is deleted" in registered.exception.message
    for refused in refusals:
        with pytest.raises(MedsegError) as err:
            refused()
        assert isinstance(err.value, TrackingError) and f"run {run_id} is deleted" in err.value.message
        assert "mlflow runs restore" in err.value.hint
