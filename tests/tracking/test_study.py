"""The MLflow side of the report (``tlbench.tracking.study``): reading a study back, publishing to it."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.report.fake_study import FakeTrial, build_study, fake_predictions
from tlbench.errors import TrackingError
from tlbench.tracking.study import (
    find_study,
    list_studies,
    parse_predictions,
    read_study,
    read_test_predictions,
    redact_uri,
)


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


def test_reads_per_image_predictions_of_final_runs(mlflow_uri: str) -> None:
    with_file = FakeTrial("final", "linear_probe", "10", seed=1, test_acc=0.75)
    older = FakeTrial("final", "linear_probe", "10", trial_number=1, seed=2, test_acc=0.8, predictions=False)
    ids = build_study(mlflow_uri, "s", [with_file, older])["run_ids"]
    found = read_test_predictions([ids[0], ids[1]], tracking_uri=mlflow_uri)
    # the run that logged predictions/test.json is read back exactly; the older run is simply absent
    assert set(found) == {ids[0]}
    expected = fake_predictions(with_file)
    assert (
        list(found[ids[0]].labels) == expected["labels"]
        and list(found[ids[0]].predicted) == expected["predicted"]
    )
    assert sum(y == p for y, p in zip(found[ids[0]].labels, found[ids[0]].predicted, strict=True)) == 300


@pytest.mark.parametrize(
    "text",
    [
        '{"labels": [0, 1], "predicted": [0]}',
        '{"labels": [], "predicted": []}',
        "not json",
        '{"labels": "ab"}',
    ],
)
def test_malformed_predictions_are_ignored(text: str) -> None:
    # lengths that disagree, nothing, not JSON, not lists: no predictions rather than wrong ones
    assert parse_predictions(text) is None


def test_every_page_is_read(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlbench.tracking.runs as runs

    monkeypatch.setattr(runs, "_PAGE", 2)  # pages of two: five trials and a parent take three pages
    trials = [FakeTrial("final", "linear_probe", "10", trial_number=i, seed=i) for i in range(5)]
    ids = build_study(mlflow_uri, "paged", trials)
    for name in ("a", "b"):  # more experiments than a page too
        build_study(mlflow_uri, name, [])
    records = read_study(find_study("paged", tracking_uri=mlflow_uri), tracking_uri=mlflow_uri)
    # nothing lost at a page boundary
    assert {r.run_id for r in records.children} == set(ids["run_ids"].values()) and records.parent is not None
    assert {s.name for s in list_studies(mlflow_uri)} == {"paged", "a", "b"}
