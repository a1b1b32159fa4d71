"""`medseg predict --model MODEL INPUT_DIR OUTPUT_DIR`: batch inference on a folder of NIfTI cases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from medseg.cli.options import TrackingUriOpt

if TYPE_CHECKING:
    from medseg.inference.predictor import CaseResult

console = Console()


def _shard(part: str | None) -> tuple[int, int]:
    """(i, n) from `--part i/n`, else from torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if part:
        try:
            i, n = (int(x) for x in part.split("/"))
        except ValueError:
            raise typer.BadParameter("use i/n, e.g. 0/4", param_hint="--part") from None
        if not 0 <= i < n:
            raise typer.BadParameter("need 0 <= i < n", param_hint="--part")
        return i, n
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def predict(
    input_dir: Path = typer.Argument(..., help="Folder of cases (BraTS 2021/2023, MSD 4D, nnU-Net CASE_000X)."),
    output_dir: Path = typer.Argument(..., help="Where <case_id>.nii.gz label maps are written."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Checkpoint file, runs:/<id>/model or models:/<name>@<alias>."
    ),
    overlap: float | None = typer.Option(
        None, "--overlap", min=0.0, max=0.95, help="Sliding-window overlap (default 0.5)."
    ),
    sw_batch_size: int | None = typer.Option(None, "--sw-batch-size", min=1),
    tta: bool = typer.Option(False, "--tta", help="Average over the 8 axis flips."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write float16 region probabilities."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose output exists."),
    allow_missing_modality: bool = typer.Option(
        False, "--allow-missing-modality", help="Mask missing channels (cross-modal models)."
    ),
    overlays: bool = typer.Option(False, "--overlays", help="Write overlay PNGs to OUTPUT_DIR/overlays."),
    fp32: bool = typer.Option(False, "--fp32", help="Disable bf16 autocast on CUDA."),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Keep every connected component (skip the model's chosen clean-up)."
    ),
    single_pass: bool = typer.Option(
        False,
        "--single-pass",
        help="One forward pass over the whole foreground box instead of sliding windows (faster on CPU, but "
        "lower Dice for models trained on small patches: see benchmarks/RESULTS.md).",
    ),
    part: str | None = typer.Option(None, "--part", help="Predict shard i of n: --part 0/4."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    tracking_uri: str | None = TrackingUriOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List the files that are not part of any case."),
) -> None:
    """Predict every case of a folder; bad cases are reported and skipped; exit 1 if any failed."""
    from medseg.cli.data import report_unused
    from medseg.data.layouts import detect_cases
    from medseg.inference.model_source import MLFLOW_SCHEMES, load_bundle
    from medseg.inference.predictor import (
        PredictOptions,
        check_output_dir,
        model_fingerprint,
        predict_folder,
    )
    from medseg.training.run import resolve_device
    from medseg.transforms.postprocess import describe_plan
    from pipelines import prediction_layouts

    bundle = load_bundle(model, tracking_uri)
    _, cases = detect_cases(input_dir, prediction_layouts(bundle.task, bundle.channels, bundle.label_map))
    i, n = _shard(part)
    if i == 0:
        report_unused(input_dir, cases, verbose, console)
    cases = cases[i::n]
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    check_output_dir(output_dir, model_fingerprint(bundle), overwrite)
    infer = bundle.infer.override(
        overlap=overlap, sw_batch_size=sw_batch_size, tta=tta or None, postprocess={} if no_postprocess else None
    )
    opts = PredictOptions(
        infer=infer,
        save_probabilities=save_probabilities,
        overwrite=overwrite,
        allow_missing=allow_missing_modality,
        overlays=overlays,
        amp=not fp32,
        single_pass=single_pass,
        device=dev,
    )
    fmt = (
        "the weights-only bundle inside the MLflow model (its pickled module is never loaded)"
        if model.startswith(MLFLOW_SCHEMES)
        else "a weights-only checkpoint"
    )
    console.print(
        f"{len(cases)} case(s), model {bundle.model_name} ({', '.join(bundle.channels)}) from {fmt}, on {dev}",
        highlight=False,
    )
    console.print(f"post-processing: {describe_plan(infer.postprocess or {})}", highlight=False)
    progress = Progress(
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

    def on_case(r: CaseResult) -> None:
        progress.advance(task_id)
        if r.status == "failed":
            progress.console.print(f"[red]failed[/] {r.error}", highlight=False)
        elif r.status == "ok":
            extra = f"  [yellow]warning: {'; '.join(r.warnings)}[/]" if r.warnings else ""
            progress.console.print(f"[green]ok[/] {r.id} {r.seconds:.1f}s{extra}", highlight=False)

    with progress:
        task_id = progress.add_task("predict", total=len(cases))
        results = predict_folder(cases, bundle, output_dir, opts, on_case)
    _summary(results, output_dir)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def _summary(results: list[CaseResult], output_dir: Path) -> None:
    table = Table(title="prediction summary", show_lines=False)
    for col in ("status", "cases", "mean s/case"):
        table.add_column(col)
    for status in ("ok", "skipped", "failed"):
        rows = [r for r in results if r.status == status]
        if rows:
            secs = sum(r.seconds for r in rows) / len(rows)
            table.add_row(status, str(len(rows)), f"{secs:.2f}" if status == "ok" else "-")
    console.print(table)
    from medseg.inference.predictor import peak_memory_gb

    mem = peak_memory_gb()
    gpu = f", GPU {mem['gpu']:.1f} GiB" if "gpu" in mem else ""
    console.print(f"peak memory: {mem['rss']:.1f} GiB resident{gpu}", highlight=False)
    console.print(f"outputs and predict_report.json in {output_dir}", highlight=False)
