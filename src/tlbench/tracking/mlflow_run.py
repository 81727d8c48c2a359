"""MLflow runs through ``MlflowClient`` (no global active-run state, so sweeps can nest runs safely).

This package is the only code that imports mlflow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from tlbench.errors import TrackingError

# MLflow's param values are strings of bounded length.
_MAX_PARAM = 6000


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The URI a run will use: explicit, else ``$MLFLOW_TRACKING_URI``, else MLflow's default."""
    import mlflow

    return tracking_uri or mlflow.get_tracking_uri()


def get_or_create_experiment(client: Any, name: str) -> str:
    """Experiment id by name; safe when several processes create it at once."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment '{name}' is deleted: restore it (mlflow experiments restore) "
                "or use another name"
            )
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another worker created it first
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def check_reachable(tracking_uri: str | None) -> str:
    """Fail fast, before any training, when the tracking store cannot be used."""
    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = _client(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # connection, auth, schema errors: all mean "cannot track"
        raise TrackingError(
            f"MLflow tracking store {uri} is not usable: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
            "Start the server / fix MLFLOW_TRACKING_URI, or run with tracking=disabled."
        ) from None
    return uri


class MlflowRun:
    """One MLflow run: params, tags, metrics (batched), text artifacts, and a final status."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._ended = False

    @classmethod
    def start(
        cls,
        *,
        experiment: str,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> MlflowRun:
        client = _client(resolve_tracking_uri(tracking_uri))
        experiment_id = get_or_create_experiment(client, experiment)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return cls(client, run.info.run_id, experiment_id)

    @classmethod
    def attach(cls, run_id: str, *, tracking_uri: str | None = None) -> MlflowRun:
        """An existing run (e.g. a study's parent run shared by several workers)."""
        client = _client(resolve_tracking_uri(tracking_uri))
        run = client.get_run(run_id)
        return cls(client, run_id, run.info.experiment_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps params per batch at 100
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, local_path, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED``; idempotent."""
        if not self._ended:
            self._client.set_terminated(self.run_id, status=status)
            self._ended = True
