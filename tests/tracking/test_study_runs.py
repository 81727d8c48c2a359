"""StudyRuns.tag_experiment survives two openers tagging a fresh study at the same moment."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from tlbench.tracking.study_runs import StudyRuns


class _RacingClient:
    """Loses the select-then-insert race once per key, as MLflow's SQL store does under contention."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.tags: dict[str, str] = {}
        self.lost: set[str] = set()

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        if key not in self.lost:
            self.lost.add(key)
            raise MlflowException(self.message)
        self.tags[key] = value


def _runs(client: Any) -> StudyRuns:
    runs = StudyRuns.__new__(StudyRuns)  # no store: only the tagging logic is under test
    runs._client, runs.experiment_id = client, "1"
    return runs


def test_a_unique_constraint_race_is_retried_as_an_update() -> None:
    client = _RacingClient("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags.key")
    _runs(client).tag_experiment({"role": "study", "sweep": "default"})
    assert client.tags == {"role": "study", "sweep": "default"}


def test_other_tracking_errors_are_not_swallowed() -> None:
    with pytest.raises(MlflowException, match="permission denied"):
        _runs(_RacingClient("permission denied")).tag_experiment({"role": "study"})
