"""Fixtures for the report tests: fake studies in MLflow stores, and small hand-built trial tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tlbench.report.tables import trials_table
from tlbench.tracking.study import RunRecord

from .fake_study import build_study

_METRIC_KEYS = {
    "val_acc": "val/acc", "test_acc": "test/acc", "hours": "cost/device_hours", "flops": "cost/train_flops",
    "trainable": "params/trainable", "fit_seconds": "cost/fit_seconds",
    "base_val": "budget_check/base_val_acc",
}  # fmt: skip
_TAG_KEYS = {"role", "status", "device", "trial_number"}


def make_trials(*rows: dict[str, Any]) -> pd.DataFrame:
    """A trials table from compact rows, e.g. ``dict(role="final", strategy="scratch", test_acc=0.5)``.

    Goes through :func:`trials_table`, so the hand-built table has exactly the collected schema.
    """
    runs = []
    for i, row in enumerate(rows):
        row = {
            "role": "final",
            "status": "completed",
            "strategy": "linear_probe",
            "n": "10",
            "device": "cpu",
            **row,
        }
        metrics = {_METRIC_KEYS[k]: float(v) for k, v in row.items() if k in _METRIC_KEYS and v is not None}
        params = {
            k: str(v) for k, v in row.items() if k not in _METRIC_KEYS and k not in _TAG_KEYS and k != "n"
        }
        params["n_per_class"] = str(row["n"])
        tags = {k: str(row[k]) for k in _TAG_KEYS if k in row}
        tags.setdefault("trial_number", str(i))
        runs.append(
            RunRecord(f"run{i}", f"trial-{i}", "FINISHED", 1000 * i, 1000 * i + 500, params, metrics, tags)
        )
    return trials_table(runs)


@pytest.fixture
def trials() -> Callable[..., pd.DataFrame]:
    return make_trials


@pytest.fixture(scope="session")
def study_store(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> dict[str, Any]:
    """The standard fake study in its own store, built once; tests must only read it."""
    import shutil

    root = tmp_path_factory.mktemp("study-store")
    shutil.copy(_mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ids = build_study(uri, artifacts=root / "artifacts")
    return {"uri": uri, "root": root, **ids}


@pytest.fixture(scope="session")
def built_report(study_store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The standard study's report, built once and logged to its parent run (tests only read it)."""
    from tlbench.report.build import build_report

    out = tmp_path_factory.mktemp("reports")
    return build_report("smoke", out=out, tolerance=0.01, tracking_uri=study_store["uri"])
