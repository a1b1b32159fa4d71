"""`medseg ui`: the MLflow UI on the same store the other commands use, bound to localhost by default."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from medseg.cli.options import TrackingUriOpt
from medseg.errors import MedsegError
from medseg.tracking import redact_secrets, resolve_tracking_uri

console = Console()


def ui(
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port of the UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; see README before exposing it."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Start the MLflow UI (Ctrl-C to stop). It has no authentication: keep it on localhost or tunnel to it."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("http"):
        raise MedsegError(f"{redact_secrets(uri)} is already a tracking server", hint="open it in a browser instead")
    if host not in {"127.0.0.1", "localhost", "::1"}:
        console.print(
            "[yellow]warning[/]: the MLflow UI has no authentication; anyone who can reach "
            f"port {port} of {host} can read and delete runs",
            highlight=False,
        )
    from medseg.tracking.store import ML_VIEW, latest_experiment_id
    from medseg.tracking.ui_server import check_port_free, serve, server_command

    check_port_free(host, port)
    # The UI only reads: a mistyped path must not become a new, empty store, nor the store gain an experiment.
    exp_id = latest_experiment_id(uri)
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    console.print(f"MLflow UI for {redact_secrets(uri)}", highlight=False)
    where = f"latest runs: {base}#/experiments/{exp_id}/runs{ML_VIEW}" if exp_id else f"no runs yet: {base}"
    console.print(where, highlight=False, soft_wrap=True)  # one line: a URL to copy
    try:
        serve(server_command(uri, host, port))
    except KeyboardInterrupt as exc:  # Ctrl-C is how the UI is stopped: exit 0; SIGTERM / SIGHUP say so (143 / 129)
        with contextlib.suppress(OSError):  # a closed terminal cannot show it
            console.print("stopped")
        signum = getattr(exc, "signum", None)
        if signum:
            raise typer.Exit(128 + signum) from None
