"""Training end to end on CPU: MLflow tracking (embedded SQLite and a real server), resume, DDP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.manifest import load_manifest
from medseg.errors import MedsegError
from medseg.io.bundle import load_checkpoint
from medseg.training.spec import SilentHooks
from medseg.workflows.train import TrainRequest, run_training
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SMOKE = "brats_smoke"
FAST = [
    "train.epochs=2",
    "train.val_every=1",
    "train.samples_per_volume=1",
    "train.overlays=1",
    "data.num_workers=0",
]


def _train(brats2021_manifest: Path, tmp: Path, uri: str | None, overrides=(), resume=None, run_name="t", hooks=None):
    """`medseg train`'s workflow; returns (TrainResult, TrainOutcome)."""
    request = TrainRequest(
        "brats",
        config=SMOKE,
        overrides=[*FAST, f"data.cache_dir={tmp / 'cache'}", "tracking.system_metrics=false", *overrides],
        manifest=brats2021_manifest,
        fold=0,
        device="cpu",
        tracking_uri=uri,
        tracking=uri is not None,
        experiment="test",
        run_name=run_name,
        resume=resume,
        out=tmp / "runs",
    )
    outcome = run_training(request, hooks)
    return outcome.result, outcome


def test_training_is_tracked_and_resume_continues_the_run(brats2021_manifest, tmp_path, monkeypatch):
    import tempfile

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result, tracker = _train(brats2021_manifest, tmp_path, uri, run_name=None)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    # Without --run-name: model, kind and start time (MLflow's random names repeat once training seeds the RNG).
    assert re.fullmatch(r"transunet3d_tiny-train-\d{8}-\d{6}-[0-9a-f]{4}", run.info.run_name), run.info.run_name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    for key in (
        "val_dice_et",
        "val_dice_tc",
        "val_dice_wt",
        "val_dice_mean",
        "lr",
        "epoch_time_s",
        "train_samples_per_s",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["model_name"] == "transunet3d_tiny" and int(run.data.params["param_count"]) > 0
    assert run.data.tags["task"] == "brats" and run.data.tags["cross_modal"] == "True"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "data", "plots", "validation"} <= arts
    assert run.inputs.dataset_inputs, "manifest logged as the run's dataset"
    # The logged MLflow model loads (weights-only bundle inside) and predicts.
    from medseg.inference.model_source import load_bundle

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    bundle = load_bundle(result.model_uri, uri)
    assert list((tmp_path / "tmp").iterdir()) == []  # the download is removed (one folder per prediction was left)
    monkeypatch.undo()
    spacing = load_manifest(brats2021_manifest).cases[0].spacing  # every fixture case has it: planned, no resampling
    assert bundle.preprocess.spacing == spacing and run.data.params["plan.spacing"] == " x ".join(
        f"{v:g}" for v in spacing
    )
    # per channel: raw mean and std of the training foreground, and its zero fraction (skull-stripped: most voxels)
    assert [len(row) for row in bundle.norm_stats] == [3] * 4 and all(0.3 < row[2] < 1 for row in bundle.norm_stats)
    with torch.no_grad():
        assert bundle.build_model()(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    # Resume from the run id (its out_dir tag finds last.pt): same run, epochs continue, params untouched.
    from medseg.errors import MedsegError

    with pytest.raises(MedsegError, match="already finished its 2 epochs"):  # it re-logged its model each time
        _train(brats2021_manifest, tmp_path, uri, [], resume=tracker.run_id)
    with pytest.raises(MedsegError, match="already finished its 2 epochs"):  # named by its last.pt: the same
        _train(brats2021_manifest, tmp_path, uri, [], resume=str(result.last_path))
    # An older checkpoint of the run (best.pt of an earlier epoch) would log the later epochs a second time.
    from medseg.io.bundle import save_checkpoint

    older = load_checkpoint(result.last_path) | {"epoch": 0}
    save_checkpoint(older, tmp_path / "older.pt")
    with pytest.raises(MedsegError, match=r"holds epoch 1 of run \w+, which has logged 2 epochs: .* log epoch 2 twice"):
        _train(brats2021_manifest, tmp_path, uri, ["train.epochs=3"], resume=str(tmp_path / "older.pt"))
    with pytest.raises(MedsegError, match=r"checkpoint not found: .*nope\.pt"):  # not "no run .../nope.pt"
        _train(brats2021_manifest, tmp_path, uri, [], resume=str(tmp_path / "nope.pt"))
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(MedsegError, match=r"is a checkpoint of run \w+, which is not in sqlite:.*other\.db"):
        _train(brats2021_manifest, tmp_path, other, ["train.epochs=3"], resume=str(result.last_path))
    said = []
    hooks = type("Hooks", (SilentHooks,), {"message": lambda self, text: said.append(text)})()
    stalled = ["train.epochs=3", "train.lr=1e-12"]  # no better epoch: the copied best.pt must be there to finish
    untracked, _ = _train(brats2021_manifest, tmp_path, None, stalled, resume=str(result.last_path), hooks=hooks)
    assert "resuming training (not tracked) after epoch 2" in said  # no store asked: nothing is logged
    # another run: its own folder with a copy of the best.pt it starts from; the tracked run's checkpoints untouched
    assert untracked.last_path.parent != result.last_path.parent and untracked.best_path.is_file()
    assert load_checkpoint(result.last_path)["epoch"] == 1 and load_checkpoint(untracked.last_path)["epoch"] == 2
    resumed, tracker2 = _train(
        brats2021_manifest, tmp_path, uri, ["train.epochs=3"], resume=tracker.run_id, hooks=hooks
    )
    assert tracker2.run_id == tracker.run_id and f"resuming run {tracker.run_id} after epoch 2" in said
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1, 2]
    assert resumed.epochs_run == 3
    # What `models register RUN` and `runs show` take: the resumed run's model and post-processing, not the first
    # session's (it registered the old model; MLflow keeps a param's first value).
    from medseg.tracking.review import logged_models, summarise_run

    after = client.get_run(tracker.run_id)
    assert logged_models(client, after)[0] == resumed.model_uri != result.model_uri
    shown = summarise_run(client, after).params
    assert {k: v for k, v in shown.items() if k.startswith("postprocess.")} == {
        f"postprocess.{region}": rule.describe() for region, rule in resumed.postprocess.items()
    }


