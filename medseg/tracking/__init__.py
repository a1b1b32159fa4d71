"""MLflow lives here alone: the rest of medseg talks to a `Tracker` and never imports mlflow."""

from medseg.redact import redact_secrets
from medseg.tracking.tracker import NullTracker, Tracker, TrackingTarget, resolve_tracking_uri

__all__ = ["NullTracker", "Tracker", "TrackingTarget", "redact_secrets", "resolve_tracking_uri"]
