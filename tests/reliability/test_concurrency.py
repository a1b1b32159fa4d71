"""Two trainings, a prediction and a review started at once against one fresh store, SQLite file or `mlflow server`:
all succeed, no 'database is locked', no lost metrics, every registration lands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from medseg.data.manifest import load_manifest
from medseg.io.bundle import save_checkpoint
from medseg.tracking.run_writer import MlflowTracker
from medseg.tracking.store import client as store_client
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


def _medseg(*args: str, cwd: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medseg", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_champion(uri: str, name: str, procs: list[subprocess.Popen], timeout: float = 600) -> None:
    # Opened like medseg opens it (under the store lock): a bare MlflowClient would migrate the fresh SQLite store
    # at the same time as the trainings, the race the lock exists to prevent.
    client = store_client(uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get_model_version_by_alias(name, "champion")
            return
        except Exception:
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
    pytest.fail("no training registered a champion: " + " | ".join((p.communicate()[1] or "")[-500:] for p in procs))


def _wait_for_file(path: Path, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until `path` holds at least an SQLite header (an empty file is refused as no store)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= 100):
        if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
            pytest.fail(f"no process created {path}: " + " | ".join((p.communicate()[1] or "")[-500:] for p in procs))
        time.sleep(0.02)


SERVERS = {"server": "mlflow_server", "postgres": "mlflow_postgres_server"}


@pytest.mark.parametrize("store", ["sqlite", "server", "postgres"])
def test_two_trainings_a_prediction_and_a_review_at_once(store, brats2021_dir, brats2021_manifest, tmp_path, request):
    """On SQLite the store does not exist yet: the two trainings race to create it, and the review (read-only, it
    refuses a store that does not exist) opens it as soon as its file appears. `postgres` is
    the team set-up of the README: `mlflow server` on a PostgreSQL database (a real server, started on loopback)."""
    db = tmp_path / "fresh" / "shared.db"
    uri = f"sqlite:///{db}" if store == "sqlite" else request.getfixturevalue(SERVERS[store])
    assert store != "sqlite" or not db.parent.exists()
    common = ["--tracking-uri", uri]
    procs = [
        _medseg(
            *("train", "brats", "--manifest", str(brats2021_manifest), "--fold", "0", "--device", "cpu"),
            *("--config", "brats_smoke", "--run-name", f"run{i}", "--register", "shared"),
            *("--out", str(tmp_path / f"runs{i}"), "--no-progress", *common),
            *[x for s in [*SETS, f"data.cache_dir={tmp_path / f'cache{i}'}"] for x in ("--set", s)],
            cwd=tmp_path,
        )
        for i in range(2)
    ]
    if store == "sqlite":  # the review reads: started once a training has begun creating the store, it opens the
        _wait_for_file(db, procs)  # fresh database while the trainings migrate it (the race the store lock covers)
    procs.append(_medseg("runs", "list", *common, cwd=tmp_path))
    # A prediction from the registry as soon as the first training has registered (the other is still writing).
    _wait_for_champion(uri, "shared", procs[:2])
    procs.append(
        _medseg("predict", "--model", "models:/shared@champion", str(brats2021_dir), "pred", *common, cwd=tmp_path)
    )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err
        outs.append(out)
    assert "from the weights-only bundle inside the MLflow model" in " ".join(outs[3].split())

    assert len(list((tmp_path / "pred").glob("BraTS2021_*.nii.gz"))) == len(load_manifest(brats2021_manifest).cases)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("medseg").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1"]
    for r in runs:
        assert r.info.status == "FINISHED"
        for key in ("train_loss", "val_dice_mean"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1], key
    versions = client.search_model_versions("name='shared'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    best = max(versions, key=lambda v: (float(v.tags["val_dice_mean"]), -int(v.version)))
    assert client.get_model_version_by_alias("shared", "champion").version == best.version


REGISTER_MANY = """
import sys
from medseg.tracking.registry import register_version
uri, model_uri, *metrics = sys.argv[1:]
for m in metrics:
    register_version(uri, model_uri, "race", float(m), [])
"""


def test_champion_ends_on_the_best_version_when_registrations_race(tmp_path):
    """Two processes register four versions at once; whatever the interleaving, the champion is the best one
    (a read-then-set would let a slower, worse registration overwrite a better one)."""
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    bundle = make_bundle(bias=0.3)
    save_checkpoint({"bundle": bundle.to_dict()}, tmp_path / "medseg_bundle.pt")
    tracker = MlflowTracker(uri, "seed", "seed")
    example = np.zeros((1, 4, 32, 32, 32), np.float32)
    model_uri = tracker.log_bundle_model(bundle.build_model(), tmp_path / "medseg_bundle.pt", example)
    tracker.end()
    batches = (["0.91", "0.50", "0.70"], ["0.60", "0.93", "0.80"])
    procs = [
        subprocess.Popen([sys.executable, "-c", REGISTER_MANY, uri, model_uri, *b], stderr=subprocess.PIPE, text=True)
        for b in batches
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    client = mlflow.MlflowClient(uri)
    champion = client.get_model_version_by_alias("race", "champion")
    assert champion.tags["val_dice_mean"] == "0.930000"
