"""The MLflow UI server as one unit: `mlflow server` starts uvicorn, which starts workers; all stop together."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import NoReturn

from medseg.errors import MedsegError


def server_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program holds, in one line: `mlflow server` would print a traceback and exit."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # uvicorn's rule for the address it binds
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        hint = f"pick another: --port {port + 1}"
        raise MedsegError(f"cannot serve on {host}:{port} ({exc.strerror})", hint=hint) from None


def serve(cmd: list[str], grace_s: float = 10.0) -> NoReturn:
    """Run the server until it exits; on Ctrl-C or SIGTERM stop its whole process group, then re-raise.

    Killing only `mlflow server` (what `subprocess.run` does on an exception) leaves its uvicorn child serving the
    store after `medseg ui` is gone. The server gets its own session so that its group can be signalled as a whole
    (a terminal's Ctrl-C then reaches `medseg ui` only, which passes it on as SIGTERM). The server never ends by
    itself when all is well (`mlflow server` even exits 0 when uvicorn fails), so any exit of its own is a failure.
    """
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        code = server.wait()
    finally:
        _stop_group(server, grace_s)
    raise MedsegError(f"the MLflow server stopped by itself (exit code {code})", hint="its messages are printed above")


def _stop_group(server: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to every process of the server's group; SIGKILL to what is left after `grace_s`, or at once on a
    second Ctrl-C."""
    _signal_group(server.pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            server.poll()  # reap the leader, or the group never looks empty
            if not _signal_group(server.pid, 0):
                return
            time.sleep(0.1)
    except KeyboardInterrupt:
        _kill_group(server)
        raise
    _kill_group(server)


def _kill_group(server: subprocess.Popen) -> None:
    _signal_group(server.pid, signal.SIGKILL)
    server.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when no process of it is left (signal 0 only asks)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
        return True
    return False
