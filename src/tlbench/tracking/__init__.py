"""MLflow tracking (the only package that imports mlflow)."""

from tlbench.tracking.runs import (
    MetricBuffer,
    MlflowRun,
    check_reachable,
    get_or_create_experiment,
    resolve_tracking_uri,
)

__all__ = ["MetricBuffer", "MlflowRun", "check_reachable", "get_or_create_experiment", "resolve_tracking_uri"]
