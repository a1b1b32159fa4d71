"""Options shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import typer

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML experiment config.", exists=False)
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: --set train.epochs=5 (repeatable).")
TrackingUriOpt = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
)
