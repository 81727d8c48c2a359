"""Sweep fixtures: tiny sweep files, an isolated study directory and MLflow store, readers for both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend

# Fast trials: 4 synthetic classes, a few images, 2 epochs, no FLOP measurement; the probe's head
# trains in the Lightning loop (so callbacks, pruning and divergence apply to it).
TINY_BASE = [
    "data=synthetic",
    "trainer=quick",
    "strategy.probe.solver=sgd",
    "data.samples_per_class=20",
    "trainer.count_flops=false",
]

SweepWriter = Callable[..., Path]

# Runs the sweep command in a fresh interpreter after ``PATCH`` replaced one function: with a version
# that SIGKILLs the process on its second use (after one trial finished, inside the next), or one
# that only slows training down.
DYING = """
import os, signal, sys
{patch}
from tlbench.cli import main
sys.exit(main(["sweep", "--sweep", sys.argv[1]]))
"""

SLOW_EPOCHS = """
import time
from tlbench.training.fit import TransferModule
original = TransferModule.on_train_epoch_end
def on_train_epoch_end(self):
    time.sleep(0.3)
    return original(self)
TransferModule.on_train_epoch_end = on_train_epoch_end
"""


@pytest.fixture
def write_sweep(tmp_path: Path) -> SweepWriter:
    """Write ``sweeps/<name>.yaml`` under tmp_path from keyword sections; returns its path."""

    def write(name: str = "tiny", **sections: Any) -> Path:
        # no model export at the end unless a test asks for it (tests/sweep/test_command.py does)
        body = {"base": TINY_BASE, "export": False, **sections}
        path = tmp_path / "sweeps" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    return write


@pytest.fixture
def study_dir(mlflow_uri: str, tmp_path: Path) -> Iterator[Path]:
    """The working directory of a sweep (``.tlbench/`` lands here); MLflow store isolated too."""
    yield tmp_path


class StudyReader:
    """Read back what a sweep stored: Optuna trials per study, MLflow runs of the experiment."""

    def __init__(self, study: str, journal: Path, mlflow_uri: str) -> None:
        self.study = study
        self.journal = journal
        self.client = MlflowClient(mlflow_uri)

    def storage(self) -> optuna.storages.BaseStorage:
        return optuna.storages.JournalStorage(JournalFileBackend(str(self.journal)))

    def trials(self, suffix: str) -> list[optuna.trial.FrozenTrial]:
        storage = self.storage()
        try:
            study_id = storage.get_study_id_from_name(f"{self.study}/{suffix}")
        except KeyError:
            return []
        return storage.get_all_trials(study_id)

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage().get_all_studies()]

    def runs(self) -> list[Any]:
        experiment = self.client.get_experiment_by_name(self.study)
        assert experiment is not None
        return list(self.client.search_runs([experiment.experiment_id], max_results=1000))

    def children(self, role: str | None = None) -> list[Any]:
        runs = [r for r in self.runs() if r.data.tags.get("role") != "study"]
        return [r for r in runs if role is None or r.data.tags.get("role") == role]

    def parents(self) -> list[Any]:
        return [r for r in self.runs() if r.data.tags.get("role") == "study"]


@pytest.fixture
def reader(study_dir: Path, mlflow_uri: str) -> Callable[[str], StudyReader]:
    def make(study: str) -> StudyReader:
        return StudyReader(study, study_dir / ".tlbench" / "optuna" / f"{study}.journal", mlflow_uri)

    return make
