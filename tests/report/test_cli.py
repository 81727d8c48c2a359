"""``tlbench report`` through the CLI entry point: messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.cli import main

from .fake_study import FakeTrial, build_study


def test_no_studies_tells_to_run_a_sweep(mlflow_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert "run `make sweep`" in capsys.readouterr().err  # one line, no traceback


def test_unknown_study_lists_existing(mlflow_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_study(mlflow_uri, "smoke", [FakeTrial("final", "linear_probe", "10")])
    assert main(["report", "--study", "nope"]) == 2
    assert "existing studies (latest first): smoke" in capsys.readouterr().err


def test_bad_tolerance_is_rejected(mlflow_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 1 would mean 100 points of accuracy: refused before anything is read
    assert main(["report", "--tolerance", "1"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_report_of_latest_study(mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_study(mlflow_uri, "smoke", [FakeTrial("final", "linear_probe", "10", seed=s) for s in range(2)])
    assert main(["report", "--out", str(tmp_path / "out"), "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    # progress, then where the report is; --no-mlflow logs nothing
    assert (
        "report: study 'smoke'" in out and "report of study 'smoke'" in out and "logged to MLflow" not in out
    )
    assert (tmp_path / "out" / "smoke" / "report.html").is_file()
    assert main(["report", "--list"]) == 0 and capsys.readouterr().out.strip() == "smoke"


def test_a_sweep_ends_with_the_same_report_summary_as_tlbench_report(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tlbench.report import build
    from tlbench.sweep import run as sweep_run

    build_study(mlflow_uri, "smoke", [FakeTrial("final", "linear_probe", "10", seed=s) for s in range(2)])
    monkeypatch.chdir(tmp_path)  # the sweep writes reports/ where it runs
    sweep_run._build_report("smoke")
    out = capsys.readouterr().out
    assert "building the report" in out and "report of study 'smoke'" in out
    # the sweep publishes its report: the summary says where, as `tlbench report` does
    published = build.build_report("smoke", out=tmp_path / "again")
    assert published.published_to and f"logged to MLflow parent run {published.published_to} " in out
    assert (tmp_path / "reports" / "smoke" / "report.html").is_file()
