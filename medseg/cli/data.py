"""`medseg data scan|synth`: discover and validate datasets, write manifests, make synthetic data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medseg.cli.options import FormatOpt, help_markup
from medseg.errors import DataError

if TYPE_CHECKING:
    from medseg.workflows.scan import ScanResult

app = typer.Typer(help="Scan, validate and synthesise datasets.", no_args_is_help=True, rich_markup_mode=help_markup())
console = Console()
err_console = Console(stderr=True)
UNUSED_IMAGES_NAMED = 5


def render_unused(root: Path, unused: list[Path], verbose: bool, out: Console = console) -> None:
    """Name the files no case reads (`--verbose`), or count them, so a misnamed modality is not silently skipped.
    Images no case reads are named anyway (the first few): `CASE_0001.nii.gz` beside a one-channel model, or
    `_t1c` in a BraTS 2021 folder, is more likely a mistake than a note."""
    if not unused:
        return
    if verbose:
        for p in unused:
            out.print(f"[dim]ignored[/] {escape(str(p.relative_to(root)))}", highlight=False)
        return
    from medseg.data.layouts import dicom_folders_among, strip_nifti

    for folder in dicom_folders_among(root, unused):
        out.print(
            f"[yellow]ignored DICOM[/] {escape(folder.name)}/: this folder is read as NIfTI cases; pass DICOM cases "
            "in a folder of their own",
            highlight=False,
        )
    images = [p for p in unused if strip_nifti(p.name) is not None]
    for p in images[:UNUSED_IMAGES_NAMED]:
        out.print(f"[yellow]ignored image[/] {escape(str(p.relative_to(root)))}: no case reads it", highlight=False)
    rest = len(unused) - min(len(images), UNUSED_IMAGES_NAMED)
    if rest:
        more = " more" if images else ""
        out.print(f"[dim]{rest}{more} file(s) not part of any case ignored (--verbose lists them)[/]", highlight=False)


@app.command("scan")
def scan(
    data_dir: Path = typer.Argument(..., help="Dataset folder (BraTS 2021/2023, MSD, nnU-Net or generic)."),
    out: Path | None = typer.Option(None, "--out", help="Manifest path (default data_manifests/<dir>.json)."),
    task: str = typer.Option("brats", "--task", help="Task recipe: brats or generic."),
    folds: int = typer.Option(5, "--folds", min=1, help="Cross-validation folds dealt over the cases."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even if some cases were bad."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List the files that are not part of any case."),
    fmt: str = FormatOpt,
) -> None:
    """Detect the layout, read and validate every case, write a manifest with deterministic folds."""
    from medseg.workflows.scan import scan as scan_folder

    people = fmt == "table"
    out = out or Path("data_manifests") / f"{data_dir.resolve().name}.json"
    shown = console if people else err_console  # for scripts stdout holds the csv/json alone
    progress = Progress(
        TextColumn("scanning"),
        TextColumn("{task.completed} case(s) read"),
        TimeElapsedColumn(),
        console=shown,
        disable=not people,
    )

    bad = []

    def on_case(case, err: DataError | None) -> None:
        progress.advance(bar)
        if err is not None:  # printed as found, so they are listed even when no case is good
            bad.append((case, err))
            shown.print(f"[red]bad:[/] {escape(str(err))}", highlight=False, soft_wrap=True)  # paths whole for grep

    with progress:
        bar = progress.add_task("scan", total=None)
        try:
            result = scan_folder(data_dir, task, out, folds=folds, seed=seed, on_case=on_case)
        except DataError:
            if bad and not people:  # no good case: scripts still get every case with its error (no manifest)
                typer.echo(_scan_report(None, bad, fmt), nl=False)
            raise
    if people:
        render_unused(data_dir, result.unused, verbose)
        console.print(
            f"[green]{len(result.manifest.cases)} cases[/] ({result.manifest.layout} layout, {folds} folds) -> {out}"
            + (f"; [red]{len(result.bad)} bad case(s) excluded[/]" if result.bad else ""),
            highlight=False,
            soft_wrap=True,
        )
        if result.absent_regions:
            console.print(
                f"[yellow]no case's label holds {', '.join(result.absent_regions)}[/]: training refuses a region it "
                "cannot learn (remove it from dataset.json's labels, or add cases that hold it)",
                highlight=False,
                soft_wrap=True,
            )
        unlabelled = [c.case.id for c in result.manifest.cases if not c.case.label]
        if unlabelled:
            console.print(
                f"[yellow]{len(unlabelled)} case(s) have no label file[/] ({', '.join(unlabelled[:5])}"
                f"{', ...' if len(unlabelled) > 5 else ''}): fine to predict, refused for training",
                highlight=False,
                soft_wrap=True,
            )
    else:
        typer.echo(_scan_report(result, result.bad, fmt), nl=False)
    if result.bad and not skip_bad:
        raise DataError(f"{len(result.bad)} bad case(s) excluded from the manifest", hint="fix them or pass --skip-bad")


def _scan_report(result: ScanResult | None, bad: list, fmt: str) -> str:
    """Every case (good with its fold, shape and spacing; `bad` with its error) as csv, or json with the manifest
    (numbers and lists there, null where a bad case has none; `128x128x40` strings in the csv). No `result`: no
    case was good, no manifest written (its fields null)."""
    from medseg.io.tables import rows_to_csv

    rows = [
        {
            "id": c.case.id,
            "status": "ok",
            "labelled": bool(c.case.label),
            "fold": c.fold,
            "shape": list(c.shape),
            "spacing": list(c.spacing),
            "error": None,
        }
        for c in (result.manifest.cases if result else [])
    ]
    rows += [
        {"id": c.id, "status": "bad", "labelled": bool(c.label), "fold": None, "shape": None, "spacing": None}
        | {"error": str(e)}
        for c, e in bad
    ]
    if fmt == "csv":
        return rows_to_csv([{k: _csv_cell(v) for k, v in row.items()} for row in rows])
    report = {
        "manifest": str(result.path) if result else None,
        "layout": result.manifest.layout if result else None,
        "cases": rows,
        "ignored_files": [str(p) for p in result.unused] if result else [],
        "absent_regions": result.absent_regions if result else [],
    }
    return json.dumps(report, indent=1) + "\n"


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


@app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    cases: int = typer.Option(8, "--cases", min=1, help="How many cases to write."),
    task: str = typer.Option(
        "brats",
        "--task",
        help="brats (BraTS-like MRI) or ct (abdominal CT with liver/kidney/spleen, nnU-Net layout, varying "
        "spacing; --layout, --kind and --shape do not apply).",
    ),
    layout: str = typer.Option("brats2021", "--layout", help="brats2021, brats2023 or msd."),
    kind: str = typer.Option(
        "anatomy", "--kind", help="anatomy (real MNI brain anatomy, BraTS-like) or simple (tiny test cases)."
    ),
    shape: tuple[int, int, int] = typer.Option(
        (240, 240, 155), "--shape", help="Volume size X Y Z (anatomy: smaller grids get a coarser spacing)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic cases (same seed, same cases)."),
    workers: int = typer.Option(
        0, "--workers", min=0, show_default=False, help="Processes (default, 0: one per core, at most 4)."
    ),
) -> None:
    """Write a synthetic BraTS-like dataset in a real release's exact on-disk layout (or a synthetic CT dataset)."""
    if task not in ("brats", "ct"):
        raise typer.BadParameter("task must be brats or ct", param_hint="--task")
    if task == "ct":
        _synth_ct(out_dir, cases, seed)
        return
    from medseg.pipelines.brats import SYNTH_LAYOUTS, write_synthetic_dataset  # the atlas: only when synthesising
    from medseg.synth import KINDS

    if layout not in SYNTH_LAYOUTS:
        raise typer.BadParameter(f"layout must be one of {', '.join(SYNTH_LAYOUTS)}", param_hint="--layout")
    if kind not in KINDS:
        raise typer.BadParameter(f"kind must be one of {', '.join(KINDS)}", param_hint="--kind")
    if min(shape) < 16:
        raise typer.BadParameter("each side must be >= 16 voxels", param_hint="--shape")
    workers = workers or min(4, os.cpu_count() or 1)
    with Progress(
        TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("synth", total=cases)
        write_synthetic_dataset(
            out_dir, cases, layout, shape, seed, kind=kind, workers=workers, on_case=lambda _: progress.advance(bar)
        )
    console.print(
        f"[green]{cases} synthetic {layout} cases[/] ({kind}, {shape[0]}x{shape[1]}x{shape[2]}) -> {out_dir}",
        highlight=False,
    )


def _synth_ct(out_dir: Path, cases: int, seed: int) -> None:
    from medseg.pipelines.generic import write_synthetic_ct_dataset

    with Progress(
        TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("synth", total=cases)
        write_synthetic_ct_dataset(out_dir, cases, seed, on_case=lambda _: progress.advance(bar))
    console.print(
        f"[green]{cases} synthetic CT cases[/] (nnU-Net layout, train with `medseg train generic`) -> {out_dir}",
        highlight=False,
    )
