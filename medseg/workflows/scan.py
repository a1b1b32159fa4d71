"""Scan a dataset folder: detect its layout, validate every case by reading it, write a manifest with folds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.core import Case
from medseg.data.layouts import unused_files
from medseg.data.manifest import Manifest, save_manifest
from medseg.data.validate import relativise, scan_dataset
from medseg.errors import DataError
from medseg.io.atomic import check_writable
from medseg.pipelines import get_task


@dataclass
class ScanResult:
    """The manifest written to `path`, the cases excluded with their reasons, and files that belong to no case."""

    manifest: Manifest
    path: Path
    bad: list[tuple[Case, DataError]]
    unused: list[Path]
    absent_regions: list[str]  # regions no case's label holds (a label declared but never drawn)


def scan(
    data_dir: Path,
    task_name: str,
    out: Path,
    *,
    folds: int = 5,
    seed: int = 0,
    on_case: Callable[[Case, DataError | None], None] | None = None,
) -> ScanResult:
    """Write the manifest of the good cases of `data_dir` to `out` (paths relative to it); raise if none is good."""
    check_writable(out)  # before reading every case
    task = get_task(task_name, data_dir)
    manifest, bad = scan_dataset(data_dir, task, folds=folds, seed=seed, on_case=on_case)
    unused = unused_files(data_dir, [*(c.case for c in manifest.cases), *(c for c, _ in bad)])
    if not manifest.cases:
        raise _no_valid_case(data_dir, [err for _, err in bad])
    save_manifest(relativise(manifest, out.parent), out)
    return ScanResult(manifest, out, bad, unused, manifest.absent_regions(task.scheme.regions))


def _no_valid_case(data_dir: Path, errors: list[DataError]) -> DataError:
    """Every case is bad: the first one's problem and fix, and where to see the others."""
    if not errors:
        return DataError("no valid cases", path=str(data_dir))
    first = errors[0]
    others = f"; {len(errors) - 1} other bad case(s): `medseg data scan {data_dir}` lists them" if errors[1:] else ""
    return DataError(f"no valid cases ({first.message}{others})", path=first.path, case=first.case, hint=first.hint)
