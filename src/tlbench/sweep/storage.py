"""Where a study lives: an Optuna storage URL, resolved, opened and shown without its password.

The default is a journal file per study (``.tlbench/optuna/<study>.journal``): append-only with a
file lock, so several local processes can share it safely, unlike SQLite. Any URL Optuna's
RDBStorage accepts (``postgresql://…``) is used as given and lets several machines share a study.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna

from tlbench.errors import ConfigError, TrackingError
from tlbench.sweep.journal_check import check_journal
from tlbench.tracking.runs import redact_password

DEFAULT_DIR = Path(".tlbench") / "optuna"
JOURNAL_PREFIX = "journal:"
CONNECT_TIMEOUT_S = 10  # per connection attempt to a PostgreSQL server
SCHEMA_LOCK_KEY = int.from_bytes(b"tlbench", "big")  # pg_advisory_lock key while opening a database
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_study_name(name: str) -> str:
    if not _STUDY_NAME.match(name):
        raise ConfigError(
            f"study name {name!r} must start with a letter or digit and use only letters, digits, "
            "'_', '-' and '.'"
        )
    return name


@dataclass(frozen=True)
class StorageRef:
    kind: str  # journal | rdb
    target: str  # the journal file path, or the RDB URL

    @property
    def display(self) -> str:
        return redact_password(self.target)

    @property
    def multi_machine(self) -> bool:
        return self.kind == "rdb" and not self.target.startswith("sqlite")


def default_journal(study: str) -> Path:
    return DEFAULT_DIR / f"{study}.journal"


def resolve_storage(url: str | None, study: str) -> StorageRef:
    """Empty -> the study's journal file; ``journal:PATH`` or ``*.journal`` -> that file; else an RDB URL."""
    text = (url or "").strip()
    if not text:
        return StorageRef("journal", str(default_journal(study)))
    if text.startswith(JOURNAL_PREFIX):
        path = text[len(JOURNAL_PREFIX) :]
        if not path:
            raise ConfigError(
                "storage 'journal:' needs a file path, e.g. journal:.tlbench/optuna/mine.journal"
            )
        return StorageRef("journal", path)
    if "://" in text:
        return StorageRef("rdb", text)
    if text.endswith((".journal", ".log")):
        return StorageRef("journal", text)
    raise ConfigError(
        f"storage {redact_password(text)!r} is neither a journal file (journal:PATH or *.journal) "
        "nor a database URL (postgresql://user@host/db)"
    )


def with_driver(url: str) -> str:
    """``postgresql://`` with an installed driver: SQLAlchemy 2.1 defaults to psycopg 3, the
    ``postgres`` extra installs psycopg2; pick whichever is there (an explicit ``+driver`` wins), and
    without either say which extra to install instead of SQLAlchemy's ``No module named 'psycopg'``."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    if find_spec("psycopg") is not None:
        return f"postgresql://{rest}"
    if find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    raise ConfigError(
        "a PostgreSQL storage needs a database driver, and none is installed: "
        "pip install 'tlbench[postgres]' (psycopg2-binary)"
    )


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: ping pooled connections (a database restart is survived), and give
    up connecting to PostgreSQL after ``CONNECT_TIMEOUT_S`` rather than libpq's default of waiting
    forever on an unreachable host (``connect_timeout`` in the URL or ``PGCONNECT_TIMEOUT`` wins)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    scheme = url.partition("://")[0].split("+")[0]
    explicit = "connect_timeout=" in url.partition("?")[2] or os.environ.get("PGCONNECT_TIMEOUT")
    if scheme in ("postgresql", "postgres") and not explicit:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def _open_rdb(url: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """RDBStorage creates its tables and stamps its schema version when it opens a database; workers
    starting together on a fresh PostgreSQL database (a SLURM array) would race at that and all but
    one fail with duplicate-key errors, so there the opening is serialised by an advisory lock."""
    if not url.startswith("postgres"):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    import sqlalchemy

    lock, unlock = (sqlalchemy.text(f"SELECT {f}(:key)") for f in ("pg_advisory_lock", "pg_advisory_unlock"))
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect() as connection:
            connection.execute(lock, {"key": SCHEMA_LOCK_KEY})
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            finally:
                connection.execute(unlock, {"key": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()  # closing the connection would release the lock anyway


def open_storage(ref: StorageRef) -> optuna.storages.BaseStorage:
    if ref.kind == "journal":
        path = Path(ref.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)  # a torn last record (crash, full disk) is cut off, with a backup
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return _open_rdb(with_driver(ref.target), engine_kwargs(ref.target))
    except Exception as exc:  # driver missing, host down, auth: one line, no password
        detail = redact_password(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
        raise TrackingError(f"Optuna storage {ref.display} is not usable: {detail}") from None


@dataclass(frozen=True)
class StudyNames:
    """The Optuna studies of one user-facing study: a meta study, one per cell, the finals."""

    study: str

    @property
    def meta(self) -> str:
        return f"{self.study}/meta"

    @property
    def final(self) -> str:
        return f"{self.study}/final"

    @property
    def budget_check(self) -> str:
        return f"{self.study}/budget_check"

    @property
    def pareto(self) -> str:
        return f"{self.study}/pareto"

    def cell(self, cell_key: str) -> str:
        return f"{self.study}/{cell_key}"
