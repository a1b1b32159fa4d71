"""Generic recipe: any dataset described by an nnU-Net v2 style `dataset.json` (channel and label names).

Cases are `imagesTr/CASE_0000.nii.gz ...` with `labelsTr/CASE.nii.gz`, or per-case folders
`CASE/CASE_<channel>.nii.gz` with `CASE/CASE_seg.nii.gz`. Each foreground label is its own class (softmax).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.core import Case, LabelScheme, Layout, Task
from medseg.data.layouts import (
    CONVERT_HINT,
    NIFTI_SUFFIXES,
    find_4d_cases,
    find_nnunet_cases,
    find_suffix_cases,
    nnunet_files_beyond,
)
from medseg.errors import DataError
from medseg.io.atomic import atomic_write_text
from medseg.io.dicom import find_dicom_cases
from medseg.pipelines import register_task
from medseg.transforms.intensity import CT_CHANNELS

_EXAMPLE = '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}'


def _describe(data_dir: Path) -> tuple[list[str], dict[str, int]]:
    """Channel names in file index order and foreground label values, from `data_dir/dataset.json` (nnU-Net v2)."""
    meta_path = data_dir / "dataset.json"
    if not meta_path.is_file():
        raise DataError("generic task needs a dataset.json", path=str(meta_path), hint=f"write {_EXAMPLE}")
    meta = _read_meta(meta_path)
    _check_file_ending(meta, meta_path)
    return _channel_names(meta, meta_path), _foreground_labels(meta, meta_path)


def _check_file_ending(meta: dict, path: Path) -> None:
    """nnU-Net v2 datasets may hold .mha, .nrrd or .tif images (its `file_ending`); medseg reads NIfTI only."""
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_SUFFIXES:
        raise DataError(
            f"dataset.json file_ending is {json.dumps(ending)}: medseg reads NIfTI images (.nii.gz, .nii) only",
            path=str(path),
            hint=f'{CONVERT_HINT}, and set "file_ending": ".nii.gz"',
        )


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise DataError(f"dataset.json is not valid JSON: {where}", path=str(path), hint="fix the JSON there") from None
    if not isinstance(meta, dict):
        raise DataError("dataset.json is not a JSON object", path=str(path), hint=f"write {_EXAMPLE}")
    return meta


def _channel_names(meta: dict, path: Path) -> list[str]:
    """`channel_names` {"0": name, "1": name, ...}: file `CASE_0000` is channel "0", and so on."""
    if "channel_names" not in meta:
        if "modality" in meta:  # v1 also wrote labels the other way round ({"0": "background"}): no synonym
            raise DataError(
                'dataset.json is nnU-Net v1\'s ("modality", labels as value: name); --task generic reads nnU-Net '
                'v2\'s "channel_names" and labels as name: value',
                path=str(path),
                hint='convert it with nnU-Net v2\'s nnUNetv2_convert_old_nnUNet_dataset, or rename "modality" to '
                '"channel_names" and write labels as {"background": 0, "prostate": 1}',
            )
        raise DataError(
            'dataset.json has no "channel_names"',
            path=str(path),
            hint='add one name per file index (CASE_0000, CASE_0001, ...), e.g. "channel_names": {"0": "CT"}',
        )
    names = meta["channel_names"]
    if not isinstance(names, dict) or not names or set(names) != {str(i) for i in range(len(names))}:
        example = dict(enumerate(names)) if isinstance(names, list) and names else {0: "T2", 1: "ADC"}
        example = json.dumps({str(k): v for k, v in example.items()})
        raise DataError(
            f'dataset.json channel_names must map "0", "1", ... to channel names, not {json.dumps(names)}',
            path=str(path),
            hint=f'one entry per file index (CASE_0000 is "0"), e.g. "channel_names": {example}',
        )
    return [str(names[str(i)]).lower() for i in range(len(names))]


def _foreground_labels(meta: dict, path: Path) -> dict[str, int]:
    """`labels` {"background": 0, name: value, ...} less background: the classes and their values in the files."""
    labels = meta.get("labels")
    if labels is None:
        raise DataError(
            'dataset.json has no "labels"',
            path=str(path),
            hint='add one name per value in the label files, e.g. "labels": {"background": 0, "liver": 1}',
        )
    if not isinstance(labels, dict):
        raise DataError(f"dataset.json labels must map names to values, not {json.dumps(labels)}", path=str(path))
    regions = [k for k, v in labels.items() if isinstance(v, list | dict)]
    if regions:
        raise DataError(
            f"region-based labels (lists of label values: {', '.join(regions)}) are not supported for --task generic",
            path=str(path),
            hint='give each label value its own name, e.g. {"background": 0, "prostate": 1, "lesion": 2}; '
            "BraTS datasets with whole tumour / tumour core / enhancing regions are read by --task brats",
        )
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(
                f"dataset.json labels must map names to whole numbers, not {json.dumps(name)}: {json.dumps(value)}",
                path=str(path),
                hint='e.g. {"background": 0, "liver": 1} (nnU-Net v1 wrote them the other way round)',
            )
    if labels.get("background") != 0:
        found = f'"background" is {labels["background"]}' if "background" in labels else 'no "background" entry'
        raise DataError(
            f'dataset.json labels must map "background" to 0, as nnU-Net requires ({found})',
            path=str(path),
            hint='add "background": 0 and give every other value in the label files its name',
        )
    shared = sorted({v for v in labels.values() if list(labels.values()).count(v) > 1})
    if shared:
        names = ", ".join(f'"{k}"' for k, v in labels.items() if v in shared)
        raise DataError(
            f"dataset.json labels give one value to several names ({names} share {shared[0]})",
            path=str(path),
            hint="one name per value in the label files",
        )
    foreground = {str(k): v for k, v in labels.items() if v != 0}
    if not foreground:
        raise DataError("dataset.json labels list no foreground class", path=str(path), hint=f"e.g. {_EXAMPLE}")
    return foreground


@register_task("generic")
def generic_task(
    data_dir: Path | None, channels: Sequence[str] | None = None, labels: dict[str, int] | None = None
) -> Task:
    """From a data folder's dataset.json (scan), or from stored channels and labels (manifest, model bundle)."""
    if channels is None or labels is None:
        if data_dir is None:
            raise DataError("the generic task needs a data folder with a dataset.json", hint="pass --data DIR")
        channels, labels = _describe(data_dir)
        return task_from_description(channels, labels, described_in=data_dir / "dataset.json")
    return task_from_description(list(channels), dict(labels))


