"""Layout detection for every BraTS layout in the wild, normalised to one channel order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.layouts import detect_cases
from medseg.errors import DataError
from medseg.io.nifti import read_case
from medseg.pipelines import get_task
from medseg.pipelines.brats import LABELS_2021, LABELS_2023, LABELS_MSD


@pytest.mark.parametrize(
    ("fixture", "layout", "label_map"),
    [
        ("brats2021_dir", "brats2021", LABELS_2021),
        ("brats2023_dir", "brats2023", LABELS_2023),
        ("msd_dir", "msd", LABELS_MSD),
    ],
)
def test_detects_layout_and_label_map(request, fixture, layout, label_map):
    found, cases = detect_cases(request.getfixturevalue(fixture), get_task("brats").layouts)
    assert found.name == layout
    assert cases and all(c.label_map == label_map and c.label for c in cases)


def test_msd_channels_are_reordered_to_t1_t1ce_t2_flair(msd_dir, tmp_path):
    """The same synthetic case written as MSD (FLAIR, T1w, T1gd, T2w) and 2023 reads back identically."""
    from medseg.pipelines.brats import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "b23", 1, "brats2023", (48, 48, 32), seed=3)
    _, msd_cases = detect_cases(msd_dir, get_task("brats").layouts)
    _, b23_cases = detect_cases(tmp_path / "b23", get_task("brats").layouts)
    msd = read_case(msd_cases[0])
    b23 = read_case(b23_cases[0])
    np.testing.assert_allclose(msd.image, b23.image)
    # Same anatomy, different native codes: MSD edema=1 vs 2023 edema=2.
    assert np.array_equal(msd.label == 1, b23.label == 2)


NNUNET_DESCRIPTIONS = {
    # nnU-Net's Dataset137_BraTS2021: BraTS channel order, codes 1 edema / 2 core / 3 enhancing as nested regions.
    "dataset137": (
        {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
        {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
        [0, 1, 2, 3],
        {"necrotic": 2, "edema": 1, "enhancing": 3},
    ),
    # MSD-derived: FLAIR first, plain MSD codes.
    "msd_order": (
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
        [3, 0, 1, 2],  # file i holds canonical channel file_of[i]
        {"necrotic": 2, "edema": 1, "enhancing": 3},
    ),
}


@pytest.mark.parametrize("name", list(NNUNET_DESCRIPTIONS))
def test_nnunet_style_folder_takes_channel_order_and_codes_from_dataset_json(tmp_path, brats2021_dir, name):
    import json
    import shutil

    channel_names, labels, file_of, expected_codes = NNUNET_DESCRIPTIONS[name]
    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    images = tmp_path / "imagesTr"
    images.mkdir()
    for c in cases[:2]:
        for canonical, img in enumerate(c.images):  # BraTS order t1, t1ce, t2, flair -> this dataset's file index
            shutil.copy(img, images / f"{c.id}_{file_of.index(canonical):04d}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": channel_names, "labels": labels}))
    layout, found = detect_cases(images, get_task("brats").layouts)  # dataset.json in the parent, as nnU-Net has
    assert layout.name == "nnunet" and [c.id for c in found] == [c.id for c in cases[:2]]
    assert found[0].label_map == expected_codes
    np.testing.assert_array_equal(read_case(found[0], with_label=False).image, read_case(cases[0]).image)


def test_nnunet_style_folder_without_dataset_json_is_refused_not_guessed(tmp_path, brats2021_dir):
    import shutil

    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    for i, img in enumerate(cases[0].images):
        shutil.copy(img, tmp_path / f"{cases[0].id}_{i:04d}.nii.gz")
    with pytest.raises(DataError, match=r"without a dataset\.json"):
        detect_cases(tmp_path, get_task("brats").layouts)
    (tmp_path / "dataset.json").write_text('{"channel_names": {"0": "T1"}}')  # said "malformed (KeyError)"
    with pytest.raises(DataError, match=r'dataset\.json has no "labels" mapping'):
        detect_cases(tmp_path, get_task("brats").layouts)


def test_unreadable_label_names_are_named(tmp_path, brats2021_dir):
    import json
    import shutil

    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    for i, img in enumerate(cases[0].images):
        shutil.copy(img, tmp_path / f"{cases[0].id}_{i:04d}.nii.gz")
    names = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": names, "labels": {"a": 1, "b": 2, "c": 3}}))
    with pytest.raises(DataError, match="cannot be read as the BraTS classes"):
        detect_cases(tmp_path, get_task("brats").layouts)


def test_a_ct_dataset_for_a_brats_model_points_to_a_ct_model(tmp_path, brats2021_dir):
    """Was "name the four channels T1, T1ce, T2 and FLAIR": renaming CT would have fed it to the BraTS model."""
    import json
    import shutil

    _, cases = detect_cases(brats2021_dir, get_task("brats").layouts)
    shutil.copy(cases[0].images[0], tmp_path / "CT_000_0000.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"liver": 1}}))
    with pytest.raises(DataError, match=r"do not name the BraTS channel.*use a model trained on them"):
        detect_cases(tmp_path, get_task("brats").prediction_layouts)


@pytest.mark.parametrize("fixture", ["brats2021_dir", "brats2023_dir"])
def test_one_case_folder_is_that_case_not_four_msd_cases(request, fixture):
    """`medseg predict BraTS2021_00000/ out/`: its four channel files were read as four 4D MSD cases."""
    root = request.getfixturevalue(fixture)
    _, every = detect_cases(root, get_task("brats").prediction_layouts)
    folder = Path(every[1].images[0]).parent
    layout, cases = detect_cases(folder, get_task("brats").prediction_layouts)
    assert layout.name == every[1].layout and cases == [every[1]]


def test_the_current_folder_as_one_case(brats2021_dir, monkeypatch):
    folder = next(p for p in brats2021_dir.iterdir() if p.is_dir())
    monkeypatch.chdir(folder)
    _, cases = detect_cases(Path("."), get_task("brats").prediction_layouts)
    assert [c.id for c in cases] == [folder.name]  # "." has no name of its own


def test_a_file_is_not_a_data_folder(brats2021_dir):
    file = next(brats2021_dir.rglob("*_t1.nii.gz"))
    with pytest.raises(DataError, match="a file, not a data folder"):
        detect_cases(file, get_task("brats").prediction_layouts)


def test_an_uncompressed_copy_beside_a_compressed_image_is_refused(brats2021_dir, tmp_path):
    """`x_t1.nii` beside `x_t1.nii.gz`: the `.nii.gz` was read and the `.nii` listed as unused, so an edited
    uncompressed image (the user's current one) could be ignored for a stale copy."""
    import shutil

    import nibabel as nib

    case = next(p for p in sorted(brats2021_dir.iterdir()) if p.is_dir())
    shutil.copytree(case, tmp_path / case.name)
    t1 = next((tmp_path / case.name).glob("*_t1.nii.gz"))
    nib.save(nib.load(t1), t1.with_name(t1.name.removesuffix(".gz")))
    with pytest.raises(DataError, match=r"_t1\.nii and .*_t1\.nii\.gz are two files for one image"):
        detect_cases(tmp_path, get_task("brats").prediction_layouts)
    (tmp_path / case.name / t1.name.removesuffix(".gz")).unlink()
    backup = tmp_path / "backup"  # twins in a folder no case reads stop nothing
    backup.mkdir()
    nib.save(nib.load(t1), backup / "old.nii.gz")
    nib.save(nib.load(t1), backup / "old.nii")
    assert [c.id for c in detect_cases(tmp_path, get_task("brats").prediction_layouts)[1]] == [case.name]


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("unrelated")
    with pytest.raises(DataError, match="no cases found"):
        detect_cases(tmp_path, get_task("brats").layouts)


def test_generic_task_from_dataset_json(tmp_path):
    import json

    import nibabel as nib

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    vol = np.zeros((16, 16, 16), np.float32)
    vol[4:10, 4:10, 4:10] = 100
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "imagesTr" / "liver_001_0000.nii.gz")
    nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), np.eye(4)), tmp_path / "labelsTr" / "liver_001.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}})
    )
    task = get_task("generic", tmp_path)
    layout, cases = detect_cases(tmp_path, task.layouts)
    assert task.channels == ("ct",) and task.scheme.region_names == ["liver"]
    assert layout.name == "nnunet" and cases[0].label.endswith("liver_001.nii.gz")
    (tmp_path / "imagesTr").rename(tmp_path / "imagesTs")  # a test set shipped alone: was "no cases found"
    (tmp_path / "labelsTr").rename(tmp_path / "labelsTs")  # with its labels, to evaluate against
    _, cases = detect_cases(tmp_path, task.prediction_layouts)
    assert [c.id for c in cases] == ["liver_001"] and "imagesTs" in cases[0].images[0]
    assert cases[0].label.endswith("labelsTs/liver_001.nii.gz")


def test_a_missing_channel_is_named_with_the_case_s_own_file_ending(tmp_path, brats2021_dir):
    """In a `.nii` dataset the missing file was named `..._flair.nii.gz`, a file the user never had."""
    import nibabel as nib

    src = sorted(p for p in brats2021_dir.iterdir() if p.is_dir())[0]
    case = tmp_path / src.name
    case.mkdir()
    for f in src.glob("*.nii.gz"):
        if not f.name.endswith("_flair.nii.gz"):
            nib.save(nib.load(f), case / f.name.replace(".nii.gz", ".nii"))
    _, (found,) = detect_cases(tmp_path, get_task("brats").layouts)
    assert found.images[3] == str(case / f"{src.name}_flair.nii")
    with pytest.raises(DataError, match=f"missing file {src.name}_flair.nii "):
        read_case(found)
