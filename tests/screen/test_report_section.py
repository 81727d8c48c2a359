from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tlbench.report.build import build_report
from tlbench.tracking.study_reader import RunRecord

from .study_fixture import final_runs, screen_runs


def _log(client: MlflowClient, experiment_id: str, run: RunRecord, parent: str) -> None:
    created = client.create_run(experiment_id, run_name=run.run_name, tags={"mlflow.parentRunId": parent})
    rid = created.info.run_id
    client.log_batch(
        rid,
        metrics=[Metric(k, v, 0, 0) for k, v in run.metrics.items()],
        params=[Param(k, v) for k, v in run.params.items()],
        tags=[RunTag(k, v) for k, v in run.tags.items()],
    )
    client.set_terminated(rid, "FINISHED")


def _study(uri: str) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("backbones", tags={"tlbench.study": "backbones"})
    parent = client.create_run(experiment_id, run_name="study:backbones", tags={"role": "study"}).info.run_id
    for run in [*final_runs(), *screen_runs()]:
        _log(client, experiment_id, run, parent)
    client.set_terminated(parent, "FINISHED")


def test_report_of_a_study_with_screen_runs(mlflow_uri: str, tmp_path: Path) -> None:
    # the report gets a 'Screen vs training' section with the tau table and figure; screen runs are
    # not trials (absent from results.csv)
    _study(mlflow_uri)
    result = build_report("backbones", out=tmp_path / "reports", tracking_uri=mlflow_uri, publish=False)
    markdown = (result.directory / "report.md").read_text()
    assert "## Screen vs training" in markdown
    assert "best strategy per backbone" in markdown and "Kendall" in markdown
    assert (result.directory / "figures" / "screen_vs_training.png").is_file()
    assert (result.directory / "figures" / "screen_vs_training.svg").is_file()
    results = pd.read_csv(result.directory / "results.csv")
    assert len(results) == len(final_runs()) and "screen" not in set(results["role"].astype(str))


def test_report_without_screen_runs_has_no_screen_section(mlflow_uri: str, tmp_path: Path) -> None:
    # studies that never screened read exactly as before
    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("plain", tags={"tlbench.study": "plain"})
    parent = client.create_run(experiment_id, run_name="study:plain", tags={"role": "study"}).info.run_id
    for run in final_runs():
        _log(client, experiment_id, run, parent)
    result = build_report("plain", out=tmp_path / "reports", tracking_uri=mlflow_uri, publish=False)
    assert "Screen vs training" not in (result.directory / "report.md").read_text()
