"""`medseg evaluate PRED_DIR GT_DIR`: per-case region Dice/HD95/volumes (+ lesion-wise) and a summary."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli.options import TrackingUriOpt
from medseg.data.layouts import detect_cases
from medseg.errors import DataError
from medseg.io.atomic import atomic_write_text
from medseg.io.tables import rows_to_csv
from medseg.tracking import resolve_tracking_uri
from pipelines import get_task

console = Console()


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of <case>.nii.gz predictions."),
    gt_dir: Path = typer.Argument(..., help="Dataset folder with ground-truth labels (any known layout)."),
    out: Path = typer.Option(Path("metrics.csv"), "--out", help="Per-case CSV (summary JSON written beside it)."),
    task: str = typer.Option("brats", "--task", help="Task recipe (brats, generic)."),
    run: str | None = typer.Option(None, "--run", help="Log test_* metrics and the CSV to this MLflow run."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Evaluate predictions against labels by case id (BraTS conventions for empty regions)."""
    from medseg.evaluation.evaluate import evaluate_folder, summarise
    from medseg.evaluation.metrics import CONVENTION

    if not pred_dir.is_dir():
        raise DataError("prediction folder not found", path=str(pred_dir))
    task_obj = get_task(task, gt_dir)
    _, gt_cases = detect_cases(gt_dir, task_obj.layouts)
    result = evaluate_folder(pred_dir, gt_cases, task_obj.scheme)
    for _, err in result.failed:
        console.print(f"[red]failed[/] {err}", highlight=False)
    if result.unmatched_pred:
        names = ", ".join(result.unmatched_pred[:10])
        console.print(f"[yellow]{len(result.unmatched_pred)} prediction(s) without ground truth[/]: {names}")
    if result.unmatched_gt:
        names = ", ".join(result.unmatched_gt[:10])
        console.print(f"[yellow]{len(result.unmatched_gt)} labelled case(s) without prediction[/]: {names}")
    if not result.rows:
        raise DataError(
            "no case could be evaluated",
            path=str(pred_dir),
            hint="prediction files must be named <case_id>.nii.gz",
        )
    summary = summarise(result.rows)
    atomic_write_text(out, rows_to_csv(result.rows))
    summary_path = out.with_suffix(".summary.json")
    atomic_write_text(
        summary_path,
        json.dumps({"convention": CONVENTION, "cases": len(result.rows), "metrics": summary}, indent=1),
    )
    regions = task_obj.scheme.region_names
    table = Table(title=f"evaluation of {len(result.rows)} cases (mean ± std)", caption=CONVENTION)
    table.add_column("metric")
    for r in regions:
        table.add_column(r, justify="right")
    for metric, fmt in (
        ("dice", "{:.3f}"),
        ("hd95", "{:.1f}"),
        ("lesion_dice", "{:.3f}"),
        ("lesion_hd95", "{:.1f}"),
    ):
        cells = []
        for r in regions:
            s = summary[f"{metric}_{r.lower()}"]
            cells.append(f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}")
        table.add_row(metric + (" (mm)" if "hd95" in metric else ""), *cells)
    console.print(table)
    console.print(f"per-case metrics: {out}   summary: {summary_path}", highlight=False)
    if run:
        from medseg.tracking.mlflow_tracker import log_to_existing_run

        metrics = {f"test_{k}": v["mean"] for k, v in summary.items()}
        log_to_existing_run(run, resolve_tracking_uri(tracking_uri), metrics, [out, summary_path])
        console.print(f"logged {len(metrics)} test metrics to run {run}")
    if result.failed:
        raise typer.Exit(1)
