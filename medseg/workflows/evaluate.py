"""Evaluate a folder of predictions against a labelled dataset: per-case CSV, summary JSON, optionally MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.core import Task
from medseg.data.layouts import detect_cases
from medseg.errors import DataError
from medseg.evaluation.evaluate import EvalResult, evaluate_folder, near_misses, summarise
from medseg.evaluation.metrics import convention
from medseg.io.atomic import atomic_write_text, check_writable
from medseg.io.tables import rows_to_csv
from medseg.pipelines import get_task


@dataclass
class EvaluateOutcome:
    result: EvalResult
    summary: dict[str, dict[str, float]]
    task: Task
    convention: str
    csv: Path | None = None
    summary_path: Path | None = None
    logged: bool = False  # test_* metrics went to the MLflow run (only when every matched case was scored)


def evaluate(
    pred_dir: Path,
    gt_dir: Path,
    task_name: str = "brats",
    *,
    out: Path | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    on_case: Callable[[str], None] | None = None,
    missing_as_empty: bool = False,
) -> EvaluateOutcome:
    """Match predictions to labelled cases by id and score them; write `out` (CSV) and its `.summary.json`;
    log `test_*` metrics and both files to MLflow run `run_id` when given."""
    if not pred_dir.is_dir():
        raise DataError("prediction folder not found", path=str(pred_dir), hint="pass the folder medseg predict wrote")
    if out is not None:
        check_writable(out)  # before scoring: a wrong path would lose the metrics
    task = get_task(task_name, gt_dir)
    _, gt_cases = detect_cases(gt_dir, task.layouts)
    if not any(c.label for c in gt_cases):  # blamed the prediction folder ("no prediction matches")
        raise DataError("the ground-truth folder holds no labelled case", path=str(gt_dir), hint=_no_truth_hint(gt_dir))
    if run_id:  # before scoring, and before a CSV is written for a run that cannot receive it
        from medseg.tracking import resolve_tracking_uri
        from medseg.tracking.run_writer import require_run

        tracking_uri = resolve_tracking_uri(tracking_uri)
        require_run(run_id, tracking_uri)
    result = evaluate_folder(pred_dir, gt_cases, task, on_case, missing_as_empty)
    if not result.rows and not result.failed:
        raise DataError("no prediction matches a labelled case", path=str(pred_dir), hint=_no_match_hint(result))
    if not result.rows and out is not None:  # matched, none scored: an earlier evaluation's files would read as ours
        for stale in (out, out.with_suffix(".summary.json")):
            stale.unlink(missing_ok=True)
    summary = summarise(result.rows)
    words = convention(task.empty_hd95_mm)
    outcome = EvaluateOutcome(result, summary, task, words)
    if not result.rows:  # every case failed: the caller reports why; no empty CSV, nothing logged
        return outcome
    if out is not None:
        outcome.csv, outcome.summary_path = out, out.with_suffix(".summary.json")
        atomic_write_text(out, rows_to_csv(result.rows))
        report = {
            "convention": words,
            "cases": len(result.rows),
            "labelled_without_prediction": len(result.unmatched_gt),
            "truth_without_prediction": result.unmatched_gt,  # the ids, as `--format json` lists them
            "predictions_without_truth": result.unmatched_pred,
            # not in the means: a prediction that could not be scored (unreadable, another grid), with the reason
            "failed": [{"id": cid, "error": error} for cid, error in result.failed],
            "missing_scored_as_empty": missing_as_empty,
            "metrics": summary,
        }
        atomic_write_text(outcome.summary_path, json.dumps(report, indent=1))
    if run_id and not result.failed:  # means over the cases that happened to be readable would replace the true ones
        from medseg.tracking.run_writer import log_to_existing_run

        files = [p for p in (outcome.csv, outcome.summary_path) if p is not None]
        metrics = {f"test_{k}": v["mean"] for k, v in summary.items()} | {"test_cases": float(len(result.rows))}
        log_to_existing_run(run_id, tracking_uri, metrics, files)
        outcome.logged = True
    return outcome


def _no_truth_hint(gt_dir: Path) -> str:
    """Where the labels are, for a ground-truth folder without any: most often a `labelsTr` passed for its dataset
    (nnU-Net's evaluate_folder takes that folder), whose dataset.json says what its label values mean."""
    if gt_dir.name.lower().startswith("labels") and (gt_dir.parent / "dataset.json").is_file():
        return f"pass the dataset folder {gt_dir.parent} (its dataset.json says what the label values mean)"
    return (
        "pass the dataset folder in its layout: BraTS case folders with <case>_seg.nii.gz, or the folder holding "
        "imagesTr, labelsTr and dataset.json (a folder of label files alone does not say its label convention)"
    )


def _no_match_hint(result: EvalResult) -> str:
    if not result.unmatched_pred:
        return "the prediction folder has no <case_id>.nii.gz files"
    guesses = near_misses(result.unmatched_pred, result.unmatched_gt)
    if guesses:
        pred, case = next(iter(guesses.items()))
        return f"prediction files must be named <case_id>.nii.gz: {pred} looks like {case} (rename it {case}.nii.gz)"
    return f"prediction files must be named <case_id>.nii.gz, e.g. {result.unmatched_gt[0]}.nii.gz"
