"""MLflow side of a sweep: the study's experiment, its parent run, and cleanup of child runs.

Layout (read by the report module): one experiment per study (named after it, tagged
``tlbench.study``/``tlbench.sweep``), one parent run (``role=study``) shared by every worker, and
one child run per trial (``mlflow.parentRunId`` = the parent), created by :func:`tlbench.run.train`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tlbench.tracking.mlflow_run import MlflowRun, _client, get_or_create_experiment, resolve_tracking_uri

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
        from mlflow.exceptions import MlflowException

        for key, value in tags.items():
            try:
                self._client.set_experiment_tag(self.experiment_id, key, value)
            except MlflowException as exc:
                # Two workers opening a fresh study tag it at the same moment: the SQL store's
                # select-then-insert loses the race with "UNIQUE constraint failed". The row now
                # exists, so setting it again is an update.
                if "UNIQUE" not in str(exc).upper():
                    raise
                self._client.set_experiment_tag(self.experiment_id, key, value)

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
            self._client.update_run(run_id, status="RUNNING")
        else:
            self._client.set_terminated(run_id, status=state)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        MlflowRun(self._client, run_id, self.experiment_id).set_tags(tags)
