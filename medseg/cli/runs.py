"""`medseg runs list|show|compare`: review MLflow experiments from the terminal, or as CSV/JSON for scripts.

Tables never cut a run id or a number: when the terminal is narrow, low-value columns are left out instead (and
output piped to a file is as wide as it needs to be).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medseg.cli.options import FormatOpt, TrackingUriOpt, help_markup
from medseg.errors import MedsegError
from medseg.tracking import resolve_tracking_uri

if TYPE_CHECKING:
    from medseg.tracking.review import RunSummary

app = typer.Typer(
    help="Review training runs in the MLflow store.", no_args_is_help=True, rich_markup_mode=help_markup()
)
console = Console()
err_console = Console(stderr=True)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _duration(s: RunSummary) -> str:
    """Minutes and seconds of a finished run; for a running one, how long since its last epoch (a killed run stays
    "running" in MLflow)."""
    if s.duration_s is not None:
        return _clock(s.duration_s)
    idle = s.since_last_epoch_s
    return "running" if idle is None else f"running, last epoch {_clock(idle)} ago"


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass(frozen=True)
class Column:
    """A table column; `drop` orders which columns go first when the terminal is too narrow (None: never)."""

    header: str
    cell: Callable
    numeric: bool = False
    drop: int | None = None


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indices of the columns to show so every cell fits whole in `width` characters (rich's box: 3 per column
    plus 1), dropping the lowest-priority droppable columns first."""
    widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    keep = list(range(len(columns)))
    for i in sorted((i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop):
        if sum(widths[k] + 3 for k in keep) + 1 <= width:
            break
        keep.remove(i)
    return keep


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], out: Console = console) -> None:
    width = out.width if out.is_terminal else 10_000
    keep = fit_columns(columns, rows, width)
    table = Table(title=title)
    for k in keep:
        table.add_column(columns[k].header, justify="right" if columns[k].numeric else "left", no_wrap=True)
    for r in rows:
        table.add_row(*(r[k] for k in keep))
    dropped = [c.header for i, c in enumerate(columns) if i not in keep]
    if not out.is_terminal:
        out = Console(width=10_000, file=out.file)
    out.print(table, crop=False)
    if dropped:
        out.print(f"[dim]narrow terminal: left out {', '.join(dropped)} (widen it or use --format csv)[/]")


def print_records(fmt: str, fields: Sequence[str], records: list[dict]) -> None:
    """`records` as json, or as csv with the header row `fields` (printed also when there are no records)."""
    if fmt == "json":
        typer.echo(json.dumps(records, indent=1, default=str))
        return
    from medseg.io.tables import rows_to_csv

    typer.echo(rows_to_csv(records, fields), nl=False)


def _emit(fmt: str, fields: Sequence[str], records: list[dict], title: str, columns: Sequence[Column], rows) -> None:
    if fmt == "table":
        print_table(title, columns, rows)
    else:
        print_records(fmt, fields, records)


# `runs list --format csv|json` columns before the best-epoch Dice per region.
LIST_FIELDS = ("run_id", "name", "model", "status", "fold", "epochs", "duration_s", "best_epoch")