def task_from_description(channels: list[str], labels: dict[str, int], described_in: Path | None = None) -> Task:
    """A generic task from channel names and foreground label values: one region per label, the labels of a plain
    label map being mutually exclusive classes (softmax, as nnU-Net trains non-region datasets).

    With `described_in` (the dataset.json they come from) nnU-Net channel files beyond the declared channels are
    refused; a trained model (no `described_in`) reads its own channels and leaves other files unread."""
    scheme = LabelScheme(
        classes=tuple(labels),
        regions={name: (name,) for name in labels},
        paint_order=tuple((name, name) for name in labels),
        exclusive=True,
    )
    layouts = _layouts(channels, labels, described_in)
    four_d = Layout("4d", lambda root: find_4d_cases(root, list(range(len(channels))), labels, "4d"))
    dicom = Layout("dicom", lambda root: find_dicom_cases(root, channels, labels))
    return Task(
        "generic",
        tuple(channels),
        layouts,
        scheme,
        prediction_layouts=(*layouts, four_d, dicom),
        default_config="ct_cpu" if CT_CHANNELS & set(channels) else "brats_smoke",
        overlay_channels=(channels[0],),
        empty_hd95_mm=None,
    )


def _layouts(channels: list[str], labels: dict[str, int], described_in: Path | None) -> tuple[Layout, ...]:
    def nnunet(root: Path) -> list[Case]:
        if described_in is not None:
            _refuse_undeclared_channels(root, channels, described_in)
        return find_nnunet_cases(root, len(channels), labels, "nnunet")

    return (
        Layout("nnunet", nnunet),
        Layout("folders", lambda root: find_suffix_cases(root, channels, "seg", "_", labels, "folders")),
    )


def _refuse_undeclared_channels(root: Path, channels: list[str], meta_path: Path) -> None:
    """A `CASE_0001` file that dataset.json does not declare would be left out of training without a word."""
    extra = nnunet_files_beyond(root, len(channels))
    if extra:
        declared = ", ".join(f'"{i}": {name}' for i, name in enumerate(channels))
        raise DataError(
            f"dataset.json declares {len(channels)} channel(s) ({declared}), but {len(extra)} file(s) of another "
            f"channel are there, e.g. {extra[0].relative_to(root)}",
            path=str(meta_path),
            hint="add that channel to channel_names, or remove those files",
        )


def write_synthetic_ct_dataset(
    out_dir: Path,
    cases: int,
    seed: int = 0,
    on_case: Callable[[str], None] | None = None,
    matrices: Sequence[int] = (192, 224, 256),
) -> list[str]:
    """Synthetic abdominal CT (`synth.ct`) in the nnU-Net v2 layout with its dataset.json: channel `CT`, labels
    liver / kidney / spleen. Each case has its own in-plane matrix (one of `matrices` over a 330-420 mm field) and
    slice thickness (2.5-5 mm), stored LPS as scanners export it. Case i comes from seed `seed * 100003 + i`."""
    from medseg.io.nifti import save_nifti
    from medseg.synth import to_lps
    from medseg.synth.ct import CT_LABELS, ct_case, ct_grid

    out = Path(out_dir)
    ids = []
    for i in range(cases):
        rng = np.random.default_rng(seed * 100003 + i)
        shape, spacing = ct_grid(rng, int(rng.choice(list(matrices))))
        case = ct_case(shape, spacing, seed=seed * 100003 + i)
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
        affine[:3, 3] = [(shape[0] - 1) * spacing[0] / 2, (shape[1] - 1) * spacing[1] / 2, -shape[2] * spacing[2] / 2]
        cid = f"CT_{i:03d}"
        save_nifti(to_lps(case.image), affine, out / "imagesTr" / f"{cid}_0000.nii.gz", np.int16)
        save_nifti(to_lps(case.label), affine, out / "labelsTr" / f"{cid}.nii.gz")
        ids.append(cid)
        if on_case:
            on_case(cid)
    meta = {
        "name": "medseg synthetic abdominal CT",
        "description": "synthetic shapes with realistic HU, not patient data",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **CT_LABELS},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=1))
    return ids
