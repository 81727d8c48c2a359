"""The MLflow side of the report (``tlbench.tracking.study_reader``/``study_publish``)."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tlbench.errors import TrackingError
from tlbench.tracking.study_reader import find_study, list_studies, read_study, redact_uri

from .fake_study import FakeTrial, build_study


def test_read_study(study_store: dict[str, Any]) -> None:
    records = read_study(
        find_study("smoke", tracking_uri=study_store["uri"]), tracking_uri=study_store["uri"]
    )
    # the parent run by its role, every trial run as a child, the sweep definition from the artifact
    assert records.parent is not None and records.parent.run_id == study_store["parent_run_id"]
    assert {r.run_id for r in records.children} == set(study_store["run_ids"].values())
    assert records.sweep_yaml is not None and records.sweep_yaml.startswith("name: smoke")
    # metrics are the latest values (the per-epoch curve's last step), params the logged strings
    first = next(r for r in records.children if r.run_id == study_store["run_ids"][0])
    assert first.metrics["val/acc"] == 0.7 and first.params["lr"] == "0.001"


def test_latest_study_and_single_trials_are_not_studies(mlflow_uri: str) -> None:
    client = MlflowClient(mlflow_uri)
    client.create_run(client.create_experiment("tlbench"))  # a `make train` run: not a study
    build_study(mlflow_uri, "older", [FakeTrial("final", "linear_probe", "10")])
    build_study(mlflow_uri, "newer", [FakeTrial("final", "linear_probe", "10")])
    # latest first; the `tlbench` experiment is not listed
    assert [s.name for s in list_studies(mlflow_uri)] == ["newer", "older"]
    assert find_study(tracking_uri=mlflow_uri).name == "newer"


def test_no_study_says_run_make_sweep(mlflow_uri: str) -> None:
    with pytest.raises(TrackingError, match="make sweep"):
        find_study(tracking_uri=mlflow_uri)


def test_unknown_study_lists_the_existing_ones(mlflow_uri: str) -> None:
    build_study(mlflow_uri, "smoke", [FakeTrial("final", "linear_probe", "10")])
    with pytest.raises(TrackingError, match=r"unknown study 'nope'.*existing studies.*smoke"):
        find_study("nope", tracking_uri=mlflow_uri)


def test_unreachable_store_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's default backoff takes minutes
    with pytest.raises(TrackingError, match="cannot read MLflow tracking store"):
        list_studies("http://127.0.0.1:9")  # nothing listens on the discard port


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://user:secret@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),  # no credentials
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),  # nothing to hide
        ("http://host:5000", "http://host:5000"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
