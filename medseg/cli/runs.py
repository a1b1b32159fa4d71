"""`medseg runs list|show|compare`: review MLflow experiments from the terminal."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli.options import TrackingUriOpt
from medseg.tracking import resolve_tracking_uri
from medseg.tracking.review import (
    REGIONS_METRICS,
    get_run,
    history,
    list_runs,
    logged_models,
    registry_aliases,
    summarise_run,
)

app = typer.Typer(help="Review training runs in the MLflow store.", no_args_is_help=True)
console = Console()


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _duration(s: float | None) -> str:
    if s is None:
        return "running"
    return f"{int(s // 60)}m{int(s % 60):02d}s"


@app.command("list")
def list_(
    experiment: str | None = typer.Option(None, "--experiment", "-e"),
    sort: str = typer.Option("val_dice_mean", "--sort", help="Metric to sort by (best epoch), or start_time."),
    limit: int = typer.Option(20, "--limit", min=1),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Table of runs: model, cross-modal, fold, status, epochs, best val Dice, duration."""
    runs = list_runs(resolve_tracking_uri(tracking_uri), experiment, sort, limit)
    table = Table(title=f"{len(runs)} run(s), best epoch by val_dice_mean")
    for col in (
        "run id",
        "name",
        "model",
        "cross_modal",
        "fold",
        "status",
        "epochs",
        "ET",
        "TC",
        "WT",
        "mean",
        "duration",
    ):
        table.add_column(col, justify="right" if col in {"epochs", "ET", "TC", "WT", "mean"} else "left")
    for s in runs:
        table.add_row(
            s.run_id[:12],
            s.name,
            s.params.get("model_name", "-"),
            s.tags.get("cross_modal", "-"),
            s.params.get("fold", "-") or "-",
            s.status,
            str(s.epochs),
            *(_fmt(s.best.get(k)) for k in REGIONS_METRICS),
            _duration(s.duration_s),
        )
    console.print(table)


@app.command("show")
def show(run_id: str = typer.Argument(...), tracking_uri: str | None = TrackingUriOpt) -> None:
    """Params, final and best metrics, artifacts, the logged model and its registry aliases."""
    uri = resolve_tracking_uri(tracking_uri)
    c, run = get_run(uri, run_id)
    s = summarise_run(c, run)
    console.print(
        f"[bold]{s.name}[/]  {s.run_id}  {s.status}  {s.epochs} epochs  {_duration(s.duration_s)}",
        highlight=False,
    )
    metrics = Table(title="metrics")
    for col in ("metric", "final", "best epoch"):
        metrics.add_column(col)
    for key in sorted(s.metrics):
        metrics.add_row(key, _fmt(s.metrics[key], 4), _fmt(s.best.get(key), 4) if key in s.best else "")
    console.print(metrics)
    params = Table(title="params")
    params.add_column("param")
    params.add_column("value")
    for key in sorted(s.params):
        params.add_row(key, s.params[key][:80])
    console.print(params)
    arts = [f.path for f in c.list_artifacts(run_id)]
    console.print(f"artifacts: {', '.join(arts) or '-'}", highlight=False)
    models = logged_models(c, run)
    example = models[0] if models else f"runs:/{run_id}/model"
    console.print(
        f"model: {', '.join(models) or '-'}   (predict: medseg predict --model {example} IN OUT)", highlight=False
    )
    aliases = registry_aliases(c, models) if models else []
    if aliases:
        console.print(f"registry: {', '.join(aliases)}")


@app.command("compare")
def compare(
    run_ids: list[str] = typer.Argument(..., help="Two or more run ids."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG overlaying their validation curves."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Side by side: params that differ (highlighted), best metrics with deltas to the first run."""
    if len(run_ids) < 2:
        raise typer.BadParameter("give at least two run ids", param_hint="RUN_IDS")
    uri = resolve_tracking_uri(tracking_uri)
    pairs = [get_run(uri, r) for r in run_ids]
    runs = [summarise_run(c, r) for c, r in pairs]
    table = Table(title="run comparison (deltas vs the first run)")
    table.add_column("")
    for s in runs:
        table.add_column(s.name or s.run_id[:8])
    keys = sorted(set().union(*(s.params for s in runs)))
    for key in keys:
        values = [s.params.get(key, "-") for s in runs]
        if len(set(values)) > 1:
            table.add_row(f"[yellow]{key}[/]", *(f"[yellow]{v[:30]}[/]" for v in values))
    for key in REGIONS_METRICS:
        base = runs[0].best.get(key)
        cells = []
        for s in runs:
            v = s.best.get(key)
            delta = "" if v is None or base is None or s is runs[0] else f" ({v - base:+.3f})"
            cells.append(_fmt(v) + delta)
        table.add_row(f"best {key}", *cells)
    console.print(table)
    if plot:
        from medseg.viz.curves import compare_curves
        from medseg.viz.overlays import save_png

        curves = {s.name or s.run_id[:8]: history(pairs[i][0], s.run_id, "val_dice_mean") for i, s in enumerate(runs)}
        save_png(compare_curves(curves), plot)
        console.print(f"curves: {plot}")
