"""Knowledge distillation: the soft loss, the cached teacher logits and `medseg distill` end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.cache import read_entry
from medseg.errors import ConfigError
from medseg.io.bundle import load_checkpoint, save_checkpoint
from medseg.training.data import LoadCachedd
from medseg.training.distill import DistillationLoss, teacher_logits
from medseg.training.optim import build_loss
from medseg.workflows.train import TrainRequest, run_training
from tests.cli.test_cli import medseg

FAST = ["train.epochs=1", "train.val_every=1", "train.samples_per_volume=1", "train.overlays=0", "data.num_workers=0"]


@pytest.mark.parametrize("exclusive", [False, True])
def test_soft_term_is_zero_for_the_teachers_own_logits_and_pulls_the_student_towards_them(exclusive):
    torch.manual_seed(0)
    loss = DistillationLoss(build_loss("dice_ce", exclusive=exclusive), temperature=2.0, alpha=1.0, exclusive=exclusive)
    teacher = torch.randn(2, 4, 8, 8, 8)
    assert loss.soft_term(teacher, teacher).abs() < 1e-6
    student = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    before = loss.soft_term(student, teacher)
    assert before > 0.01
    before.backward()
    with torch.no_grad():
        after = loss.soft_term(student - 10.0 * student.grad, teacher)
    assert after < before


def test_alpha_splits_the_label_loss_and_the_teacher_term():
    torch.manual_seed(0)
    task_loss = build_loss("dice_ce")
    student, teacher = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 8, 8, 8)
    labels = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    target = torch.cat([labels, teacher], dim=1)
    only_labels = DistillationLoss(task_loss, 2.0, 0.0, exclusive=False)(student, target)
    torch.testing.assert_close(only_labels, task_loss(student, labels))
    only_teacher = DistillationLoss(task_loss, 2.0, 1.0, exclusive=False)
    torch.testing.assert_close(only_teacher(student, target), 4.0 * only_teacher.soft_term(student, teacher))


def _train(manifest: Path, tmp: Path, uri: str, name: str, overrides: list[str]):
    request = TrainRequest(
        "brats",
        config="brats_smoke",
        overrides=[*FAST, f"data.cache_dir={tmp / 'cache'}", "tracking.system_metrics=false", *overrides],
        manifest=manifest,
        fold=0,
        device="cpu",
        tracking_uri=uri,
        experiment="distill",
        run_name=name,
        out=tmp / "runs",
    )
    return run_training(request)


@pytest.fixture(scope="module")
def distilled(brats2021_manifest, tmp_path_factory):
    """A 1-epoch teacher (transunet3d_tiny) and a 1-epoch SegFormer3D student distilled from its runs:/ URI."""
    tmp = tmp_path_factory.mktemp("distill")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    teacher = _train(brats2021_manifest, tmp, uri, "teacher", [])
    ref = f"runs:/{teacher.run_id}/model"
    student = _train(
        brats2021_manifest,
        tmp,
        uri,
        "student",
        ["model.name=segformer3d_tiny", "model.kwargs={}", f'distill.teacher="{ref}"', "distill.temperature=3"],
    )
    return tmp, uri, teacher, student


def test_student_run_is_linked_to_its_teacher_and_its_bundle_predicts(distilled):
    import mlflow

    _, uri, teacher, student = distilled
    run = mlflow.MlflowClient(uri).get_run(student.run_id)
    assert run.data.tags["medseg.teacher_run_id"] == teacher.run_id
    assert run.data.tags["medseg.teacher"] == f"runs:/{teacher.run_id}/model"
    assert run.data.params["distill.temperature"] == "3.0" and run.data.params["model_name"] == "segformer3d_tiny"
    shown = medseg("runs", "show", student.run_id, "--tracking-uri", uri)
    assert f"distilled from: runs:/{teacher.run_id}/model (run {teacher.run_id})" in shown.stdout, shown.stderr
    bundle = load_checkpoint(student.result.best_path)["bundle"]
    assert bundle["model_name"] == "segformer3d_tiny"
    from medseg.inference.model_source import load_bundle

    with torch.no_grad():
        assert load_bundle(student.result.model_uri, uri).build_model()(torch.zeros(1, 4, 32, 32, 32)).shape[1] == 3


def test_teacher_logits_are_cached_per_training_case_and_ride_with_the_labels(distilled, brats2021_manifest):
    from medseg.data.manifest import load_manifest

    tmp, uri, teacher, _ = distilled
    cached = sorted((tmp / "cache").rglob("teacher-*.npy"))
    train_cases, _ = load_manifest(brats2021_manifest).split(0)
    assert len(cached) == len(train_cases)  # training cases only, not the validation fold
    from medseg.inference.model_source import load_bundle

    bundle = load_bundle(f"runs:/{teacher.run_id}/model", uri)
    entry = cached[0].parent
    expected = teacher_logits(bundle.build_model(), read_entry(entry).image, bundle, torch.device("cpu"))
    np.testing.assert_allclose(np.load(cached[0]), expected, atol=1e-2)
    item = LoadCachedd()({"id": "c", "entry": str(entry), "teacher": str(cached[0])})
    regions = np.asarray(read_entry(entry).regions)
    assert item["label"].shape[0] == regions.shape[0] + expected.shape[0]
    np.testing.assert_array_equal(item["label"][: regions.shape[0]], regions)


def _distill_from(teacher: Path, manifest: Path, tmp: Path):
    """A tiny student distilled from `teacher` (as `medseg distill` sets it up: the student's kwargs empty)."""
    return _train(
        manifest, tmp, None, "x", ["model.name=segformer3d_tiny", "model.kwargs={}", f"distill.teacher={teacher}"]
    )


def test_a_teacher_for_other_channels_is_refused_in_one_line(distilled, brats2021_manifest, tmp_path):
    _, _, teacher, _ = distilled
    payload = load_checkpoint(teacher.result.best_path)
    payload["bundle"]["channels"] = ["t1", "t2", "flair", "pd"]
    bad = tmp_path / "other_channels.pt"
    save_checkpoint(payload, bad)
    with pytest.raises(ConfigError, match=r"reads channels \['t1', 't2', 'flair', 'pd'\]"):
        _distill_from(bad, brats2021_manifest, tmp_path)


def test_a_teacher_with_other_preprocessing_is_refused(distilled, brats2021_manifest, tmp_path):
    from medseg.io.bundle import ModelBundle

    _, _, teacher, _ = distilled
    payload = load_checkpoint(teacher.result.best_path)
    bundle = ModelBundle.from_dict(payload["bundle"])
    bundle.preprocess = dataclasses.replace(bundle.preprocess, spacing=(2.0, 2.0, 2.0))
    bad = tmp_path / "other_spacing.pt"
    save_checkpoint({**payload, "bundle": bundle.to_dict()}, bad)
    with pytest.raises(ConfigError, match="other preprocessing"):
        _distill_from(bad, brats2021_manifest, tmp_path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher", "nope.pt", "--student", "segformer3d_tiny"], "model not found"),
        (
            ["--teacher", "T", "--student", "segformer3d_tiny", "--alpha", "1.5"],
            "invalid value --alpha 1.5: Input should be less than or equal to 1",
        ),
        (["--teacher", "T", "--student", "no_such_net"], "unknown model 'no_such_net'"),
        # an interrupted distill is told to re-run with --resume, which the command lacked ("No such option")
        (["--teacher", "T", "--student", "segformer3d_tiny", "--resume", "gone/last.pt"], "checkpoint not found"),
    ],
)
def test_distill_user_errors_are_one_line(extra, message, distilled, brats2021_manifest, tmp_path):
    _, _, teacher, _ = distilled
    args = [a if a != "T" else str(teacher.result.best_path) for a in extra]
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    out = medseg("distill", *args, "--manifest", str(brats2021_manifest), "--no-tracking", "--set", cache, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()  # refused before any case is cached or the teacher runs


def test_a_native_spacing_teacher_fits_a_plan_that_resamples_nothing(brats2021_manifest):
    from medseg.data.manifest import load_manifest
    from medseg.training.from_model import same_network_input
    from medseg.transforms.preprocess import PreprocessPlan

    manifest = load_manifest(brats2021_manifest)
    cases, _ = manifest.split(0)
    native = PreprocessPlan(spacing=None)
    assert same_network_input(native, PreprocessPlan(spacing=tuple(manifest.cases[0].spacing)), cases)
    assert not same_network_input(native, PreprocessPlan(spacing=(2.0, 2.0, 2.0)), cases)
    assert not same_network_input(native, PreprocessPlan(crop_foreground=False), cases)