@pytest.mark.parametrize(
    ("train_s", "val_s", "epochs_run"),
    [
        (0.0, 1000.0, 1),  # the first validation alone overruns: stop right after it (was: one more epoch)
        (30.0, 100.0, 2),  # the second epoch and its validation are the last that fit (was: a third, at 390 s)
    ],
)
def test_a_run_with_a_time_budget_ends_within_it(brats2021_manifest, tmp_path, monkeypatch, train_s, val_s, epochs_run):
    """A 5-minute budget with epochs and validations made to last `train_s` / `val_s` seconds on a shifted clock:
    the run stops before an epoch plus its closing validation would overrun, also when the first validation's cost
    (unknown until it ran) is larger than the budget left."""
    import types

    import medseg.training.loop as loop

    clock = {"offset": 0.0}
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + clock["offset"]))

    def slowed(real, seconds):
        def run(*args, **kwargs):
            clock["offset"] += seconds
            return real(*args, **kwargs)

        return run

    monkeypatch.setattr(loop, "train_epoch", slowed(loop.train_epoch, train_s))
    monkeypatch.setattr(loop, "validate_epoch", slowed(loop.validate_epoch, val_s))
    result, _ = _train(
        brats2021_manifest, tmp_path, None, ["train.epochs=6", "train.val_every=1", "train.max_minutes=5"]
    )
    assert result.epochs_run == epochs_run and result.best_path.exists()
    if val_s < 300:
        assert result.history[-1]["elapsed_s"] <= 300


def test_default_run_names_differ_between_runs_of_one_seed():
    import random

    from medseg.config import load_config
    from medseg.tracking.tracker import TrackingTarget
    from medseg.training.run import run_name

    cfg, target = load_config(SMOKE), TrackingTarget("sqlite:///x.db")
    names = []
    for _ in range(2):
        random.seed(0)  # what training's set_determinism does before the run is opened
        names.append(run_name(target, cfg, "prune"))
    assert names[0] != names[1] and names[0].startswith(f"{cfg.model.name}-prune-")
    assert run_name(TrackingTarget("sqlite:///x.db", run_name="mine"), cfg, "train") == "mine"


