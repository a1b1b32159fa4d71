"""Scanning: validate every case by reading its data, and build a manifest of the good ones."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from medseg.core import Case, Task
from medseg.data.layouts import detect_cases
from medseg.data.manifest import Manifest, ManifestCase, assign_folds, check_case_id
from medseg.errors import DataError
from medseg.io.nifti import read_case


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
    good: list[tuple[Case, tuple, tuple]] = []
    bad: list[tuple[Case, DataError]] = []
    for case in cases:
        try:
            check_case_id(case.id, str(data_dir))
            vols = read_case(case, with_label=True)
            good.append((case, vols.image.shape[1:], vols.spacing))
            err = None
        except DataError as exc:
            bad.append((case, exc))
            err = exc
        if on_case:
            on_case(case, err)
    fold_of = assign_folds([c.id for c, _, _ in good], folds, seed)
    manifest = Manifest(
        task=task.name,
        layout=layout.name,
        channels=list(task.channels),
        label_map=dict(cases[0].label_map),  # a layout's cases share one convention
        cases=[ManifestCase(c, tuple(s), tuple(sp), fold_of[c.id]) for c, s, sp in good],
    )
    return manifest, bad


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
        out.append(ManifestCase(new, mc.shape, mc.spacing, mc.fold))
    return Manifest(manifest.task, manifest.layout, manifest.channels, manifest.label_map, out)
