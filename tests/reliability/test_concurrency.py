"""Two trainings, a prediction and a review started at once against one fresh store, SQLite file or `mlflow server`:
all succeed, no 'database is locked', no lost metrics, every registration lands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from medseg.data.manifest import load_manifest
from medseg.io.bundle import save_checkpoint
from medseg.tracking.mlflow_tracker import MlflowTracker
from tests.conftest import make_bundle

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "train.epochs=2",
    "train.val_every=1",
    "train.samples_per_volume=1",
    "train.overlays=0",
    "data.num_workers=0",
    "tracking.system_metrics=false",
]


def _seed_registered_model(uri: str, tmp: Path) -> None:
    """Version 1 of registered model 'shared', so the prediction can read `models:/shared@champion`."""
    bundle = make_bundle(bias=0.3)
    save_checkpoint({"bundle": bundle.to_dict()}, tmp / "medseg_bundle.pt")
    tracker = MlflowTracker(uri, "seed", "seed")
    example = np.zeros((1, 4, 32, 32, 32), np.float32)
    model_uri = tracker.log_bundle_model(bundle.build_model(), tmp / "medseg_bundle.pt", example)
    tracker.register(model_uri, "shared", 0.0)
    tracker.end()


def _medseg(*args: str, cwd: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medseg", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_two_trainings_a_prediction_and_a_review_at_once(store, brats2021_dir, brats2021_manifest, tmp_path, request):
    uri = f"sqlite:///{tmp_path / 'shared.db'}" if store == "sqlite" else request.getfixturevalue("mlflow_server")
    _seed_registered_model(uri, tmp_path)
    common = ["--tracking-uri", uri]
    procs = [
        _medseg(
            *("train", "brats", "--manifest", str(brats2021_manifest), "--fold", "0", "--device", "cpu"),
            *("--config", str(ROOT / "configs/brats_smoke.yaml"), "--run-name", f"run{i}", "--register", "shared"),
            *("--out", str(tmp_path / f"runs{i}"), "--no-progress", *common),
            *[x for s in [*SETS, f"data.cache_dir={tmp_path / f'cache{i}'}"] for x in ("--set", s)],
            cwd=tmp_path,
        )
        for i in range(2)
    ]
    procs.append(
        _medseg("predict", "--model", "models:/shared@champion", str(brats2021_dir), "pred", *common, cwd=tmp_path)
    )
    procs.append(_medseg("runs", "list", *common, cwd=tmp_path))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err
        outs.append(out)
    assert "from the weights-only bundle inside the MLflow model" in " ".join(outs[2].split())

    assert len(list((tmp_path / "pred").glob("BraTS2021_*.nii.gz"))) == len(load_manifest(brats2021_manifest).cases)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("medseg").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1"]
    for r in runs:
        assert r.info.status == "FINISHED"
        for key in ("train_loss", "val_dice_mean"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1], key
    versions = client.search_model_versions("name='shared'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
