"""Attach a built report to its study's parent run: files as artifacts, the summary as metrics and tags.

Re-running the report logs the metrics again (MLflow keeps the history; the UI shows the latest) and
overwrites artifacts of the same name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tlbench.tracking.mlflow_run import MlflowRun

REPORT_ARTIFACT_DIR = "report"


def publish_report(
    parent_run_id: str,
    *,
    root: Path,
    files: Sequence[Path],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    tracking_uri: str | None = None,
) -> None:
    """Log ``files`` (paths under ``root``) under ``report/`` keeping their sub-folders, then metrics, tags.

    The parent run's status is left as the sweep set it: logging to a finished run is allowed.
    """
    run = MlflowRun.attach(parent_run_id, tracking_uri=tracking_uri)
    for path in files:
        relative = path.relative_to(root).parent
        folder = (
            REPORT_ARTIFACT_DIR if relative == Path(".") else f"{REPORT_ARTIFACT_DIR}/{relative.as_posix()}"
        )
        run.log_artifact(str(path), folder)
    run.log_metrics(metrics)
    run.set_tags(tags)
