"""`medseg demo --fast` end to end: data, training, MLflow run, predictions, Dice table."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import nibabel as nib
import pytest


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
    gt = out / "data" / "fast" / "test" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-seg.nii.gz"
    assert nib.load(preds[0]).shape == nib.load(gt).shape
    assert (out / "predictions" / "overlays").is_dir()
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("medseg-demo").experiment_id])
    assert run.info.status == "FINISHED"
    assert "test_dice_wt" in run.data.metrics and "val_dice_mean" in run.data.metrics


def test_demo_refuses_a_folder_of_other_files_and_reuses_its_own(tmp_path, capsys):
    """It trained on a case the user kept in --out/data/train and replaced their metrics.csv and predictions."""
    from medseg.cli.demo import MARKER, _claim
    from medseg.errors import MedsegError

    other = tmp_path / "other"
    (other / "predictions").mkdir(parents=True)
    (other / "metrics.csv").write_text("mine")
    with pytest.raises(MedsegError, match="--out is a folder with other files, not one medseg demo made"):
        _claim(other)
    assert not (other / MARKER).exists()
    with pytest.raises(MedsegError, match="output path is a file"):
        _claim(other / "metrics.csv")
    legacy = tmp_path / "legacy"  # a demo folder written before the marker existed
    (legacy / "data" / "train").mkdir(parents=True)
    (legacy / "data" / "train" / ".complete").write_text("")
    _claim(legacy)
    assert (legacy / MARKER).exists()
    said = " ".join(capsys.readouterr().out.split())
    assert f"no longer used (the demo's data is now under data/<setting>/): {legacy / 'data' / 'train'}" in said
    _claim(tmp_path / "new" / "demo")  # new (parents too) or empty: claimed, and again once marked
    (tmp_path / "new" / "demo" / "metrics.csv").write_text("the demo's")
    _claim(tmp_path / "new" / "demo")


def test_each_demo_setting_reads_its_own_data(tmp_path, monkeypatch):
    """A full run after a --fast one in the same --out trained on the 4 small --fast cases (48x48x32)."""
    from medseg.cli import demo

    written = []

    def write(folder, n, *args, **kwargs):
        folder.mkdir(parents=True)
        written.append((folder, n))

    monkeypatch.setattr("medseg.pipelines.brats.write_synthetic_dataset", write)
    fast = demo._synth(tmp_path, "fast", demo.SETTINGS["fast"])
    cpu = demo._synth(tmp_path, "cpu", demo.SETTINGS["cpu"])
    assert set(fast).isdisjoint(cpu) and len(written) == 4
    assert [n for _, n in written] == [4, 2, 16, 4]
    demo._synth(tmp_path, "cpu", demo.SETTINGS["cpu"])
    assert len(written) == 4  # completed folders are reused


def test_ctrl_c_advises_resume_only_where_a_checkpoint_and_the_option_exist(tmp_path, monkeypatch):
    """`train` interrupted in its first epoch advised `--resume .../last.pt` (not written yet); `demo` advised a
    `--resume` it does not have."""
    from rich.console import Console

    from medseg.cli.progress import InterruptAdvice, RichTrainingHooks

    monkeypatch.setattr(InterruptAdvice, "text", InterruptAdvice.text)  # restored after the test
    hooks = RichTrainingHooks(Console(quiet=True), enabled=False, quiet=True)
    hooks.run_started(None, tmp_path)
    assert InterruptAdvice.text.startswith("the run stopped before writing a checkpoint: re-run the same command")
    hooks.epoch_end(0, {})
    assert InterruptAdvice.text.endswith(f"--resume {tmp_path / 'last.pt'}")
    InterruptAdvice.text = "re-run the same command"
    demo_hooks = RichTrainingHooks(Console(quiet=True), enabled=False, quiet=True, resumable=False)
    demo_hooks.run_started("abc", tmp_path)
    demo_hooks.epoch_end(0, {})
    assert InterruptAdvice.text == "re-run the same command"
    other_rank = RichTrainingHooks(Console(quiet=True), enabled=False, quiet=True)  # torchrun rank 1: no run_started
    other_rank.epoch_end(0, {})
    assert InterruptAdvice.text == "re-run the same command"


def test_ctrl_c_before_training_begins_says_to_run_the_command_again(tmp_path, monkeypatch):
    """Stopped while synthesising (demo) or scanning (train), they said "outputs written so far are complete;
    re-run to resume": neither has anything to resume then."""
    import typer
    from typer.testing import CliRunner

    from medseg.cli import demo as demo_cli
    from medseg.cli import train as train_cli
    from medseg.cli.progress import InterruptAdvice
    from medseg.workflows import train as workflow

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InterruptAdvice, "text", InterruptAdvice.text)  # restored after the test
    monkeypatch.setattr(workflow, "run_training", stop)
    app = typer.Typer()
    app.command()(train_cli.train)
    CliRunner().invoke(app, ["brats", "--data", str(tmp_path), "--no-tracking"])
    assert InterruptAdvice.text.startswith("stopped before the run began: re-run the same command")
    import medseg.runtime

    monkeypatch.setattr(medseg.runtime, "resolve_device", stop)  # the demo's first step
    app = typer.Typer()
    app.command()(demo_cli.demo)
    CliRunner().invoke(app, ["--out", str(tmp_path / "demo"), "--fast"])
    assert InterruptAdvice.text.startswith("re-run the same command: the synthesised data is kept")
