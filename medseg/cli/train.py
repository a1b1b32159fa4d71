"""`medseg train TASK`: train from a data folder or a manifest, tracked in MLflow, resumable, torchrun-ready."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from medseg.cli.options import (
    ConfigOpt,
    DeviceOpt,
    ExperimentOpt,
    FoldOpt,
    NoProgressOpt,
    NoTrackingOpt,
    ResumeOpt,
    RunNameOpt,
    SetOpt,
    SkipBadOpt,
    TrackingUriOpt,
)
from medseg.cli.progress import InterruptAdvice, RichTrainingHooks
from medseg.tracking import redact_secrets

if TYPE_CHECKING:
    from medseg.workflows.train import TrainRequest

console = Console()


def _fold(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter("a fold number or 'all'", param_hint="--fold") from None


def _check_device(device: str) -> None:
    from medseg.runtime import DEVICES  # torch: imported only when a command runs, so `--help` stays quick

    if device not in DEVICES:
        raise typer.BadParameter("must be cpu, cuda or auto", param_hint="--device")


def train(
    task: str = typer.Argument(..., help="Task recipe: brats, or generic (any manifest from `medseg data scan`)."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (scanned into a manifest first)."),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest from `medseg data scan` (with --data: where to write the scan)."
    ),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    fold: str | None = FoldOpt,
    tracking_uri: str | None = TrackingUriOpt,
    experiment: str | None = ExperimentOpt,
    run_name: str | None = RunNameOpt,
    resume: str | None = ResumeOpt,
    device: str = DeviceOpt,
    register: str | None = typer.Option(None, "--register", help="Register the best model under this name."),
    no_tracking: bool = NoTrackingOpt,
    skip_bad: bool = SkipBadOpt,
    no_progress: bool = NoProgressOpt,
    out: Path = typer.Option(Path("outputs"), "--out", help="Where checkpoints, pictures and scanned manifests go."),
) -> None:
    """Train a segmentation model; validates each N epochs with sliding windows and logs to MLflow."""
    request = _request(
        task,
        set_,
        fold,
        device,
        no_tracking,
        config=config,
        data=data,
        manifest=manifest,
        skip_bad=skip_bad,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        register=register,
        resume=resume,
        out=out,
    )
    _run_and_report(request, no_progress)


def distill(
    teacher: str = typer.Option(
        ..., "--teacher", help="Teacher model: a .pt checkpoint, runs:/<id>/model or models:/."
    ),
    student: str = typer.Option(..., "--student", help="Registered model to train (see `medseg models list`)."),
    task: str = typer.Option("brats", "--task", help="Task recipe: brats, or generic."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (scanned into a manifest first)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Manifest from `medseg data scan`."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    temperature: float = typer.Option(2.0, "--temperature", help="Softening temperature T of both outputs."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the teacher term (the labels' loss gets 1 - alpha)."),
    fold: str | None = FoldOpt,
    tracking_uri: str | None = TrackingUriOpt,
    experiment: str | None = ExperimentOpt,
    run_name: str | None = RunNameOpt,
    device: str = DeviceOpt,
    resume: str | None = ResumeOpt,
    register: str | None = typer.Option(None, "--register", help="Register the student under this name."),
    no_tracking: bool = NoTrackingOpt,
    skip_bad: bool = SkipBadOpt,
    no_progress: bool = NoProgressOpt,
    out: Path = typer.Option(Path("outputs"), "--out", help="Where checkpoints, pictures and manifests go."),
) -> None:
    """Train a small student on a teacher's softened outputs plus the labels (knowledge distillation); the student
    is a normal model: its own MLflow run (tagged with the teacher), checkpoints and bundle."""
    student_set = {f"model.name={student}": f"--student {student}"}
    student_set["model.kwargs={}"] = f"--student {student}"  # the config's kwargs belong to its own model
    distill_set = {
        f"distill.teacher={json.dumps(teacher)}": f"--teacher {teacher}",
        f"distill.temperature={temperature}": f"--temperature {temperature}",
        f"distill.alpha={alpha}": f"--alpha {alpha}",
    }
    overrides, flags = [*student_set, *set_, *distill_set], student_set | distill_set
    request = _request(
        task,
        overrides,
        fold,
        device,
        no_tracking,
        config=config,
        data=data,
        manifest=manifest,
        skip_bad=skip_bad,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        register=register,
        resume=resume,
        out=out,
        flags=flags,
    )
    _run_and_report(request, no_progress)


def prune(
    model: str = typer.Option(..., "--model", help="Model to prune: a .pt checkpoint, runs:/<id>/model or models:/."),
    amount: float = typer.Option(
        ..., "--amount", help="Share of channels to remove from each prunable layer, in (0, 1)."
    ),
    minutes: float = typer.Option(5.0, "--minutes", help="Fine-tuning time budget after pruning."),
    lr: float = typer.Option(3e-4, "--lr", help="Fine-tuning learning rate (annealed to 0 over the budget)."),
    task: str = typer.Option("brats", "--task", help="Task recipe: brats, or generic."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (scanned into a manifest first)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Manifest from `medseg data scan`."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    fold: str | None = FoldOpt,
    tracking_uri: str | None = TrackingUriOpt,
    experiment: str | None = ExperimentOpt,
    run_name: str | None = RunNameOpt,
    device: str = DeviceOpt,
    resume: str | None = ResumeOpt,
    register: str | None = typer.Option(None, "--register", help="Register the pruned model under this name."),
    no_tracking: bool = NoTrackingOpt,
    skip_bad: bool = SkipBadOpt,
    no_progress: bool = NoProgressOpt,
    out: Path = typer.Option(Path("outputs"), "--out", help="Where checkpoints, pictures and manifests go."),
) -> None:
    """Remove whole channels (structured pruning, torch-pruning) from a trained model and fine-tune it briefly; the
    result is a normal, smaller model bundle (its own MLflow run, tagged with the source) that `predict` loads."""
    budget = {f"train.max_minutes={minutes}": f"--minutes {minutes}", f"train.lr={lr}": f"--lr {lr}"}
    pruning = {f"prune.source={json.dumps(model)}": f"--model {model}", f"prune.amount={amount}": f"--amount {amount}"}
    overrides, flags = [*budget, *set_, *pruning], budget | pruning  # --set may change the budget, not the pruning
    request = _request(
        task,
        overrides,
        fold,
        device,
        no_tracking,
        config=config,
        data=data,
        manifest=manifest,
        skip_bad=skip_bad,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        register=register,
        resume=resume,
        out=out,
        flags=flags,
    )
    _run_and_report(request, no_progress)


def _print_pruning_cost(pruned: float, source: float) -> None:
    """The pruned model's best validation Dice beside its unpruned source's on the same cases, a warning when the
    pruning cost more than the fine-tuning won back."""
    from medseg.training.from_model import pruning_loss

    line = f"val Dice pruned {pruned:.3f}, unpruned source {source:.3f} on the same cases"
    lost = pruning_loss(pruned, source)
    if lost is None:
        console.print(line, highlight=False, soft_wrap=True)
        return
    console.print(
        f"[yellow]warning[/]: {line}: pruning lost {lost:.3f} Dice "
        "(hint: a smaller --amount, or more --minutes of fine-tuning)",
        highlight=False,
        soft_wrap=True,
    )


def _request(
    task: str, overrides: list[str], fold: str | None, device: str, no_tracking: bool, **fields
) -> TrainRequest:
    """The TrainRequest of a training command, its --fold and --device checked (the rest is the workflow's to check)."""
    from medseg.workflows.train import TrainRequest

    _check_device(device)
    return TrainRequest(
        task=task, overrides=overrides, fold=_fold(fold), device=device, tracking=not no_tracking, **fields
    )


def _run_and_report(request: TrainRequest, no_progress: bool) -> None:
    """Run a training request with progress bars (rank 0) and print where its results went."""
    from medseg.runtime import current_runtime
    from medseg.workflows.train import run_training

    main = current_runtime().is_main
    # until the run has a checkpoint (the hooks then name its --resume): nothing to resume, the scan cache is kept
    InterruptAdvice.text = "stopped before the run began: re-run the same command (cases cached so far are kept)"
    outcome = run_training(request, RichTrainingHooks(console, enabled=not no_progress and main, quiet=not main))
    if not main:
        return
    result, target = outcome.result, outcome.target
    console.print(
        f"[green]done[/]: best val Dice (mean of regions) {result.best_dice:.3f} at epoch {result.best_epoch + 1} "
        f"({outcome.split.label}); checkpoints in {result.last_path.parent}",
        highlight=False,
        soft_wrap=True,
    )
    if result.source_dice is not None:
        _print_pruning_cost(result.best_dice, result.source_dice)
    from medseg.transforms.postprocess import describe_plan

    console.print(
        f"post-processing chosen on validation: {describe_plan(result.postprocess)}", highlight=False, soft_wrap=True
    )
    if target.uri:
        console.print(
            f"tracked in {redact_secrets(target.uri)} (experiment '{target.experiment}')",
            highlight=False,
            soft_wrap=True,
        )
    if result.model_uri:
        from medseg.tracking.store import runs_url

        console.print(
            f"model: {result.model_uri}" + (f" (registered: {' '.join(result.aliases)})" if result.aliases else ""),
            soft_wrap=True,
        )
        url = runs_url(target.uri, outcome.experiment_id)
        console.print(
            f"review: {review_commands(outcome.run_id, target.uri)}  ->  {url}", highlight=False, soft_wrap=True
        )


def review_commands(run_id: str, uri: str) -> str:
    """`runs show` and `ui` as the user can paste them: with --tracking-uri unless a bare command finds the store."""
    from medseg.tracking import resolve_tracking_uri

    flag = "" if uri == resolve_tracking_uri() else f" --tracking-uri {shlex.quote(redact_secrets(uri))}"
    return f"medseg runs show {run_id}{flag}   |   medseg ui{flag}"
