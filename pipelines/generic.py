"""Generic recipe: any dataset described by an nnU-Net v2 style `dataset.json` (channel and label names).

Cases are `imagesTr/CASE_0000.nii.gz ...` with `labelsTr/CASE.nii.gz`, or per-case folders
`CASE/CASE_<channel>.nii.gz` with `CASE/CASE_seg.nii.gz`. Each foreground label is its own region.
"""

from __future__ import annotations

import json
from pathlib import Path

from medseg.core import LabelScheme, Layout, Task
from medseg.data.layouts import find_4d_cases, find_nnunet_cases, find_suffix_cases
from medseg.errors import DataError
from pipelines import register_task


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
def generic_task(data_dir: Path | None) -> Task:
    if data_dir is None:
        raise DataError("the generic task needs a data folder with a dataset.json", hint="pass --data DIR")
    return task_from_description(*_describe(data_dir))


def task_from_description(channels: list[str], labels: dict[str, int]) -> Task:
    """A generic task from channel names and foreground label values (as stored in a manifest)."""
    scheme = LabelScheme(
        classes=tuple(labels),
        regions={name: (name,) for name in labels},
        paint_order=tuple((name, name) for name in labels),
    )
    return Task("generic", tuple(channels), _layouts(channels, labels), scheme, "configs/brats_smoke.yaml")


def _layouts(channels: list[str], labels: dict[str, int]) -> tuple[Layout, ...]:
    return (
        Layout("nnunet", lambda root: find_nnunet_cases(root, len(channels), labels, "nnunet"), labels),
        Layout("folders", lambda root: find_suffix_cases(root, channels, "seg", "_", labels, "folders"), labels),
    )


def prediction_layouts(channels: list[str], labels: dict[str, int]) -> tuple[Layout, ...]:
    """Training layouts plus one 4D file per case with the channels in the model's order."""
    four_d = Layout("4d", lambda root: find_4d_cases(root, list(range(len(channels))), labels, "4d"), labels)
    return (*_layouts(channels, labels), four_d)
