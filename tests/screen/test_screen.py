from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file
from torch import nn

from tlbench.cli import main as cli_main
from tlbench.errors import ConfigError
from tlbench.screen.screen import (
    DEFAULT_BACKBONES,
    HEADER,
    ScreenFeatures,
    backbone_overrides,
    data_overrides,
    extract,
    format_table,
    parse_backbones,
    parse_class_map,
    run_screen,
    screen_configs,
    screen_rows,
)
from tlbench.training.inputs import feature_cache, plan_inputs
from tlbench.training.network import prepare

GROUPS = ["efficientnet_lite0", "efficientnet_lite1", "resnet18"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("efficientnet_lite1", ["backbone=efficientnet_lite1"]),  # a config group
        ("tf_efficientnet_lite2", ["backbone.name=tf_efficientnet_lite2", "backbone.weights=embedded"]),
        ("convnext_atto", ["backbone.name=convnext_atto", "backbone.weights=hub"]),  # any timm name: hub
        (
            "resnet10t@/w/r.pth",
            ["backbone.name=resnet10t", "backbone.weights=file", "backbone.weights_path=/w/r.pth"],
        ),
    ],
)
def test_backbone_items(item: str, expected: list[str]) -> None:
    # each way of naming a backbone becomes the overrides a trial would use
    assert backbone_overrides(item, groups=GROUPS) == expected


def test_class_map_and_backbone_lists() -> None:
    # 'target=source|source' pairs; lists default to the three Lites and refuse duplicates
    assert parse_class_map("ants=ant,bees=bee|honeycomb") == {"ants": ["ant"], "bees": ["bee", "honeycomb"]}
    assert parse_class_map(None) == {}
    with pytest.raises(ConfigError, match="target=source"):
        parse_class_map("ants=")
    assert parse_backbones(None) == list(DEFAULT_BACKBONES)
    assert parse_backbones(" a, b ") == ["a", "b"]


def test_data_argument(tmp_path: Path) -> None:
    # no --data -> digits; a built-in name -> that dataset; a folder -> imagefolder at its absolute path
    assert data_overrides(None) == ["data=digits"]
    assert data_overrides("synthetic") == ["data=synthetic"]
    assert data_overrides(str(tmp_path)) == ["data=imagefolder", f"data.root={tmp_path.resolve()}"]
    with pytest.raises(ConfigError, match="no such folder"):
        data_overrides(str(tmp_path / "missing"))


def test_photo_folders_default_to_the_pretrained_size(tmp_path: Path) -> None:
    # folders take each backbone's own input size unless the overrides fix one; built-in data keep theirs
    folder = ["data=imagefolder", f"data.root={tmp_path}"]
    lite0, lite2 = screen_configs(folder, ["efficientnet_lite0", "efficientnet_lite2"])
    assert (lite0.data.resolution, lite2.data.resolution) == (224, 260)
    (fixed,) = screen_configs([*folder, "data.resolution=128"], ["efficientnet_lite2"])
    assert fixed.data.resolution == 128
    (digits,) = screen_configs(["data=digits"], ["efficientnet_lite2"])
    assert digits.data.resolution == 32


def test_class_maps_in_the_sweeps_form_or_the_short_one() -> None:
    expected = {"ants": ["ant"], "bees": ["bee", "honeycomb"]}
    assert parse_class_map("{ants: [ant], bees: [bee, honeycomb]}") == expected
    assert parse_class_map("ants=ant,bees=bee|honeycomb") == expected
    with pytest.raises(ConfigError, match="not a mapping"):
        parse_class_map("{ants: ")


def test_study_screens_read_the_sweeps_base_and_backbone_factor() -> None:
    # `tlbench screen --study NAME` screens what the sweep trains: its base overrides and backbones
    from tlbench.commands.screen import _from_sweep_text

    text = "base: [data=digits, data.n_per_class=5]\nfactors:\n  backbone: [efficientnet_lite0, resnet18]\n"
    assert _from_sweep_text(text, "x") == (
        ["data=digits", "data.n_per_class=5"],
        ["efficientnet_lite0", "resnet18"],
    )
    assert _from_sweep_text("base: [data=digits]\nfactors: {strategy: [scratch]}\n", "x") == (
        ["data=digits"],
        [],
    )
    with pytest.raises(ConfigError, match="not a sweep definition"):
        _from_sweep_text("- just a list", "x")


SYNTHETIC = ["data=synthetic", "data.num_classes=3", "data.samples_per_class=30", "data.resolution=32"]
CONTRACT_PARAMS = {"backbone", "dataset", "n_per_class", "resolution"}
CONTRACT_METRICS = {"screen/logme", "screen/knn_acc", "screen/knn_loo_acc", "screen/probe_cv_acc"}
COST_METRICS = {
    "cost/forward_flops", "cost/extract_seconds", "cost/screen_seconds", "cost/device_hours",
    "cost/logme_seconds", "cost/knn_acc_seconds", "cost/knn_loo_acc_seconds", "cost/probe_cv_acc_seconds",
}  # fmt: skip


RANDOM_ARCH = "mobilenetv3_small_050"  # a small timm model, here with randomly initialised file weights


