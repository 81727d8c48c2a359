"""MLflow's UI as a browser shows a tlbench study: headless Chromium against a real ``mlflow server``.

The study's runs are logged through tlbench's own tracking code over HTTP (the parent run with its
shared view, one final child run per strategy and seed, as the sweep logs them). The link to that
view must open the runs table — not MLflow 3's GenAI overview — with the child runs and their
test accuracy on screen. Skipped, with the reason, where no chromium is installed (CI installs it).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageStat

from tlbench.tracking import MlflowRun
from tlbench.tracking.names import STUDY_VIEW_KEY
from tlbench.tracking.runs import StudyRuns

from .servers import free_port, mlflow_env, running

_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage",
)  # fmt: skip
# strategy -> test accuracy per final seed (1, 2): exact in binary, so the UI shows them as written
FINALS = {"linear_probe": (0.8125, 0.875), "lp_ft": (0.6875, 0.9375)}


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'ui.db'}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    with running(
        [*command, "--port", str(port), "--workers", "1"],
        ready=f"{url}/health",
        log_path=tmp_path / "server.log",
        env=mlflow_env(),
        cwd=tmp_path,  # its artifacts (mlartifacts/) land here
    ):
        yield url


def _log_study(url: str, study: str) -> str:
    """A finished study as the sweep logs one: parent run, then one final child run per strategy and seed."""
    runs = StudyRuns(study, tracking_uri=url)
    runs.tag_experiment({"tlbench.study": study, "tlbench.sweep": "smoke"})
    parent = runs.create_parent(run_name=f"study:{study}", tags={"role": "study"}, params={}, sweep_yaml="")
    for strategy, accuracies in FINALS.items():
        for seed, acc in enumerate(accuracies, start=1):
            run = MlflowRun.start(
                experiment=study,
                run_name=f"{strategy} n=5 seed={seed}",
                tracking_uri=url,
                parent_run_id=parent,
                tags={"role": "final", "strategy": strategy, "n_per_class": "5", "status": "completed"},
            )
            run.log_params({"strategy": strategy, "n_per_class": 5, "seed": seed})
            run.log_metrics({"test/acc": acc, "val/acc": acc, "cost/device_hours": 0.001 * seed})
            run.end("FINISHED")
    runs.set_state(parent, "KILLED")  # interrupted, then resumed: over HTTP too, no stale end time
    runs.set_state(parent, "RUNNING")
    assert not MlflowClient(url).get_run(parent).info.end_time
    runs.set_state(parent, "FINISHED", tags={"status": "completed"})
    return runs.experiment_id


@pytest.mark.slow  # an mlflow server and a browser: 20-90 s
def test_the_study_link_opens_the_runs_table_with_child_runs_and_accuracy(
    chromium: str, mlflow_server: str, tmp_path: Path
) -> None:
    experiment_id = _log_study(mlflow_server, "ui-study")
    # MLflow 3's UI picks GenAI or model-training pages by a switch kept in the browser, whatever the kind
    # tag says: workflowType=machine_learning flips it; viewStateShareKey opens the study's shared view
    query = f"workflowType=machine_learning&viewStateShareKey={STUDY_VIEW_KEY}"
    page = f"{mlflow_server}/#/experiments/{experiment_id}/runs?{query}"
    shot = tmp_path / "experiment.png"
    browser = [chromium, *_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,900"]
    result = subprocess.run(
        [*browser, "--virtual-time-budget=30000", f"--screenshot={shot}", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    # the runs table of the model-training pages, not the GenAI overview
    assert "matching runs" in dom and "Detect Issues" not in dom
    # every child run by its name, with its test accuracy in the table
    for strategy, accuracies in FINALS.items():
        for seed, acc in enumerate(accuracies, start=1):
            assert f"{strategy} n=5 seed={seed}" in dom
            assert f">{acc}<" in dom, acc
    # the page was painted (text, table), not blank
    assert max(ImageStat.Stat(Image.open(shot).convert("RGB")).stddev) > 20
