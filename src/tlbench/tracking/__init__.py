"""MLflow tracking (the only package that imports mlflow)."""

from tlbench.tracking.runs import MetricBuffer, MlflowRun, check_reachable, resolve_tracking_uri

__all__ = ["MetricBuffer", "MlflowRun", "check_reachable", "resolve_tracking_uri"]
