"""The MLflow model registry: register versions, keep `champion` on the best one, fetch medseg bundles back.

The champion check cannot be a read-then-set (two registrations at once would each see the old champion and the
slower one would win, even when worse). Instead, after tagging its version, a registration re-derives the champion
from every version's tagged metric and sets the alias to the best: whichever registration finishes last sees all
versions registered before it, so the alias always ends on the best one.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import TrackingError
from medseg.redact import redact_secrets
from medseg.tracking.store import client, existing_store_client, mlflow_module, retry_lost_race, scoped_tracking_uri

METRIC_TAG = "val_dice_mean"
CHAMPION = "champion"


def _tagged_metric(version) -> float | None:
    try:
        return float(version.tags[METRIC_TAG])
    except (KeyError, TypeError, ValueError):
        return None


def promote_best(uri: str, name: str) -> str | None:
    """Point `champion` at the version with the highest tagged metric; returns that version (None if none).
    Setting an alias is itself a look-up-then-insert in MLflow: a registration that loses that race re-derives."""
    c = client(uri)
    return retry_lost_race(lambda: _promote(c, name))


def _promote(c, name: str) -> str | None:
    scored = [
        (m, int(v.version)) for v in c.search_model_versions(f"name='{name}'") if (m := _tagged_metric(v)) is not None
    ]
    if not scored:
        return None
    _, best = max(scored, key=lambda s: (s[0], -s[1]))  # ties: the older version keeps the title
    try:
        current = c.get_model_version_by_alias(name, CHAMPION).version
    except Exception:
        current = None
    if str(current) != str(best):
        c.set_registered_model_alias(name, CHAMPION, str(best))
    return str(best)


def check_names(name: str, aliases: list[str]) -> None:
    """Refuse a model name or alias MLflow (or a `models:/NAME@ALIAS` URI) cannot take, before anything is
    registered: MLflow checks an alias only after creating the version, which was left behind without it."""
    if not name.strip() or any(c in name for c in "/@:'\""):
        raise TrackingError(
            f"invalid registered model name {name!r}", hint="use letters, digits, '-', '_' or '.' (no / @ : or quotes)"
        )
    for alias in aliases:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias) or not re.fullmatch(r"[\w-]+", alias):
            raise TrackingError(
                f"invalid alias {alias!r}",
                hint="letters, digits, '-', '_' ('latest' is MLflow's name for the newest version, 'v3' for a version)",
            )


def register_version(uri: str, model_uri: str, name: str, metric: float | None, aliases: list[str]) -> list[str]:
    """Register `model_uri` under `name`, tag its metric, set `aliases`, and keep `champion` on the best version.

    Returns `v<N>` and the aliases now pointing at it; MLflow refusals become one-line TrackingErrors.
    """
    check_names(name, aliases)
    c = client(uri)
    try:
        # MLflow prints its own "Created version '2' of model ..." lines to stderr: the caller says what happened
        with scoped_tracking_uri(uri), contextlib.redirect_stderr(io.StringIO()):
            version = mlflow_module().register_model(model_uri, name).version
        if metric is not None:
            c.set_model_version_tag(name, version, METRIC_TAG, f"{metric:.6f}")
        for alias in aliases:
            retry_lost_race(lambda alias=alias: c.set_registered_model_alias(name, alias, version))
        champion = promote_best(uri, name) if metric is not None and CHAMPION not in aliases else None
    except Exception as exc:
        raise TrackingError(
            f"cannot register {model_uri} as '{name}' ({redact_secrets(str(exc).splitlines()[0])[:160]})",
            hint="check --tracking-uri and `medseg models list --registry`",
        ) from None
    won = [CHAMPION] if champion == str(version) else []
    return [f"v{version}", *aliases, *won]


@contextlib.contextmanager
def downloaded_bundle(model_uri: str, tracking_uri: str) -> Iterator[Path]:
    """The medseg bundle stored inside an MLflow model (`runs:/..`, `models:/..`), in a temporary folder removed
    on exit. A SQLite store that does not exist is refused, not created empty beside the user's files."""
    from medseg.io.bundle import BUNDLE_FILE  # here, not at the top: it imports torch (CLI start-up)

    existing_store_client(tracking_uri)  # reachability check: one line instead of minutes of retries
    if model_uri.startswith("runs:/"):
        from medseg.tracking.review import active_run

        active_run(tracking_uri, model_uri.removeprefix("runs:/").split("/")[0])
    with tempfile.TemporaryDirectory(prefix="medseg-model-") as dst:
        try:
            # `models:/` URIs are resolved through MLflow's global registry URI whatever is passed: scope it.
            with scoped_tracking_uri(tracking_uri):
                local = Path(
                    mlflow_module().artifacts.download_artifacts(
                        artifact_uri=model_uri, dst_path=dst, tracking_uri=tracking_uri, registry_uri=tracking_uri
                    )
                )
        except Exception as exc:
            raise TrackingError(
                f"cannot fetch MLflow model {model_uri} ({exc.__class__.__name__}: {redact_secrets(str(exc))[:160]})",
                hint="check the URI with `medseg runs show RUN_ID` and --tracking-uri",
            ) from None
        found = list(local.rglob(BUNDLE_FILE))
        if not found:
            raise TrackingError(f"MLflow model {model_uri} holds no {BUNDLE_FILE} (not logged by medseg)")
        yield found[0]