def test_resume_is_bit_for_bit(brats2021_manifest, tmp_path):
    straight, _ = _train(brats2021_manifest, tmp_path / "a", None, ["train.epochs=3", "train.val_every=5"])
    first, _ = _train(
        brats2021_manifest,
        tmp_path / "b",
        None,
        ["train.epochs=3", "train.max_minutes=0.0001", "train.val_every=5"],
    )
    assert first.epochs_run == 1  # stopped by the time budget after one epoch
    more = ["train.epochs=3", "train.val_every=5", "train.max_minutes=null"]
    # Another dataset would put the run's validation cases into training: refused before any work.
    from dataclasses import replace

    from medseg.data.manifest import load_manifest, save_manifest
    from medseg.errors import ConfigError

    fewer = load_manifest(brats2021_manifest)
    save_manifest(replace(fewer, cases=fewer.cases[:-1]), tmp_path / "fewer.json")
    with pytest.raises(ConfigError, match=r"this run trained on case set [0-9a-f]{16} with fold 0, not"):
        _train(tmp_path / "fewer.json", tmp_path / "b", None, more, resume=str(first.last_path))
    moved = replace(fewer, cases=[replace(c, case=replace(c.case, images=("/elsewhere",) * 4)) for c in fewer.cases])
    assert moved.split_digest() == fewer.split_digest()  # data moved with its manifest: still the same run's cases
    resumed, _ = _train(brats2021_manifest, tmp_path / "b", None, more, resume=str(first.last_path))
    a = load_checkpoint(straight.last_path)
    b = load_checkpoint(resumed.last_path)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["bundle"]["state_dict"].items():
        assert torch.equal(value, b["bundle"]["state_dict"][key]), key
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_an_untracked_resume_continues_in_its_checkpoints_folder(brats2021_manifest, tmp_path):
    """A resumed untracked run wrote to a new folder, which had no best.pt when no later epoch beat the restored
    best: exit 1 after all the training ("best.pt: checkpoint not found"). Under torchrun, tracked, every rank but
    the first also left an empty run folder."""
    first, _ = _train(brats2021_manifest, tmp_path, None)
    stalled = ["train.epochs=3", "train.lr=1e-12"]  # the weights cannot move: no better validation Dice
    resumed, _ = _train(brats2021_manifest, tmp_path, None, stalled, resume=str(first.last_path))
    assert resumed.last_path == first.last_path and resumed.best_epoch == first.best_epoch
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first.last_path.parent.name]
    assert load_checkpoint(resumed.last_path)["epoch"] == 2
    overlays = sorted(p.name.rsplit("_", 1)[1] for p in (first.last_path.parent / "overlays").iterdir())
    assert overlays == ["epoch0001.png", "epoch0002.png", "epoch0003.png"]  # as the log counts (was from 0)
    assert load_checkpoint(first.best_path)["bundle"]["infer"]["postprocess"] is not None  # chosen after the resume
    # a checkpoint copied elsewhere, without its best.pt: a new run folder (not the copy's folder), whose next
    # validation becomes the best; a best.pt (its run may have newer epochs in last.pt) also starts a new folder
    lone = tmp_path / "copied" / "last.pt"
    lone.parent.mkdir()
    shutil.copyfile(first.last_path, lone)
    again, _ = _train(brats2021_manifest, tmp_path, None, ["train.epochs=4", "train.lr=1e-12"], resume=str(lone))
    assert again.best_path.parent.parent == tmp_path / "runs" and load_checkpoint(again.best_path)["epoch"] == 3
    assert sorted(p.name for p in lone.parent.iterdir()) == ["last.pt"]
    from_best, _ = _train(brats2021_manifest, tmp_path, None, stalled, resume=str(first.best_path))
    assert from_best.last_path.parent not in (first.last_path.parent, again.last_path.parent)
    assert load_checkpoint(first.last_path)["epoch"] == 2  # run A's latest state kept


