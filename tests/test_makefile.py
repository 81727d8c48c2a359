"""The Makefile, run for real in a temporary copy whose .venv is a fake: what it installs and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_PYTHON = '#!/bin/sh\necho "$@" >> "$(dirname "$0")/../calls.log"\n'

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _checkout(path: Path) -> Path:
    """A checkout: the real Makefile, a pyproject.toml, and a .venv whose python only logs its calls."""
    path.mkdir(parents=True)
    shutil.copy(REPO / "Makefile", path / "Makefile")
    (path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return path


def _venv(path: Path, *, owner: Path | None) -> Path:
    venv = path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if owner is not None:
        (venv / ".installed").write_text(f"source={owner}\n")
        os.utime(venv / ".installed", (2e9, 2e9))  # newer than pyproject.toml: up to date by time
    return venv


def _make(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=checkout, capture_output=True, text=True, timeout=60
    )


def _calls(venv: Path) -> list[str]:
    log = venv / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_fresh_venv_is_installed_and_records_its_checkout(tmp_path: Path) -> None:
    # no stamp: pip installs the editable package, and the stamp names this checkout
    here = _checkout(tmp_path / "here")
    venv = _venv(here, owner=None)
    result = _make(here, "setup", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert any("install -e .[dev,pinned]" in call for call in _calls(venv))
    assert (venv / ".installed").read_text() == f"source={here}\n"


@pytest.mark.parametrize("target", ["setup", "test"])
def test_a_venv_of_another_existing_checkout_is_never_reinstalled_or_used(
    tmp_path: Path, target: str
) -> None:
    # the stamp names another checkout that still exists: stop with a message, run and install nothing
    other = _checkout(tmp_path / "other")
    here = _checkout(tmp_path / "here")
    venv = _venv(other, owner=other)
    os.utime(here / "pyproject.toml", (3e9, 3e9))  # newer than the stamp: make would re-install
    result = _make(here, target, f"VENV={venv}")
    assert result.returncode != 0
    assert f"belongs to the checkout {other}" in result.stderr and "VENV_TAKEOVER=1" in result.stderr
    assert _calls(venv) == []  # neither pip nor pytest ran
    assert (venv / ".installed").read_text() == f"source={other}\n"


def test_the_same_holds_when_the_stamp_is_up_to_date_by_time(tmp_path: Path) -> None:
    # modification times say nothing is to do: the recorded source still refuses the other checkout
    other = _checkout(tmp_path / "other")
    here = _checkout(tmp_path / "here")
    venv = _venv(other, owner=other)
    os.utime(here / "pyproject.toml", (1e9, 1e9))
    result = _make(here, "test", f"VENV={venv}")
    assert result.returncode != 0 and f"belongs to the checkout {other}" in result.stderr
    assert _calls(venv) == []


@pytest.mark.parametrize("takeover", [False, True])
def test_a_venv_is_reinstalled_from_here_when_its_checkout_is_gone_or_on_request(
    tmp_path: Path, takeover: bool
) -> None:
    # the recorded checkout no longer exists (or VENV_TAKEOVER=1): re-install from here, say so
    other = _checkout(tmp_path / "other")
    here = _checkout(tmp_path / "here")
    venv = _venv(other, owner=other)
    if not takeover:
        (other / "pyproject.toml").unlink()  # no longer a checkout
    result = _make(here, "setup", f"VENV={venv}", *(["VENV_TAKEOVER=1"] if takeover else []))
    assert result.returncode == 0, result.stderr
    assert f"was installed from {other}; re-installing it from {here}" in result.stdout
    assert any("install -e .[dev,pinned]" in call for call in _calls(venv))
    assert (venv / ".installed").read_text() == f"source={here}\n"


def test_its_own_up_to_date_venv_installs_nothing(tmp_path: Path) -> None:
    # this checkout's stamp, newer than pyproject.toml: setup does nothing
    here = _checkout(tmp_path / "here")
    venv = _venv(here, owner=here)
    os.utime(here / "pyproject.toml", (1e9, 1e9))
    result = _make(here, "setup", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert _calls(venv) == []


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["ui"], "tlbench ui --port 5000"),  # MLflow's default port
        (["ui", "PORT=5001"], "tlbench ui --port 5001"),
        (["ui", "UI_PORT=5002"], "tlbench ui --port 5002"),
        (["dashboard"], "tlbench dashboard --port 8080"),  # optuna-dashboard's default port
        (["dashboard", "STUDY=s", "LIVE=1", "PORT=9000"], "tlbench dashboard --study s --live --port 9000"),
    ],
)
def test_ui_and_dashboard_take_a_port(tmp_path: Path, args: list[str], command: str) -> None:
    # PORT (or UI_PORT / DASHBOARD_PORT) reaches the command; LIVE=1 asks for the live dashboard
    here = _checkout(tmp_path / "here")
    venv = _venv(here, owner=here)
    os.utime(here / "pyproject.toml", (1e9, 1e9))
    result = _make(here, "-n", *args, f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert any(" ".join(line.split()).endswith(command) for line in result.stdout.splitlines()), result.stdout
