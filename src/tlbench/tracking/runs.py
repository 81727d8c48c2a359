"""MLflow runs through ``MlflowClient`` (no process-wide active run, so sweeps nest runs safely): one run,
a study's experiment and parent run, the SQLite store's creation lock, passwords out of what is printed."""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tlbench.errors import TrackingError
from tlbench.tracking import names as N

_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][\w+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)", re.IGNORECASE
)


def redact_password(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (anywhere in ``text``)."""
    return _URI_PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)


# MLflow creates and migrates a SQLite store's schema when a client first opens it, unlocked: two sweeps
# started together on a fresh mlflow.db both migrate and all but one die ("duplicate column name: step").
# A flock on <db>.lock while a client opens the store makes the second wait and find the schema ready.


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite://`` URI (``sqlite:///rel.db``, ``sqlite:////abs.db``); else None."""
    scheme, sep, rest = (uri or "").partition("://")
    if not sep or scheme.partition("+")[0] != "sqlite":
        return None
    database = rest.partition("?")[0]
    database = database[1:] if database.startswith("/") else database  # the host part is empty
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextmanager
def sqlite_store_lock(uri: str | None) -> Iterator[None]:
    """Hold ``<db>.lock`` for a SQLite URI; a no-op for any other store, or where the lock file cannot be
    created (opening the store then fails or succeeds on its own, with MLflow's error)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    try:
        handle = open(lock_path(database), "a")  # noqa: SIM115 (closed below, after the unlock)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _client(tracking_uri: str | None) -> Any:
    """A client on the store, opened (a fresh SQLite file: created) under the store's lock."""
    from mlflow.tracking import MlflowClient

    with sqlite_store_lock(resolve_tracking_uri(tracking_uri)):
        return MlflowClient(tracking_uri=tracking_uri)


_PAGE = 1000  # runs or experiments per request


def _every_page(fetch: Callable[[int, str | None], Any]) -> list[Any]:
    """Every page of ``fetch(max_results, page_token)`` (``mlflow.search_runs`` pages only the process-wide
    tracking URI; tlbench is given its own)."""
    from mlflow.utils import get_results_from_paginated_fn

    return list(get_results_from_paginated_fn(fetch, _PAGE))


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The URI a run will use: explicit, else ``$MLFLOW_TRACKING_URI``, else MLflow's default."""
    import mlflow

    return tracking_uri or mlflow.get_tracking_uri()


# model training: MLflow's UI then offers the runs table, not its GenAI pages
_KIND_TAGS = {N.EXPERIMENT_KIND: N.MODEL_TRAINING_KIND}


def get_or_create_experiment(client: Any, name: str) -> str:
    """Experiment id by name, tagged as model training (unless a kind is set); safe against concurrent
    creation."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, tags=_KIND_TAGS))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # another worker created it first
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment '{name}' is deleted: restore it (mlflow experiments restore) "
            "or use another name"
        )
    experiment_id = str(experiment.experiment_id)
    if N.EXPERIMENT_KIND not in (experiment.tags or {}):
        set_experiment_tags(client, experiment_id, _KIND_TAGS)
    return experiment_id


def set_experiment_tags(client: Any, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Set experiment tags, also when another process sets the same one at the same moment."""
    from mlflow.exceptions import MlflowException

    for key, value in tags.items():
        try:
            client.set_experiment_tag(experiment_id, key, value)
        except MlflowException as exc:
            # two workers tagging at once: the SQL store's select-then-insert fails "UNIQUE constraint";
            # the row exists now, so setting it again is an update
            if "UNIQUE" not in str(exc).upper():
                raise
            client.set_experiment_tag(experiment_id, key, value)


def fallback_run_name(tags: Mapping[str, str], *, now: datetime | None = None) -> str:
    """``<role> <local start time>``: MLflow's own adjective-noun name draws from ``random``, which a trial
    has just seeded (every run of a seed got the same name)."""
    moment = (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    return f"{tags.get(N.ROLE) or 'run'} {moment}"


def check_reachable(tracking_uri: str | None) -> str:
    """Fail fast, before any training, when the tracking store cannot be used."""
    uri = resolve_tracking_uri(tracking_uri)
    try:
        _probe(uri)
        _client(uri).search_experiments(max_results=1)
    except Exception as exc:  # connection, auth, schema errors: all mean "cannot track"
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise TrackingError(
            f"MLflow tracking store {redact_password(uri)} is not usable: "
            f"{type(exc).__name__}: {redact_password(detail)}. "
            "Start the server / fix MLFLOW_TRACKING_URI, or run with tracking=disabled."
        ) from None
    return uri


_DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def _probe(uri: str, *, timeout: float = 5.0) -> None:
    """One quick try, as MLflow's client retries for minutes (a server) or 100 s (a database): a server's
    health endpoint, a database's host and port (no credentials sent); other stores: the client tells."""
    import socket
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout):  # the user's own tracking URI
                return
        except urllib.error.HTTPError:
            return  # the server answered (auth or routing decide the rest; the client call will tell)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"no answer from {url} within {timeout:.0f}s ({reason})") from None
    scheme = parts.scheme.partition("+")[0]
    if scheme not in _DATABASE_PORTS or not parts.hostname:
        return  # not a database server, or a local socket: the client call will tell
    port = parts.port or _DATABASE_PORTS[scheme]
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return
    except OSError as exc:
        raise ConnectionError(
            f"no answer from {parts.hostname}:{port} within {timeout:.0f}s ({exc})"
        ) from None


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
        unique: bool = False,
    ) -> MlflowRun:
        """A new run in ``experiment`` (created if needed); ``unique``: a taken name gets ``#2``, ``#3``..."""
        client = _client(resolve_tracking_uri(tracking_uri))
        experiment_id = get_or_create_experiment(client, experiment)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[N.PARENT_RUN_ID] = parent_run_id
        name = run_name or fallback_run_name(all_tags)
        if unique:
            name = _unused_name(client, experiment_id, name)
        run = client.create_run(experiment_id, run_name=name, tags=all_tags)
        return cls(client, run.info.run_id, experiment_id)

    @classmethod
    def attach(cls, run_id: str, *, tracking_uri: str | None = None) -> MlflowRun:
        """An existing run (e.g. a study's parent run shared by several workers)."""
        client = _client(resolve_tracking_uri(tracking_uri))
        run = client.get_run(run_id)
        return cls(client, run_id, run.info.experiment_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # values cut at MLflow's limit; log_batch splits long lists into the batches MLflow takes
        self._client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.log_metric_steps([(step or 0, int(time.time() * 1000), metrics)])

    def log_metric_steps(self, points: Sequence[tuple[int, int, Mapping[str, float]]]) -> None:
        """Metrics of several steps, ``(step, timestamp_ms, metrics)`` each, in as few writes as possible."""
        from mlflow.entities import Metric

        items = [
            Metric(k, float(v), timestamp, step)
            for step, timestamp, metrics in points
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        self._client.log_batch(self.run_id, metrics=items)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, local_path, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED``; idempotent."""
        if not self._ended:
            self._client.set_terminated(self.run_id, status=status)
            self._ended = True


class MetricBuffer:
    """Per-epoch metrics written at most once per ``every_s``, and at :meth:`flush`: a write is a SQLite
    transaction of tens of ms, one per epoch was a few percent of a short trial."""

    def __init__(self, run: MlflowRun, *, every_s: float = 15.0) -> None:
        self._run = run
        self._every_s = every_s
        self._pending: list[tuple[int, int, Mapping[str, float]]] = []
        self._last_write = time.monotonic()

    def add(self, metrics: Mapping[str, float], *, step: int) -> None:
        self._pending.append((step, int(time.time() * 1000), dict(metrics)))
        if time.monotonic() - self._last_write >= self._every_s:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._run.log_metric_steps(pending)
        self._last_write = time.monotonic()


def latest_metrics(run_id: str, *, tracking_uri: str | None = None) -> dict[str, float]:
    """A run's metrics, each at its latest value (what the runs table shows)."""
    run = _client(resolve_tracking_uri(tracking_uri)).get_run(run_id)
    return {key: float(value) for key, value in run.data.metrics.items()}


def _unused_name(client: Any, experiment_id: str, name: str) -> str:
    """``name``, or ``name #k`` with the smallest k >= 2 that no run of the experiment is called."""
    quoted = name.replace("'", "\\'")
    taken = {
        run.info.run_name
        for run in client.search_runs(
            [experiment_id], filter_string=f"attributes.run_name LIKE '{quoted}%'", max_results=1000
        )
    }
    if name not in taken:
        return name
    return next(f"{name} #{k}" for k in itertools.count(2) if f"{name} #{k}" not in taken)


# A study in MLflow (read by the report): one experiment named after it (tagged tlbench.study/.sweep),
# one parent run (role=study) shared by the workers, one child run per trial, and a shared view of the
# runs table (STUDY_VIEW).


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    tags: dict[str, str]


class StudyRuns:
    """The runs of one study's experiment, through one MLflow client."""

    def __init__(self, study: str, *, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._client = _client(self.tracking_uri)
        self.study = study
        self.experiment_id = get_or_create_experiment(self._client, study)

    def tag_experiment(self, tags: Mapping[str, str]) -> None:
        set_experiment_tags(self._client, self.experiment_id, tags)

    def _search(self, filter_string: str) -> list[RunInfo]:
        runs = _every_page(
            lambda n, token: self._client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=n, page_token=token
            )
        )
        return [RunInfo(run.info.run_id, run.info.status, dict(run.data.tags)) for run in runs]

    def study_runs(self) -> list[RunInfo]:
        """Parent-run candidates and the parent itself (``role=study``)."""
        return self._search(f"tags.{N.ROLE} = '{N.STUDY}'")

    def running_children(self) -> list[RunInfo]:
        return [r for r in self._search("attributes.status = 'RUNNING'") if r.tags.get(N.ROLE) != N.STUDY]

    def children_of_trial(self, optuna_study: str, trial_number: int) -> list[RunInfo]:
        study = optuna_study.replace("'", "\\'")
        filter_string = f"tags.{N.OPTUNA_STUDY} = '{study}' and tags.{N.TRIAL_NUMBER} = '{trial_number}'"
        return self._search(filter_string)

    def create_parent(
        self, *, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any], sweep_yaml: str
    ) -> str:
        run = MlflowRun.start(
            experiment=self.study, run_name=run_name, tracking_uri=self.tracking_uri, tags=tags
        )
        run.log_params(params)
        run.log_text(sweep_yaml, N.SWEEP_ARTIFACT)
        self.tag_experiment({N.STUDY_VIEW_TAG: json.dumps(STUDY_VIEW)})
        return run.run_id

    def record_unrun_trial(
        self, *, run_name: str, parent_run_id: str, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> str:
        """A FAILED child run for a trial that failed before training could start its own run."""
        run = MlflowRun.start(
            experiment=self.study,
            run_name=run_name,
            tracking_uri=self.tracking_uri,
            parent_run_id=parent_run_id,
            tags=tags,
        )
        run.log_params(params)
        run.end("FAILED")
        return run.run_id

    def delete(self, run_id: str) -> None:
        self._client.set_terminated(run_id, status="KILLED")
        self._client.delete_run(run_id)

    def exists(self, run_id: str) -> bool:
        try:
            run = self._client.get_run(run_id)
        except Exception:
            return False
        return bool(run.info.lifecycle_stage == "active")

    def set_state(self, run_id: str, state: str, *, tags: Mapping[str, str] | None = None) -> None:
        """``RUNNING`` (a resumed study) or a terminal state; tags first so readers see both together."""
        self.set_tags(run_id, tags or {})
        if state != "RUNNING":
            self._client.set_terminated(run_id, status=state)
            return
        # MLflow keeps a resumed run's end time (mlflow#3329) and its client cannot clear it: the UI showed
        # a running study with its interrupted duration. Every store takes end_time=0 ("no end time").
        from mlflow.entities import RunStatus

        store = self._client._tracking_client.store
        store.update_run_info(run_id, run_status=RunStatus.RUNNING, end_time=0, run_name=None)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        MlflowRun(self._client, run_id, self.experiment_id).set_tags(tags)


# MLflow's "shared view" of a runs table (what the UI's Share button stores): the completed finals grouped
# by data size and strategy, accuracy and cost first; a link with viewStateShareKey=<key> opens it.
_RUN_NAME_COLUMN = "attributes.`Run Name`"
_VIEW_COLUMNS = [
    "params.`strategy`",
    "params.`n_per_class`",
    f"metrics.`{N.TEST_ACC}`",
    f"metrics.`{N.VAL_ACC}`",
    f"metrics.`{N.DEVICE_HOURS}`",
    f"metrics.`{N.TRAIN_FLOPS}`",
    f"tags.`{N.STATUS}`",
]
STUDY_VIEW: dict[str, Any] = {
    "searchFilter": f"tags.{N.ROLE} = '{N.FINAL}' and tags.{N.STATUS} = '{N.COMPLETED}'",
    "orderByKey": f"metrics.`{N.TEST_ACC}`",
    "orderByAsc": False,
    "selectedColumns": _VIEW_COLUMNS,
    "columnOrder": [_RUN_NAME_COLUMN, *_VIEW_COLUMNS],
    "columnWidths": {_RUN_NAME_COLUMN: 330, "params.`strategy`": 120, "params.`n_per_class`": 110},
    "groupBy": {
        "aggregateFunction": "average",
        "groupByKeys": [
            {"mode": "param", "groupByData": "n_per_class"},
            {"mode": "param", "groupByData": "strategy"},
        ],
    },
}
