"""Generic recipe: any dataset described by an nnU-Net v2 style `dataset.json` (channel and label names).

Cases are `imagesTr/CASE_0000.nii.gz ...` with `labelsTr/CASE.nii.gz`, or per-case folders
`CASE/CASE_<channel>.nii.gz` with `CASE/CASE_seg.nii.gz`. Each foreground label is its own region.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from medseg.core import LabelScheme, Layout, Task
from medseg.data.layouts import find_4d_cases, find_nnunet_cases, find_suffix_cases
from medseg.errors import DataError
from medseg.io.dicom import find_dicom_cases
from medseg.pipelines import register_task


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
    """A generic task from channel names and foreground label values: one region per label."""
    scheme = LabelScheme(
        classes=tuple(labels),
        regions={name: (name,) for name in labels},
        paint_order=tuple((name, name) for name in labels),
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
        default_config="brats_smoke",
        overlay_channels=(channels[0],),
        empty_hd95_mm=None,
    )


def _layouts(channels: list[str], labels: dict[str, int]) -> tuple[Layout, ...]:
    return (
        Layout("nnunet", lambda root: find_nnunet_cases(root, len(channels), labels, "nnunet")),
        Layout("folders", lambda root: find_suffix_cases(root, channels, "seg", "_", labels, "folders")),
    )
