"""One process at a time creates a SQLite tracking store.

MLflow creates and migrates a SQLite store's schema when a client first opens it, without any
locking: two sweeps started together on a fresh ``mlflow.db`` both run the migrations and all but
one die (``duplicate column name: step``, ``table _alembic_tmp_… already exists``). An exclusive
``fcntl.flock`` on ``<db>.lock`` next to the database, held while a client opens the store, makes
the second process wait and then find the schema up to date. Other stores (servers, PostgreSQL) are
left to their own concurrency control.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_SUFFIX = ".lock"


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
    return database.with_name(database.name + LOCK_SUFFIX)


@contextmanager
def sqlite_store_lock(uri: str | None) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively for a SQLite URI; a no-op for any other store.

    Where the lock file cannot be created (no such folder, read-only), nothing is locked: opening
    the store then fails or succeeds on its own, with MLflow's error.
    """
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
