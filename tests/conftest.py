"""Shared fixtures: an isolated MLflow store per test (copied from one template, so it is fast)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# In-process sweeps (sweep_main([...]) with a monkeypatched trainer) need their trials in this process:
# one worker unless a test asks for more. Users get `--workers auto` (tests/training/test_threads.py).
os.environ["TLBENCH_WORKERS"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: no mlflow.db, mlruns/ or .tlbench/ cache in the repo,
    and no feature cache shared between tests."""
    from tlbench.training import inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inputs, "_CACHE", None)


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """A test that sets torch's thread count (trainer.num_threads, the bench) leaves it as it was:
    batch numerics, and so the last digits of results, depend on it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the schema once
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template: Path) -> Iterator[str]:
    """A fresh sqlite tracking store in tmp_path; artifacts land under tmp_path too."""
    db = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri


@pytest.fixture
def hymenoptera_root() -> Path:
    root = SHARED_DATASETS / "hymenoptera"
    if not root.is_dir():
        pytest.skip(f"shared dataset not present at {root} (only in the development checkout)")
    return root


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium for the tests that render a page (the HTML report, MLflow's UI); .ci/run
    installs it, and the tests that need it skip without it."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed (apt-get install -y chromium): no page was rendered")
