"""The MLflow UI server as one unit: `mlflow server` starts uvicorn, which starts workers; all stop together."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from medseg.errors import MedsegError


def server_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program holds, in one line: `mlflow server` would print a traceback and exit."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # ::1 needs IPv6
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        hint = f"pick another: --port {port + 1}"
        raise MedsegError(f"cannot serve on {host}:{port} ({exc.strerror})", hint=hint) from None


def serve(cmd: list[str], grace_s: float = 10.0) -> None:
    """Run the server until it exits; on Ctrl-C or SIGTERM stop its whole process group, then re-raise.

    Killing only `mlflow server` (what `subprocess.run` does on an exception) leaves its uvicorn child serving the
    store after `medseg ui` is gone. The server gets its own session so that its group can be signalled as a whole
    (a terminal's Ctrl-C then reaches `medseg ui` only, which passes it on as SIGTERM). A server that exits with an
    error on its own is a failed command, not a clean stop.
    """
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        code = server.wait()
    finally:
        _stop_group(server, grace_s)
    if code != 0:
        raise MedsegError(f"the MLflow server exited with code {code}", hint="its own message is printed above")


def _stop_group(server: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to every process of the server's group; SIGKILL to what is left after `grace_s`."""
    _signal_group(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        server.poll()  # reap the leader, or the group never looks empty
        if not _signal_group(server.pid, 0):
            return
        time.sleep(0.1)
    _signal_group(server.pid, signal.SIGKILL)
    server.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when no process of it is left (signal 0 only asks)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
        return True
    return False