@app.command("list")
def list_(
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Only this MLflow experiment."),
    sort: str = typer.Option("val_dice_mean", "--sort", help="Metric to sort by (best epoch), or start_time."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many runs (the best first)."),
    fmt: str = FormatOpt,
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Runs with model, fold, status, epochs, best val Dice per region and duration."""
    from medseg.tracking.review import BEST_BY, list_runs, ranked_value, region_metrics

    runs = list_runs(resolve_tracking_uri(tracking_uri), experiment, sort, limit)
    regions = region_metrics(set().union(*(s.best for s in runs))) if runs else []
    by_other = sort not in ("start_time", BEST_BY, *regions)  # the ranked value gets a column of its own
    columns = [
        Column("run id", lambda s: s.run_id),
        Column("name", lambda s: s.name, drop=2),
        Column("model", lambda s: s.params.get("model_name", "-"), drop=4),
        Column("cross_modal", lambda s: s.tags.get("cross_modal", "-"), drop=1),
        Column("fold", lambda s: s.params.get("fold", "-") or "-", drop=5),
        Column("status", lambda s: s.status, drop=3),
        Column("epochs", lambda s: str(s.epochs), numeric=True, drop=6),
        *(
            Column(k.removeprefix("val_dice_").upper(), (lambda s, k=k: _fmt(s.best.get(k))), numeric=True)
            for k in regions
        ),
        *([Column(sort, lambda s: _fmt(ranked_value(s, sort)), numeric=True)] if by_other else []),
        Column("duration", _duration, drop=0),
    ]
    rows = [[c.cell(s) for c in columns] for s in runs]
    records = [
        {"run_id": s.run_id, "name": s.name, "model": s.params.get("model_name"), "status": s.status,
         "fold": s.params.get("fold"), "epochs": s.epochs, "duration_s": s.duration_s,
         "best_epoch": s.best_epoch_number,
         **{f"best_{k}": s.best.get(k) for k in regions},
         **({sort: ranked_value(s, sort)} if by_other else {})}
        for s in runs
    ]  # fmt: skip
    fields = [*LIST_FIELDS, *(f"best_{k}" for k in regions), *([sort] if by_other else [])]
    _emit(fmt, fields, records, f"{len(runs)} run(s) by {sort} (best epoch by val_dice_mean)", columns, rows)


# Tags linking a run to the model it started from (`training/from_model.link_tags`).
LINK_TAGS = ("medseg.teacher", "medseg.teacher_run_id", "medseg.pruned_from", "medseg.pruned_from_run_id")


SHOW_FIELDS = ("section", "key", "value")


def show_rows(record: dict) -> list[dict]:
    """`runs show`'s JSON record as `section,key,value` rows, so the csv holds everything the JSON does.

    Scalars go to section `run`; dicts give one row per key; lists one row per item (key: its 0-based index);
    metrics give `metrics` (final value) and `metrics_at_best_epoch` rows.
    """
    rows = [{"section": "run", "key": k, "value": v} for k, v in record.items() if not isinstance(v, list | dict)]
    for section, value in record.items():
        if section == "metrics":
            rows += [{"section": "metrics", "key": m["metric"], "value": m["final"]} for m in value]
            rows += [
                {"section": "metrics_at_best_epoch", "key": m["metric"], "value": m["at_best_epoch"]}
                for m in value
                if m["at_best_epoch"] is not None
            ]
        elif isinstance(value, dict):
            rows += [{"section": section, "key": k, "value": v} for k, v in value.items()]
        elif isinstance(value, list):
            rows += [{"section": section, "key": i, "value": v} for i, v in enumerate(value)]
    return rows


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix of 4+ characters), from `medseg runs list`."),
    fmt: str = FormatOpt,
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Params, final and best metrics, post-processing, artifacts, the logged model and its registry aliases."""
    from medseg.tracking.review import get_run, logged_models, registry_aliases, summarise_run

    uri = resolve_tracking_uri(tracking_uri)
    c, run = get_run(uri, run_id, prefix=True)
    run_id = run.info.run_id  # the whole id, when a prefix was given
    s = summarise_run(c, run)
    arts = [f.path for f in c.list_artifacts(run_id)]
    models = logged_models(c, run)
    aliases = registry_aliases(c, models) if models else []
    postprocess = {k.removeprefix("postprocess."): v for k, v in s.params.items() if k.startswith("postprocess.")}
    links = {k.removeprefix("medseg."): s.tags[k] for k in LINK_TAGS if k in s.tags}
    if fmt != "table":
        metrics = [{"metric": k, "final": v, "at_best_epoch": s.best.get(k)} for k, v in sorted(s.metrics.items())]
        record = {
            "run_id": s.run_id, "name": s.name, "status": s.status, "deleted": s.deleted, "epochs": s.epochs,
            "best_epoch": s.best_epoch_number, "duration_s": s.duration_s, "metrics": metrics, "params": s.params,
            "postprocess": postprocess,
            "artifacts": arts, "models": models, "registry": aliases, "links": links,
        }  # fmt: skip
        print_records(fmt, SHOW_FIELDS, [record] if fmt == "json" else show_rows(record))
        return
    deleted = "  [yellow]deleted[/] (MLflow's trash: restore it to use it)" if s.deleted else ""
    console.print(
        f"[bold]{escape(s.name)}[/]  {s.run_id}  {s.status}{deleted}  {s.epochs} epochs  "
        f"best epoch {s.best_epoch_number or '-'}  {_duration(s)}",
        highlight=False,
    )
    metric_cols = [
        Column("metric", lambda r: r[0]),
        Column("final", lambda r: r[1], True),
        Column("at best epoch", lambda r: r[2], True),
    ]
    rows = [(k, _fmt(v, 4), _fmt(s.best.get(k), 4) if k in s.best else "") for k, v in sorted(s.metrics.items())]
    print_table("metrics", metric_cols, rows)
    params = [(k, v[:80]) for k, v in sorted(s.params.items())]
    print_table("params", [Column("param", None), Column("value", None)], params)
    if postprocess:
        chosen = "; ".join(f"{r}: {rule}" for r, rule in postprocess.items())
        console.print(f"post-processing (chosen on validation): {chosen}", highlight=False)
    console.print(f"artifacts: {', '.join(arts) or '-'}", highlight=False)
    example = models[0] if models else f"runs:/{run_id}/model"
    console.print(
        f"model: {', '.join(models) or '-'}   (predict: medseg predict --model {example} IN OUT)",
        highlight=False,
        soft_wrap=True,
    )
    if aliases:
        console.print(f"registry: {', '.join(aliases)}", highlight=False)
    for role, label in (("teacher", "distilled from"), ("pruned_from", "pruned from")):
        if role in links:
            run = f" (run {links[f'{role}_run_id']})" if f"{role}_run_id" in links else ""
            console.print(f"{label}: {links[role]}{run}", highlight=False, soft_wrap=True)  # ids never wrapped


def _labels(runs) -> list[str]:
    """A column / legend label per run: its name, with the short id where runs share a name (every demo run is
    "demo"; keyed by name alone, the curves of one hid the other's)."""
    names = [s.name or s.run_id[:8] for s in runs]
    return [n if names.count(n) == 1 else f"{n} {s.run_id[:8]}" for n, s in zip(names, runs, strict=True)]


def _clip(value: str, width: int = 30) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


@app.command("compare")
def compare(
    run_ids: list[str] = typer.Argument(..., help="Two or more run ids (or unique prefixes)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG overlaying their validation curves."),
    fmt: str = FormatOpt,
    tracking_uri: str | None = TrackingUriOpt,
) -> None:
    """Side by side: params that differ, best metrics with deltas to the first run."""
    from medseg.tracking.review import get_run, history, region_metrics, summarise_run, unlike_runs

    if len(run_ids) < 2:
        raise typer.BadParameter("give at least two run ids", param_hint="RUN_IDS")
    twice = sorted({r for r in run_ids if run_ids.count(r) > 1})
    if twice:  # every delta would be +0.000: a copy-paste slip, not a comparison
        raise typer.BadParameter(f"run {', '.join(twice)} given more than once", param_hint="RUN_IDS")
    if plot:
        from medseg.io.atomic import check_writable

        if plot.suffix.lower() != ".png":  # the curves are rendered to pixels: a PNG whatever the name says
            raise MedsegError("--plot writes a PNG image", path=str(plot), hint=f"name it {plot.with_suffix('.png')}")
        check_writable(plot)
    uri = resolve_tracking_uri(tracking_uri)
    pairs = [get_run(uri, r, prefix=True) for r in run_ids]
    if len({run.info.run_id for _, run in pairs}) < len(pairs):
        raise typer.BadParameter("the same run given more than once (as its id and a prefix)", param_hint="RUN_IDS")
    runs = [summarise_run(c, r) for c, r in pairs]
    keys = sorted(set().union(*(s.params for s in runs)))
    differing = [k for k in keys if len({s.params.get(k, "-") for s in runs}) > 1]
    metrics = region_metrics(set().union(*(s.best for s in runs)))
    records = [{"run_id": s.run_id, "name": s.name, **{k: s.params.get(k) for k in differing},
                **{f"best_{k}": s.best.get(k) for k in metrics}} for s in runs]  # fmt: skip
    rows = [[f"{k}", *(_clip(s.params.get(k, "-")) for s in runs)] for k in differing]
    for key in metrics:
        base = runs[0].best.get(key)
        cells = []
        for s in runs:
            v = s.best.get(key)
            delta = "" if v is None or base is None or s is runs[0] else f" ({v - base:+.3f})"
            cells.append(_fmt(v) + delta)
        rows.append([f"best {key}", *cells])
    labels = _labels(runs)
    columns = [Column("", None), *(Column(label, None) for label in labels)]
    unlike = unlike_runs(runs)
    if unlike:  # on stderr: csv and json on stdout stay parseable
        err_console.print(
            f"[yellow]warning:[/] {unlike}: val_dice_mean averages different classes, so the deltas do not compare "
            "like with like",
            highlight=False,
            soft_wrap=True,
        )
    fields = ["run_id", "name", *differing, *(f"best_{k}" for k in metrics)]
    _emit(fmt, fields, records, "run comparison (deltas vs the first run; differing params first)", columns, rows)
    if plot:
        from medseg.viz.curves import compare_curves
        from medseg.viz.overlays import save_png

        curves = {  # epochs counted from 1, as the training log and learning_curves.png count them
            label: [(step + 1, v) for step, v in history(pairs[i][0], s.run_id, "val_dice_mean")]
            for i, (label, s) in enumerate(zip(labels, runs, strict=True))
        }
        save_png(compare_curves(curves), plot)
        if fmt == "table":
            console.print(f"curves: {plot}")
