from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlbench.cli import COMMANDS, main


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
        from tlbench.data import sources

        monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", (Path("/nonexistent-debian"),))
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


@pytest.mark.parametrize("args", [["--only", "probe"], ["--help"]])
def test_bench_command_says_where_the_benchmark_went(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # the benchmark left the package: the old command exits 2 and names what to run instead, in one line
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert "make bench" in err and "python -m benchmarks" in err and err.strip().count("\n") == 0


def _help_expectations() -> dict[str, list[str]]:
    """What each command's --help must name, beyond a usage line (the command table's own entries)."""
    from tlbench.commands.overrides import group_options

    groups = group_options()
    everything = [*groups, *(name for options in groups.values() for name, _ in options)]
    return {
        "train": ["data.n_per_class", "experiment=NAME", *everything],  # every group and option of conf/
        "config": ["data.n_per_class", *everything],
        "ui": ["--port"],
        "dashboard": ["--port", "--study", "--live"],
        "sweep": ["--sweep", "--workers"],
        "report": ["--study"],
        "screen": ["--data", "--backbones"],
        "export": ["--study"],
        "predict": ["--model"],
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `tlbench <command> --help` exits 0 with a usage line and what the command takes, never an error
    try:
        code = main([command, "--help"])
    except SystemExit as exc:  # argparse's help exits 0 by itself
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "usage" in out.lower() and len(out.splitlines()) >= 3, out
    assert "error" not in err.lower(), err
    missing = [word for word in _help_expectations().get(command, []) if word not in out]
    assert not missing, f"tlbench {command} --help does not name {missing}"


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``tlbench ARGV`` in a fresh interpreter, then whether torch was imported (the last line)."""
    import tlbench

    source = str(Path(tlbench.__file__).resolve().parents[1])
    code = (
        "import sys\nfrom tlbench.cli import main\n"
        f"code = main({list(argv)!r})\nprint('torch' in sys.modules)\nsys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    env.pop("TLBENCH_DATASETS", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["train", "data=imagefolder", "data.root=/nonexistent/photos"],
            "data.root=/nonexistent/photos is not",
        ),
        (
            ["config", "data=imagefolder", "data.root=/nonexistent/photos"],
            "data.root=/nonexistent/photos is not",
        ),
        (
            ["train", "data=cifar10", "data.root=/nonexistent/cifar"],
            "data.root=/nonexistent/cifar does not exist",
        ),
        (["train", "backbone.weights=file", "backbone.weights_path=/nope.pth"], "/nope.pth not found"),
        # an experiment preset's folder says where it came from and how to point it elsewhere
        (["train", "experiment=hymenoptera"], "experiment=hymenoptera reads it from $TLBENCH_DATASETS"),
    ],
)
def test_a_missing_folder_or_file_is_reported_before_torch_loads(argv: list[str], fragment: str) -> None:
    # one line, exit 2, and torch never imported: the user learns it in a second, not after 20
    result = _run_cli(*argv, "tracking=disabled")
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"  # torch was not imported


def test_train_help_does_not_import_torch() -> None:
    # help is instant too
    result = _run_cli("train", "--help")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "False"


def test_the_photo_presets_read_their_folder_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # TLBENCH_DATASETS names the folder holding the datasets; unset, ./datasets; data.root still wins
    from tlbench.config import load_config

    for preset in ("hymenoptera", "hymenoptera_as_is"):
        monkeypatch.delenv("TLBENCH_DATASETS", raising=False)
        assert load_config([f"experiment={preset}"]).data.root == "datasets/hymenoptera"
        monkeypatch.setenv("TLBENCH_DATASETS", "/data/sets")
        assert load_config([f"experiment={preset}"]).data.root == "/data/sets/hymenoptera"
        assert load_config([f"experiment={preset}", "data.root=/mine"]).data.root == "/mine"


def test_no_preset_points_outside_the_checkout() -> None:
    # a user's clone has no ../shared: no experiment file may name it
    from tlbench.config.compose import config_dir

    for path in (config_dir() / "experiment").glob("*.yaml"):
        assert "../" not in path.read_text(), path


def test_sweep_help_lists_every_sweep_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    # a user choosing --sweep sees what is there without reading sweeps/
    from tlbench.sweep.spec import sweeps_dir

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert all(f"  {path.stem} " in out for path in sweeps_dir().glob("*.yaml")), out
