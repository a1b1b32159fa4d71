"""`medseg evaluate PRED_DIR GT_DIR`: per-case region Dice/HD95/volumes (+ lesion-wise) and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medseg.cli.options import FormatOpt, TrackingUriOpt

if TYPE_CHECKING:
    from medseg.evaluation.evaluate import EvalResult

console = Console()
err_console = Console(stderr=True)
METRIC_ROWS = (
    ("dice", "dice", "{:.3f}"),
    ("hd95", "hd95 (mm)", "{:.1f}"),
    ("lesion_dice", "lesion_dice", "{:.3f}"),
    ("lesion_hd95", "lesion_hd95 (mm)", "{:.1f}"),
    ("lesion_fp", "false-positive lesions", "{:.1f}"),
    ("lesion_missed", "missed lesions", "{:.1f}"),
)


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of <case>.nii.gz predictions."),
    gt_dir: Path = typer.Argument(..., help="Dataset folder with ground-truth labels (any known layout)."),
    out: Path = typer.Option(Path("metrics.csv"), "--out", help="Per-case CSV (summary JSON written beside it)."),
    task: str = typer.Option("brats", "--task", help="Task recipe (brats, generic)."),
    missing_as_empty: bool = typer.Option(
        False,
        "--missing-as-empty",
        help="Score a labelled case without prediction as an empty mask (the BraTS challenge's rule); by default it "
        "is listed and left out of the means.",
    ),
    run: str | None = typer.Option(None, "--run", help="Log test_* metrics and the CSV to this MLflow run."),
    fmt: str = FormatOpt,
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Evaluate predictions against labels by case id (BraTS conventions for empty regions)."""
    from medseg.evaluation.evaluate import case_columns
    from medseg.io.tables import rows_to_csv
    from medseg.workflows.evaluate import evaluate as evaluate_folder

    outcome = evaluate_folder(
        pred_dir, gt_dir, task, out=out, run_id=run, tracking_uri=tracking_uri, missing_as_empty=missing_as_empty
    )
    result = outcome.result
    _report_problems(result, missing_as_empty)  # on stderr in every format, so csv/json on stdout stay parseable
    if run and not outcome.logged:
        err_console.print(
            f"[yellow]not logged to run {escape(run)}[/]: {len(result.failed)} case(s) could not be scored; fix them "
            "and re-run",
            highlight=False,
            soft_wrap=True,
        )
    if fmt == "json":
        report = {
            "convention": outcome.convention,
            "summary": outcome.summary,
            "cases": result.rows,
            "failed": [{"id": cid, "error": err} for cid, err in result.failed],
            "predictions_without_truth": result.unmatched_pred,
            "truth_without_prediction": result.unmatched_gt,
            "missing_scored_as_empty": missing_as_empty,
        }
        typer.echo(json.dumps(report, indent=1))
    elif fmt == "csv":  # the header also when no case scored, as every csv of medseg
        typer.echo(rows_to_csv(result.rows, case_columns(outcome.task)), nl=False)
    elif result.rows:
        _render(outcome, out, run)
    if result.failed:
        raise typer.Exit(1)


def _report_problems(result: EvalResult, missing_as_empty: bool) -> None:
    for _, err in result.failed:
        err_console.print(f"[red]failed[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    if result.failed and not result.rows:
        err_console.print(
            f"[red]error:[/] none of the {len(result.failed)} matched case(s) could be evaluated", soft_wrap=True
        )
    if result.unmatched_pred:
        names = escape(", ".join(result.unmatched_pred[:10]))
        err_console.print(
            f"[yellow]{len(result.unmatched_pred)} prediction(s) without ground truth[/]: {names}", soft_wrap=True
        )
    from medseg.evaluation.evaluate import near_misses

    guesses = near_misses(result.unmatched_pred, result.unmatched_gt)
    if guesses:
        pairs = ", ".join(f"{p} looks like {g}" for p, g in list(guesses.items())[:3])
        more = f" (and {len(guesses) - 3} more)" if len(guesses) > 3 else ""
        err_console.print(
            f"[yellow]hint[/]: predictions are matched by name, <case_id>.nii.gz: {escape(pairs)}{more}",
            soft_wrap=True,
        )
    if result.unmatched_gt:
        names = escape(", ".join(result.unmatched_gt[:10]))
        scored = "scored as empty masks" if missing_as_empty else "not scored (--missing-as-empty scores them as empty)"
        err_console.print(
            f"[yellow]{len(result.unmatched_gt)} labelled case(s) without prediction[/], {scored}: {names}",
            soft_wrap=True,
        )


def mean_std(stat: dict, fmt: str = "{:.3f}") -> str:
    """ "mean ± std" of a summary entry; the mean alone for one case (its std is undefined)."""
    return fmt.format(stat["mean"]) + ("" if stat["std"] is None else f" ± {fmt.format(stat['std'])}")


def _render(outcome, out: Path, run: str | None) -> None:
    result = outcome.result
    regions = outcome.task.scheme.region_names
    empty = sum(r["id"] in result.unmatched_gt for r in result.rows)
    missing = len(result.unmatched_gt)
    note = f" ({empty} without prediction, scored as empty)" if empty else ""
    note += f" ({missing} labelled case(s) without prediction left out)" if missing and not empty else ""
    table = Table(title=f"evaluation of {len(result.rows)} cases{note} (mean ± std)", caption=outcome.convention)
    table.add_column("metric")
    for r in regions:
        table.add_column(r, justify="right")
    for metric, label, fmt in METRIC_ROWS:
        table.add_row(label, *(mean_std(outcome.summary[f"{metric}_{r.lower()}"], fmt) for r in regions))
    console.print(table)
    files = f"per-case metrics: {outcome.csv}   summary: {outcome.summary_path}"
    console.print(files, highlight=False, soft_wrap=True, markup=False)
    if outcome.logged:
        console.print(f"logged {len(outcome.summary)} test metrics to run {run}", soft_wrap=True, markup=False)
