"""Reading runs back for review: summaries, best epochs, curves, registry (used by `medseg runs`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from medseg.errors import TrackingError
from medseg.redact import redact_secrets
from medseg.tracking.store import existing_store_client

BEST_BY = "val_dice_mean"


def region_metrics(keys) -> list[str]:
    """The per-region validation Dice keys a run logged (any task's regions), then the mean."""
    regions = sorted(k for k in keys if k.startswith("val_dice_") and k != BEST_BY)
    return [*regions, BEST_BY] if regions or BEST_BY in keys else []


@dataclass
class RunSummary:
    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    start_ms: int
    end_ms: int | None
    epochs: int = 0
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None  # the MLflow step (0-based)
    last_epoch_ms: int | None = None  # when the last epoch's metrics were logged
    deleted: bool = False  # in MLflow's trash (hidden from lists, refused for new work, purged by `mlflow gc`)

    @property
    def since_last_epoch_s(self) -> float | None:
        """For a run still marked running: seconds since it last logged an epoch (or since it started). A killed
        run (SIGKILL, a lost machine) stays RUNNING in MLflow for ever; this says how long it has been silent."""
        if self.end_ms or self.status != "RUNNING":
            return None
        return max(0.0, time.time() - (self.last_epoch_ms or self.start_ms) / 1000)

    @property
    def best_epoch_number(self) -> int | None:
        """The best epoch as training prints it (1-based)."""
        return None if self.best_epoch is None else self.best_epoch + 1

    @property
    def duration_s(self) -> float | None:
        return (self.end_ms - self.start_ms) / 1000 if self.end_ms else None


def unlike_runs(runs: list[RunSummary]) -> str | None:
    """Why these runs' Dice do not compare like with like (other tasks, or other regions / classes), or None.

    Runs that logged no validation Dice (crashed early) have no regions to disagree on.
    """
    tasks = sorted({s.tags["task"] for s in runs if s.tags.get("task")})
    regions = {tuple(k.removeprefix("val_dice_") for k in region_metrics(s.metrics)[:-1]) for s in runs}
    regions.discard(())
    if len(tasks) > 1:
        return f"these runs are of different tasks ({', '.join(tasks)})"
    if len(regions) > 1:
        return f"these runs score different regions ({' vs '.join(', '.join(r) for r in sorted(regions))})"
    return None


def history(c, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


def summarise_run(c, run) -> RunSummary:
    """A run with its epoch count and the val Dice of its best epoch (by val_dice_mean)."""
    s = RunSummary(
        run.info.run_id,
        run.info.run_name or "",
        run.info.status,
        dict(run.data.params),
        dict(run.data.tags),
        dict(run.data.metrics),
        run.info.start_time,
        run.info.end_time,
        deleted=run.info.lifecycle_stage == "deleted",
    )
    # The post-processing a resume chose again: its params keep the first choice (MLflow params are immutable).
    s.params |= {k.removeprefix("medseg."): v for k, v in s.tags.items() if k.startswith("medseg.postprocess.")}
    losses = c.get_metric_history(s.run_id, "train_loss")
    s.epochs = len(losses)
    s.last_epoch_ms = max((m.timestamp for m in losses), default=None)
    mean = history(c, s.run_id, BEST_BY)
    if mean:
        s.best_epoch, _ = max(mean, key=lambda x: x[1])
        for key in region_metrics(s.metrics):
            at = dict(history(c, s.run_id, key))
            if s.best_epoch in at:
                s.best[key] = at[s.best_epoch]
    return s


MIN_PREFIX = 4  # shortest run-id prefix looked up (git's default abbreviation is 7)
HEX = frozenset("0123456789abcdef")


def get_run(uri: str, run_id: str, prefix: bool = False):
    """The store's client and run `run_id`; with `prefix`, also the one run whose id starts with it (the review
    commands label runs by their first 8 characters, as git does commits)."""
    c = existing_store_client(uri)
    missing = TrackingError(f"no run {run_id} in {redact_secrets(uri)}", hint="see `medseg runs list`")
    try:
        return c, c.get_run(run_id)
    except Exception:
        if not prefix or not MIN_PREFIX <= len(run_id) < 32 or not all(ch in HEX for ch in run_id.lower()):
            raise missing from None
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    found = [r for r in _every_run(c, experiments, ViewType.ALL) if r.info.run_id.startswith(run_id.lower())]
    if len(found) == 1:
        return c, found[0]
    if not found:
        raise missing
    ids = ", ".join(r.info.run_id for r in found[:3])
    raise TrackingError(f"run id prefix {run_id} matches {len(found)} runs ({ids})", hint="give more of the id")


def active_run(uri: str, run_id: str, prefix: bool = False):
    """`get_run`, refusing a deleted run (MLflow's trash): it takes no new metrics (resumed training, `evaluate
    --run`), and `mlflow gc` may purge its model at any time (`predict --model runs:/..`, `models register`)."""
    c, run = get_run(uri, run_id, prefix)
    refuse_deleted(run, uri)
    return c, run


def refuse_deleted(run, uri: str) -> None:
    """A TrackingError, with the way to restore it, when `run` is in MLflow's trash."""
    if run.info.lifecycle_stage == "deleted":
        run_id = run.info.run_id
        raise TrackingError(
            f"run {run_id} is deleted in {redact_secrets(uri)}",
            hint=f"restore it first (the MLflow UI's deleted runs, or `mlflow runs restore --run-id {run_id}` with "
            "MLFLOW_TRACKING_URI set to this store)",
        )


def list_runs(uri: str, experiment: str | None, sort: str, limit: int) -> list[RunSummary]:
    """The `limit` best runs by `sort` among every run of the store (or `experiment`), or the latest by start time.

    Ranking reads each run's best-epoch values, which cost several history queries per run; so every run is first
    ranked by what its record already holds (the logged model's val Dice tag, else the metric's last value), and
    only the leading candidates are read in full. Losses and distances rank ascending.
    """
    c = existing_store_client(uri)
    if experiment:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(f"no experiment '{experiment}' in {redact_secrets(uri)}", hint="see `medseg runs list`")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in c.search_experiments()]
    if sort == "start_time":
        runs = c.search_runs(ids, max_results=limit, order_by=["attributes.start_time DESC"])
        return [summarise_run(c, r) for r in runs]
    runs = _every_run(c, ids)
    if sort != BEST_BY and runs and not any(sort in r.data.metrics for r in runs):  # a typo in --sort
        known = sorted({k for r in runs for k in r.data.metrics})
        raise TrackingError(f"no run has the metric '{sort}'", hint=f"sort by start_time or one of: {', '.join(known)}")
    sign = 1.0 if lower_is_better(sort) else -1.0
    worst = sign * math.inf  # a run without the metric ranks last
    quick = sorted(runs, key=lambda r: sign * _recorded_value(r, sort, worst))
    summaries = [summarise_run(c, r) for r in quick[: max(3 * limit, 20)]]
    return sorted(summaries, key=lambda s: sign * ranked_value(s, sort, worst))[:limit]


def ranked_value(s: RunSummary, metric: str, missing: float | None = None) -> float | None:
    """What `runs list --sort metric` ranks a run by: its best-epoch value, else the last logged (test metrics),
    else `missing`."""
    return s.best.get(metric, s.metrics.get(metric, missing))


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "hd95" in metric or (metric.endswith("_s") and not metric.endswith("_per_s"))


def _every_run(c, ids: list[str], view_type: int | None = None) -> list:
    """Every run of experiments `ids`, newest first (active ones unless `view_type` says otherwise)."""
    from mlflow.entities import ViewType

    runs, token = [], None
    view = view_type or ViewType.ACTIVE_ONLY
    while True:
        page = c.search_runs(
            ids, run_view_type=view, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _recorded_value(run, metric: str, missing: float) -> float:
    """A run's `metric` from its record alone: the logged model's val Dice (its best epoch), else the last value,
    else `missing` (the worst value, so the run ranks last)."""
    if metric == BEST_BY and MODEL_METRIC_TAG in run.data.tags:
        return float(run.data.tags[MODEL_METRIC_TAG])
    return run.data.metrics.get(metric, missing)


MODEL_METRIC_TAG = "medseg.model_val_dice_mean"


def logged_model_metric(c, run) -> float | None:
    """val_dice_mean of the weights a run logged as its model: the best epoch's (tagged at logging), not the
    last epoch's value that `run.data.metrics` holds."""
    tagged = run.data.tags.get(MODEL_METRIC_TAG)
    if tagged is not None:
        return float(tagged)
    values = [v for _, v in history(c, run.info.run_id, BEST_BY)]
    return max(values) if values else None


def logged_models(c, run) -> list[str]:
    """`models:/<id>` URIs of the models a run logged (MLflow 3 keeps them apart from run artifacts), newest first:
    a resumed run logs its best model again, and the first one (registered, shown as the one to predict with) was
    the model from before the resume, with its older post-processing."""
    outputs = getattr(run, "outputs", None)
    ids = list(dict.fromkeys(o.model_id for o in (outputs.model_outputs if outputs else [])))
    ids.sort(key=lambda i: c.get_logged_model(i).creation_timestamp, reverse=True)
    return [f"models:/{i}" for i in ids]


def registry_aliases(c, model_uris: list[str]) -> list[str]:
    """'name@alias (vN)' for every registered version created from these models."""
    out = []
    model_ids = {u.split("/", 1)[1] for u in model_uris}
    for rm in c.search_registered_models():
        for alias, version in (rm.aliases or {}).items():
            mv = c.get_model_version(rm.name, version)
            if getattr(mv, "model_id", None) in model_ids or any(mv.source.endswith(i) for i in model_ids):
                out.append(f"{rm.name}@{alias} (v{version})")
    return out


def run_output_dir(run_id: str, tracking_uri: str) -> str:
    """The local folder (checkpoints) a medseg run wrote, from its `medseg.out_dir` tag."""
    try:
        run = existing_store_client(tracking_uri).get_run(run_id)
    except TrackingError:
        raise
    except Exception:
        raise TrackingError(
            f"no run {run_id} in {redact_secrets(tracking_uri)}",
            hint="pass a checkpoint path or a run id from `medseg runs list`",
        ) from None
    out = run.data.tags.get("medseg.out_dir")
    if not out:
        raise TrackingError(f"run {run_id} was not written by medseg train (no medseg.out_dir tag)")
    return out
