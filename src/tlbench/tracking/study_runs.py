"""MLflow side of a sweep: the study's experiment, its parent run, and cleanup of child runs.

Layout (read by the report module): one experiment per study (named after it, tagged
``tlbench.study``/``tlbench.sweep`` and as model training), one parent run (``role=study``) shared by
every worker, and one child run per trial (``mlflow.parentRunId`` = the parent), created by
:func:`tlbench.run.train`. The experiment also carries a shared view of MLflow's runs table that
opens on the comparison (:data:`STUDY_VIEW`, linked by :func:`experiment_page_url`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tlbench.tracking import names
from tlbench.tracking.mlflow_run import (
    MlflowRun,
    _client,
    get_or_create_experiment,
    resolve_tracking_uri,
    set_experiment_tags,
)

STUDY_TAG, SWEEP_TAG, ROLE_TAG = "tlbench.study", "tlbench.sweep", "role"
CANDIDATE_TAG = "tlbench.candidate"  # parent-run election token (see tlbench.sweep.meta)


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

    def _search(self, filter_string: str) -> Iterator[RunInfo]:
        token = None
        while True:
            page = self._client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            for run in page:
                yield RunInfo(run.info.run_id, run.info.status, dict(run.data.tags))
            token = page.token
            if not token:
                return

    def study_runs(self) -> list[RunInfo]:
        """Parent-run candidates and the parent itself (``role=study``)."""
        return list(self._search(f"tags.{ROLE_TAG} = 'study'"))

    def running_children(self) -> list[RunInfo]:
        return [r for r in self._search("attributes.status = 'RUNNING'") if r.tags.get(ROLE_TAG) != "study"]

    def children_of_trial(self, optuna_study: str, trial_number: int) -> list[RunInfo]:
        study = optuna_study.replace("'", "\\'")
        return list(self._search(f"tags.optuna_study = '{study}' and tags.trial_number = '{trial_number}'"))

    def create_parent(
        self, *, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any], sweep_yaml: str
    ) -> str:
        run = MlflowRun.start(
            experiment=self.study, run_name=run_name, tracking_uri=self.tracking_uri, tags=tags
        )
        run.log_params(params)
        run.log_text(sweep_yaml, "sweep.yaml")
        self.tag_experiment({STUDY_VIEW_TAG: json.dumps(STUDY_VIEW)})
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
        if tags:
            MlflowRun(self._client, run_id, self.experiment_id).set_tags(tags)
        if state == "RUNNING":
            self._reopen(run_id)
        else:
            self._client.set_terminated(run_id, status=state)

    def _reopen(self, run_id: str) -> None:
        """Back to RUNNING without the end time of the interruption.

        MLflow keeps a resumed run's end time on purpose (mlflow#3329) and its client has no way to
        clear it, so the UI showed a running study with the duration of its interrupted session.
        Every tracking store (SQL, REST) takes ``end_time=0``, which MLflow's UI reads as "no end
        time" (no duration); the study's next end sets a real one.
        """
        from mlflow.entities import RunStatus

        store = self._client._tracking_client.store  # the client's update_run cannot set an end time
        store.update_run_info(run_id, run_status=RunStatus.RUNNING, end_time=0, run_name=None)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        MlflowRun(self._client, run_id, self.experiment_id).set_tags(tags)


# MLflow's "shared view" of an experiment's runs table (the UI's Share button stores the same thing):
# the completed final runs grouped by data size and strategy, accuracy and cost as the first columns.
# A link with ``viewStateShareKey=<key>`` opens it (see experiment_page_url).
STUDY_VIEW_KEY = "tlbench"
STUDY_VIEW_TAG = f"mlflow.sharedViewState.{STUDY_VIEW_KEY}"
_RUN_NAME_COLUMN = "attributes.`Run Name`"
_VIEW_COLUMNS = [
    "params.`strategy`",
    "params.`n_per_class`",
    f"metrics.`{names.TEST_ACC}`",
    f"metrics.`{names.VAL_ACC}`",
    f"metrics.`{names.DEVICE_HOURS}`",
    f"metrics.`{names.TRAIN_FLOPS}`",
    f"tags.`{names.STATUS}`",
]
STUDY_VIEW: dict[str, Any] = {
    "searchFilter": f"tags.{names.ROLE} = '{names.FINAL}' and tags.{names.STATUS} = '{names.COMPLETED}'",
    "orderByKey": f"metrics.`{names.TEST_ACC}`",
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


def experiment_page_url(ui: str, experiment_id: str, *, study_view: bool = False) -> str:
    """The experiment's runs table in MLflow's UI at ``ui`` (e.g. ``http://127.0.0.1:5000``).

    MLflow 3's UI opens every experiment on the GenAI or the model-training pages by a switch it
    keeps in the browser (GenAI until the user flips it), whatever the experiment's kind tag says;
    ``workflowType=machine_learning`` in the link flips it. ``study_view`` opens :data:`STUDY_VIEW`.
    """
    query = {"workflowType": "machine_learning"}
    if study_view:
        query["viewStateShareKey"] = STUDY_VIEW_KEY
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


@dataclass(frozen=True)
class ExperimentPage:
    name: str
    url: str


def experiment_pages(ui: str, *, tracking_uri: str | None = None) -> list[ExperimentPage]:
    """Every active experiment of the store with the link that opens its runs table at ``ui``, latest
    first; a study's link opens its comparison view (for ``tlbench ui`` to print)."""
    client = _client(resolve_tracking_uri(tracking_uri))
    experiments = client.search_experiments(order_by=["last_update_time DESC"], max_results=1000)
    return [
        ExperimentPage(
            name=e.name,
            url=experiment_page_url(ui, str(e.experiment_id), study_view=STUDY_VIEW_TAG in (e.tags or {})),
        )
        for e in experiments
    ]
