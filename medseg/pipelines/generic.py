"""Generic recipe: any dataset described by an nnU-Net v2 style `dataset.json` (channel and label names).

Cases are `imagesTr/CASE_0000.nii.gz ...` with `labelsTr/CASE.nii.gz`, or per-case folders
`CASE/CASE_<channel>.nii.gz` with `CASE/CASE_seg.nii.gz`. Each foreground label is its own class (softmax).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.core import LabelScheme, Layout, Task
from medseg.data.layouts import find_4d_cases, find_nnunet_cases, find_suffix_cases
from medseg.errors import DataError
from medseg.io.atomic import atomic_write_text
from medseg.io.dicom import find_dicom_cases
from medseg.pipelines import register_task
from medseg.transforms.intensity import CT_CHANNELS


def _describe(data_dir: Path) -> tuple[list[str], dict[str, int]]:
    meta_path = data_dir / "dataset.json"
    if not meta_path.is_file():
        raise DataError(
            "generic task needs a dataset.json",
            path=str(meta_path),
            hint='write {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}',
        )
    try:
        meta = json.loads(meta_path.read_text())
        channels = [str(meta["channel_names"][k]).lower() for k in sorted(meta["channel_names"], key=int)]
        labels = {str(k): int(v) for k, v in meta["labels"].items() if int(v) != 0}
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"malformed dataset.json ({exc.__class__.__name__})", path=str(meta_path)) from None
    if not channels or not labels:
        raise DataError("dataset.json lists no channels or no foreground labels", path=str(meta_path))
    return channels, labels


@register_task("generic")
def generic_task(
    data_dir: Path | None, channels: Sequence[str] | None = None, labels: dict[str, int] | None = None
) -> Task:
    """From a data folder's dataset.json (scan), or from stored channels and labels (manifest, model bundle)."""
    if channels is None or labels is None:
        if data_dir is None:
            raise DataError("the generic task needs a data folder with a dataset.json", hint="pass --data DIR")
        channels, labels = _describe(data_dir)
    return task_from_description(list(channels), dict(labels))


def task_from_description(channels: list[str], labels: dict[str, int]) -> Task:
    """A generic task from channel names and foreground label values: one region per label, the labels of a plain
    label map being mutually exclusive classes (softmax, as nnU-Net trains non-region datasets)."""
    scheme = LabelScheme(
        classes=tuple(labels),
        regions={name: (name,) for name in labels},
        paint_order=tuple((name, name) for name in labels),
        exclusive=True,
    )
    layouts = _layouts(channels, labels)
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


def _layouts(channels: list[str], labels: dict[str, int]) -> tuple[Layout, ...]:
    return (
        Layout("nnunet", lambda root: find_nnunet_cases(root, len(channels), labels, "nnunet")),
        Layout("folders", lambda root: find_suffix_cases(root, channels, "seg", "_", labels, "folders")),
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
