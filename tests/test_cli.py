from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.cli import main


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["backbone.name=efficientnet_lite7"], "Close matches: efficientnet_lite"),
        (["strategy=partial", "strategy.freeze_depth=12"], "valid 0..8"),
        (["data.n_per_class=500"], "use data.n_per_class <= 95"),
        (["data=imagefolder", "data.root=/nonexistent/photos"], "/nonexistent/photos"),
        (["data=fashion_mnist", "data.root=/nonexistent"], "dataset-fashion-mnist"),
        (["data.n_per_clas=3"], "did you mean 'data.n_per_class'"),
        (["backbone.weights=file", "backbone.weights_path=/nope.pth"], "not found"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # every user mistake exits 2 with one actionable line on stderr and no traceback
    if "data=fashion_mnist" in args:
        import tlbench.data.sources.fashion_mnist as fm

        monkeypatch.setattr(fm, "SYSTEM_DIRS", (Path("/nonexistent-debian"),))
        monkeypatch.setenv("HOME", "/nonexistent-home")
    code = main(["train", *args, "tracking=disabled"])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0 or all(
        "warning" in line.lower() for line in err.strip().splitlines()[:-1]
    )


def test_unknown_command_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # a typo in the command name shows the usage with every command
    assert main(["trian"]) == 2
    assert "train" in capsys.readouterr().err


def test_config_command_prints_composed_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    # `tlbench config` shows the validated config a trial would use
    assert main(["config", "strategy=partial", "strategy.freeze_depth=2"]) == 0
    out = capsys.readouterr().out
    assert "name: partial" in out and "freeze_depth: 2" in out


def test_train_command_runs_a_trial(capsys: pytest.CaptureFixture[str], mlflow_uri: str) -> None:
    # `tlbench train` prints the status, the metrics and where the run is tracked
    assert main(["train", "data=synthetic", "trainer=quick"]) == 0
    out = capsys.readouterr().out
    assert "status: completed" in out and "test/acc" in out and "MLflow run" in out


def test_bench_command_says_where_the_benchmark_went(capsys: pytest.CaptureFixture[str]) -> None:
    # the benchmark left the package: the old command exits 2 and names what to run instead
    assert main(["bench", "--only", "probe"]) == 2
    err = capsys.readouterr().err
    assert "make bench" in err and "python -m benchmarks" in err
