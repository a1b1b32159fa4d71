"""`medseg demo --fast` end to end: data, training, MLflow run, predictions, Dice table."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import nibabel as nib


def test_demo_fast_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "medseg", "demo", "--fast", "--out", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out Dice" in proc.stdout and "medseg runs show" in proc.stdout
    preds = sorted((out / "predictions").glob("*.nii.gz"))
    assert len(preds) == 2
    gt = out / "data" / "test" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-seg.nii.gz"
    assert nib.load(preds[0]).shape == nib.load(gt).shape
    assert (out / "predictions" / "overlays").is_dir()
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("medseg-demo").experiment_id])
    assert run.info.status == "FINISHED"
    assert "test_dice_wt" in run.data.metrics and "val_dice_mean" in run.data.metrics
