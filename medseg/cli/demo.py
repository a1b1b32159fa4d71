"""`medseg demo`: the newcomer's first run, end to end on anatomy-based synthetic BraTS-like data.

Synthesise -> scan -> train (time-bounded) -> predict a held-out folder -> evaluate -> print where to look. Every
step is the workflow the corresponding command runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from medseg.cli.options import DeviceOpt
from medseg.cli.progress import InterruptAdvice, RichTrainingHooks
from medseg.tracking import redact_secrets

console = Console()


@dataclass(frozen=True)
class Setting:
    """Cases, grid and training recipe of one demo size."""

    train_cases: int
    test_cases: int
    shape: tuple[int, int, int]
    config: str
    overrides: tuple[str, ...] = ()


SETTINGS = {
    # Seconds: a smoke test of the whole path, not a model.
    "fast": Setting(4, 2, (48, 48, 32), "brats_smoke", ("train.epochs=2", "train.val_every=1", "train.overlays=1")),
    # The whole head at 2 mm (120x120x78): a real brain and tumours a 2-core CPU learns in minutes.
    "cpu": Setting(16, 4, (120, 120, 78), "brats_demo"),
    "gpu": Setting(24, 6, (240, 240, 155), "brats_cpu", ("data.num_workers=4",)),
}


MARKER = ".medseg-demo"


def _claim(out: Path) -> None:
    """`--out` must be new, empty, or a folder an earlier demo made: the demo replaces its own predictions and
    metrics there, and would train on any case found in its data folders."""
    from medseg.errors import MedsegError
    from medseg.io.atomic import check_writable

    check_writable(out, folder=True)
    earlier = (out / MARKER).exists() or (out / "data" / "train" / ".complete").exists()  # or a demo before markers
    if out.is_dir() and any(out.iterdir()) and not earlier:
        raise MedsegError(
            "--out is a folder with other files, not one medseg demo made",
            path=str(out),
            hint="pass a new or empty folder with --out",
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by medseg demo: data, runs, predictions and metrics below are replaced\n")
    old = [out / "data" / name for name in ("train", "test", "train_manifest.json") if (out / "data" / name).exists()]
    if old:  # a demo before per-setting data folders: its cases are never read again, and may be gigabytes
        names = ", ".join(str(p) for p in old)
        note = f"no longer used (the demo's data is now under data/<setting>/): {names}; delete to free space"
        console.print(f"[dim]{escape(note)}[/]", highlight=False, soft_wrap=True)


def _synth(root: Path, name: str, setting: Setting) -> tuple[Path, Path]:
    """The setting's own train and test folders (`data/<setting>/`): a `--fast` run before a full one in the same
    `--out` leaves its 4 small cases in a folder the full run never reads."""
    from medseg.pipelines.brats import write_synthetic_dataset

    train_dir, test_dir = root / "data" / name / "train", root / "data" / name / "test"
    workers = min(4, os.cpu_count() or 1)
    for folder, n, layout, seed in (
        (train_dir, setting.train_cases, "brats2021", 1),
        (test_dir, setting.test_cases, "brats2023", 2),
    ):
        if not (folder / ".complete").exists():
            # Held-out cases in the BraTS 2023 layout (ET = 3): predictions come back in that convention.
            with console.status(
                f"synthesising {n} anatomy-based cases ({layout} layout, {'x'.join(map(str, setting.shape))})"
            ):
                write_synthetic_dataset(folder, n, layout, setting.shape, seed=seed, workers=workers)
            (folder / ".complete").write_text("")
    return train_dir, test_dir


def demo(
    out: Path = typer.Option(Path("medseg_demo"), "--out", help="Folder for data, runs, predictions."),
    minutes: float = typer.Option(6.0, "--minutes", min=0.1, help="Training time budget (minutes)."),
    fast: bool = typer.Option(False, "--fast", help="Smallest setting (seconds): a smoke test, not a model."),
    device: str = DeviceOpt,
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Default: sqlite:///<out>/mlflow.db."),
) -> None:
    """Synthesise data, train a cross-modal TransUNet-3D, predict held-out cases, evaluate, show where to look."""
    from medseg.runtime import resolve_device
    from medseg.tracking.store import check_uri
    from medseg.workflows.evaluate import evaluate
    from medseg.workflows.predict import FolderPredictor
    from medseg.workflows.scan import scan
    from medseg.workflows.train import TrainRequest, run_training

    t0 = time.monotonic()
    # The demo has no --resume: whatever stops it, the same command starts again (finished data is kept).
    InterruptAdvice.text = "re-run the same command: the synthesised data is kept, training starts again"
    dev = resolve_device(device)
    name = "fast" if fast else ("gpu" if dev.type == "cuda" else "cpu")
    setting = SETTINGS[name]
    uri = tracking_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"  # self-contained, as --help says
    check_uri(uri)  # before minutes of synthesis
    _claim(out)
    console.print(
        Panel.fit(
            f"medseg demo ({name} setting, {dev}): anatomy-based BraTS-like data -> cross-modal "
            f"TransUNet-3D -> predictions -> Dice\nfolder: {out.resolve()}   tracking: {redact_secrets(uri)}"
        )
    )
    train_dir, test_dir = _synth(out, name, setting)
    manifest = scan(train_dir, "brats", train_dir.parent / "train_manifest.json", folds=4, seed=0).path
    console.rule("training")
    request = TrainRequest(
        task="brats",
        config=setting.config,
        overrides=[*setting.overrides, f"train.max_minutes={minutes}", f"data.cache_dir={out / 'cache'}"],
        manifest=manifest,
        fold=0,
        device=device,
        tracking_uri=uri,
        experiment="medseg-demo",
        run_name="demo",
        out=out / "runs",
    )
    trained = run_training(request, RichTrainingHooks(console, resumable=False))
    console.rule("prediction on held-out cases")
    predictor = FolderPredictor.from_model(str(trained.result.best_path), device=device)
    plan = predictor.plan(test_dir)
    pred_dir = out / "predictions"
    results = predictor.run(plan, pred_dir, overwrite=True, overlays=True)
    console.print(
        f"{sum(r.status == 'ok' for r in results)}/{len(results)} cases predicted -> {pred_dir}", soft_wrap=True
    )
    evaluation = evaluate(pred_dir, test_dir, "brats", out=out / "metrics.csv", run_id=trained.run_id, tracking_uri=uri)
    _report(evaluation, trained, out, pred_dir, uri, time.monotonic() - t0)


def _report(evaluation, trained, out: Path, pred_dir: Path, uri: str, seconds: float) -> None:
    from rich.table import Table

    from medseg.cli.evaluate import mean_std
    from medseg.transforms.postprocess import describe_plan

    summary = evaluation.summary
    table = Table(title="held-out Dice (mean ± std)", caption=evaluation.convention)
    for col in ("region", "Dice", "HD95 (mm)", "lesion-wise Dice"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in evaluation.task.scheme.region_names:
        d, h, lw = (summary[f"{m}_{r.lower()}"] for m in ("dice", "hd95", "lesion_dice"))
        table.add_row(r, mean_std(d), f"{h['mean']:.1f}", f"{lw['mean']:.3f}")
    console.print(table)
    lines = [
        f"finished in {seconds / 60:.1f} min",
        f"post-processing (chosen on validation): {describe_plan(trained.result.postprocess)}",
        f"predictions:  {pred_dir}/<case>.nii.gz   overlays: {pred_dir / 'overlays'}",
        f"metrics:      {evaluation.csv}",
        f"model:        {trained.result.model_uri or trained.result.best_path}",
    ]
    if trained.run_id:
        from medseg.tracking.store import runs_url

        lines += [
            f"review run:   medseg runs show {trained.run_id} --tracking-uri {redact_secrets(uri)}",
            f"browse:       medseg ui --tracking-uri {redact_secrets(uri)}   then open "
            f"{runs_url(uri, trained.experiment_id)}",
        ]
    console.print(Panel("\n".join(lines), title="where to look"), highlight=False)
