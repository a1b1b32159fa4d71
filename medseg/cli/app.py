"""The `medseg` command: sub-apps per command group; user errors become one red line and exit code 1."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from medseg import __version__
from medseg.cli.options import help_markup
from medseg.cli.progress import InterruptAdvice
from medseg.errors import MedsegError, environment_failure, exception_chain
from medseg.memory import keep_freed_memory
from medseg.redact import redact_secrets

app = typer.Typer(
    name="medseg",
    help="3D multimodal medical image segmentation: data, training, inference, evaluation, MLflow review.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=help_markup(),
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
    from medseg.cli import config, data, demo, evaluate, export, models, predict, runs, train, ui

    app.add_typer(data.app, name="data")
    app.add_typer(config.app, name="config")
    app.add_typer(models.app, name="models")
    app.add_typer(runs.app, name="runs")
    app.command("train")(train.train)
    app.command("distill")(train.distill)
    app.command("prune")(train.prune)
    app.command("predict")(predict.predict)
    app.command("evaluate")(evaluate.evaluate)
    app.command("export")(export.export)
    app.command("ui")(ui.ui)
    app.command("demo")(demo.demo)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal), handled like Ctrl-C (temporary files removed, MLflow run marked
    KILLED, `medseg ui`'s server stopped), exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(signals: list[int]) -> None:
    err_console.print(f"[yellow]interrupted[/]: {escape(InterruptAdvice.text)}", highlight=False, soft_wrap=True)
    sys.exit(128 + signals[0] if signals else 130)


@contextlib.contextmanager
def _redelivered_interrupts() -> Iterator[None]:
    """An interrupt raised while a weakref callback or `__del__` runs is printed ("Exception ignored in ...") and
    lost: a SIGTERMed `medseg distill` trained two more epochs. Within this context an unraisable-exception hook
    sends that signal again a moment later (`raise_signal` would run the handler at once, inside the hook), once
    the callback has returned; on exit, pending re-sends are cancelled and the previous hook is back."""
    previous, timers = sys.unraisablehook, []

    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        if not isinstance(exc, KeyboardInterrupt):
            previous(unraisable)
            return
        again = threading.Timer(0.05, os.kill, args=(os.getpid(), getattr(exc, "signum", signal.SIGINT)))
        again.daemon = True
        timers.append(again)
        again.start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        sys.unraisablehook = previous


def _wrapped_user_error(exc: BaseException) -> MedsegError | None:
    """The MedsegError that explicitly caused `exc` (`raise ... from`: a library wrapping our error, not a bug
    raised while handling one), if any, down the chain."""
    return next((e for e in exception_chain(exc) if isinstance(e, MedsegError)), None)


def main() -> None:
    """Entry point: run the app, turning MedsegError into one line (exit 1), Ctrl-C into exit 130 and SIGTERM /
    SIGHUP into 143 / 129."""
    _register()
    keep_freed_memory()  # every command computes on volumes or networks: reuse freed memory (see medseg.memory)
    received: list[int] = []

    def on_signal(signum: int, frame) -> None:
        received.append(signum)
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup it stays ignored
        signal.signal(signal.SIGHUP, on_signal)
    with _redelivered_interrupts():
        _run_app(received)


def _run_app(received: list[int]) -> None:
    """The app with every way it ends turned into a message and an exit code (`received`: the signals so far).

    With `standalone_mode=False`, typer *returns* the exit code of `typer.Exit` and turns a KeyboardInterrupt
    inside a command into a returned 130, so both must be read from the return value, not only caught.
    """
    try:
        code = app(standalone_mode=False)
    except MedsegError as exc:
        err_console.print(f"[bold red]error:[/] {escape(redact_secrets(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:  # raised before typer invoked the command (e.g. while parsing)
        _interrupted(received)
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (bad or missing options): message + exit 2
        exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # a bug: keep the traceback for the report, without credentials it may quote
        user_error = _wrapped_user_error(exc) or environment_failure(exc)
        if user_error is not None:  # a user's mistake found inside a library (MONAI wraps transform errors)
            err_console.print(
                f"[bold red]error:[/] {escape(redact_secrets(str(user_error)))}", highlight=False, soft_wrap=True
            )
            sys.exit(1)
        text = "".join(traceback.format_exception(exc))
        err_console.print(redact_secrets(text), highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    if code == 130:
        _interrupted(received)
    sys.exit(code if isinstance(code, int) else 0)
