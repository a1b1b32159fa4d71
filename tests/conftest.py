"""Shared fixtures: tiny synthetic datasets built on the fly (no binary fixtures)."""

from __future__ import annotations

import os
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
        crop_foreground=crop_foreground,
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


@pytest.fixture()
def mlflow_server(tmp_path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts) for the duration of a test."""
    port = free_port()
    root = tmp_path / "server"
    root.mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'srv.db'}"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
