from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.errors import ConfigError
from tlbench.screen.compose import (
    DEFAULT_BACKBONES,
    backbone_overrides,
    data_overrides,
    parse_backbones,
    parse_class_map,
)
from tlbench.screen.screen import screen_configs

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
