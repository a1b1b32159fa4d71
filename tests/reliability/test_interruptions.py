"""Killing medseg mid-run loses nothing: no partial outputs, a clean message, and re-runs complete the work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io.bundle import save_checkpoint
from tests.conftest import make_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    from pipelines.brats import write_synthetic_dataset

    root = tmp_path_factory.mktemp("interrupt")
    write_synthetic_dataset(root / "in", 6, "brats2021", (64, 64, 48), seed=4)
    model = root / "model.pt"
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, model)
    return root, model


def _predict(root: Path, model: Path, out: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medseg", "predict", "--model", str(model), str(root / "in"), str(root / out)]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _outputs(out: Path) -> dict[str, np.ndarray]:
    """Finished outputs: SIGKILL can leave a hidden `.<case>.*.part.nii.gz` temp file, never a partial output."""
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("[!.]*.nii.gz"))}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT], ids=["term", "kill", "int"])
def test_killed_prediction_leaves_only_complete_files_and_resumes(folder, sig):
    root, model = folder
    ref_dir = root / "reference"
    if not ref_dir.exists():
        assert _predict(root, model, "reference").wait(timeout=300) == 0
    out = root / f"out_{sig.name}"
    proc = _predict(root, model, out.name)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.nii.gz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    expected_rc = {signal.SIGTERM: 143, signal.SIGKILL: -9, signal.SIGINT: 130}[sig]
    if proc.returncode == 0:  # the run finished before the signal landed: then every case must be there
        assert _outputs(out).keys() == _outputs(ref_dir).keys(), "a signal was swallowed: exit 0, outputs missing"
    else:
        assert proc.returncode == expected_rc, stderr
        if sig != signal.SIGKILL:
            assert "interrupted" in stderr and "Traceback" not in stderr
    for name, data in _outputs(out).items():  # every file present is complete and correct
        np.testing.assert_array_equal(data, _outputs(ref_dir)[name])
    if sig != signal.SIGKILL:
        assert not list(out.glob(".*.part*"))
    assert _predict(root, model, out.name).wait(timeout=300) == 0
    assert _outputs(out).keys() == _outputs(ref_dir).keys()
    for name, data in _outputs(out).items():
        np.testing.assert_array_equal(data, _outputs(ref_dir)[name])


def test_predict_reports_peak_memory_within_the_documented_budget(tmp_path):
    """docs/RELIABILITY.md promises about 61 bytes per input voxel; the report's peak RSS must keep to < 100."""
    from pipelines.brats import write_synthetic_dataset

    model = tmp_path / "model.pt"
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, model)
    peaks = {}
    for name, shape in {"small": (24, 24, 16), "large": (192, 192, 128)}.items():
        write_synthetic_dataset(tmp_path / name, 1, "brats2021", shape, seed=5)
        out = tmp_path / f"out_{name}"
        run = subprocess.run(
            [sys.executable, "-m", "medseg", "predict", "--model", str(model), str(tmp_path / name), str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr
        assert "peak memory:" in run.stdout
        peaks[name] = json.loads((out / "predict_report.json").read_text())["peak_memory_gb"]["rss"] * 2**30
    voxels = 192 * 192 * 128
    assert (peaks["large"] - peaks["small"]) / voxels < 100
