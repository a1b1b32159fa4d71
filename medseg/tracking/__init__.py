"""MLflow lives here alone: the rest of medseg talks to a `Tracker` and never imports mlflow."""

from medseg.tracking.tracker import NullTracker, Tracker, redact_uri, resolve_tracking_uri

__all__ = ["NullTracker", "Tracker", "redact_uri", "resolve_tracking_uri"]
