"""Several machines' storage: workers sharing a study through PostgreSQL, and a database that is down.

The shared-study test needs a server: ``TLBENCH_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db``
(``.ci/postgres.sh start`` prints one; CI always sets it). Each run uses a study name of its own and
deletes its Optuna studies afterwards, so a long-lived database can be reused.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest

from tlbench import cli
from tlbench.commands.sweep import main as sweep_main
from tlbench.sweep.study import open_storage, resolve_storage, with_driver

from .conftest import StudyReader, SweepWriter
from .test_run import CELLS, THREE_CELLS, assert_each_trial_ran_once

URL_ENV = "TLBENCH_TEST_POSTGRES_URL"


class PostgresReader(StudyReader):
    """The conftest reader, on the database instead of the study's journal file."""

    def __init__(self, study: str, storage: optuna.storages.BaseStorage, mlflow_uri: str) -> None:
        super().__init__(study, Path(os.devnull), mlflow_uri)
        self._storage = storage

    def storage(self) -> optuna.storages.BaseStorage:
        return self._storage


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        pytest.skip(f"{URL_ENV} is not set (start a server with .ci/postgres.sh start)")
    return url


@pytest.fixture
def pg_study(postgres_url: str) -> Iterator[tuple[str, optuna.storages.BaseStorage]]:
    """A study name no other run uses; its Optuna studies (meta, cells, final) are deleted afterwards."""
    study = f"pg-{uuid.uuid4().hex[:12]}"
    storage = open_storage(resolve_storage(postgres_url, study))
    yield study, storage
    for summary in storage.get_all_studies():
        if summary.study_name.startswith(f"{study}/"):
            storage.delete_study(summary._study_id)
    assert not [s for s in storage.get_all_studies() if s.study_name.startswith(f"{study}/")]


@pytest.mark.postgres
def test_two_workers_share_one_study_through_postgresql(
    write_sweep: SweepWriter,
    study_dir: Path,
    mlflow_uri: str,
    postgres_url: str,
    pg_study: tuple[str, optuna.storages.BaseStorage],
) -> None:
    # --storage postgresql://…: both workers claim trials from the database, every planned trial runs
    # exactly once, one parent run, nothing left RUNNING, no storage errors in the worker logs
    study_name, storage = pg_study
    sweep = write_sweep("pg", **THREE_CELLS)
    argv = ["--sweep", str(sweep), "--study", study_name, "--workers", "2", "--storage", postgres_url]
    assert sweep_main(argv) == 0
    assert not (study_dir / ".tlbench" / "optuna").exists()  # nothing went to a journal file
    study = PostgresReader(study_name, storage, mlflow_uri)
    assert_each_trial_ran_once(study, workers=2, study_dir=study_dir)
    workers = {t.user_attrs.get("worker") for c in CELLS for t in study.trials(c)}
    assert len(workers) == 2
    password = urlsplit(postgres_url).password
    for log in (study_dir / ".tlbench" / "logs" / study_name).glob("worker-*.log"):
        assert not password or password not in log.read_text()  # the password never reaches a log


@pytest.mark.postgres
def test_workers_starting_together_on_a_fresh_database_all_open_it(postgres_url: str) -> None:
    # a SLURM array on an empty database: every task creates Optuna's tables at once; none may fail
    import sqlalchemy

    schema = f"fresh_{uuid.uuid4().hex[:12]}"  # an empty schema stands in for a fresh database
    admin = sqlalchemy.create_engine(with_driver(postgres_url))
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}options=-csearch_path%3D{schema}"
    barrier = threading.Barrier(6)
    errors: list[str] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_storage(resolve_storage(url, "fresh"))
        except Exception as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with admin.begin() as connection:
            tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
            names = connection.execute(sqlalchemy.text(tables), {"s": schema}).scalars().all()
            assert {"studies", "trials", "version_info"} <= set(names)
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_an_unreachable_database_fails_fast_with_one_clear_message(
    write_sweep: SweepWriter, study_dir: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens on 127.0.0.1:9: one error line naming the (redacted) URL, before any training
    pytest.importorskip("psycopg2")
    sweep = write_sweep("down", **THREE_CELLS)
    started = time.monotonic()
    code = cli.main(["sweep", "--sweep", str(sweep), "--storage", "postgresql://tb:s3cr3t@127.0.0.1:9/tb"])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and took < 30, (code, took, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tlbench sweep: error: Optuna storage postgresql://tb:***@127.0.0.1:9/tb")
    assert "Connection refused" in lines[0] and "s3cr3t" not in err
    assert not (study_dir / ".tlbench" / "logs").exists()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(mlflow_uri).get_experiment_by_name("down") is None  # no runs, no training


def test_postgresql_connections_time_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    # libpq waits forever for a host that drops packets; tlbench gives up after connect_timeout
    from tlbench.sweep.study import CONNECT_TIMEOUT_S, engine_kwargs

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert engine_kwargs("postgresql://u@db/x")["connect_args"] == {"connect_timeout": CONNECT_TIMEOUT_S}
    assert engine_kwargs("postgresql+psycopg2://u@db/x")["connect_args"]["connect_timeout"] > 0
    assert "connect_args" not in engine_kwargs("postgresql://u@db/x?connect_timeout=3")  # the URL wins
    assert "connect_args" not in engine_kwargs("sqlite:///x.db")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")
    assert "connect_args" not in engine_kwargs("postgresql://u@db/x")  # so does libpq's variable
