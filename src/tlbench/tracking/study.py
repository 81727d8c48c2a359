"""A study read back from MLflow as plain records (no mlflow object leaves ``tracking/``), and its report
published to it. A study is an experiment tagged ``tlbench.study``; the latest is the one whose newest
run started last (else its creation time): start times, so a study still running is the latest."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

from tlbench.errors import TrackingError
from tlbench.tracking import names as N
from tlbench.tracking.runs import MlflowRun, _client, _every_page, resolve_tracking_uri


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values: params are the logged strings, metrics their latest values."""

    run_id: str
    run_name: str
    mlflow_status: str  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    start_time_ms: int | None
    end_time_ms: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPredictions:
    """A run's per-image test predictions (test images in the order ``data.split_seed`` fixes)."""

    labels: tuple[int, ...]
    predicted: tuple[int, ...]
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyRef:
    name: str
    experiment_id: str
    experiment_name: str
    last_activity_ms: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyRecords:
    """Everything the report needs from the store: the parent run, the trials, the sweep definition."""

    study: StudyRef
    tracking_uri: str  # credentials removed: safe to print in a published report
    parent: RunRecord | None
    children: tuple[RunRecord, ...]
    extra_parents: int = 0  # parent runs beyond the first (a study should have exactly one)
    sweep_yaml: str | None = None
    race_json: str | None = None  # the racing finals (``race.json`` of the parent), when the sweep raced


def redact_uri(uri: str) -> str:
    """The tracking URI without user name or password (reports are published)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        mlflow_status=run.info.status,
        start_time_ms=run.info.start_time,
        end_time_ms=run.info.end_time,
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=dict(run.data.tags),
    )


def list_studies(tracking_uri: str | None = None) -> list[StudyRef]:
    """All studies in the store, latest first (see the module docstring for "latest")."""
    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = _client(uri)
        experiments = _every_page(lambda n, token: client.search_experiments(max_results=n, page_token=token))
    except Exception as exc:  # connection, auth, schema: all mean "cannot read"
        raise TrackingError(
            f"cannot read MLflow tracking store {redact_uri(uri)}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}. Check MLFLOW_TRACKING_URI."
        ) from None
    studies = []
    for experiment in experiments:
        name = experiment.tags.get(N.STUDY_TAG)
        if not name:
            continue
        newest = client.search_runs(
            [experiment.experiment_id], max_results=1, order_by=["attributes.start_time DESC"]
        )
        activity = newest[0].info.start_time if newest else None
        studies.append(
            StudyRef(
                name=name,
                experiment_id=str(experiment.experiment_id),
                experiment_name=experiment.name,
                last_activity_ms=int(activity or experiment.creation_time or 0),
                tags=dict(experiment.tags),
            )
        )
    return sorted(studies, key=lambda s: s.last_activity_ms, reverse=True)


def find_study(name: str | None = None, *, tracking_uri: str | None = None) -> StudyRef:
    """The named study, or the latest one; errors say what exists and what to run."""
    studies = list_studies(tracking_uri)
    where = redact_uri(resolve_tracking_uri(tracking_uri))
    if not studies:
        raise TrackingError(
            f"no studies found in the MLflow store {where}: run `make sweep` (e.g. `make sweep SWEEP=smoke`) "
            "first, or point MLFLOW_TRACKING_URI at the store that holds your sweeps"
        )
    if name is None:
        return studies[0]
    for study in studies:
        if name in {study.name, study.experiment_name}:
            return study
    known = ", ".join(s.name for s in studies)
    raise TrackingError(f"unknown study '{name}' in {where}; existing studies (latest first): {known}")


def _read_text(client: Any, run_id: str, artifact: str) -> str | None:
    # MLflow draws a progress bar for every download: not for one small file (the variable as it was after)
    no_bar = mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    try:
        with tempfile.TemporaryDirectory() as tmp, no_bar:
            return Path(client.download_artifacts(run_id, artifact, tmp)).read_text()
    except Exception:  # absent or unreadable: the caller says what is missing
        return None


def read_text_artifact(run_id: str, artifact: str, *, tracking_uri: str | None = None) -> str | None:
    """A run's text artifact (e.g. a final run's ``config.yaml``), or None when it is absent."""
    return _read_text(_client(resolve_tracking_uri(tracking_uri)), run_id, artifact)


def read_study(study: StudyRef, *, tracking_uri: str | None = None) -> StudyRecords:
    """The parent run and every trial run (active runs only; deleted runs are not part of a study)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    pages = _every_page(
        lambda n, token: client.search_runs([study.experiment_id], max_results=n, page_token=token)
    )
    runs = [_record(r) for r in pages]
    parents = sorted((r for r in runs if r.tags.get(N.ROLE) == N.STUDY), key=lambda r: r.start_time_ms or 0)
    parent = parents[0] if parents else None
    children = tuple(
        sorted(
            (r for r in runs if r.tags.get(N.ROLE) != N.STUDY), key=lambda r: (r.start_time_ms or 0, r.run_id)
        )
    )
    return StudyRecords(
        study=study,
        tracking_uri=redact_uri(uri),
        parent=parent,
        children=children,
        extra_parents=max(0, len(parents) - 1),
        sweep_yaml=_read_text(client, parent.run_id, N.SWEEP_ARTIFACT) if parent else None,
        race_json=_read_text(client, parent.run_id, N.RACE_ARTIFACT) if parent else None,
    )


def parse_predictions(text: str) -> RunPredictions | None:
    """The ``predictions/test.json`` payload, or None when it is not what the trial writes."""
    try:
        data = json.loads(text)
        labels = tuple(int(v) for v in data["labels"])
        predicted = tuple(int(v) for v in data["predicted"])
        names = tuple(str(v) for v in data.get("class_names", ()))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not labels or len(labels) != len(predicted):
        return None
    return RunPredictions(labels, predicted, names)


def read_test_predictions(
    run_ids: Sequence[str], *, tracking_uri: str | None = None
) -> dict[str, RunPredictions]:
    """Per-image test predictions of final runs (one download each); runs without a readable artifact
    (older studies) are left out, and the report approximates the test-set part of their intervals."""
    client = _client(resolve_tracking_uri(tracking_uri))
    texts = {run_id: _read_text(client, run_id, N.PREDICTIONS_ARTIFACT) for run_id in run_ids}
    parsed = {run_id: parse_predictions(text) for run_id, text in texts.items() if text is not None}
    return {run_id: value for run_id, value in parsed.items() if value is not None}


def publish_report(
    parent_run_id: str,
    *,
    root: Path,
    files: Sequence[Path],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    tracking_uri: str | None = None,
) -> None:
    """Log ``files`` (under ``root``) to the parent run's ``report/`` keeping their sub-folders, then
    metrics and tags (a re-run logs them again and overwrites the files); its status is left as it is."""
    run = MlflowRun.attach(parent_run_id, tracking_uri=tracking_uri)
    for path in files:
        relative = path.relative_to(root).parent.as_posix()
        run.log_artifact(str(path), N.REPORT_ARTIFACT_DIR + ("" if relative == "." else f"/{relative}"))
    run.log_metrics(metrics)
    run.set_tags(tags)
