"""`medseg models list|register`: network architectures (params, FLOPs) and the MLflow model registry."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli.options import FormatOpt, TrackingUriOpt, help_markup
from medseg.cli.runs import print_records
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
    fmt: str = FormatOpt,
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Registered networks with parameters and forward GFLOPs at SIZE^3 (4 channels in, 3 out)."""
    if registry:
        _registry_list(resolve_tracking_uri(tracking_uri), fmt)
        return
    from medseg.nets import list_models, model_info
    from medseg.nets.profile import model_figures

    records = []
    for name in list_models():
        fig = model_figures(name, size=size)
        records.append(
            {
                "name": name,
                "params_m": fig["params_m"],
                "gflops": fig["gflops"],
                "cross_modal": model_info(name).cross_modal,
                "size_refused": fig["refused"],  # why there are no GFLOPs at this size
            }
        )
    if fmt != "table":
        print_records(fmt, NETWORK_FIELDS, records)
        return
    table = Table(title=f"networks: parameters and forward GFLOPs at 1x4x{size}^3 (FLOPs = 2 x multiply-adds)")
    for col in ("name", "params (M)", "GFLOPs", "cross-modal"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in records:
        cross = "yes" if r["cross_modal"] else "no (early fusion)"
        gflops = "-" if r["gflops"] is None else f"{r['gflops']:.1f}"
        table.add_row(r["name"], f"{r['params_m']:.2f}", gflops, cross)
    console.print(table)
    for r in records:
        if r["size_refused"]:
            console.print(f"[dim]{r['name']}: no GFLOPs at {size}^3 (needs {r['size_refused']})[/]", highlight=False)


NETWORK_FIELDS = ("name", "params_m", "gflops", "cross_modal", "size_refused")
REGISTRY_FIELDS = ("name", "version", "aliases", "val_dice_mean", "run_id")


def _registry_list(uri: str, fmt: str) -> None:
    """Every version of every registered model; csv joins a version's aliases with ';'."""
    from medseg.tracking.store import existing_store_client

    c = existing_store_client(uri)
    records = []
    for rm in c.search_registered_models():
        by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        for mv in c.search_model_versions(f"name='{rm.name}'"):
            dice = mv.tags.get("val_dice_mean")
            records.append(
                {"name": rm.name, "version": int(mv.version), "aliases": by_version.get(str(mv.version), []),
                 "val_dice_mean": None if dice is None else float(dice), "run_id": mv.run_id}
            )  # fmt: skip
    if fmt == "json":
        print_records(fmt, REGISTRY_FIELDS, records)
    elif fmt == "csv":
        print_records(fmt, REGISTRY_FIELDS, [{**r, "aliases": ";".join(r["aliases"])} for r in records])
    else:
        table = Table(title="MLflow registered models")
        for col in ("name", "version", "aliases", "val_dice_mean", "source run"):
            table.add_column(col)
        for r in records:
            dice = "-" if r["val_dice_mean"] is None else f"{r['val_dice_mean']:g}"
            table.add_row(r["name"], str(r["version"]), ", ".join(r["aliases"]), dice, (r["run_id"] or "-")[:12])
        console.print(table)


@app.command("register")
def register(
    run_id: str = typer.Argument(..., help="Run (id or unique prefix) whose logged model to register."),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    alias: list[str] = typer.Option([], "--alias", help="Alias(es) to point at the new version, e.g. champion."),
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Register a run's logged model as a new version of NAME (`models:/NAME/latest` is always the newest)."""
    from medseg.tracking.registry import register_version
    from medseg.tracking.review import active_run, logged_model_metric, logged_models

    uri = resolve_tracking_uri(tracking_uri)
    c, run = active_run(uri, run_id, prefix=True)
    run_id = run.info.run_id  # the whole id, when a prefix was given
    models = logged_models(c, run)
    if not models:
        raise TrackingError(f"run {run_id} logged no model", hint="only finished `medseg train` runs have one")
    version, *aliases = register_version(uri, models[0], name, logged_model_metric(c, run), alias)
    line = f"registered {models[0]} as {name} {version} (aliases: {', '.join(aliases) or '-'})"
    console.print(line, highlight=False, soft_wrap=True, markup=False)
    ref = f"models:/{name}@{aliases[0]}" if aliases else f"models:/{name}/latest"
    console.print(f"predict with: medseg predict --model {ref} IN OUT", highlight=False, soft_wrap=True, markup=False)
