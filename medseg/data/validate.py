"""Scanning: validate every case by reading its data, and build a manifest of the good ones (with the foreground
intensity statistics of CT channels, which CT normalisation needs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.core import Case, Task
from medseg.data.layouts import detect_cases
from medseg.data.manifest import Manifest, ManifestCase, assign_folds, check_case_id
from medseg.errors import DataError
from medseg.io.nifti import read_case
from medseg.transforms.intensity import CT_CHANNELS, foreground_statistics, sample_foreground


def scan_dataset(
    data_dir: str | Path,
    task: Task,
    *,
    folds: int = 5,
    seed: int = 0,
    on_case: Callable[[Case, DataError | None], None] | None = None,
) -> tuple[Manifest, list[tuple[Case, DataError]]]:
    """Detect the layout, read and validate every case; returns the manifest of good cases and the bad ones."""
    layout, cases = detect_cases(data_dir, task.layouts)
    good: list[tuple[Case, tuple, tuple, tuple | None]] = []
    bad: list[tuple[Case, DataError]] = []
    ct = [i for i, name in enumerate(task.channels) if name in CT_CHANNELS]
    samples: dict[int, list[np.ndarray]] = {i: [] for i in ct}
    for n, case in enumerate(cases):
        try:
            check_case_id(case.id, str(data_dir))
            vols = read_case(case, with_label=True)
            if ct and vols.label is not None:
                for i in ct:
                    samples[i].append(sample_foreground(vols.image[i], vols.label > 0, seed=seed + n))
            good.append((case, vols.image.shape[1:], vols.spacing, _label_values(vols.label)))
            err = None
        except DataError as exc:
            bad.append((case, exc))
            err = exc
        if on_case:
            on_case(case, err)
    fold_of = assign_folds([c.id for c, *_ in good], folds, seed)
    manifest = Manifest(
        task=task.name,
        layout=layout.name,
        channels=list(task.channels),
        label_map=dict(cases[0].label_map),  # a layout's cases share one convention
        cases=[ManifestCase(c, tuple(s), tuple(sp), fold_of[c.id], v) for c, s, sp, v in good],
        intensity_stats={
            task.channels[i]: foreground_statistics(np.concatenate(v)) for i, v in samples.items() if sum(map(len, v))
        },
    )
    return manifest, bad


def _label_values(label: np.ndarray | None) -> tuple[int, ...] | None:
    """The nonzero values a (validated, non-negative) label map holds: a class no case has cannot be learned, and
    scores Dice 1 (both empty) in every validation case."""
    if label is None:
        return None
    return tuple(int(v) for v in np.flatnonzero(np.bincount(label.ravel())) if v)


def relativise(manifest: Manifest, base: Path) -> Manifest:
    """Store file paths relative to the manifest's folder where possible, so datasets can move with it."""

    def rel(p: str) -> str:
        return os.path.relpath(Path(p).resolve(), base.resolve())

    out = []
    for mc in manifest.cases:
        c = mc.case
        new = Case(
            c.id,
            tuple(rel(p) for p in c.images),
            c.channel_index,
            rel(c.label) if c.label else None,
            c.label_map,
            c.layout,
        )
        out.append(ManifestCase(new, mc.shape, mc.spacing, mc.fold, mc.label_values))
    return Manifest(
        manifest.task, manifest.layout, manifest.channels, manifest.label_map, out, manifest.intensity_stats
    )
