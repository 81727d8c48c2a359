"""``tlbench dashboard [--study NAME] [--storage URL]``: optuna-dashboard on a study, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tlbench.errors import ConfigError
from tlbench.sweep.storage import DEFAULT_DIR, check_study_name, resolve_storage, with_driver
from tlbench.sweep.workers import STORAGE_ENV


def _latest_study() -> str:
    journals = sorted(DEFAULT_DIR.glob("*.journal"), key=lambda p: p.stat().st_mtime)
    if not journals:
        raise ConfigError(f"no study in {DEFAULT_DIR}/: run `make sweep` first, or give STUDY= / STORAGE=")
    return journals[-1].stem


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="tlbench dashboard")
    parser.add_argument("--study", default=None, help="study name (default: the most recently run one)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: the study's journal)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    storage = args.storage or os.environ.get(STORAGE_ENV)
    study = check_study_name(args.study) if args.study else ("" if storage else _latest_study())
    ref = resolve_storage(storage, study)
    if ref.kind == "journal" and not Path(ref.target).is_file():
        raise ConfigError(f"no journal file {ref.target}: run `make sweep` for study '{study}' first")
    executable = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which(
        "optuna-dashboard"
    )
    if executable is None:
        raise ConfigError("optuna-dashboard is not installed: run `make setup`")
    target = ref.target if ref.kind == "journal" else with_driver(ref.target)  # psycopg2, not psycopg 3
    command = [executable, target, "--host", "127.0.0.1", "--port", str(args.port)]
    if ref.kind == "journal":
        command += ["--storage-class", "JournalFileStorage"]
    print(f"optuna-dashboard for {ref.display} on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    os.execv(executable, command)  # argument list, no shell
    return 0  # pragma: no cover