def test_interrupted_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from medseg.io import bundle as bundle_mod

    path = tmp_path / "last.pt"
    bundle_mod.save_checkpoint({"bundle": {"format": bundle_mod.FORMAT}, "epoch": 1}, path)

    def dies_mid_write(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod.torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.save_checkpoint({"bundle": {"format": bundle_mod.FORMAT}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_malicious_checkpoint_is_refused(tmp_path):
    from medseg.errors import ModelFileError

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"bundle": Exploit()}, path)
    with pytest.raises(ModelFileError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"model:\n  name: transunet3d_small\n", "not a PyTorch checkpoint"),  # a config passed as --model
        (b"hi\n", "not a PyTorch checkpoint"),  # torch.load raised KeyError 105: "incomplete bundle (missing 105)"
        ("zip", "not a readable checkpoint"),  # a torch.save zip cut short by a copy
    ],
    ids=["yaml", "text", "truncated"],
)
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content, message):
    from medseg.errors import ModelFileError

    path = tmp_path / "model.pt"
    if content == "zip":
        torch.save({"bundle": {}}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_checkpoint(path)


def test_training_against_a_real_mlflow_server(brats2021_manifest, tmp_path, mlflow_server):
    import mlflow

    result, tracker = _train(brats2021_manifest, tmp_path, mlflow_server, ["train.epochs=1"])
    run = mlflow.MlflowClient(mlflow_server).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and "val_dice_mean" in run.data.metrics
    assert result.model_uri


def test_ddp_two_processes_on_cpu(brats2021_manifest, tmp_path):
    """Tracked, as a team runs it: rank 1 (no run id) also made an empty `run-<time>` folder per launch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "medseg",
        "train",
        "brats",
        "--manifest",
        str(brats2021_manifest),
        "--config",
        str(SMOKE),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--no-progress",
        "--device",
        "cpu",
        "--fold",
        "0",
        "--out",
        str(tmp_path / "runs"),
        *[arg for o in [*FAST, f"data.cache_dir={tmp_path / 'cache'}"] for arg in ("--set", o)],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = list((tmp_path / "runs").rglob("last.pt"))
    assert len(ckpts) == 1  # rank 0 alone checkpoints
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [ckpts[0].parent.name]  # the run id: one folder
    assert load_checkpoint(ckpts[0])["epoch"] == 1
    assert np.isfinite(load_checkpoint(ckpts[0])["history"][-1]["val_dice_mean"])


def test_training_with_deep_supervision_and_checkpointing(brats2021_manifest, tmp_path):
    result, _ = _train(
        brats2021_manifest,
        tmp_path,
        None,
        ["train.epochs=1", "model.kwargs.deep_supervision=true", "model.kwargs.checkpointing=true"],
    )
    assert np.isfinite(result.history[0]["train_loss"]) and "val_dice_mean" in result.history[0]


def test_a_step_holds_batch_size_patches_whatever_the_samples_per_volume():
    from medseg.training.steps import optimizer_steps

    torch.manual_seed(0)
    batch = {"image": torch.arange(8.0).view(8, 1, 1, 1, 1), "label": torch.arange(8.0).view(8, 1, 1, 1, 1)}
    steps = list(optimizer_steps(batch, 2))  # 2 volumes x 4 samples per volume from the loader
    assert [x.shape[0] for x, _ in steps] == [2, 2, 2, 2]
    assert sorted(v for x, _ in steps for v in x.flatten().tolist()) == list(range(8))
    assert all(torch.equal(x, y) for x, y in steps)  # images stay paired with their labels
    assert [x.shape[0] for x, _ in optimizer_steps({k: v[:5] for k, v in batch.items()}, 2)] == [2, 2, 1]


def _one_untracked_epoch(tmp: Path, out: Path, **source) -> TrainRequest:
    """One epoch without MLflow or `--fold` (the workflow picks the split), from `manifest=` or `data=`."""
    overrides = [*FAST, "train.epochs=1", f"data.cache_dir={tmp / 'cache'}"]
    return TrainRequest("brats", config=SMOKE, overrides=overrides, device="cpu", tracking=False, out=out, **source)


def test_without_fold_a_fold_is_held_out_and_fold_all_is_labelled(brats2021_manifest, tmp_path):
    from medseg.data.manifest import load_manifest

    manifest = load_manifest(brats2021_manifest)
    request = _one_untracked_epoch(tmp_path, tmp_path / "runs", manifest=brats2021_manifest)
    held_out = run_training(request)
    first_fold = min(c.fold for c in manifest.cases)
    assert held_out.split.fold == first_fold and "held-out fold" in held_out.split.label
    validated = {c.case.id for c in manifest.cases if c.fold == first_fold}
    trained = {c.case.id for c in manifest.cases if c.fold != first_fold}
    assert validated and not validated & trained
    request.fold = "all"
    everything = run_training(request)
    assert everything.split.fold is None and "nothing held out" in everything.split.label


def test_scanned_manifest_goes_beside_the_outputs_not_into_the_working_folder(brats2021_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    request = _one_untracked_epoch(tmp_path, tmp_path / "outputs", data=brats2021_dir)
    outcome = run_training(request)
    assert outcome.manifest_path == tmp_path / "outputs" / "manifests" / f"{brats2021_dir.name}.json"
    assert outcome.manifest_path.is_file() and not (tmp_path / "data_manifests").exists()


def test_credentials_in_the_config_never_reach_mlflow_checkpoints_or_saved_configs(brats2021_manifest, tmp_path):
    import mlflow

    secret = "hunter2"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result, outcome = _train(
        brats2021_manifest, tmp_path, uri, ["train.epochs=1", f"tracking.uri=postgresql://bob:{secret}@db/mlflow"]
    )
    client = mlflow.MlflowClient(uri)
    run = client.get_run(outcome.run_id)
    assert secret not in str(run.data.params) and run.data.params["tracking.uri"] == "postgresql://bob:***@db/mlflow"
    for artifact in ("config.yaml", "config_resolved.yaml"):
        assert secret not in Path(client.download_artifacts(outcome.run_id, artifact, str(tmp_path))).read_text()
    assert secret not in (result.last_path.parent / "config.yaml").read_text()
    for ckpt in (result.last_path, result.best_path):
        assert secret not in str(load_checkpoint(ckpt)["config"])


def test_a_time_budget_anneals_the_learning_rate_to_its_end():
    """With `train.max_minutes`, the cosine follows the budget: a run stopped by time ends near lr 0, not at the
    high rate an epoch-based schedule would still be at (epoch 30 of a nominal 1000)."""
    from medseg.training.optim import lr_factor, run_progress

    assert lr_factor(0, 2, 0.0) == pytest.approx(1 / 3)  # warm-up
    by_epochs = run_progress(30, 1000, 2, elapsed_s=0.0, max_minutes=None)
    assert lr_factor(30, 2, by_epochs) > 0.99
    by_time = run_progress(30, 1000, 2, elapsed_s=0.95 * 20 * 60, max_minutes=20)
    assert by_time == pytest.approx(0.95) and lr_factor(30, 2, by_time) < 0.01


def test_a_case_without_labels_is_refused_before_any_work(tmp_path, brats2021_dir):
    """It passed `data scan` (fine for prediction), then failed inside MONAI's loader with a traceback."""
    import shutil

    from medseg.errors import DataError
    from medseg.workflows.train import TrainRequest, run_training

    shutil.copytree(brats2021_dir, tmp_path / "d")
    (tmp_path / "d" / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz").unlink()
    request = TrainRequest("brats", config=SMOKE, data=tmp_path / "d", device="cpu", tracking=False, out=tmp_path)
    with pytest.raises(DataError, match=r"1 case\(s\) have no label file: BraTS2021_00002"):
        run_training(request)
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("runs/*"))
    assert not (tmp_path / "manifests").exists()  # refused from the file names, before the scan reads every voxel


def test_a_user_error_raised_inside_a_library_is_one_line(monkeypatch, capsys):
    """MONAI wraps a transform's exception in a RuntimeError: the CLI still finds the medseg error behind it."""
    from medseg.errors import DataError
    from tests.conftest import cli_main_with

    def wrapped(**_):
        try:
            raise DataError("case has no label", case="c1")
        except DataError as exc:
            raise RuntimeError("applying transform <LoadCachedd>") from exc

    code, err = cli_main_with(wrapped, monkeypatch, capsys)
    assert code == 1 and "case c1: case has no label" in err and "Traceback" not in err


def test_an_output_folder_under_a_file_is_refused_before_scanning(tmp_path, brats2021_dir):
    from medseg.errors import MedsegError
    from medseg.workflows.train import TrainRequest, run_training

    (tmp_path / "a_file").write_text("x")
    request = TrainRequest("brats", config=SMOKE, data=brats2021_dir, tracking=False, out=tmp_path / "a_file" / "o")
    with pytest.raises(MedsegError, match="output path lies under a file"):
        run_training(request)


def test_the_training_seed_does_not_change_which_cases_are_held_out(tmp_path, brats2021_dir, monkeypatch):
    """With --data, the folds came from train.seed: a seed study compared different validation cases."""
    from medseg.data.manifest import load_manifest
    from medseg.workflows import train as train_workflow

    class Scanned(Exception):
        pass

    def stop(*_, **__):
        raise Scanned

    monkeypatch.setattr(train_workflow, "train_task", stop)
    folds = []
    for seed in (0, 1, 2):
        out = tmp_path / f"seed{seed}"
        request = _one_untracked_epoch(tmp_path, out, data=brats2021_dir)
        request.overrides.append(f"train.seed={seed}")
        with pytest.raises(Scanned):
            train_workflow.run_training(request)
        (manifest,) = (out / "manifests").glob("*.json")
        folds.append({c.case.id: c.fold for c in load_manifest(manifest).cases})
    assert folds[0] == folds[1] == folds[2]


def test_a_single_case_cannot_be_held_out_and_the_hint_says_what_helps(tmp_path, brats2021_dir):
    import shutil

    from medseg.errors import MedsegError
    from medseg.workflows.train import TrainRequest, run_training

    shutil.copytree(brats2021_dir / "BraTS2021_00000", tmp_path / "one" / "BraTS2021_00000")
    request = TrainRequest("brats", config=SMOKE, data=tmp_path / "one", device="cpu", tracking=False, out=tmp_path)
    with pytest.raises(MedsegError, match="add cases, or pass --fold all"):  # not "scan with --folds 5"
        run_training(request)


def test_a_bad_model_or_cache_path_fails_before_any_case_is_cached(brats2021_manifest, brats2021_dir, tmp_path):
    from medseg.errors import ConfigError, MedsegError

    request = _one_untracked_epoch(tmp_path, tmp_path / "runs", manifest=brats2021_manifest)
    request.overrides.append("model.kwargs.no_such_keyword=1")
    with pytest.raises(ConfigError, match=r"model 'transunet3d_tiny'.*no_such_keyword"):
        run_training(request)
    assert not (tmp_path / "cache").exists()  # was reported only after caching every case
    from medseg.workflows.train import TrainRequest

    out = tmp_path / "scanned"
    scanning = TrainRequest("brats", SMOKE, ["model.name=unet_nope"], data=brats2021_dir, tracking=False, out=out)
    with pytest.raises(ConfigError, match="unknown model 'unet_nope'"):
        run_training(scanning)
    assert not (tmp_path / "scanned").exists()  # refused before the scan read every voxel and wrote a manifest
    request = _one_untracked_epoch(tmp_path, tmp_path / "runs", manifest=brats2021_manifest)
    swin = [
        "model.name=swinunetr",
        "model.kwargs={feature_size: 12, depths: [1, 1, 1, 1]}",
        "train.patch_size=[32,32,32]",
    ]
    request.overrides.extend(swin)  # SwinUNETR cannot be built on the meta device: checked on the CPU instead
    with pytest.raises(ConfigError, match=r"model 'swinunetr'.*at least 64"):
        run_training(request)
    assert not (tmp_path / "cache").exists()
    (tmp_path / "a_file").write_text("x")
    request = _one_untracked_epoch(tmp_path, tmp_path / "runs", manifest=brats2021_manifest)
    request.overrides.append(f"data.cache_dir={tmp_path / 'a_file' / 'cache'}")
    with pytest.raises(MedsegError, match="output path lies under a file"):  # its fix said "free disk space"
        run_training(request)


def test_a_run_whose_weights_diverge_stops_failed_not_finished(brats2021_manifest, tmp_path):
    """A learning rate far too high (or `distill --temperature inf`) trained to NaN weights, validated Dice 0 each
    epoch and finished as a success, its best.pt saved and registrable."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(MedsegError, match=r"training diverged in epoch \d: the weights became NaN or Inf"):
        _train(brats2021_manifest, tmp_path, uri, overrides=["train.lr=1e8", "train.grad_clip=1e30"], run_name="d")
    (run,) = mlflow.MlflowClient(uri).search_runs(["1"])
    assert run.info.status == "FAILED"
    for path in (tmp_path / "runs").rglob("*.pt"):  # epochs before the divergence only: never NaN weights
        weights = load_checkpoint(path)["bundle"]["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), path


def test_a_resume_refuses_another_model_says_what_it_changes_and_a_finished_run_is_not_redone(
    brats2021_manifest, tmp_path
):
    """`--resume` with `--set model.name=segresnet` prepared the data, then died on a state-dict traceback; another
    lr or patch size continued silently under the old logged params; an untracked run that had finished was
    "resumed" to choose its post-processing again and rewrite its bundle."""
    from medseg.errors import ConfigError

    first, _ = _train(brats2021_manifest, tmp_path, None)
    last = str(first.last_path)
    for change in ("model.name=segresnet", "train.patch_size=[16,16,16]"):
        with pytest.raises(ConfigError, match=f"--set {re.escape(change)} changes the run being resumed"):
            _train(brats2021_manifest, tmp_path, None, ["train.epochs=3", change], resume=last)
    with pytest.raises(MedsegError, match=r"is the last epoch of a finished run \(2 epochs\).*train\.epochs=N"):
        _train(brats2021_manifest, tmp_path, None, [], resume=last)
    said = []
    hooks = type("Hooks", (SilentHooks,), {"message": lambda self, text: said.append(text)})()
    _train(brats2021_manifest, tmp_path, None, ["train.epochs=3", "train.lr=0.001"], resume=last, hooks=hooks)
    (changed,) = [m for m in said if m.startswith("changed on resume: ")]
    assert "train.epochs 2 -> 3, train.lr " in changed and "-> 0.001 (the run's logged params keep" in changed


def test_a_fold_all_run_is_named_as_such_when_a_resume_is_refused():
    """Resuming a `--fold all` run with a held-out fold said "trained ... with fold None"."""
    from medseg.training.run import _fold_words

    assert (_fold_words(None), _fold_words(2)) == ("fold all", "fold 2")


def test_a_scan_with_bad_cases_stops_training_unless_skip_bad(brats2021_dir, tmp_path, monkeypatch):
    """5 of 8 cases bad: `data scan` exited 1, `train --data` listed them and trained on the rest, exit 0."""
    import shutil

    from medseg.errors import DataError
    from medseg.workflows import train as workflow
    from medseg.workflows.train import TrainRequest, run_training

    shutil.copytree(brats2021_dir, tmp_path / "d")
    bad = sorted(p for p in (tmp_path / "d").iterdir() if p.is_dir())[0]
    (bad / f"{bad.name}_t1.nii.gz").write_bytes(b"x")
    request = TrainRequest("brats", SMOKE, data=tmp_path / "d", tracking=False, out=tmp_path / "runs")
    total = len([p for p in (tmp_path / "d").iterdir() if p.is_dir()])
    with pytest.raises(DataError, match=f"1 of {total} cases are bad") as err:
        run_training(request)
    assert f"pass --skip-bad to train on the other {total - 1}" in err.value.hint

    class Trained(Exception):
        pass

    def train_task(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(workflow, "train_task", train_task)
    request.skip_bad = True
    with pytest.raises(Trained):
        run_training(request)
