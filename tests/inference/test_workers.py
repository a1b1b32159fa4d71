"""The folder pipeline's worker processes: the same outputs and order as one process, failures kept per case,
no orphans, a clear fallback where shared memory is small."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.layouts import detect_cases
from medseg.inference import predictor, workers
from medseg.inference.predictor import PredictOptions, predict_folder
from medseg.io.nifti import save_nifti
from medseg.pipelines.brats import LAYOUTS, SUFFIXES_2021
from tests.conftest import make_bundle, signals_as_default

SHAPE = (40, 36, 32)


def _folder(root: Path) -> list:
    from medseg.synth import synth_case

    affines = [np.diag([1.2, 1.0, 1.5, 1.0]), np.diag([-1.0, -1.0, 1.0, 1.0])]
    for i, cid in enumerate(["d", "a", "c", "b", "e"]):  # folder order differs from the order of writing
        images, _, _ = synth_case("anatomy", SHAPE, seed=i)
        for name, sfx in zip(("t1", "t1ce", "t2", "flair"), SUFFIXES_2021, strict=True):
            save_nifti(images[name], affines[i % 2], root / cid / f"{cid}_{sfx}.nii.gz", np.float32)
    broken = root / "c" / f"c_{SUFFIXES_2021[0]}.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    return detect_cases(root, LAYOUTS)[1]


def _run(cases, out: Path, n: int):
    bundle = make_bundle(bias=0.3)
    return predict_folder(cases, bundle, out, PredictOptions(workers=n))


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("[!.]*.nii.gz"))}


def test_worker_processes_give_the_same_outputs_report_and_order_as_one_process(tmp_path):
    cases = _folder(tmp_path / "in")
    alone = _run(cases, tmp_path / "alone", 0)
    pooled = _run(cases, tmp_path / "pooled", 3)
    assert [r.id for r in pooled] == [c.id for c in cases] == [r.id for r in alone]
    assert [(r.status, r.error, r.warnings) for r in pooled] == [(r.status, r.error, r.warnings) for r in alone]
    failed = [r for r in pooled if r.status == "failed"]
    assert [r.id for r in failed] == ["c"] and "truncated" in failed[0].error  # a reader's failure, one case
    a, b = _masks(tmp_path / "alone"), _masks(tmp_path / "pooled")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert np.allclose(nib.load(tmp_path / "pooled" / name).affine, nib.load(tmp_path / "alone" / name).affine)
    report = json.loads((tmp_path / "pooled" / "predict_report.json").read_text())
    assert [c["id"] for c in report["cases"]] == [c.id for c in cases]
    assert not list((tmp_path / "pooled").glob(".*.part*"))


def test_a_failed_write_in_a_writer_process_fails_that_case_alone(tmp_path, monkeypatch):
    cases = [c for c in _folder(tmp_path / "in") if c.id != "c"]
    real = predictor.save_nifti

    def full_disk_for_b(array, affine, path, dtype, like=None):
        if Path(path).name == "b.nii.gz":
            raise OSError(28, "No space left on device")
        real(array, affine, path, dtype, like)

    monkeypatch.setattr(predictor, "save_nifti", full_disk_for_b)  # writer processes are forked: they see it
    results = {r.id: r for r in _run(cases, tmp_path / "out", 2)}
    assert results["b"].status == "failed" and "No space left on device" in results["b"].error
    assert all(results[c].status == "ok" for c in ("a", "d", "e"))
    assert sorted(_masks(tmp_path / "out")) == ["a.nii.gz", "d.nii.gz", "e.nii.gz"]


def test_default_workers_follow_the_device_cores_and_cases(monkeypatch):
    import torch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(workers, "usable_cores", lambda: 6)
    assert workers.default_workers(1, cuda) == 0  # nothing to overlap
    assert workers.default_workers(4, cuda) == 4
    assert workers.default_workers(100, cuda) == 5  # a core for the main process
    assert workers.default_workers(100, cpu) == 0  # the network's threads need every core
    monkeypatch.setattr(workers, "usable_cores", lambda: 64)
    assert workers.default_workers(100, cuda) == workers.MAX_WORKERS
    assert workers.writer_count(0) == 0 and workers.writer_count(2) == 1 and workers.writer_count(9) == 3


def test_a_small_dev_shm_runs_in_one_process_and_says_why(tmp_path, monkeypatch):
    import shutil

    import torch

    from medseg.workflows.predict import FolderPredictor

    usage = shutil.disk_usage("/")
    monkeypatch.setattr(workers.shutil, "disk_usage", lambda _: usage._replace(free=64 * 2**20))
    count, problem = workers.resolve_workers(4, 10, torch.device("cuda"))
    assert count == 0 and "64 MB free" in problem and "--shm-size" in problem
    assert workers.resolve_workers(0, 10, torch.device("cuda")) == (0, "")
    seen, messages, real = [], [], predictor.prepared_cases

    def spy(cases, plan, allow_missing, n, pin, on_device):
        seen.append(n)
        return real(cases, plan, allow_missing, n, pin, on_device)

    monkeypatch.setattr(predictor, "prepared_cases", spy)
    predictor_ = FolderPredictor(make_bundle(bias=0.3), device="cpu", engine="torch")
    _folder(tmp_path / "in")
    predictor_.run(predictor_.plan(tmp_path / "in"), tmp_path / "out", workers=4, on_message=messages.append)
    assert seen == [0] and "/dev/shm" in messages[0]


ORPHAN = """
import sys, time
from medseg.inference.workers import writer_pool
with writer_pool(3) as pool:
    pool.submit(time.sleep, 0).result()
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the watchdog is tested where fork is the start method")
def test_writer_processes_exit_when_the_run_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs in the killed process
    proc.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    assert not alive, f"orphaned writer processes: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init to reap it has exited
        return fh.read().split()[2] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_an_interrupted_pooled_run_leaves_complete_files_and_no_workers(tmp_path, sig):
    """As tests/reliability/test_interruptions.py, with reader and writer processes (--workers 2)."""
    from medseg.io.bundle import save_checkpoint
    from medseg.pipelines.brats import write_synthetic_dataset
    from tests.reliability.test_interruptions import HANGING_SECOND_CASE

    write_synthetic_dataset(tmp_path / "in", 5, "brats2021", (48, 48, 40), seed=4)
    model = tmp_path / "model.pt"
    save_checkpoint({"bundle": make_bundle(bias=0.3).to_dict()}, model)
    marker, out = tmp_path / "hanging", tmp_path / "out"
    args = ["predict", "--model", str(model), str(tmp_path / "in"), str(out), "--workers", "2", "--engine", "torch"]
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_SECOND_CASE, str(marker), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=signals_as_default,
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=5)[1][-2000:]
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(children) >= 3  # two readers and a writer
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".*.part*"))
    done = _masks(out)
    assert 1 <= len(done) < 5
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)]
    rerun = subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(_masks(out)) == 5
    for name, data in done.items():
        np.testing.assert_array_equal(_masks(out)[name], data)
