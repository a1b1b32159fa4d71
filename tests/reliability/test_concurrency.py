"""Several medseg processes on one fresh SQLite store at once: no 'database is locked', no lost metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow

from medseg.data.manifest import save_manifest
from medseg.data.validate import scan_dataset
from pipelines import get_task

ROOT = Path(__file__).resolve().parents[2]


def test_two_trainings_and_a_review_on_one_fresh_sqlite_store(brats2021_dir, tmp_path):
    manifest, _ = scan_dataset(brats2021_dir, get_task("brats"), folds=2)
    save_manifest(manifest, tmp_path / "m.json")
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ["--tracking-uri", uri, "--no-progress", "--device", "cpu", "--fold", "0"]
    sets = [
        "train.epochs=2",
        "train.val_every=1",
        "train.samples_per_volume=1",
        "train.overlays=0",
        "data.num_workers=0",
        "tracking.system_metrics=false",
    ]
    procs = []
    for i in range(2):
        args = [
            "train",
            "brats",
            "--manifest",
            str(tmp_path / "m.json"),
            "--config",
            str(ROOT / "configs/brats_smoke.yaml"),
            "--run-name",
            f"run{i}",
            "--out",
            str(tmp_path / f"runs{i}"),
            *common,
            *[x for s in [*sets, f"data.cache_dir={tmp_path / f'cache{i}'}"] for x in ("--set", s)],
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "medseg", *args],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "medseg", "runs", "list", "--tracking-uri", uri],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("medseg").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_dice_mean")] == [0, 1]
