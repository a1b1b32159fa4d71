"""`--task generic` reads an nnU-Net v2 dataset.json: each mistake in it is named, with the fix, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.layouts import detect_cases
from medseg.errors import DataError
from medseg.io.nifti import read_case
from medseg.pipelines import get_task
from medseg.pipelines.generic import task_from_description

V2 = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "prostate": 1, "lesion": 2}}


def _dataset(root: Path, meta: dict | str, channels: int = 2) -> Path:
    """One 8^3 case `case_000` with `channels` channel files and a label, and `meta` as its dataset.json."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    for ch in range(channels):
        image = nib.Nifti1Image((100.0 + ch + 50 * label).astype(np.float32), np.eye(4))
        nib.save(image, root / "imagesTr" / f"case_000_{ch:04d}.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / "case_000.nii.gz")
    (root / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return root


def _refusal(root: Path) -> str:
    """The one-line error `get_task("generic", root)` raises, checked to name the dataset.json."""
    with pytest.raises(DataError) as err:
        get_task("generic", root)
    assert err.value.path == str(root / "dataset.json")
    assert "\n" not in str(err.value) and err.value.hint
    return str(err.value)


@pytest.mark.parametrize(
    ("labels", "found"),
    [
        ({"background": 1, "prostate": 2, "lesion": 3}, '"background" is 1'),
        ({"prostate": 1, "lesion": 2}, 'no "background" entry'),
    ],
)
def test_labels_must_map_background_to_zero(tmp_path, labels, found):
    message = _refusal(_dataset(tmp_path, {**V2, "labels": labels}))
    assert 'labels must map "background" to 0' in message and found in message


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ({"channel_names": V2["channel_names"]}, 'no "labels"'),
        ({"labels": V2["labels"]}, 'no "channel_names"'),
    ],
)
def test_a_missing_key_is_named(tmp_path, meta, named):
    message = _refusal(_dataset(tmp_path, meta))
    assert named in message and "KeyError" not in message


def test_nnunet_v1_modality_names_v2_channel_names(tmp_path):
    v1 = {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "prostate", "2": "lesion"}}
    message = _refusal(_dataset(tmp_path, v1))
    assert "nnU-Net v1" in message and '"channel_names"' in message and '"modality"' in message


def test_a_non_nifti_file_ending_is_refused_with_a_conversion(tmp_path):
    """nnU-Net v2 datasets may be .mha (grand-challenge) or .nrrd: named from dataset.json, not "no cases found"."""
    message = _refusal(_dataset(tmp_path, {**V2, "file_ending": ".mha"}))
    assert 'file_ending is ".mha"' in message and "SimpleITK" in message and '"file_ending": ".nii.gz"' in message
    (tmp_path / "dataset.json").write_text(json.dumps({**V2, "file_ending": ".nii.gz"}))
    assert get_task("generic", tmp_path).channels == ("t2", "adc")


def test_a_folder_of_other_image_formats_names_them(tmp_path):
    """No NIfTI or DICOM but .mha / .nrrd images (a predict folder has no dataset.json to tell): counted, with a
    conversion that keeps their geometry."""
    import SimpleITK as sitk

    (tmp_path / "imagesTs").mkdir()
    for i, suffix in enumerate((".mha", ".mha", ".nrrd")):
        sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(tmp_path / "imagesTs" / f"c{i}_0000{suffix}"))
    with pytest.raises(DataError) as err:
        detect_cases(tmp_path / "imagesTs", task_from_description(["t2"], {"lesion": 1}).prediction_layouts)
    message = str(err.value)
    assert "no cases found" in message and "2 .mha, 1 .nrrd files" in message and "SimpleITK" in message


def test_region_based_labels_are_refused_by_name(tmp_path):
    regions = {"background": 0, "whole": [1, 2], "lesion": 2}
    message = _refusal(_dataset(tmp_path, {**V2, "labels": regions, "regions_class_order": [1, 2]}))
    assert "region-based labels (lists of label values: whole) are not supported for --task generic" in message


@pytest.mark.parametrize("channel_names", [["T2", "ADC"], {"0": "T2", "2": "ADC"}, {}])
def test_channel_names_must_map_file_indices_to_names(tmp_path, channel_names):
    message = _refusal(_dataset(tmp_path, {**V2, "channel_names": channel_names}))
    assert 'channel_names must map "0", "1", ... to channel names' in message


def test_a_list_of_channel_names_gets_its_mapping_as_the_fix(tmp_path):
    message = _refusal(_dataset(tmp_path, {**V2, "channel_names": ["T2", "ADC"]}))
    assert '"channel_names": {"0": "T2", "1": "ADC"}' in message


def test_label_values_must_be_whole_numbers(tmp_path):
    message = _refusal(_dataset(tmp_path, {**V2, "labels": {"background": 0, "prostate": "1"}}))
    assert 'whole numbers, not "prostate": "1"' in message


