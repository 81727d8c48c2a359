"""``export``: the recommended arm's configuration with every choice fixed, and what the registry says."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from report.fake_study import build_study, standard_trials
from tlbench.cli import main
from tlbench.config import RunConfig, load_config
from tlbench.config.compose import to_run_config
from tlbench.config.schema import as_plain_dict
from tlbench.data import load_splits
from tlbench.errors import ConfigError, TlbenchError
from tlbench.export import (
    collect,
    export_config,
    export_step,
    export_winner,
    model_description,
    version_tags,
)
from tlbench.report import FinalRun, RecommendedArm
from tracking.champion_helpers import BLUE, RED, photo, register_colour_model


def _arm(
    strategy: str = "lp_ft",
    *,
    steps: tuple[int | None, ...] = (100, 140, 120),
    extra: tuple[str, ...] = (),
    **changes: Any,
) -> RecommendedArm:
    cfg = load_config(
        [f"strategy={strategy}", "data=digits", "data.n_per_class=10", "trainer.early_stopping=true", *extra]
    )
    finals = tuple(
        FinalRun(run_id=f"run{i}", seed=i + 1, optuna_trial=i, test_acc=0.9, val_acc=0.9, steps=step)
        for i, step in enumerate(steps)
    )
    arm = RecommendedArm(
        study="smoke",
        n_per_class="10",
        strategy=strategy,
        strategy_name=strategy,
        recommended=True,
        cell=f"data.n_per_class=10,strategy={strategy}",
        optuna_study="smoke",
        tuned_from_trial=3,
        tune_run_id="tune3",
        params={"strategy": strategy},
        overrides=None,
        finals=finals,
        acc_mean=0.9,
        acc_half_width=0.05,
        device_hours=0.001,
        verdict=f"At 10 per class, {strategy} reached 90.0% test accuracy (95% CI 85.0% to 95.0%).",
        tolerance=0.01,
        config_run_id="run0",
        config_yaml=yaml.safe_dump(as_plain_dict(cfg), sort_keys=False),
    )
    return replace(arm, **changes)


def test_the_export_trains_on_validation_with_every_choice_fixed() -> None:
    cfg = export_config(
        _arm(),
        finals=[{"probe/l2": 1e-3}, {"probe/l2": 1e-1}, {"probe/l2": 1e-2}],
        tracking_uri="sqlite:///x.db",
    )
    # train + validation, no early stopping: nothing is left to choose on validation
    assert (cfg.data.train_on_val, cfg.trainer.early_stopping) == (True, False)
    # the finals' middle probe L2 and step count, fixed; the first final seed
    assert (cfg.strategy.probe.l2, cfg.trainer.min_steps, cfg.trainer.epochs, cfg.seed) == (1e-2, 120, 1, 1)
    # the arm's own configuration otherwise
    assert (cfg.strategy.name.value, cfg.data.name, cfg.data.n_per_class) == ("lp_ft", "digits", 10)
    # an export run in the study's experiment, named, tagged role=export, no parent
    assert (cfg.tracking.experiment, cfg.tracking.tracking_uri, cfg.tracking.parent_run_id) == (
        "smoke",
        "sqlite:///x.db",
        None,
    )
    assert cfg.tracking.run_name == "export lp_ft n=10" and cfg.tags["role"] == "export"


@pytest.mark.parametrize(
    ("strategy", "finals", "expected"),
    [
        (
            "lp_ft",
            [{"probe/l2": 1e-3}, {"probe/l2": 1e-2}],
            1e-2,
        ),  # a tie between two seeds: the stronger one
        ("linear_probe", [{"probe/l2": 1e-4}], 1e-4),  # one final
        ("full_finetune", [{}, {}], None),  # a strategy without a probe: left as configured
    ],
)
def test_probe_l2_is_the_upper_median_of_the_finals(
    strategy: str, finals: list[dict[str, float]], expected: float | None
) -> None:
    assert export_config(_arm(strategy), finals=finals, tracking_uri=None).strategy.probe.l2 == expected


def test_a_probe_whose_finals_logged_no_l2_cannot_be_retrained_as_it_ran() -> None:
    # the probe would choose its L2 on validation images it now trains on: one line naming the arm and key
    with pytest.raises(ConfigError, match=r"lp_ft arm of study 'smoke'.*strategy\.probe\.l2"):
        export_config(_arm("lp_ft"), finals=[{}, {}], tracking_uri=None)


def test_without_recorded_steps_the_configured_budget_stays() -> None:
    configured = load_config(["strategy=lp_ft", "data=digits"]).trainer.min_steps
    cfg = export_config(_arm(steps=(None, None)), finals=[{"probe/l2": 1e-2}], tracking_uri=None)
    # an older study that did not log train/steps: the finals' own budget
    assert cfg.trainer.min_steps == configured


def test_an_as_is_winner_is_exported_as_the_pretrained_classifier_it_is() -> None:
    # the photo study's recommendation can be as_is (ImageNet's classifier, classes mapped): the
    # model delivered is that classifier with its class map, and its description says nothing trained
    arm = _arm(
        "as_is",
        steps=(None, None, None),
        extra=("+strategy.class_map.0=[goldfish]", "+strategy.class_map.1=[tench]"),
    )
    cfg = export_config(arm, finals=[], tracking_uri=None)
    assert cfg.strategy.name.value == "as_is" and cfg.data.train_on_val
    text = model_description(arm, cfg, test_acc=0.967)
    assert "nothing was trained" in text and "Retrained" not in text and "96.7% test accuracy" in text
    # and its progress line does not claim a retraining (it once said "retraining on train + validation")
    assert "retraining" not in export_step(cfg) and "nothing to retrain" in export_step(cfg)
    assert export_step(export_config(_arm(), finals=[{"probe/l2": 1e-2}], tracking_uri=None)).startswith(
        "retraining on train + validation (seed "
    )


def test_a_final_run_without_its_config_cannot_be_retrained() -> None:
    with pytest.raises(TlbenchError, match=r"run0 of study 'smoke' has no config\.yaml"):
        export_config(_arm(config_yaml=None), finals=[], tracking_uri=None)


def test_the_description_says_what_was_exported_and_that_it_saw_validation_data() -> None:
    arm = _arm()
    cfg = export_config(arm, finals=[{"probe/l2": 1e-2}], tracking_uri=None)
    text = model_description(arm, cfg, test_acc=0.925)
    # the arm, the verdict with its interval, the retraining on train + validation, its own test score
    assert "Study 'smoke': lp_ft at n=10" in text and arm.verdict in text
    assert "train subset plus the validation split" in text and "92.5% test accuracy" in text


@pytest.mark.parametrize(
    ("half_width", "interval"),
    [(0.05, "0.8500..0.9500"), (None, "single seed")],
)
def test_version_tags_carry_the_verdict_and_its_interval(half_width: float | None, interval: str) -> None:
    tags = version_tags(_arm(acc_half_width=half_width))
    assert tags["verdict_interval"] == interval
    assert tags["verdict"].startswith("At 10 per class") and tags["trained_on"] == "train+validation"
    assert tags["final_run_ids"] == "run0,run1,run2"


@pytest.mark.slow  # a real (small) linear probe trial on digits, then logging and loading the model
def test_export_winner_registers_a_champion_that_predicts_as_its_run_evaluated(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["data=digits", "strategy=linear_probe", "data.n_per_class=10", "data.max_test_per_class=4"]
    config = yaml.safe_dump(as_plain_dict(load_config(overrides)), sort_keys=False)
    trials = [
        replace(t, config=config)
        if (t.role, t.strategy, t.n_per_class) == ("final", "linear_probe", "10")
        else t
        for t in standard_trials()
    ]
    study = build_study(mlflow_uri, "smoke", trials)
    client = MlflowClient(mlflow_uri)
    for run in client.search_runs([study["experiment_id"]], "params.strategy = 'linear_probe'"):
        client.log_metric(run.info.run_id, "probe/l2", 1e-2)  # what a real probe's run logs
    lines: list[str] = []
    exported = export_winner("smoke", size="10", tracking_uri=mlflow_uri, progress=lines.append)
    # the report's recommendation at n=10, registered as the study's champion from a role=export run
    assert (exported.model_uri, exported.strategy, exported.n_per_class) == (
        "models:/smoke@champion",
        "linear_probe",
        "10",
    )
    run = client.get_run(exported.run_id)
    assert (run.data.tags["role"], run.info.status) == ("export", "FINISHED")
    version = client.get_model_version_by_alias("smoke", "champion")
    assert version.run_id == exported.run_id and exported.verdict in version.description
    # the export run's own test images, written as PNG files at the resolution it trained at
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{exported.run_id}/predictions/test.json"))
    cfg = export_config_of(run_id=exported.run_id, tracking_uri=mlflow_uri)
    images = load_splits(cfg.data, seed=cfg.seed).test.images
    folder = tmp_path / "test-images"
    folder.mkdir()
    for i, pixels in enumerate(images.numpy()):
        Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(
            folder / f"{i:03d}.png"
        )
    capsys.readouterr()
    assert main(["predict", "--model", exported.model_uri, str(folder)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # tlbench predict gives every image the class the export run's own evaluation gave it
    expected = [logged["class_names"][p] for p in logged["predicted"]]
    assert [r["class"] for r in rows] == expected and len(rows) == len(images) == 40


def export_config_of(*, run_id: str, tracking_uri: str) -> RunConfig:
    """The resolved configuration a run logged (config.yaml), typed."""
    from omegaconf import DictConfig, OmegaConf

    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), yaml.safe_load(text))
    assert isinstance(cfg, DictConfig)
    return to_run_config(cfg)


MODEL = "models:/colours@champion"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow store with the colour model registered as models:/colours@champion."""
    folder = tmp_path_factory.mktemp("predict-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        register_colour_model(folder, tracking_uri=uri)
    yield uri


@pytest.fixture
def photos(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    (folder / "red.png").write_bytes(photo(RED))
    (folder / "more" / "blue.jpg").write_bytes(photo(BLUE, fmt="JPEG"))
    return folder


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_files_and_folders_are_classified_into_a_csv(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = photos.parent / "extra.webp"
    extra.write_bytes(photo(RED, fmt="WEBP"))
    assert main(["predict", "--model", MODEL, str(photos), str(extra)]) == 0
    rows = _rows(capsys.readouterr().out)
    # every image, a folder's recursively in sorted order, with the class the colour says
    assert [(Path(r["path"]).name, r["class"]) for r in rows] == [
        ("blue.jpg", "bees"),
        ("red.png", "ants"),
        ("extra.webp", "ants"),
    ]
    assert all(0.5 < float(r["probability"]) <= 1.0 for r in rows)


def test_a_file_that_is_not_an_image_is_one_line_and_the_others_are_still_classified(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = photos.parent / "notes.txt"
    notes.write_text("not a photo")
    (photos / "broken.png").write_bytes(b"\x89PNG but cut short")
    status = main(["predict", "--model", MODEL, str(notes), str(photos)])
    captured = capsys.readouterr()
    # exit status 1: some failed; the good ones are in the CSV
    assert status == 1
    assert sorted(Path(r["path"]).name for r in _rows(captured.out)) == ["blue.jpg", "red.png"]
    errors = captured.err.strip().splitlines()
    assert (
        len([e for e in errors if "notes.txt" in e]) == 1
        and len([e for e in errors if "broken.png" in e]) == 1
    )
    assert all("Traceback" not in e for e in errors)


def test_a_model_that_does_not_exist_is_one_line_naming_it(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["predict", "--model", "models:/no-such-study@champion", str(photos)])
    err = capsys.readouterr().err.strip()
    # usage error status, one line with the URI and how a champion comes to exist
    assert status == 2
    assert len(err.splitlines()) == 1 and "models:/no-such-study@champion" in err and "tlbench export" in err


def test_a_missing_path_is_named_and_the_rest_classified(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["predict", "--model", MODEL, str(photos / "red.png"), "nowhere.png"])
    captured = capsys.readouterr()
    assert status == 1
    assert [Path(r["path"]).name for r in _rows(captured.out)] == ["red.png"]
    assert "nowhere.png: no such file or folder" in captured.err


def test_out_writes_the_csv_to_a_file(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "predictions.csv"
    assert main(["predict", "--model", MODEL, "--out", str(target), str(photos / "red.png")]) == 0
    # stdout stays empty; the file has the header and the row
    assert capsys.readouterr().out == ""
    assert [r["class"] for r in _rows(target.read_text())] == ["ants"]


def test_collect_skips_hidden_and_non_image_files_in_folders(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    for name in ("a.JPG", "b.png", "readme.md", ".hidden.png", ".cache/c.png"):
        (tmp_path / name).write_bytes(b"")
    inputs = collect([tmp_path])
    # image extensions of any case are kept; hidden entries never; other files are listed as skipped
    assert [p.name for p in inputs.files] == ["a.JPG", "b.png"]
    assert [p.name for p in inputs.skipped] == ["readme.md"]


def test_help_lists_what_predict_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(word in out for word in ("--model", "--out", "PATH", "models:/<study>@champion"))


def test_help_lists_what_export_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(word in out for word in ("--study", "--size", "--strategy", "train + validation"))


def test_commands_are_listed_in_tlbench_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # one line each in the command table
    assert any(line.split()[:1] == ["export"] for line in lines)
    assert any(line.split()[:1] == ["predict"] for line in lines)
