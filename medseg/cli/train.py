"""`medseg train TASK`: train from a data folder or a manifest, tracked in MLflow, resumable, torchrun-ready."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console

from medseg.cli.options import ConfigOpt, SetOpt, TrackingUriOpt
from medseg.cli.progress import RichTrainingHooks
from medseg.config import ExperimentConfig, load_config
from medseg.data.manifest import load_manifest
from medseg.errors import MedsegError
from medseg.tracking import redact_uri, resolve_tracking_uri
from pipelines import task_for_manifest

console = Console()


def _resume_payload(resume: str, uri: str) -> dict:
    """A checkpoint path, or an MLflow run id whose output folder holds `last.pt`."""
    from medseg.io.bundle import load_checkpoint

    if Path(resume).is_file():
        return load_checkpoint(resume)
    from medseg.tracking.mlflow_tracker import run_output_dir

    out_dir = run_output_dir(resume, uri)
    return load_checkpoint(Path(out_dir) / "last.pt")


def train(
    task: str = typer.Argument(..., help="Task recipe: brats, or generic (any manifest from `medseg data scan`)."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (scanned on the fly)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Manifest from `medseg data scan`."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    fold: int | None = typer.Option(None, "--fold", help="Validate on fold K, train on the rest."),
    tracking_uri: str | None = TrackingUriOpt,
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment name."),
    run_name: str | None = typer.Option(None, "--run-name"),
    resume: str | None = typer.Option(None, "--resume", help="Run id or checkpoint to continue."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    register: str | None = typer.Option(None, "--register", help="Register the best model under this name."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not log to MLflow."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Plain log lines instead of progress bars."),
    out: Path = typer.Option(Path("outputs"), "--out", help="Where checkpoints and pictures go."),
) -> None:
    """Train a segmentation model; validates each N epochs with sliding windows and logs to MLflow."""
    from medseg.training.run import TrackingTarget, train_task

    if device not in {"auto", "cpu", "cuda"}:
        raise typer.BadParameter("must be cpu, cuda or auto", param_hint="--device")
    if (data is None) == (manifest is None) and resume is None:
        raise typer.BadParameter("give exactly one of --data DIR or --manifest FILE", param_hint="--data/--manifest")
    cfg = load_config(config, set_)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    payload = _resume_payload(resume, uri) if resume else None
    if payload is not None:
        cfg = ExperimentConfig.model_validate(payload["config"])  # a resumed run keeps its own config
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if data is not None:
        from medseg.cli.data import scan_to_manifest

        manifest = Path("data_manifests") / f"{data.resolve().name}.json"
        if rank0:
            scan_to_manifest(data, task, manifest, folds=5, seed=cfg.train.seed, skip_bad=True)
    if manifest is None:
        manifest = Path(cfg.data.manifest) if cfg.data.manifest else None
        if manifest is None:
            raise MedsegError("--resume needs --manifest or --data to find the cases")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _wait_for_file(manifest)
    man = load_manifest(manifest)
    task_obj = task_for_manifest(task, man)
    target = TrackingTarget(
        None if no_tracking or not cfg.tracking.enabled else uri,
        experiment or cfg.tracking.experiment,
        run_name,
        register or cfg.tracking.register_name,
        cfg.tracking.system_metrics,
    )
    if rank0 and target.uri:
        console.print(f"tracking to {redact_uri(target.uri)} (experiment '{target.experiment}')", highlight=False)
    hooks = RichTrainingHooks(console, enabled=not no_progress and rank0)
    result, tracker = train_task(
        task_obj,
        man,
        manifest,
        cfg,
        fold=fold,
        device_name=device,
        target=target,
        out_root=out,
        resume=payload,
        hooks=hooks,
    )
    if not rank0:
        return
    console.print(
        f"[green]done[/]: best val Dice (mean of regions) {result.best_dice:.3f} at epoch {result.best_epoch + 1}; "
        f"checkpoints in {result.last_path.parent}",
        highlight=False,
    )
    if result.model_uri:
        from medseg.tracking.mlflow_tracker import runs_url

        console.print(
            f"model: {result.model_uri}" + (f" (registered: {' '.join(result.aliases)})" if result.aliases else "")
        )
        url = runs_url(target.uri, tracker.experiment_id)
        console.print(f"review: medseg runs show {tracker.run_id}   |   medseg ui  ->  {url}", highlight=False)


def _wait_for_file(path: Path, timeout_s: float = 600) -> None:
    """Non-zero ranks wait for rank 0 to write the manifest."""
    t0 = time.monotonic()
    while not Path(path).exists():
        if time.monotonic() - t0 > timeout_s:
            raise MedsegError("timed out waiting for rank 0 to write the manifest", path=str(path))
        time.sleep(0.5)