@pytest.mark.parametrize(
    "labels",
    [{"background": 0, "prostate": 1, "gland": 1}, {"background": 0, "unlabelled": 0, "prostate": 1}],
    ids=["two-classes-one-value", "a-second-name-for-0"],
)
def test_one_value_named_twice_is_refused(tmp_path, labels):
    """Two names for value 1 made two classes trained on the same voxels; a second name for 0 vanished silently."""
    assert "give one value to several names" in _refusal(_dataset(tmp_path, {**V2, "labels": labels}))


def test_invalid_json_is_named_with_its_line(tmp_path):
    message = _refusal(_dataset(tmp_path, '{"channel_names": {"0": "T2",}'))
    assert "not valid JSON" in message and "line 1" in message


def test_background_is_not_a_class(tmp_path):
    task = get_task("generic", _dataset(tmp_path, V2))
    assert task.channels == ("t2", "adc") and task.scheme.classes == ("prostate", "lesion")


def test_channel_files_dataset_json_does_not_declare_are_refused(tmp_path):
    root = _dataset(tmp_path, {**V2, "channel_names": {"0": "T2"}}, channels=2)
    task = get_task("generic", root)
    with pytest.raises(DataError) as err:
        detect_cases(root, task.layouts)
    message = str(err.value)
    assert "dataset.json declares 1 channel(s)" in message and "1 file(s) of another channel" in message
    assert str(Path("imagesTr") / "case_000_0001.nii.gz") in message and "channel_names" in err.value.hint


def test_a_trained_model_reads_its_channels_and_leaves_other_files(tmp_path):
    """A model of one channel predicts a folder that also holds other channels: nothing to declare there."""
    root = _dataset(tmp_path, V2, channels=2)
    model_task = task_from_description(["t2"], {"prostate": 1})
    _, cases = detect_cases(root, model_task.prediction_layouts)
    assert [Path(p).name for p in cases[0].images] == ["case_000_0000.nii.gz"]


def test_a_label_value_dataset_json_does_not_name_gets_its_labels_as_the_fix(tmp_path):
    root = _dataset(tmp_path, {**V2, "labels": {"background": 0, "prostate": 5}})  # the label file holds 1
    _, cases = detect_cases(root, get_task("generic", root).layouts)
    with pytest.raises(DataError) as err:
        read_case(cases[0])
    assert "the labels in dataset.json are background 0, prostate 5" in err.value.hint
    assert "ET=4" not in str(err.value)


def test_a_brats_label_value_keeps_the_release_hint(tmp_path, brats2021_dir):
    import shutil

    case = next(p for p in sorted(brats2021_dir.iterdir()) if p.is_dir())
    shutil.copytree(case, tmp_path / case.name)
    seg = next((tmp_path / case.name).glob("*_seg.nii.gz"))
    image = nib.load(seg)
    nib.save(
        nib.Nifti1Image(np.where(np.asarray(image.dataobj) == 4, 3, image.dataobj).astype(np.uint8), image.affine), seg
    )
    _, cases = detect_cases(tmp_path, get_task("brats").layouts)
    with pytest.raises(DataError, match="BraTS 2021 uses ET=4"):
        read_case(cases[0])


def test_a_declared_label_no_file_holds_is_named_by_scan_and_refused_by_train(tmp_path):
    """`labels` with a class no label file draws: its Dice was 1 (both empty) in every validation case, and the
    mean that picks the best epoch read 0.339 for a model at 0.009."""
    from medseg.data.manifest import load_manifest
    from medseg.workflows.scan import scan
    from medseg.workflows.train import TrainRequest, run_training

    root = _dataset(tmp_path / "d", V2)  # its label file holds prostate (1) only
    result = scan(root, "generic", tmp_path / "m.json")
    region = [r for r in get_task("generic", root).scheme.regions if "lesion" in r.lower()]
    assert result.absent_regions == region and len(region) == 1
    manifest = load_manifest(tmp_path / "m.json")
    assert manifest.cases[0].label_values == (1,)
    before = manifest.digest()  # the hash runs log: a manifest scanned before label values were recorded, the same
    manifest.cases[0].label_values = None
    assert manifest.digest() == before
    request = TrainRequest("generic", "brats_smoke", data=root, fold="all", tracking=False, out=tmp_path / "runs")
    with pytest.raises(DataError, match=f"no training case holds region {region[0]} \\(lesion = 2\\)") as err:
        run_training(request)
    assert "remove it from dataset.json's labels" in err.value.hint
    import shutil

    for ch in range(2):  # an unlabelled case beside it (to predict): the check still names the region
        shutil.copy(root / "imagesTr" / f"case_000_{ch:04d}.nii.gz", root / "imagesTr" / f"case_001_{ch:04d}.nii.gz")
    assert scan(root, "generic", tmp_path / "m2.json").absent_regions == region
