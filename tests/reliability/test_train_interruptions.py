"""A real signal during `medseg train`'s checkpoint save: the previous checkpoint survives and `--resume` finishes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from medseg.io.bundle import load_checkpoint
from tests.conftest import signals_as_default

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI, but the save of the epoch-1 `last.pt` writes a few bytes of its temporary file, says so
# through a marker file and then hangs, so the test can send its signal exactly while the checkpoint is half-written.
HANGING_SAVE = """
import pathlib, sys, time
import torch
marker = pathlib.Path(sys.argv.pop(1))
real_save = torch.save
def hanging_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("epoch") == 1 and pathlib.Path(f).name.startswith(".last."):
        pathlib.Path(f).write_bytes(b"half a checkpoint")
        marker.touch()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)
torch.save = hanging_save
from medseg.cli.app import main
main()
"""


def _train_args(manifest: Path, tmp: Path, uri: str) -> list[str]:
    sets = [
        "train.epochs=2",
        "train.val_every=1",
        "train.samples_per_volume=1",
        "train.overlays=0",
        "tracking.system_metrics=false",
        f"data.cache_dir={tmp / 'cache'}",
    ]
    return [
        *("train", "brats", "--manifest", str(manifest), "--config", "brats_smoke"),
        *("--fold", "0", "--device", "cpu", "--no-progress", "--tracking-uri", uri, "--out", str(tmp / "runs")),
        *[x for s in sets for x in ("--set", s)],
    ]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill", "term", "ctrl-c"])
def test_signal_during_checkpoint_save_keeps_previous_checkpoint_and_resume_finishes(brats2021_manifest, tmp_path, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "saving"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_SAVE, str(marker), *_train_args(brats2021_manifest, tmp_path, uri)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=signals_as_default,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training never reached the second checkpoint save"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    if sig != signal.SIGKILL:
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert f"same command and --resume {run_dir.name}" in stderr  # was "re-run to resume": a new run
        assert not list(run_dir.glob(".*")), "a handled signal removes the temporary checkpoint"
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0  # the previous checkpoint, intact

    args = [*_train_args(brats2021_manifest, tmp_path, uri), "--resume", str(run_dir / "last.pt")]
    resumed = subprocess.run(
        [sys.executable, "-m", "medseg", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_dir.name)  # the resumed training continued the same MLflow run
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_dice_mean")] == [0, 1]
