"""Storage URLs (journal by default, RDB URLs as given, passwords never shown) and the dashboard command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tlbench.commands import dashboard
from tlbench.errors import ConfigError
from tlbench.sweep.storage import resolve_storage
from tlbench.tracking.runs import redact_password


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        (None, "journal", ".tlbench/optuna/smoke.journal"),  # safe for several local processes
        ("journal:/data/s.journal", "journal", "/data/s.journal"),
        ("runs/shared.journal", "journal", "runs/shared.journal"),
        ("postgresql://u:pw@db:5432/optuna", "rdb", "postgresql://u:pw@db:5432/optuna"),
    ],
)
def test_storage_urls_resolve(url: str | None, kind: str, target: str) -> None:
    # the default is the study's journal file; database URLs are used as given
    ref = resolve_storage(url, "smoke")
    assert (ref.kind, ref.target) == (kind, target)


def test_passwords_are_redacted_and_bad_urls_explained() -> None:
    # a URL's password never reaches a log line or an MLflow param
    assert redact_password("postgresql://u:s3cr3t@db/optuna") == "postgresql://u:***@db/optuna"
    assert resolve_storage("postgresql://u:s3cr3t@db/optuna", "x").display == "postgresql://u:***@db/optuna"
    with pytest.raises(ConfigError, match="neither a journal file"):
        resolve_storage("optuna.db", "x")


def test_dashboard_serves_the_study_journal_on_localhost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # make dashboard STUDY=x: optuna-dashboard on the journal file, bound to 127.0.0.1
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / ".tlbench" / "optuna" / "x.journal"
    journal.parent.mkdir(parents=True)
    journal.write_text("")
    calls: list[Any] = []
    monkeypatch.setattr(dashboard.os, "execv", lambda exe, argv: calls.append(argv))
    assert dashboard.main([]) == 0  # the latest study
    argv = calls[0]
    assert argv[1] == ".tlbench/optuna/x.journal"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    with pytest.raises(ConfigError, match="no journal file"):
        dashboard.main(["--study", "missing"])


def test_a_postgres_url_without_a_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # neither psycopg 3 nor psycopg2 installed: the error says what to install, not "No module named"
    from tlbench.sweep import storage

    monkeypatch.setattr(storage, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'tlbench\[postgres\]'"):
        storage.with_driver("postgresql://u@db/optuna")
    assert storage.with_driver("sqlite:///x.db") == "sqlite:///x.db"  # other URLs need no driver
