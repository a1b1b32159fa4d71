"""BraTS recipe: four MRI channels (T1, T1ce, T2, FLAIR), three layouts in the wild, ET/TC/WT regions."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.core import LabelScheme, Layout, Task
from medseg.data.layouts import find_4d_cases, find_suffix_cases
from medseg.errors import DataError
from medseg.io.dicom import find_dicom_cases
from medseg.io.nifti import save_nifti
from medseg.pipelines import register_task
from medseg.pipelines.brats_nnunet import find_brats_nnunet_cases
from medseg.synth import BRATS_SHAPE, EDEMA, ENHANCING, NECROTIC, Kind, brats_affine, synth_case, to_lps

CHANNELS = ("t1", "t1ce", "t2", "flair")
SCHEME = LabelScheme(
    classes=("necrotic", "edema", "enhancing"),
    regions={"ET": ("enhancing",), "TC": ("necrotic", "enhancing"), "WT": ("necrotic", "edema", "enhancing")},
    paint_order=(("WT", "edema"), ("TC", "necrotic"), ("ET", "enhancing")),
)
LABELS_2021 = {"necrotic": 1, "edema": 2, "enhancing": 4}
LABELS_2023 = {"necrotic": 1, "edema": 2, "enhancing": 3}
LABELS_MSD = {"edema": 1, "necrotic": 2, "enhancing": 3}  # MSD: 2 = non-enhancing tumour
SUFFIXES_2021 = ("t1", "t1ce", "t2", "flair")
SUFFIXES_2023 = ("t1n", "t1c", "t2w", "t2f")
MSD_ORDER = ("flair", "t1", "t1ce", "t2")  # Task01_BrainTumour's 4D channel order
SYNTH_LAYOUTS = ("brats2021", "brats2023", "msd")

LAYOUTS = (
    Layout("brats2021", lambda root: find_suffix_cases(root, SUFFIXES_2021, "seg", "_", LABELS_2021, "brats2021")),
    Layout("brats2023", lambda root: find_suffix_cases(root, SUFFIXES_2023, "seg", "-", LABELS_2023, "brats2023")),
    Layout("msd", lambda root: find_4d_cases(root, [MSD_ORDER.index(c) for c in CHANNELS], LABELS_MSD, "msd")),
    # nnU-Net style CASE_0000 ...: channel order and label codes from its dataset.json, never assumed.
    Layout("nnunet", lambda root: find_brats_nnunet_cases(root, CHANNELS)),
)


EMPTY_HD95_MM = 373.13  # the 240x240x155 image diagonal: BraTS's HD95 when exactly one mask is empty
TASK = Task(
    "brats",
    CHANNELS,
    LAYOUTS,
    SCHEME,
    # DICOM: one folder per case, one series per channel named in its SeriesDescription
    prediction_layouts=(*LAYOUTS, Layout("dicom", lambda root: find_dicom_cases(root, list(CHANNELS), LABELS_2021))),
    default_config="brats_cpu",
    overlay_channels=("flair", "t1ce"),
    empty_hd95_mm=EMPTY_HD95_MM,
)


@register_task("brats")
def brats_task(
    _data_dir: Path | None = None, channels: Sequence[str] | None = None, _label_map: dict[str, int] | None = None
) -> Task:
    """BraTS in any of its layouts; every BraTS model works in the canonical channel order."""
    if channels is not None and tuple(channels) != CHANNELS:
        raise DataError(f"BraTS channels must be {CHANNELS}, got {tuple(channels)}")
    return TASK


def _native(label: np.ndarray, label_map: dict[str, int]) -> np.ndarray:
    out = np.zeros(label.shape, np.uint8)
    for code, name in ((NECROTIC, "necrotic"), (EDEMA, "edema"), (ENHANCING, "enhancing")):
        out[label == code] = label_map[name]
    return out


@dataclass(frozen=True)
class _Job:
    out: Path
    index: int
    layout: str
    shape: tuple[int, int, int]
    seed: int
    kind: Kind


def _case_id(layout: str, i: int) -> str:
    return {"brats2021": f"BraTS2021_{i:05d}", "brats2023": f"BraTS-GLI-{i:05d}-000", "msd": f"BRATS_{i + 1:03d}"}[
        layout
    ]


def _write_case(job: _Job) -> str:
    """Generate one case and write it in the layout's files (run in a worker process)."""
    ras_images, ras_label, spacing = synth_case(job.kind, job.shape, job.seed)
    images = {ch: to_lps(v) for ch, v in ras_images.items()}
    label = to_lps(ras_label)
    affine = brats_affine(job.shape, spacing)
    out, cid = job.out, _case_id(job.layout, job.index)
    if job.layout == "brats2021":
        for ch, sfx in zip(CHANNELS, SUFFIXES_2021, strict=True):
            # Real 2021 releases store int16 intensities: exercise the dtype conversion.
            save_nifti(np.round(images[ch]), affine, out / cid / f"{cid}_{sfx}.nii.gz", np.int16)
        save_nifti(_native(label, LABELS_2021), affine, out / cid / f"{cid}_seg.nii.gz")
    elif job.layout == "brats2023":
        for ch, sfx in zip(CHANNELS, SUFFIXES_2023, strict=True):
            save_nifti(images[ch], affine, out / cid / f"{cid}-{sfx}.nii.gz", np.float32)
        save_nifti(_native(label, LABELS_2023), affine, out / cid / f"{cid}-seg.nii.gz")
    else:
        stack = np.stack([images[c] for c in MSD_ORDER], axis=-1)
        save_nifti(stack, affine, out / "imagesTr" / f"{cid}.nii.gz", np.float32)
        save_nifti(_native(label, LABELS_MSD), affine, out / "labelsTr" / f"{cid}.nii.gz")
    return cid


def write_synthetic_dataset(
    out_dir: str | Path,
    cases: int,
    layout: str = "brats2021",
    shape: tuple[int, int, int] = BRATS_SHAPE,
    seed: int = 0,
    start: int = 0,
    kind: Kind = "anatomy",
    workers: int = 1,
    on_case: Callable[[str], None] | None = None,
) -> list[str]:
    """Write `cases` synthetic cases in the exact on-disk layout of a BraTS release; returns case ids.

    Case i is generated from seed `seed * 100003 + i` whatever `workers` is, so a dataset is reproducible.
    `workers > 1` generates cases in that many processes (~10 s and ~1.5 GB each at 240x240x155).
    """
    if layout not in SYNTH_LAYOUTS:
        raise ValueError(f"unknown layout {layout}")
    out = Path(out_dir)
    jobs = [_Job(out, i, layout, tuple(shape), seed * 100003 + i, kind) for i in range(start, start + cases)]
    ids = []
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding torch threads
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            for cid in pool.map(_write_case, jobs):
                ids.append(cid)
                if on_case:
                    on_case(cid)
    else:
        for job in jobs:
            ids.append(_write_case(job))
            if on_case:
                on_case(ids[-1])
    if layout == "msd":
        _write_msd_description(out)
    return ids


def _write_msd_description(out: Path) -> None:
    all_ids = sorted(p.name[: -len(".nii.gz")] for p in (out / "imagesTr").glob("*.nii.gz"))
    meta = {
        "name": "BRATS",
        "modality": {str(i): m.upper() for i, m in enumerate(MSD_ORDER)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(all_ids),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in all_ids],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
