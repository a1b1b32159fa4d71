"""`medseg demo`: the newcomer's first run, end to end on synthetic BraTS-like data.

Synthesise -> scan -> train (time-bounded) -> predict a held-out folder -> evaluate -> print where to look.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

from medseg.cli.data import scan_to_manifest
from medseg.cli.progress import RichTrainingHooks
from medseg.config import load_config
from medseg.data.layouts import detect_cases
from medseg.data.manifest import load_manifest
from medseg.tracking import redact_uri
from pipelines import get_task, prediction_layouts
from pipelines.brats import write_synthetic_dataset

console = Console()
SMOKE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "brats_smoke.yaml"

# (train cases, test cases, volume shape, overrides) per setting. CPU: tuned to learn in a few minutes on 2 cores.
SETTINGS = {
    "fast": (
        4,
        2,
        (40, 40, 32),
        ["train.epochs=2", "train.val_every=1", "train.samples_per_volume=1", "train.overlays=1"],
    ),
    "cpu": (16, 4, (80, 80, 64), ["train.epochs=200", "train.val_every=5", "train.samples_per_volume=4"]),
    "gpu": (
        24,
        6,
        (128, 128, 96),
        [
            "model.name=transunet3d_small",
            "model.kwargs.img_size=64",
            "train.patch_size=[64, 64, 64]",
            "train.epochs=300",
            "train.val_every=10",
            "train.samples_per_volume=4",
            "train.lr=0.001",
            "data.num_workers=4",
        ],
    ),
}


def _synth(root: Path, train_n: int, test_n: int, shape) -> tuple[Path, Path]:
    train_dir, test_dir = root / "data" / "train", root / "data" / "test"
    if not train_dir.exists():
        with console.status(f"synthesising {train_n} training cases (BraTS 2021 layout)"):
            write_synthetic_dataset(train_dir, train_n, "brats2021", shape, seed=1)
    if not test_dir.exists():
        # Held-out cases in the BraTS 2023 layout (ET = 3): predictions come back in that convention.
        with console.status(f"synthesising {test_n} held-out cases (BraTS 2023 layout)"):
            write_synthetic_dataset(test_dir, test_n, "brats2023", shape, seed=2)
    return train_dir, test_dir


def demo(
    out: Path = typer.Option(Path("medseg_demo"), "--out", help="Folder for data, runs, predictions."),
    minutes: float = typer.Option(6.0, "--minutes", min=0.1, help="Training time budget (minutes)."),
    fast: bool = typer.Option(False, "--fast", help="Smallest setting (seconds): a smoke test, not a model."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Default: sqlite:///<out>/mlflow.db."),
) -> None:
    """Synthesise data, train a cross-modal TransUNet-3D, predict held-out cases, evaluate, show where to look."""
    from medseg.evaluation.evaluate import evaluate_folder, summarise
    from medseg.inference.model_source import load_bundle
    from medseg.inference.predictor import PredictOptions, predict_folder
    from medseg.training.run import TrackingTarget, resolve_device, train_task

    t0 = time.monotonic()
    dev = resolve_device(device)
    setting = "fast" if fast else ("gpu" if dev.type == "cuda" else "cpu")
    train_n, test_n, shape, overrides = SETTINGS[setting]
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"  # self-contained, as --help says
    console.print(
        Panel.fit(
            f"medseg demo ({setting} setting, {dev}): synthetic BraTS-like data -> cross-modal "
            f"TransUNet-3D -> predictions -> Dice\nfolder: {out.resolve()}   tracking: {redact_uri(uri)}"
        )
    )
    train_dir, test_dir = _synth(out, train_n, test_n, shape)
    manifest_path = scan_to_manifest(
        train_dir, "brats", out / "data" / "train_manifest.json", folds=4, seed=0, skip_bad=False
    )
    cfg = load_config(SMOKE_CONFIG, [*overrides, f"train.max_minutes={minutes}", f"data.cache_dir={out / 'cache'}"])
    task = get_task("brats")
    console.rule("training")
    result, tracker = train_task(
        task,
        load_manifest(manifest_path),
        manifest_path,
        cfg,
        fold=0,
        device_name=device,
        target=TrackingTarget(uri, "medseg-demo", "demo"),
        out_root=out / "runs",
        hooks=RichTrainingHooks(console),
    )
    console.rule("prediction on held-out cases")
    bundle = load_bundle(str(result.best_path))
    _, cases = detect_cases(test_dir, prediction_layouts(bundle.task, bundle.channels, bundle.label_map))
    pred_dir = out / "predictions"
    results = predict_folder(cases, bundle, pred_dir, PredictOptions(overwrite=True, overlays=True, device=dev))
    console.print(f"{sum(r.status == 'ok' for r in results)}/{len(results)} cases predicted -> {pred_dir}")
    evaluation = evaluate_folder(pred_dir, cases, task.scheme)
    summary = summarise(evaluation.rows)
    _report(
        summary,
        task.scheme.region_names,
        out,
        pred_dir,
        tracker,
        uri,
        result.model_uri,
        time.monotonic() - t0,
    )


def _report(summary, regions, out: Path, pred_dir: Path, tracker, uri: str, model_uri, seconds: float) -> None:
    from rich.table import Table

    from medseg.evaluation.metrics import CONVENTION

    table = Table(title="held-out Dice (mean ± std)", caption=CONVENTION)
    table.add_column("region")
    table.add_column("Dice", justify="right")
    table.add_column("HD95 (mm)", justify="right")
    for r in regions:
        d, h = summary[f"dice_{r.lower()}"], summary[f"hd95_{r.lower()}"]
        table.add_row(r, f"{d['mean']:.3f} ± {d['std']:.3f}", f"{h['mean']:.1f}")
    console.print(table)
    if tracker.run_id:
        from medseg.tracking.mlflow_tracker import log_to_existing_run, runs_url

        log_to_existing_run(tracker.run_id, uri, {f"test_{k}": v["mean"] for k, v in summary.items()}, [])
    lines = [
        f"finished in {seconds / 60:.1f} min",
        f"predictions:  {pred_dir}/<case>.nii.gz   overlays: {pred_dir / 'overlays'}",
        f"model:        {model_uri or out / 'runs'}",
    ]
    if tracker.run_id:
        lines += [
            f"review run:   medseg runs show {tracker.run_id} --tracking-uri {redact_uri(uri)}",
            f"browse:       medseg ui --tracking-uri {redact_uri(uri)}   then open "
            f"{runs_url(uri, tracker.experiment_id)}",
        ]
    console.print(Panel("\n".join(lines), title="where to look"), highlight=False)
