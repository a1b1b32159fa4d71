"""`medseg models list|register`: network architectures (params, FLOPs) and the MLflow model registry."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli.options import TrackingUriOpt, help_markup
from medseg.errors import TrackingError
from medseg.tracking import resolve_tracking_uri

app = typer.Typer(
    help="Network architectures and the MLflow model registry.", no_args_is_help=True, rich_markup_mode=help_markup()
)
console = Console()


@app.command("list")
def list_(
    size: int = typer.Option(128, "--size", help="Cubic input edge for the FLOP count."),
    registry: bool = typer.Option(False, "--registry", help="List MLflow registered models instead."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Registered networks with parameters and forward GFLOPs at SIZE^3 (4 channels in, 3 out)."""
    if registry:
        _registry_table(resolve_tracking_uri(tracking_uri))
        return
    from medseg.nets import list_models, model_info
    from medseg.nets.profile import model_figures

    table = Table(title=f"networks: parameters and forward GFLOPs at 1x4x{size}^3 (FLOPs = 2 x multiply-adds)")
    for col in ("name", "params (M)", "GFLOPs", "cross-modal"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name in list_models():
        fig = model_figures(name, size=size)
        cross = "yes" if model_info(name).cross_modal else "no (early fusion)"
        table.add_row(name, f"{fig['params_m']:.2f}", f"{fig['gflops']:.1f}", cross)
    console.print(table)


def _registry_table(uri: str) -> None:
    from medseg.tracking.store import existing_store_client

    c = existing_store_client(uri)
    table = Table(title="MLflow registered models")
    for col in ("name", "version", "aliases", "val_dice_mean", "source run"):
        table.add_column(col)
    for rm in c.search_registered_models():
        by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        for mv in c.search_model_versions(f"name='{rm.name}'"):
            table.add_row(
                rm.name,
                str(mv.version),
                ", ".join(by_version.get(str(mv.version), [])),
                mv.tags.get("val_dice_mean", "-"),
                (mv.run_id or "-")[:12],
            )
    console.print(table)


@app.command("register")
def register(
    run_id: str = typer.Argument(..., help="Run whose logged model to register."),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    alias: list[str] = typer.Option([], "--alias", help="Alias(es) to point at the new version, e.g. champion."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Register a run's logged model as a new version of NAME (`models:/NAME/latest` is always the newest)."""
    from medseg.tracking.registry import register_version
    from medseg.tracking.review import get_run, logged_model_metric, logged_models

    uri = resolve_tracking_uri(tracking_uri)
    c, run = get_run(uri, run_id)
    models = logged_models(c, run)
    if not models:
        raise TrackingError(f"run {run_id} logged no model", hint="only finished `medseg train` runs have one")
    version, *aliases = register_version(uri, models[0], name, logged_model_metric(c, run), alias)
    console.print(f"registered {models[0]} as {name} {version} (aliases: {', '.join(aliases) or '-'})")
    ref = f"models:/{name}@{aliases[0]}" if aliases else f"models:/{name}/latest"
    console.print(f"predict with: medseg predict --model {ref} IN OUT")
