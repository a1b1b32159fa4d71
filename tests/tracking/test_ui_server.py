"""`medseg ui`'s server: stops as a whole (no uvicorn left serving the store), refuses a taken port, reports failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from medseg.errors import MedsegError
from medseg.tracking.ui_server import serve
from tests.conftest import signals_as_default

# Like `mlflow server`: a parent that starts a long-lived child (uvicorn) and writes its pid once the child runs.
SERVER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]])
time.sleep(1.0)
open(sys.argv[1], "w").write(str(child.pid))
child.wait()
"""
CHILDREN = {
    "a child that stops on SIGTERM": "import time; time.sleep(600)",
    "a child that ignores SIGTERM": "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); time.sleep(600)",
}
UI = """import sys
from medseg.tracking.ui_server import serve
serve([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], grace_s=1.0)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init to reap it is gone too
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("child", list(CHILDREN))
def test_ctrl_c_stops_the_servers_child_too(child, tmp_path):
    """SIGTERM to the whole group, then SIGKILL to what ignores it."""
    pid_file = tmp_path / "child.pid"
    cmd = [sys.executable, "-c", UI, SERVER, str(pid_file), CHILDREN[child]]
    ui = subprocess.Popen(cmd, preexec_fn=signals_as_default)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and ui.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    ui.send_signal(signal.SIGINT)
    assert ui.wait(timeout=30) != 0  # KeyboardInterrupt re-raised after the group was stopped
    deadline = time.monotonic() + 15
    while _alive(child):
        assert time.monotonic() < deadline, "the server's child outlived the interrupted server"
        time.sleep(0.05)


def test_a_taken_port_is_one_line_before_anything_starts(tmp_path):
    from tests.cli.test_cli import medseg

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = medseg("ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert out.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in out.stderr and "--port" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()  # refused before the store was touched


@pytest.mark.parametrize("code", [3, 0])
def test_a_server_that_stops_by_itself_is_a_failed_command(code):
    """`mlflow server` exits 0 even when uvicorn fails: any exit the user did not ask for is a failure."""
    with pytest.raises(MedsegError, match=f"stopped by itself \\(exit code {code}\\)"):
        serve([sys.executable, "-c", f"raise SystemExit({code})"])
