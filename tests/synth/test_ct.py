"""Synthetic CT and the CT task end to end: softmax classes, CT normalisation, resampling, per-class metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

from medseg.core import scheme_from_json, scheme_to_json
from medseg.data.validate import scan_dataset
from medseg.pipelines import get_task
from medseg.pipelines.generic import task_from_description, write_synthetic_ct_dataset
from medseg.synth.ct import CT_LABELS, ct_case
from medseg.training.optim import build_loss
from medseg.transforms.labels import region_masks


def test_ct_case_has_every_organ_with_realistic_hounsfield_units():
    case = ct_case((96, 96, 30), (3.6, 3.6, 5.0), seed=2)
    assert set(np.unique(case.label)) == {0, *CT_LABELS.values()}
    hu = case.image.astype(float)
    for name, (low, high) in {"liver": (70, 140), "spleen": (85, 160), "kidney": (80, 220)}.items():
        assert low < np.median(hu[case.label == CT_LABELS[name]]) < high, name
    assert np.median(hu[0, 0]) < -900  # air around the body
    assert hu.max() > 300  # bone


def test_dataset_has_varying_grids_and_scans_with_ct_statistics(tmp_path):
    write_synthetic_ct_dataset(tmp_path, 3, seed=0, matrices=(48, 64))
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"]["spleen"] == 3
    task = get_task("generic", tmp_path)
    assert task.scheme.exclusive and task.scheme.out_channels == 4 and task.default_config == "ct_cpu"
    manifest, bad = scan_dataset(tmp_path, task)
    assert not bad and "ct" in manifest.intensity_stats
    assert len({c.spacing for c in manifest.cases}) > 1  # every scan its own resolution


def test_softmax_classes_decide_by_argmax_with_an_implicit_background():
    probs = torch.tensor([[0.3, 0.6, 0.1], [0.3, 0.2, 0.1]])[..., None, None]  # 2 classes, 3 voxels
    masks = region_masks(probs, 0.5, exclusive=True)
    # voxel 0: background 0.4 wins over 0.3 / 0.3; voxel 1: class 0 (0.6); voxel 2: background (0.8)
    assert masks[..., 0, 0].tolist() == [[False, True, False], [False, False, False]]
    assert region_masks(probs, 0.25, exclusive=False)[..., 0, 0].tolist() == [[True, True, False], [True, False, False]]


def test_softmax_loss_rewards_the_right_class_and_the_scheme_round_trips():
    loss = build_loss("dice_ce", exclusive=True)
    target = torch.zeros(1, 2, 4, 4, 4)
    target[:, 0, :2] = 1  # class 1 in the first half, background in the rest
    right = torch.full((1, 3, 4, 4, 4), -5.0)
    right[:, 1, :2], right[:, 0, 2:] = 5.0, 5.0
    wrong = right[:, [2, 0, 1]]
    assert loss(right, target) < loss(wrong, target)
    scheme = task_from_description(["ct"], {"liver": 1}).scheme
    assert scheme_from_json(scheme_to_json(scheme)) == scheme
    old = {k: v for k, v in scheme_to_json(scheme).items() if k != "exclusive"}
    assert not scheme_from_json(old).exclusive  # bundles from before softmax classes stay sigmoid


def _medseg(*args, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "medseg", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_ct_task_trains_predicts_on_the_native_grid_and_evaluates_per_class(tmp_path):
    data = tmp_path / "data"
    write_synthetic_ct_dataset(data, 4, seed=1, matrices=(48, 64))
    sets = ["train.epochs=2", "train.max_minutes=null", "train.val_every=1", "train.patch_size=[32,32,16]"]
    sets += ["train.overlays=0", f"data.cache_dir={tmp_path / 'cache'}"]
    sets = [x for s in sets for x in ("--set", s)]
    done = _medseg(
        "train",
        "generic",
        "--data",
        data,
        "--no-tracking",
        "--no-progress",
        "--out",
        tmp_path / "out",
        *sets,
        cwd=tmp_path,
    )
    assert "voxel spacing for the network" in done.stdout  # the cases differ in spacing: resampled
    (best,) = (tmp_path / "out").glob("run-*/best.pt")
    _medseg("predict", "-m", best, data, tmp_path / "pred")
    for image in (data / "imagesTr").glob("*_0000.nii.gz"):
        src, out = nib.load(image), nib.load(tmp_path / "pred" / image.name.replace("_0000", ""))
        assert out.shape == src.shape and np.allclose(out.affine, src.affine, atol=1e-5)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3}
    evaluate = _medseg("evaluate", tmp_path / "pred", data, "--task", "generic", "--format", "json", cwd=tmp_path)
    report = json.loads(evaluate.stdout)
    assert len(report["cases"]) == 4 and not report["failed"]
    assert {"dice_liver", "dice_kidney", "dice_spleen", "hd95_liver", "hd95_spleen"} <= set(report["cases"][0])
