"""The `medseg` command: sub-apps per command group; user errors become one red line and exit code 1."""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console

from medseg import __version__
from medseg.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help="3D multimodal medical image segmentation: data, training, inference, evaluation, MLflow review.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    """medseg command line."""


def _register() -> None:
    from medseg.cli import config, data, demo, evaluate, models, predict, runs, train, ui

    app.add_typer(data.app, name="data")
    app.add_typer(config.app, name="config")
    app.add_typer(models.app, name="models")
    app.add_typer(runs.app, name="runs")
    app.command("train")(train.train)
    app.command("predict")(predict.predict)
    app.command("evaluate")(evaluate.evaluate)
    app.command("ui")(ui.ui)
    app.command("demo")(demo.demo)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (temporary files removed, MLflow run marked KILLED), exit 143."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def main() -> None:
    """Entry point: run the app, turning MedsegError into one line (exit 1) and Ctrl-C into exit 130."""
    _register()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(standalone_mode=False)
    except MedsegError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        err_console.print("[yellow]interrupted[/]: outputs written so far are complete; re-run to resume")
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (bad or missing options): message + exit 2
        exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
