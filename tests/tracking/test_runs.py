"""What an MLflow user sees of tlbench's runs: experiment kind, run names, a resumed study's times."""

from __future__ import annotations

import json
import multiprocessing
import random
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tlbench.tracking import MlflowRun
from tlbench.tracking.names import EXPERIMENT_KIND, MODEL_TRAINING_KIND, STUDY_VIEW_TAG
from tlbench.tracking.runs import (
    STUDY_VIEW,
    StudyRuns,
    fallback_run_name,
    get_or_create_experiment,
    lock_path,
    sqlite_path,
    sqlite_store_lock,
)


def test_a_new_experiment_is_tagged_as_model_training(mlflow_uri: str) -> None:
    run = MlflowRun.start(experiment="fresh", run_name="a", tracking_uri=mlflow_uri)
    # MLflow's kind for the runs table (not the GenAI pages) is set when tlbench creates the experiment
    tags = MlflowClient(mlflow_uri).get_experiment(run.experiment_id).tags
    assert tags[EXPERIMENT_KIND] == MODEL_TRAINING_KIND


@pytest.mark.parametrize(
    ("existing_tags", "expected_kind"),
    [
        ({}, MODEL_TRAINING_KIND),  # made before tlbench tagged kinds: tagged once
        ({EXPERIMENT_KIND: "genai_development"}, "genai_development"),  # a user's choice stays
    ],
)
def test_an_existing_experiment_keeps_a_chosen_kind(
    mlflow_uri: str, existing_tags: dict[str, str], expected_kind: str
) -> None:
    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("old", tags=existing_tags or None)
    assert get_or_create_experiment(client, "old") == experiment_id
    assert client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND) == expected_kind


def test_a_run_without_a_name_gets_a_readable_one_no_seed_decides(mlflow_uri: str) -> None:
    names = []
    for _ in range(2):
        random.seed(0)  # what a trial does before its run starts: MLflow's random names repeated
        run = MlflowRun.start(experiment="e", tracking_uri=mlflow_uri, tags={"role": "export"})
        names.append(MlflowClient(mlflow_uri).get_run(run.run_id).info.run_name)
    # role and start time, never MLflow's seeded adjective-noun-number
    assert all(re.fullmatch(r"export \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", name) for name in names), names


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"role": "final"}, "final 2026-03-04 05:06:07"),  # the role says what the run is
        ({}, "run 2026-03-04 05:06:07"),  # no role: just "run"
    ],
)
def test_fallback_run_name(tags: dict[str, str], expected: str) -> None:
    assert fallback_run_name(tags, now=datetime(2026, 3, 4, 5, 6, 7)) == expected


def test_a_resumed_study_run_has_no_end_time_until_it_ends_again(mlflow_uri: str) -> None:
    runs = StudyRuns("study", tracking_uri=mlflow_uri)
    parent = runs.create_parent(run_name="study:study", tags={"role": "study"}, params={}, sweep_yaml="")
    runs.set_state(parent, "KILLED")  # interrupted
    client = MlflowClient(mlflow_uri)
    interrupted_at = client.get_run(parent).info.end_time
    assert interrupted_at
    runs.set_state(parent, "RUNNING")
    info = client.get_run(parent).info
    # running again, and no longer ended at the interruption (the UI showed its old duration)
    assert (info.status, info.end_time or None) == ("RUNNING", None)
    runs.set_state(parent, "FINISHED")
    assert client.get_run(parent).info.end_time >= interrupted_at  # a real end time again


def test_a_study_experiment_carries_the_comparison_view(mlflow_uri: str) -> None:
    runs = StudyRuns("study", tracking_uri=mlflow_uri)
    runs.create_parent(run_name="study:study", tags={"role": "study"}, params={}, sweep_yaml="")
    tags = MlflowClient(mlflow_uri).get_experiment(runs.experiment_id).tags
    # the shared view MLflow's UI opens from a link: final runs grouped, accuracy as a column
    view = json.loads(tags[STUDY_VIEW_TAG])
    assert view == STUDY_VIEW
    assert "metrics.`test/acc`" in view["selectedColumns"]


def test_a_unique_run_name_gets_the_first_free_suffix(mlflow_uri: str) -> None:
    # three single trials of one configuration: three names; a sweep's child (unique=False) keeps its own
    client = MlflowClient(mlflow_uri)
    names = []
    for _ in range(3):
        run = MlflowRun.start(
            experiment="e", run_name="scratch n=5 seed=0", tracking_uri=mlflow_uri, unique=True
        )
        names.append(client.get_run(run.run_id).info.run_name)
    assert names == ["scratch n=5 seed=0", "scratch n=5 seed=0 #2", "scratch n=5 seed=0 #3"]
    other = MlflowRun.start(experiment="e", run_name="it's n=5", tracking_uri=mlflow_uri, unique=True)
    assert client.get_run(other.run_id).info.run_name == "it's n=5"  # a quote in the name is no filter error
    again = MlflowRun.start(experiment="e", run_name="scratch n=5 seed=0", tracking_uri=mlflow_uri)
    assert client.get_run(again.run_id).info.run_name == "scratch n=5 seed=0"


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


PROCESSES = 3


def _open_store(uri: str, barrier: Any, results: Any) -> None:
    # What `tlbench sweep` does first (and each of its workers): check that the store can be used.
    from tlbench.errors import TrackingError
    from tlbench.tracking import check_reachable

    barrier.wait(timeout=60)
    try:
        check_reachable(uri)
        results.put("ok")
    except TrackingError as exc:
        results.put(str(exc))


def test_processes_creating_one_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    # Without the lock, MLflow's schema migrations race and all but one process fail
    # ("duplicate column name: step", "table _alembic_tmp_latest_metrics already exists").
    import mlflow.tracking  # noqa: F401 (imported once, before forking: the processes start together)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("fork")  # separate processes, each opening the store anew
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * PROCESSES
    assert (tmp_path / "mlflow.db.lock").is_file()


@pytest.mark.parametrize(
    ("uri", "database"),
    [
        ("sqlite:///mlflow.db", Path("mlflow.db")),  # relative to the working directory
        ("sqlite:////data/runs/mlflow.db", Path("/data/runs/mlflow.db")),
        ("sqlite:///runs/m.db?timeout=30", Path("runs/m.db")),
        ("sqlite+pysqlite:///m.db", Path("m.db")),
        ("sqlite://", None),  # in memory: nothing to share
        ("sqlite:///:memory:", None),
        ("postgresql://u@db/mlflow", None),  # servers and other databases handle their own concurrency
        ("http://127.0.0.1:5000", None),
        ("file:///tmp/mlruns", None),
        (None, None),
    ],
)
def test_only_sqlite_files_are_locked(uri: str | None, database: Path | None) -> None:
    assert sqlite_path(uri) == database


def test_the_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    import fcntl

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # a second holder (here: a second open file description) cannot take it meanwhile
    with (
        sqlite_store_lock(uri),
        open(lock_path(tmp_path / "mlflow.db")) as other,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock_path(tmp_path / "mlflow.db")) as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again once released


def test_a_folder_that_does_not_exist_is_not_locked(tmp_path: Path) -> None:
    # the store's own error ("unable to open database file") is what the user should see
    with sqlite_store_lock(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"):
        pass
    assert not (tmp_path / "missing").exists()
