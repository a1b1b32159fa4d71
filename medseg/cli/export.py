"""`medseg export --model MODEL --out model.onnx`: a self-contained, verified ONNX file for deployment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from medseg.cli.options import TrackingUriOpt

console = Console()


def export(
    model: str = typer.Option(
        ..., "--model", "-m", help="Checkpoint file, runs:/<id>/model or models:/<name>@<alias>."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (TensorRT: build an engine from it with trtexec)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision weights and arithmetic (for GPUs)."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantisation (ONNX Runtime), needs --calibration."),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="A folder of cases whose windows calibrate the int8 ranges."
    ),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Export the network with its metadata (channels, regions, label map, patch size, post-processing), verified
    against PyTorch: an export that differs beyond its tolerance is not written."""
    from medseg.cli.progress import InterruptAdvice
    from medseg.io.atomic import check_writable
    from medseg.workflows.export import export_model

    InterruptAdvice.text = f"{out} is left as it was (only a complete, verified export replaces it); re-run the export"

    if fmt.lower() != "onnx":
        raise typer.BadParameter("only onnx (a TensorRT engine is built from the ONNX file)", param_hint="--format")
    if fp16 and int8:
        raise typer.BadParameter("choose one of --fp16 and --int8", param_hint="--fp16/--int8")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    if calibration is not None and not int8:
        raise typer.BadParameter("only int8 is calibrated: add --int8 or drop it", param_hint="--calibration")
    if out.suffix != ".onnx":
        raise typer.BadParameter(f"an ONNX file is written: name it *.onnx (not {out.name})", param_hint="--out")
    check_writable(out)  # before the export and its check: a wrong path should not cost them
    with console.status(f"exporting {precision} ONNX and checking it against PyTorch"):
        report = export_model(model, out, precision, calibration, tracking_uri)
    console.print(
        f"[green]exported[/] {escape(str(report.path))} ({report.size_mb:.1f} MB, {report.precision}, "
        f"{report.spatial} spatial axes); max probability difference to PyTorch fp32 {report.max_prob_diff:.2g} "
        f"(tolerance {report.tolerance:g})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"predict with: medseg predict --model {report.path} IN OUT", highlight=False, soft_wrap=True, markup=False
    )