@pytest.fixture
def random_checkpoint(tmp_path: Path) -> str:
    """``name@path`` of a random-init checkpoint: a 'pretrained' backbone that learned nothing."""
    torch.manual_seed(0)
    path = tmp_path / "random.safetensors"
    model = timm.create_model(RANDOM_ARCH, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"{RANDOM_ARCH}@{path}"


def test_screen_runs_follow_the_tracking_contract(mlflow_uri: str, random_checkpoint: str) -> None:
    # one FINISHED run per backbone, tagged role=screen, with the contract's params, scores and costs
    results = run_screen(
        SYNTHETIC,
        ["efficientnet_lite0", random_checkpoint],
        class_map={"pattern_0": ["ant"], "pattern_1": ["bee"], "pattern_2": ["345"]},
        experiment="screen-test",
        tags={"tlbench.study": "screen-test"},
    )
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("screen-test")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(str(r.run_id) for r in results)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["role"] == "screen" and run.data.tags["status"] == "completed"
        assert run.data.tags["device"] == "cpu" and run.data.tags["tlbench.study"] == "screen-test"
        assert set(run.data.params) >= CONTRACT_PARAMS
        assert set(run.data.metrics) >= CONTRACT_METRICS | COST_METRICS | {"screen/as_is_acc"}
        m = run.data.metrics
        assert 0.0 <= m["screen/knn_acc"] <= 1.0 and 0.0 <= m["screen/probe_cv_acc"] <= 1.0
        assert m["cost/forward_flops"] > 0 and m["cost/as_is_flops"] > 0
        assert m["cost/device_hours"] == pytest.approx(m["cost/screen_seconds"] / 3600)
        assert run.data.params["dataset"] == "synthetic" and run.data.params["resolution"] == "32"
        assert run.data.params["n_per_class"] == "all"
    # the backbone param is timm's name; file weights are named as such
    assert [(r.backbone, r.weights) for r in results] == [
        ("tf_efficientnet_lite0", "embedded"),
        (RANDOM_ARCH, "file"),
    ]


def test_random_init_backbones_are_refused_up_front() -> None:
    # weights=none has no pretrained features to score: one clear error before any forward pass
    with pytest.raises(ConfigError, match="weights=none"):
        screen_configs(SYNTHETIC, ["efficientnet_lite0", "random_init"])


def test_screen_reads_the_trial_pipelines_features_through_the_cache() -> None:
    # the screen's features are the pooled backbone outputs of the training data; a second screen
    # of the same data is a cache hit that computes nothing
    (cfg,) = screen_configs(SYNTHETIC, ["efficientnet_lite0"])

    def screen_extract() -> tuple[ScreenFeatures, nn.Module, torch.Tensor]:
        trial = prepare(cfg)
        resolved, model, splits = trial.cfg, trial.model, trial.splits
        plan = plan_inputs(
            resolved,
            model,
            splits,
            device=trial.device,
            precision=trial.precision,
            channels_last=trial.channels_last,
        )
        features = extract(model.network, splits, plan, feature_cache(resolved.trainer))
        return features, model.network.backbone, plan.extraction.transform(splits.train.images[:4])

    first, backbone, batch = screen_extract()
    assert first.extraction.cache_status == "miss" and first.train.shape == (first.train_labels.size, 1280)
    direct = backbone.eval()(batch).detach().numpy()
    np.testing.assert_allclose(first.train[:4], direct, rtol=1e-4, atol=1e-5)
    again, _, _ = screen_extract()
    assert again.extraction.cache_status == "hit"
    assert again.extraction.forward_flops == pytest.approx(first.extraction.forward_flops)
    np.testing.assert_array_equal(again.train, first.train)


def test_table_marks_the_best_backbone_per_score(random_checkpoint: str) -> None:
    # rows are per backbone, '*' on the best value of each score, dashes where a score is absent
    results = run_screen(SYNTHETIC, ["efficientnet_lite0", random_checkpoint], track=False)
    rows = screen_rows(results)
    assert len(rows) == 2 and all(len(r) == len(HEADER) for r in rows)
    logme_column = HEADER.index("LogME")
    best = max(results, key=lambda r: r.value("logme"))
    marked = [r for r, row in zip(results, rows, strict=True) if row[logme_column].endswith("*")]
    assert marked == [best]
    assert all(row[HEADER.index("as_is")] == "—" for row in rows)
    assert all(math.isfinite(r.value("logme")) for r in results)
    assert "tf_efficientnet_lite0" in format_table(results)


@pytest.mark.shared_data
def test_pretrained_features_outscore_random_ones_on_real_photos(
    hymenoptera_root: Path, random_checkpoint: str
) -> None:
    # ants vs bees: ImageNet features beat a randomly initialised network on every score
    results = run_screen(
        ["data=imagefolder", f"data.root={hymenoptera_root}", "data.n_per_class=30", "data.resolution=96"],
        ["efficientnet_lite0", random_checkpoint],
        track=False,
    )
    pretrained, random = results
    for name in ("logme", "knn_loo_acc", "knn_acc", "probe_cv_acc"):
        assert pretrained.value(name) > random.value(name), name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/no/such/folder"], "no such folder"),
        (["--backbones", "efficientnet_lite0,efficientnet_lite0"], "twice"),
        (["--class-map", "ants"], "target=source"),
        (["--knn-k", "0"], "knn_k"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], message: str, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a mistake is one 'error:' line naming it, exit status 2, no traceback
    assert cli_main(["screen", *argv, "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_prints_the_table(mlflow_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `tlbench screen` end to end: table on stdout, one role=screen run in the chosen experiment
    argv = [
        "screen",
        "--data",
        "synthetic",
        "--backbones",
        "efficientnet_lite0",
        "--experiment",
        "cli-screen",
    ]
    assert cli_main([*argv, "data.resolution=32", "data.samples_per_class=20"]) == 0
    out = capsys.readouterr().out
    assert "LogME" in out and "tf_efficientnet_lite0" in out and "role=screen" in out
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("cli-screen").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["role"] == "screen"
