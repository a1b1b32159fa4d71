"""`medseg predict --model MODEL INPUT_DIR OUTPUT_DIR`: batch inference on a folder of NIfTI cases."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from medseg.cli.options import DeviceOpt, TrackingUriOpt

if TYPE_CHECKING:
    from medseg.inference.output_folder import CaseResult

console = Console()


def _part(part: str | None) -> tuple[int, int] | None:
    """(i, n) from `--part i/n`."""
    if not part:
        return None
    try:
        i, n = (int(x) for x in part.split("/"))
    except ValueError:
        raise typer.BadParameter("use i/n, e.g. 0/4", param_hint="--part") from None
    if not 0 <= i < n:
        raise typer.BadParameter("need 0 <= i < n", param_hint="--part")
    return i, n


class OutputFormat(str, Enum):
    nifti = "nifti"
    dicom_seg = "dicom-seg"


def predict(
    input_dir: Path = typer.Argument(
        ..., help="Folder of cases (BraTS 2021/2023, MSD 4D, nnU-Net CASE_000X, or one DICOM folder per case)."
    ),
    output_dir: Path = typer.Argument(..., help="Where <case_id>.nii.gz label maps are written."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Checkpoint file, runs:/<id>/model or models:/<name>@<alias>."
    ),
    overlap: float | None = typer.Option(
        None, "--overlap", min=0.0, max=0.95, help="Sliding-window overlap (default: the model's, 0.5)."
    ),
    sw_batch_size: int | None = typer.Option(
        None, "--sw-batch-size", min=1, help="Windows per forward pass (default: the model's)."
    ),
    tta: bool = typer.Option(False, "--tta", help="Average over the 8 axis flips."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write float16 region probabilities (before post-processing)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose output exists."),
    allow_missing_modality: bool = typer.Option(
        False, "--allow-missing-modality", help="Mask missing channels (cross-modal models)."
    ),
    overlays: bool = typer.Option(False, "--overlays", help="Write overlay PNGs to OUTPUT_DIR/overlays."),
    output_format: OutputFormat = typer.Option(
        OutputFormat.nifti,
        "--output-format",
        help="nifti: <case>.nii.gz; dicom-seg: also <case>.dcm, a DICOM-SEG referencing the source series "
        "(DICOM input only).",
    ),
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
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="auto: the fastest engine of this machine that matches PyTorch fp32, measured on first use per model "
        "and cached; or torch, torch-bf16 (CPUs with AVX-512 BF16 / AMX), onnxruntime, openvino, "
        "tensorrt (FP16 on a CUDA GPU).",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="Processes that read and preprocess cases ahead of the network (a third as many write behind it); "
        "default: none on the CPU (the network's threads need every core), one per core but one on a GPU; "
        "0: all in this process.",
    ),
    steps_on_device: bool | None = typer.Option(
        None,
        "--steps-on-device/--steps-on-host",
        help="Where each case is preprocessed (RAS, crop, normalise) and restored (threshold, labels, uncrop): on the "
        "network's device, so workers only decode and encode, or on the host. Default: the device when it is a GPU; "
        "always the host with --overlays (they draw the preprocessed image).",
    ),
    part: str | None = typer.Option(None, "--part", help="Predict shard i of n: --part 0/4."),
    device: str = DeviceOpt,
    tracking_uri: str | None = TrackingUriOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List the files that are not part of any case."),
) -> None:
    """Predict every case of a folder; bad cases are reported and skipped; exit 1 if any failed."""
    from medseg.cli.data import render_unused
    from medseg.inference.engines import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"one of {', '.join(ENGINES)}", param_hint="--engine")
    if overlays and steps_on_device:
        raise typer.BadParameter("overlays draw the preprocessed image on the host", param_hint="--steps-on-device")
    from medseg.io.atomic import check_writable
    from medseg.transforms.postprocess import describe_plan
    from medseg.workflows.predict import FolderPredictor

    check_writable(output_dir, folder=True)  # before the model load: a wrong path should not cost a minute
    predictor = FolderPredictor.from_model(
        model,
        tracking_uri,
        device=device,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        tta=tta or None,
        postprocess=not no_postprocess,
        amp=not fp32,
        allow_missing=allow_missing_modality,
        single_pass=single_pass,
        engine=engine,
        on_message=lambda text: console.print(f"[dim]{escape(text)}[/]", highlight=False, soft_wrap=True),
    )
    plan = predictor.plan(input_dir, _part(part), dicom_seg=output_format is OutputFormat.dicom_seg)
    render_unused(input_dir, plan.unused, verbose, console)
    predictor.check_output(plan, output_dir, overwrite)
    bundle = predictor.bundle
    engine = predictor.engine  # opened (or, for auto, measured) here: its messages before the summary line
    shard = f" (shard {plan.shard[0]} of {plan.shard[1]})" if plan.shard[1] > 1 else ""
    console.print(
        f"{len(plan.cases)} case(s){shard}, model {bundle.model_name} ({', '.join(bundle.channels)}) from "
        f"{predictor.source}, on {predictor.device} with {engine.name}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"post-processing: {describe_plan(predictor.infer.postprocess or {})}", highlight=False, soft_wrap=True
    )
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
            why = r.error if r.id in r.error else f"case {r.id}: {r.error}"
            progress.console.print(f"[red]failed[/] {escape(why)}", highlight=False, soft_wrap=True)
        elif r.status == "ok":
            masked = [f"no {', '.join(r.missing_modalities)}: masked"] if r.missing_modalities else []
            notes = masked + r.warnings  # a missing modality (e.g. an unrecognised DICOM series) must not pass unseen
            extra = f"  [yellow]warning: {escape('; '.join(notes))}[/]" if notes else ""
            progress.console.print(
                f"[green]ok[/] {escape(r.id)} {r.seconds:.1f}s{extra}", highlight=False, soft_wrap=True
            )

    with progress:
        task_id = progress.add_task("predict", total=len(plan.cases))
        results = predictor.run(
            plan,
            output_dir,
            overwrite=overwrite,
            save_probabilities=save_probabilities,
            overlays=overlays,
            dicom_seg=output_format is OutputFormat.dicom_seg,
            workers=workers,
            steps_on_device=steps_on_device,
            on_case=on_case,
            on_message=lambda text: progress.console.print(
                f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True
            ),
        )
    _summary(results, output_dir, plan.shard)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def _summary(results: list[CaseResult], output_dir: Path, shard: tuple[int, int]) -> None:
    """Per status: cases and mean seconds, of this process's shard when torchrun or --part split the folder (each
    prints its own table; predict_report.json merges their reports once the last one finishes)."""
    from medseg.inference.output_folder import REPORT, peak_memory_gb, report_name

    label = f" (shard {shard[0]} of {shard[1]})" if shard[1] > 1 else ""
    table = Table(title=f"prediction summary{label}", show_lines=False)
    for col in ("status", "cases", "mean s/case"):
        table.add_column(col)
    for status in ("ok", "skipped", "failed"):
        rows = [r for r in results if r.status == status]
        if rows:
            secs = sum(r.seconds for r in rows) / len(rows)
            table.add_row(status, str(len(rows)), f"{secs:.2f}" if status == "ok" else "-")
    console.print(table)
    mem = peak_memory_gb()
    gpu = f", GPU {mem['gpu']:.1f} GiB" if "gpu" in mem else ""
    console.print(f"peak memory: {mem['rss']:.1f} GiB resident{gpu}", highlight=False, soft_wrap=True)
    if shard[1] > 1:
        mine, merged = output_dir / report_name(shard), output_dir / REPORT
        done = merged.exists() and mine.exists() and merged.stat().st_mtime_ns >= mine.stat().st_mtime_ns
        where = f"outputs and this shard's {report_name(shard)} in {output_dir} (merged into predict_report.json "
        where += "now: every shard has finished)" if done else "when every shard has finished)"
    else:
        where = f"outputs and predict_report.json in {output_dir}"
    console.print(where, highlight=False, soft_wrap=True)
