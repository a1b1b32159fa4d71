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
from tests.conftest import make_bundle, signals_as_default

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    from medseg.pipelines.brats import write_synthetic_dataset

    root = tmp_path_factory.mktemp("interrupt")
    write_synthetic_dataset(root / "in", 6, "brats2021", (64, 64, 48), seed=4)
    model = root / "model.pt"
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, model)
    return root, model


# Runs the real CLI, but the network hangs on the second case (after saying so through a marker file), so the
# test's signal always lands mid-run: a run cannot finish before it and hide a lost signal behind exit 0.
HANGING_SECOND_CASE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv.pop(1))
import medseg.inference.predictor as predictor
real, calls = predictor.predict_case, []
def hanging(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        marker.touch()
        time.sleep(600)
    return real(*args, **kwargs)
predictor.predict_case = hanging
from medseg.cli.app import main
main()
"""


def _predict(root: Path, model: Path, out: str, hang_marker: Path | None = None) -> subprocess.Popen:
    args = ["predict", "--model", str(model), str(root / "in"), str(root / out)]
    cmd = [sys.executable, "-c", HANGING_SECOND_CASE, str(hang_marker), *args] if hang_marker else None
    cmd = cmd or [sys.executable, "-m", "medseg", *args]
    return subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=signals_as_default
    )


def _outputs(out: Path) -> dict[str, np.ndarray]:
    """Finished outputs: SIGKILL can leave a hidden `.<case>.*.part.nii.gz` temp file, never a partial output."""
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("[!.]*.nii.gz"))}


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP], ids=["term", "kill", "int", "hup"]
)
def test_killed_prediction_leaves_only_complete_files_and_resumes(folder, sig):
    root, model = folder
    ref_dir = root / "reference"
    if not ref_dir.exists():
        assert _predict(root, model, "reference").wait(timeout=300) == 0
    out = root / f"out_{sig.name}"
    marker = root / f"hanging_{sig.name}"
    proc = _predict(root, model, out.name, hang_marker=marker)
    deadline = time.monotonic() + 240
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=5)[1][-2000:]
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    expected_rc = {signal.SIGTERM: 143, signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGHUP: 129}[sig]
    assert proc.returncode == expected_rc, stderr
    if sig != signal.SIGKILL:
        assert "interrupted" in stderr and "Traceback" not in stderr
    assert len(_outputs(out)) < len(_outputs(ref_dir))  # the signal landed mid-run
    for name, data in _outputs(out).items():  # every file present is complete and correct
        np.testing.assert_array_equal(data, _outputs(ref_dir)[name])
    if sig != signal.SIGKILL:
        assert not list(out.glob(".*.part*"))
        # every case is in the report: the one in the network when the signal came was missing, as were those after
        report = json.loads((out / "predict_report.json").read_text())
        cases = sorted(p.name for p in (root / "in").iterdir() if p.is_dir())
        assert sorted(c["id"] for c in report["cases"]) == cases and not report["final"]
        assert {c["id"]: c["status"] for c in report["cases"]}[cases[1]] == "interrupted"  # the hanging one
        assert report["summary"]["interrupted"] >= len(cases) - 1
    assert _predict(root, model, out.name).wait(timeout=300) == 0
    assert _outputs(out).keys() == _outputs(ref_dir).keys()
    for name, data in _outputs(out).items():
        np.testing.assert_array_equal(data, _outputs(ref_dir)[name])


def test_predict_reports_peak_memory_within_the_documented_budget(tmp_path):
    """docs/RELIABILITY.md promises about 61 bytes per input voxel; the report's peak RSS must keep to < 100."""
    from medseg.pipelines.brats import write_synthetic_dataset

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


# The signal lands while a weakref callback runs (as DataLoader and torch objects are freed during training):
# Python prints "Exception ignored in ..." and drops the exception the handler raised.
SIGNAL_IN_A_WEAKREF_CALLBACK = """
import os, signal, time, weakref
from medseg.cli import app as cli

class Freed:
    pass

def command(standalone_mode):
    def callback(ref):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
    freed = Freed()
    ref = weakref.ref(freed, callback)
    del freed
    time.sleep(3)
    print("still running")
    return 0

cli._register, cli.app = (lambda: None), command
cli.main()
"""


def test_a_signal_swallowed_by_a_weakref_callback_still_stops_the_run():
    """A SIGTERMed `medseg distill` printed a traceback fragment and trained two more epochs."""
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_A_WEAKREF_CALLBACK], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 143, (proc.stdout, proc.stderr)
    assert "still running" not in proc.stdout and "interrupted" in proc.stderr
    assert "Exception ignored" not in proc.stderr


def test_main_gives_back_the_unraisable_hook_it_installed(monkeypatch):
    """`main()` run in-process (tests, notebooks) left its hook installed: later unraisable exceptions went unseen."""
    from medseg.cli import app as cli

    before = sys.unraisablehook
    seen = []
    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "app", lambda standalone_mode: seen.append(sys.unraisablehook) or 0)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the test process keeps its own handlers
    with pytest.raises(SystemExit):
        cli.main()
    assert seen and seen[0] is not before  # installed while the command ran
    assert sys.unraisablehook is before
