"""Shared fixtures: tiny synthetic datasets built on the fly (no binary fixtures)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_SHAPE = (48, 48, 32)


def signals_as_default() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT or SIGHUP: a suite started as a background job inherits
    SIGINT ignored (and under nohup SIGHUP), and Python then never turns the signal into an interruption."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def _engine_cache(tmp_path_factory):
    """`medseg predict --engine auto` (the CLI default) measures engines once per model and caches the choice and
    ONNX graphs under $XDG_CACHE_HOME: the suite, and the commands it starts, share one it throws away."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def brats2021_dir(tmp_path_factory) -> Path:
    from medseg.pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("brats2021")
    write_synthetic_dataset(out, 4, "brats2021", TINY_SHAPE, seed=1)
    return out


@pytest.fixture(scope="session")
def brats2021_manifest(brats2021_dir, tmp_path_factory) -> Path:
    """Manifest of `brats2021_dir` with 2 folds, as `medseg data scan` writes it (training tests share it)."""
    from medseg.data.manifest import save_manifest
    from medseg.data.validate import scan_dataset
    from medseg.pipelines import get_task

    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    path = tmp_path_factory.mktemp("manifest") / "m.json"
    save_manifest(manifest, path)
    return path


@pytest.fixture(scope="session")
def brats2023_dir(tmp_path_factory) -> Path:
    from medseg.pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("brats2023")
    write_synthetic_dataset(out, 3, "brats2023", TINY_SHAPE, seed=2)
    return out


@pytest.fixture(scope="session")
def msd_dir(tmp_path_factory) -> Path:
    from medseg.pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("msd")
    write_synthetic_dataset(out, 3, "msd", TINY_SHAPE, seed=3)
    return out


def make_bundle(bias=None, cross_modal: bool = True, crop_foreground: bool = True):
    """An untrained tiny BraTS model bundle (geometry and plumbing tests need no trained weights).

    `bias`: the output head's bias, one value or one per region (ET, TC, WT); +-20 makes a region certain.
    """
    from medseg.config import InferConfig
    from medseg.io.bundle import ModelBundle
    from medseg.nets import create_model
    from medseg.pipelines.brats import CHANNELS, LABELS_2021, SCHEME
    from medseg.transforms.preprocess import PreprocessPlan

    torch.manual_seed(0)
    kwargs = {"in_channels": 4, "out_channels": 3, "cross_modal": cross_modal, "img_size": 32}
    model = create_model("transunet3d_tiny", **kwargs)
    if bias is not None:
        with torch.no_grad():
            model.head.conv.conv.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand(3))
    return ModelBundle(
        model_name="transunet3d_tiny",
        model_kwargs=kwargs,
        state_dict=model.state_dict(),
        task="brats",
        channels=list(CHANNELS),
        scheme=SCHEME,
        label_map=LABELS_2021,
        patch_size=[32, 32, 32],
        norm_stats=[[500.0, 200.0]] * 4,
        preprocess=PreprocessPlan(crop_foreground=crop_foreground),
        infer=InferConfig(overlap=0.25, sw_batch_size=2, mode="gaussian", threshold=0.5),
    )


@pytest.fixture()
def bundle_file(tmp_path) -> Path:
    from medseg.io.bundle import save_checkpoint

    path = tmp_path / "model.pt"
    save_checkpoint({"bundle": make_bundle().to_dict()}, path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mlflow_server(backend: str, root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--artifacts-destination", str(root / "artifacts")]
    server = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return server, uri
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                pytest.fail(f"mlflow server did not start: {server.communicate(timeout=30)[1][-1500:]}")
            time.sleep(0.5)


@pytest.fixture()
def mlflow_server(tmp_path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts) for the duration of a test."""
    root = tmp_path / "server"
    root.mkdir()
    server, uri = _start_mlflow_server(f"sqlite:///{root / 'srv.db'}", root)
    try:
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian's `postgresql` package puts it."""
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed: run tools/install_test_services.sh (as .ci/run does)")
    return found


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory) -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 (a fresh cluster, password login) for the session.

    PostgreSQL refuses to run as root: as root, the cluster is owned and run by the `postgres` user that Debian's
    package creates.
    """
    import os
    import pwd
    import shutil
    import tempfile

    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="medseg-pg-"))
    data = base / "data"
    if as_root:
        pg = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        os.chown(base, pg.pw_uid, pg.pw_gid)
    port = free_port()
    secret = base / "pw"
    secret.write_text("medseg-test-pw\n")
    if as_root:
        os.chown(secret, pwd.getpwnam("postgres").pw_uid, -1)
    init = [*run_as, _postgres_bin("initdb"), "-D", str(data), "-U", "medseg", "--pwfile", str(secret)]
    subprocess.run([*init, "-A", "scram-sha-256", "--no-sync"], check=True, capture_output=True)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*run_as, _postgres_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w"]
    subprocess.run([*ctl, "start"], check=True, capture_output=True)
    env = {**os.environ, "PGPASSWORD": "medseg-test-pw"}
    createdb = [_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "medseg", "mlflow"]
    subprocess.run(createdb, check=True, capture_output=True, env=env)
    try:
        yield f"postgresql://medseg:medseg-test-pw@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*ctl, "stop", "-m", "fast"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def mlflow_postgres_server(postgres_uri, tmp_path) -> Iterator[str]:
    """`mlflow server` backed by the PostgreSQL server (the team set-up in the README)."""
    root = tmp_path / "pg_server"
    root.mkdir()
    server, uri = _start_mlflow_server(postgres_uri, root)
    try:
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def cli_main_with(command, monkeypatch, capsys) -> tuple[int, str]:
    """Run `medseg.cli.app.main` with `command` in place of the typer app: (exit code, stderr). For how the entry
    point renders what a command raises."""
    import sys

    from medseg.cli import app as cli

    monkeypatch.setattr(cli, "app", command)
    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: True)  # not this pytest worker's allocator
    monkeypatch.setattr(sys, "argv", ["medseg"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err
