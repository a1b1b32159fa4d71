"""Options shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import shutil
import sys

import typer

RICH_HELP_MIN_COLUMNS = 110  # below this, typer's option tables cut long option names ("--allow-missin…")


def help_markup() -> str | None:
    """Typer's rich option tables in a wide terminal; click's plain help (full option names, wrapped text) in a
    narrower one, a pipe or a file, where the tables would truncate option names."""
    wide = sys.stdout.isatty() and shutil.get_terminal_size().columns >= RICH_HELP_MIN_COLUMNS
    return "rich" if wide else None


ConfigOpt = typer.Option(
    None, "--config", "-c", help="YAML experiment config, or a shipped one by name (brats_cpu, brats_smoke, ...)."
)
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: --set train.epochs=5 (repeatable).")
TrackingUriOpt = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
)
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda or auto.")
FoldOpt = typer.Option(
    None, "--fold", help="Validation fold K (default: the first fold), or 'all' to train on every case."
)
ExperimentOpt = typer.Option(None, "--experiment", help="MLflow experiment name.")
RunNameOpt = typer.Option(None, "--run-name", help="MLflow run name.")
ResumeOpt = typer.Option(None, "--resume", help="Run id or checkpoint (last.pt) of an interrupted run to continue.")
NoTrackingOpt = typer.Option(False, "--no-tracking", help="Do not log to MLflow.")
SkipBadOpt = typer.Option(False, "--skip-bad", help="With --data: train on the good cases when some are bad.")
NoProgressOpt = typer.Option(False, "--no-progress", help="Plain log lines instead of progress bars.")
FORMATS = ("table", "csv", "json")


def _output_format(fmt: str) -> str:
    """`--format`, checked and in lower case (`JSON` is json), before the command runs."""
    if fmt.lower() not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    return fmt.lower()


FormatOpt = typer.Option(
    "table", "--format", callback=_output_format, help="table (for people), csv or json (for scripts)."
)
