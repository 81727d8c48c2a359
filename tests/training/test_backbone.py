from __future__ import annotations

import pytest

from tlbench.config.schema import BackboneConfig, WeightsSource
from tlbench.errors import ModelError
from tlbench.training.network import create_backbone


def test_unknown_backbone_names_close_matches() -> None:
    # a typo in backbone.name gets one line naming real timm models
    with pytest.raises(ModelError) as info:
        create_backbone(BackboneConfig(name="efficientnet_lite7", weights=WeightsSource.none), resolution=32)
    message = str(info.value)
    assert "unknown backbone 'efficientnet_lite7'" in message and "efficientnet_lite0" in message


def test_any_timm_name_builds_without_classifier() -> None:
    # a non-default timm model (a ViT, fixed input size) builds at the requested resolution
    model = create_backbone(
        BackboneConfig(name="vit_tiny_patch16_224", weights=WeightsSource.none), resolution=32
    )
    assert model.num_features == 192
    assert model.get_classifier().__class__.__name__ == "Identity"


def test_hub_weights_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # without network the hub source fails with a message naming the offline alternatives
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"backbone\.weights=embedded"):
        create_backbone(BackboneConfig(name="resnet18", weights=WeightsSource.hub), resolution=32)
