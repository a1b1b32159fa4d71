"""`medseg data scan|synth`: discover and validate datasets, write manifests, make synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import track

from medseg.data.layouts import unused_files
from medseg.data.manifest import save_manifest
from medseg.data.task import Case
from medseg.data.validate import relativise, scan_dataset
from medseg.errors import DataError
from pipelines import get_task
from pipelines.brats import write_synthetic_dataset

app = typer.Typer(help="Scan, validate and synthesise datasets.", no_args_is_help=True)
console = Console()


def report_unused(root: Path, cases: list[Case], verbose: bool, out: Console = console) -> None:
    """Name the files no case reads (`--verbose`), or count them, so a misnamed modality is not silently skipped."""
    unused = unused_files(root, cases)
    if not unused:
        return
    if verbose:
        for p in unused:
            out.print(f"[dim]ignored[/] {p.relative_to(root)}", highlight=False)
    else:
        out.print(f"[dim]{len(unused)} file(s) not part of any case ignored (--verbose lists them)[/]", highlight=False)


def scan_to_manifest(
    data_dir: Path,
    task_name: str,
    out: Path,
    folds: int,
    seed: int,
    skip_bad: bool,
    quiet: bool = False,
    verbose: bool = False,
) -> Path:
    """Scan `data_dir`, print bad cases one line each, write the manifest; raise if any is bad unless skipped."""
    task = get_task(task_name, data_dir)
    manifest, bad = scan_dataset(data_dir, task, folds=folds, seed=seed)
    if not quiet:
        report_unused(data_dir, [*(c.case for c in manifest.cases), *(c for c, _ in bad)], verbose)
    for _case, err in bad:
        console.print(f"[red]bad case[/] {err}", highlight=False)
    if not manifest.cases:
        raise DataError("no valid cases", path=str(data_dir), hint="fix the errors listed above")
    save_manifest(relativise(manifest, out.parent), out)
    if not quiet:
        console.print(
            f"[green]{len(manifest.cases)} cases[/] ({manifest.layout} layout, {folds} folds) -> {out}"
            + (f"; [red]{len(bad)} bad case(s) excluded[/]" if bad else "")
        )
    if bad and not skip_bad:
        raise DataError(f"{len(bad)} bad case(s) excluded from the manifest", hint="fix them or pass --skip-bad")
    return out


@app.command("scan")
def scan(
    data_dir: Path = typer.Argument(..., help="Dataset folder (BraTS 2021/2023, MSD, nnU-Net or generic)."),
    out: Path | None = typer.Option(None, "--out", help="Manifest path (default data_manifests/<dir>.json)."),
    task: str = typer.Option("brats", "--task", help="Task recipe: brats or generic."),
    folds: int = typer.Option(5, "--folds", min=1),
    seed: int = typer.Option(0, "--seed"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even if some cases were bad."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List the files that are not part of any case."),
) -> None:
    """Detect the layout, read and validate every case, write a manifest with deterministic folds."""
    out = out or Path("data_manifests") / f"{data_dir.resolve().name}.json"
    scan_to_manifest(data_dir, task, out, folds, seed, skip_bad, verbose=verbose)


@app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    cases: int = typer.Option(8, "--cases", min=1),
    layout: str = typer.Option("brats2021", "--layout", help="brats2021, brats2023 or msd."),
    shape: tuple[int, int, int] = typer.Option((240, 240, 155), "--shape", help="Volume size X Y Z."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic BraTS-like dataset in a real release's exact on-disk layout."""
    if layout not in {"brats2021", "brats2023", "msd"}:
        raise typer.BadParameter("layout must be brats2021, brats2023 or msd", param_hint="--layout")
    if min(shape) < 16:
        raise typer.BadParameter("each side must be >= 16 voxels", param_hint="--shape")
    for i in track(range(cases), description="synthesising", console=console, transient=True):
        write_synthetic_dataset(out_dir, 1, layout, shape, seed, start=i)
    console.print(f"[green]{cases} synthetic {layout} cases[/] ({shape[0]}x{shape[1]}x{shape[2]}) -> {out_dir}")
