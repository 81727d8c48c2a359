"""Storage URLs and the dashboard command; a torn journal record cut off, damage before the end refused."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tlbench.cli import main as cli_main
from tlbench.commands import dashboard
from tlbench.errors import ConfigError, TrackingError
from tlbench.sweep.study import StorageRef, open_storage, resolve_storage, scan_journal
from tlbench.tracking.runs import redact_password

from .conftest import SweepWriter


# --- storage ---
# Storage URLs (journal by default, RDB URLs as given, passwords never shown) and the dashboard command.
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
    from tlbench.sweep import study

    monkeypatch.setattr(study, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'tlbench\[postgres\]'"):
        study.with_driver("postgresql://u@db/optuna")
    assert study.with_driver("sqlite:///x.db") == "sqlite:///x.db"  # other URLs need no driver


# --- journal_check ---
# A torn last journal record is cut off; damage before the end stops with one line (issue 13, 7b).
TRIALS = 3


def _journal(path: Path, study: str = "s") -> bytes:
    """A real study's journal: TRIALS completed trials, then one more record (a study attribute)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    created = optuna.create_study(study_name=study, storage=storage)
    created.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=TRIALS)
    created.set_user_attr("last", True)  # the record that will be torn
    return path.read_bytes()


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


@pytest.mark.parametrize("cut", [1, 7, "half"])  # the newline only, a few bytes, half the record
def test_a_torn_last_record_is_cut_off_and_the_study_goes_on(
    tmp_path: Path, cut: int | str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.journal"
    original = _journal(path)
    last_record = len(original.splitlines(keepends=True)[-1])
    dropped = last_record // 2 if cut == "half" else int(cut)
    path.write_bytes(original[:-dropped])
    with caplog.at_level(logging.WARNING):
        storage = open_storage(StorageRef("journal", str(path)))
    study = optuna.load_study(study_name="s", storage=storage)
    # the completed trials are all there; only the torn record (the attribute) is gone
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * TRIALS
    assert "last" not in study.user_attrs
    # the study can be written to and read back by a fresh storage (without the repair, the new
    # record lands on the torn line and the next reader fails with a JSONDecodeError)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    reread = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    assert len(optuna.load_study(study_name="s", storage=reread).trials) == TRIALS + 1
    # the file as found is kept, the journal is its complete records, and the warning says so
    (backup,) = _backups(path)
    assert backup.read_bytes() == original[:-dropped]
    assert path.read_bytes().startswith(original[:-last_record])
    assert len(path.read_bytes().splitlines()) > len(original.splitlines())  # the new trial's records
    message = caplog.messages[-1]
    assert str(path) in message and str(backup) in message
    assert f"last {last_record - dropped} bytes" in message


def test_an_intact_journal_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # no backup, no warning, not a byte changed
    path = tmp_path / "s.journal"
    original = _journal(path)
    with caplog.at_level(logging.WARNING):
        open_storage(StorageRef("journal", str(path)))
    assert path.read_bytes() == original and not _backups(path) and not caplog.messages
    assert scan_journal(path).intact


def _damage_a_middle_record(path: Path) -> int:
    lines = path.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    lines[middle] = lines[middle][: len(lines[middle]) // 2] + b"\n"
    path.write_bytes(b"".join(lines))
    return middle + 1


def test_a_record_damaged_before_the_end_is_one_clear_error(tmp_path: Path) -> None:
    # not a torn write: nothing is cut, the message names the file, the line and what to do
    path = tmp_path / "s.journal"
    _journal(path)
    line = _damage_a_middle_record(path)
    damaged = path.read_bytes()
    with pytest.raises(TrackingError) as caught:
        open_storage(StorageRef("journal", str(path)))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and f"line {line}" in message and "move it aside" in message
    assert path.read_bytes() == damaged and not _backups(path)


def test_the_sweep_command_reports_a_damaged_journal_without_a_traceback(
    write_sweep: SweepWriter, study_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tlbench sweep` on a study whose journal is damaged mid-file: exit 2, one error line
    sweep = write_sweep("mid", factors={"data.n_per_class": [4]}, final={"seeds": [1]})
    journal = study_dir / ".tlbench" / "optuna" / "mid.journal"
    _journal(journal, study="mid/meta")
    _damage_a_middle_record(journal)
    assert cli_main(["sweep", "--sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("tlbench sweep: error:")]
    assert f"Optuna journal {Path('.tlbench/optuna/mid.journal')}" in line
