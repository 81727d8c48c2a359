"""Several processes opening one fresh SQLite tracking store at once: all succeed (issue 13, part 7a)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from tlbench.tracking.store_lock import lock_path, sqlite_path, sqlite_store_lock

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
